// The agents page: GET /agents every 2s, each agent a link to its page,
// and Drain / Undrain buttons (POST /agents/:name/drain and /undrain);
// below, the controllers (GET /operator/members) with each one's role,
// term and how far its log and store have got.
import {
  api, el, badge, when, labels, seconds, clearBanner, showError, poll, init, patchRows, ApiError, isOperator, onWho,
} from '/ui/app.js';

const tbody = document.querySelector('#agents tbody');
const members = document.querySelector('#controllers tbody');
const updated = document.getElementById('updated');
let poller = null;

async function drain(name) {
  if (!confirm('Drain agent ' + name + '? It gets no new jobs; its running jobs finish.')) return;
  try {
    await api('POST', '/agents/' + encodeURIComponent(name) + '/drain');
    clearBanner('action');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showError('Drain failed', err, 'action');
  }
  poller.now();
}

async function undrain(name) {
  try {
    await api('POST', '/agents/' + encodeURIComponent(name) + '/undrain');
    clearBanner('action');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showError('Undrain failed', err, 'action');
  }
  poller.now();
}

// action is the agent's button: Drain, or Undrain for one an operator
// drained (an agent that is stopping cannot be undrained).
function action(a) {
  if (!isOperator()) return '';
  if (!a.draining) return el('button', { type: 'button', class: 'drain', onclick: () => drain(a.name) }, 'Drain');
  if (a.drained_by === 'agent') return el('span', { class: 'hint' }, 'stopping');
  return el('button', { type: 'button', class: 'undrain', onclick: () => undrain(a.name) }, 'Undrain');
}

function row(a) {
  const jobs = (a.jobs || []).map((id) => el('a', { href: '/ui/job?id=' + encodeURIComponent(id) }, String(id)));
  const jobCell = el('td', { class: 'wrap' });
  jobs.forEach((link, i) => jobCell.append(i ? ', ' : '', link));
  if (!jobs.length) jobCell.append('-');
  return el('tr', { 'data-key': a.name, 'data-agent': a.name },
    el('td', { class: 'name' }, el('a', { href: '/ui/agent?name=' + encodeURIComponent(a.name) }, a.name)),
    el('td', {}, badge(a.draining ? 'draining' : 'active')),
    el('td', { class: 'num' }, String(a.slots)),
    el('td', { class: 'num' }, String(a.running)),
    el('td', { class: 'num' }, String(a.free)),
    el('td', {}, labels(a.labels)),
    jobCell,
    el('td', {}, a.transport || '-'),
    el('td', {}, when(a.connected_at)),
    el('td', {}, when(a.last_heartbeat)),
    el('td', {}, a.version || '-'),
    el('td', {}, action(a)));
}

// memberRow is one controller of the cluster.
function memberRow(m) {
  // The badge's colour: a leader is live, a follower active, an
  // unreachable member lost, a candidate (an election) a warning.
  const role = badge({ leader: 'live', follower: 'active', unreachable: 'lost' }[m.role] || 'warn');
  role.textContent = m.role || '-';
  if (m.error) role.title = m.error;
  const contact = m.last_contact_seconds === undefined || m.last_contact_seconds === null ? '-'
    : seconds(m.last_contact_seconds) + ' ago';
  return el('tr', { 'data-key': m.id, 'data-member': m.id },
    el('td', { class: 'name' }, m.id),
    el('td', {}, role),
    el('td', {}, m.voter ? 'yes' : 'no'),
    el('td', { class: 'num' }, m.term ? String(m.term) : '-'),
    el('td', { class: 'num' }, String(m.applied_index || 0)),
    el('td', { class: 'num' }, String(m.last_index || 0)),
    el('td', {}, contact),
    el('td', {}, m.api_addr || '-'),
    el('td', {}, m.cluster_addr || '-'));
}

async function refresh() {
  const [agents, ms] = await Promise.all([api('GET', '/agents'), api('GET', '/operator/members')]);
  clearBanner('update', 'auth');
  patchRows(members, (ms && ms.length ? ms.map(memberRow)
    : [el('tr', {}, el('td', { colspan: 9, class: 'empty' }, 'No members reported.'))]));
  updated.textContent = 'updated ' + new Date().toLocaleTimeString();
  patchRows(tbody, (agents.length ? agents.map(row)
    : [el('tr', {}, el('td', { colspan: 12, class: 'empty' }, 'No agents connected. Start one with jobsuite agent.'))]));
}

poller = poll(refresh, 2000);
init('agents', () => poller.now());
onWho(() => poller.now());
