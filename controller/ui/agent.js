// One agent: GET /agents/:name every 2s (labels, slots, transport,
// version, heartbeat), its running jobs with their live state (GET
// /jobs/:id?live=1), its recent jobs (GET /jobs?agent=), and Drain,
// Undrain and Revoke buttons.
import {
  api, el, badge, when, whenFull, seconds, bytes, labels, banner, clearBanner, showError, poll, init, patchRows, ApiError,
  isOperator, onWho,
} from '/ui/app.js';
import { visibleLine, cpu } from '/ui/live.js';

const $ = (id) => document.getElementById(id);
const name = new URLSearchParams(location.search).get('name') || '';
const valid = /^[A-Za-z0-9._-]{1,64}$/.test(name);
let agent = null; // null: not connected
let loaded = false; // a refresh finished
let poller = null;

function card(n, what) {
  return el('div', { class: 'card' }, el('div', { class: 'n' }, String(n)), el('div', { class: 'what' }, what));
}

function field(dl, k, v) {
  dl.append(el('dt', {}, k), el('dd', {}, v));
}

function renderAgent(a) {
  document.title = 'Agent ' + name + ' · jobsuite';
  $('agent-title').textContent = 'Agent ' + name;
  const st = $('agent-state');
  const state = !a ? 'not connected' : a.draining ? 'draining' : 'active';
  st.textContent = state;
  st.className = 'badge s-' + (a ? (a.draining ? 'draining' : 'active') : 'cancelled');
  const op = isOperator();
  $('drain').hidden = !op || !a || a.draining;
  $('undrain').hidden = !op || !a || !a.draining || a.drained_by === 'agent';
  $('revoke').hidden = !op;
  if (!a) {
    $('cards').replaceChildren();
    $('fields').replaceChildren(el('p', { class: 'hint' }, 'No agent named ' + name + ' is connected now. Its recent jobs are below.'));
    return;
  }
  $('cards').replaceChildren(card(a.slots, 'slots'), card(a.running, 'running'), card(a.draining ? 0 : Math.max(a.slots - a.running, 0), 'free'),
    card(a.transport || '-', 'transport'));
  const dl = el('dl', { class: 'fields' });
  field(dl, 'State', a.draining ? (a.drained_by === 'agent' ? 'draining: the agent is stopping' : 'draining: drained by an operator') : 'active: takes jobs');
  field(dl, 'Labels', labels(a.labels));
  field(dl, 'Version', a.version || '-');
  field(dl, 'Transport', a.transport || '-');
  field(dl, 'Address', a.address || '-');
  field(dl, 'Connected', whenFull(a.connected_at));
  field(dl, 'Last heartbeat', whenFull(a.last_heartbeat));
  $('fields').replaceChildren(dl);
}

function jobLink(j) {
  return el('a', { href: '/ui/job?id=' + encodeURIComponent(j.job_id) }, String(j.job_id));
}

function runningRow(j) {
  const l = j.live && !j.live.stale ? j.live : null;
  return el('tr', { 'data-key': j.job_id, 'data-job': j.job_id },
    el('td', { class: 'num' }, jobLink(j)),
    el('td', { class: 'name' }, j.name || '-'),
    el('td', {}, badge(j.status)),
    el('td', { class: 'num' }, l ? seconds(l.elapsed) : '-'),
    el('td', { class: 'num' }, l ? cpu(l) : '-'),
    el('td', { class: 'num' }, l ? bytes(l.rss) : '-'),
    el('td', { class: 'num hide-narrow' }, bytes(j.log_bytes)),
    el('td', { class: 'name last-line hide-narrow' }, l ? visibleLine(l.last_line) || '-' : '-'));
}

function recentRow(j) {
  return el('tr', { 'data-key': j.job_id, 'data-job': j.job_id },
    el('td', { class: 'num' }, jobLink(j)),
    el('td', { class: 'name' }, j.name || '-'),
    el('td', {}, badge(j.status)),
    el('td', { class: 'num' }, j.exit_code === null || j.exit_code === undefined ? '-' : String(j.exit_code)),
    el('td', {}, when(j.created_at)),
    el('td', { class: 'num' }, j.duration !== undefined ? seconds(j.duration) : '-'));
}

async function refresh() {
  let a = null;
  try {
    a = await api('GET', '/agents/' + encodeURIComponent(name));
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  }
  agent = a;
  const running = a ? await Promise.all((a.jobs || []).slice(0, 20).map((id) => api('GET', '/jobs/' + id + '?live=1&wait=1s').catch(() => null))) : [];
  const recent = await api('GET', '/jobs?limit=20&agent=' + encodeURIComponent(name));
  clearBanner('update', 'auth');
  loaded = true;
  renderAgent(a);
  const rows = running.filter(Boolean).map(runningRow);
  patchRows($('running').tBodies[0], rows.length ? rows : [el('tr', {}, el('td', { colspan: 8, class: 'empty' }, a ? 'Nothing running.' : '-'))]);
  patchRows($('recent').tBodies[0], recent.length ? recent.map(recentRow) : [el('tr', {}, el('td', { colspan: 6, class: 'empty' }, 'No jobs ran on ' + name + '.'))]);
}

async function act(what, path, body) {
  try {
    await api('POST', path, body);
    clearBanner('action');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showError(what + ' failed', err, 'action');
  }
  poller.now();
}

if (!valid) {
  banner('No agent: open this page as /ui/agent?name=<agent name>, or pick an agent on the agents page.', 'fatal');
} else {
  const base = '/agents/' + encodeURIComponent(name);
  $('all-jobs').setAttribute('href', '/ui/?q=' + encodeURIComponent(name));
  $('drain').addEventListener('click', () => {
    if (confirm('Drain agent ' + name + '? It gets no new jobs; its running jobs finish.')) act('Drain', base + '/drain');
  });
  $('undrain').addEventListener('click', () => act('Undrain', base + '/undrain'));
  $('revoke').addEventListener('click', () => {
    const reason = prompt('Revoke agent ' + name + '? Its certificate is refused from now on and its running attempts are lost. Reason:', '');
    // A disconnected agent is revoked by name: every certificate of it.
    if (reason !== null) act('Revoke', base + '/revoke', agent ? { reason } : { reason, all_certs: true });
  });
  poller = poll(refresh, 2000);
  init('agents', () => poller.now());
  onWho(() => {
    if (loaded) renderAgent(agent);
  });
}
