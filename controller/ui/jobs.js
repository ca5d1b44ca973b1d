// The jobs page: GET /jobs a page at a time (the X-Next-Cursor header
// names the next, older page), searched (?q=) and filtered by state,
// with the number of jobs in each state from GET /stats; the page shown
// is refreshed every 2s.
import {
  api, apiPage, el, badge, when, seconds, bytes, clearBanner, poll, init, patchRows, allStates,
} from '/ui/app.js';

const $ = (id) => document.getElementById(id);
const select = $('state');
const search = $('q');
const limitSel = $('limit');
const tbody = document.querySelector('#jobs tbody');

// The view, kept in the address: ?status=&q=&limit=&cursor=.
const params = new URLSearchParams(location.search);
select.value = params.get('status') || '';
if (select.selectedIndex < 0) select.value = '';
search.value = params.get('q') || '';
limitSel.value = params.get('limit') || '50';
if (limitSel.selectedIndex < 0) limitSel.value = '50';

// cursors[i] is the cursor of page i ('' for the newest); the page shown
// is the last one. A reload keeps the page but not the way back, so
// Newer then goes to the newest page.
let cursors = [params.get('cursor') || ''];
let next = ''; // the cursor of the page after the one shown
let counts = null; // GET /stats jobs per state, and total

function remember() {
  const u = new URL(location.href);
  const set = (k, v) => (v ? u.searchParams.set(k, v) : u.searchParams.delete(k));
  set('status', select.value);
  set('q', search.value.trim());
  set('limit', limitSel.value === '50' ? '' : limitSel.value);
  set('cursor', cursors[cursors.length - 1]);
  history.replaceState(null, '', u);
}

function agentLink(name) {
  if (!name) return '-';
  return el('a', { href: '/ui/agent?name=' + encodeURIComponent(name) }, name);
}

function row(j) {
  const href = '/ui/job?id=' + encodeURIComponent(j.job_id);
  const attempts = j.attempts || [];
  const agent = attempts.length ? attempts[attempts.length - 1].agent : '';
  return el('tr', { 'data-key': j.job_id, 'data-job': j.job_id },
    el('td', { class: 'num' }, el('a', { href }, String(j.job_id))),
    el('td', { class: 'name' }, el('a', { href, title: j.params ? j.command + ' ' + j.params : j.command }, j.name || '-')),
    el('td', {}, badge(j.status), j.cancel_requested && j.status !== 'cancelled' ? el('span', { class: 'hint' }, ' cancelling') : null),
    el('td', { class: 'hide-narrow' }, String(j.priority)),
    el('td', { class: 'num' }, j.exit_code === null || j.exit_code === undefined ? '-' : String(j.exit_code)),
    el('td', {}, agentLink(agent)),
    el('td', {}, when(j.created_at)),
    el('td', { class: 'num hide-narrow' }, j.duration !== undefined ? seconds(j.duration) : '-'),
    el('td', { class: 'num bytes hide-narrow' }, j.logs ? bytes(j.log_bytes) : '-'));
}

// fetchPage reads the page at cursor: up to limit jobs, following the
// cursor while the controller returns short pages (one call examines at
// most 100,000 jobs, so a rare search may need several).
async function fetchPage(cursor, limit) {
  const jobs = [];
  let cur = cursor;
  for (let calls = 0; calls < 20; calls++) {
    const q = new URLSearchParams({ limit: String(limit - jobs.length) });
    if (select.value) q.set('status', select.value);
    if (search.value.trim()) q.set('q', search.value.trim());
    if (cur) q.set('cursor', cur);
    const page = await apiPage('/jobs?' + q, 'X-Next-Cursor');
    jobs.push(...page.data);
    cur = page.next;
    if (!cur || jobs.length >= limit) break;
  }
  return { jobs, next: cur };
}

function emptyText() {
  if (search.value.trim()) return 'No ' + (select.value ? select.value + ' ' : '') + 'jobs match "' + search.value.trim() + '".';
  if (cursors.length > 1) return 'No older jobs.';
  return select.value ? 'No ' + select.value + ' jobs.' : 'No jobs yet. Submit one with jobsuite submit.';
}

async function refresh() {
  const limit = Number(limitSel.value) || 50;
  const [page, stats] = await Promise.all([
    fetchPage(cursors[cursors.length - 1], limit),
    api('GET', '/stats?history=0').catch(() => null),
  ]);
  clearBanner('update', 'auth');
  next = page.next;
  if (stats) counts = stats;
  $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  patchRows(tbody, page.jobs.length ? page.jobs.map(row)
    : [el('tr', {}, el('td', { colspan: 9, class: 'empty' }, emptyText()))]);
  renderCounts();
  renderPager(page.jobs.length, limit);
}

function renderCounts() {
  if (!counts) return;
  const chip = (state, label, n) => {
    const u = new URL(location.href);
    if (state) u.searchParams.set('status', state);
    else u.searchParams.delete('status');
    u.searchParams.delete('cursor');
    return el('a', {
      class: 'chip s-' + (state || 'all'), href: u.pathname + u.search, 'data-state': state || 'all', 'aria-current': select.value === state ? 'true' : 'false',
      onclick: (ev) => {
        ev.preventDefault();
        select.value = state;
        restart();
      },
    }, el('span', { class: 'label' }, label), el('span', { class: 'n' }, (n || 0).toLocaleString()));
  };
  const chips = [chip('', 'all', counts.total)];
  for (const s of allStates) chips.push(chip(s, s, counts.jobs[s]));
  $('counts').replaceChildren(...chips);
  for (const o of select.options) {
    const n = o.value ? counts.jobs[o.value] : counts.total;
    o.textContent = (o.value || 'all') + ' (' + (n || 0).toLocaleString() + ')';
  }
}

function renderPager(shown, limit) {
  const index = cursors.length - 1;
  const atNewest = index === 0 && !cursors[0];
  $('newer').disabled = atNewest;
  $('newest').disabled = atNewest;
  $('older').disabled = !next;
  if (!shown) {
    $('page-info').textContent = '';
    return;
  }
  const fmt = (n) => n.toLocaleString();
  // Positions are known when the pages were walked from the newest.
  let info = fmt(shown) + ' jobs';
  if (!cursors[0]) {
    const first = index * limit + 1;
    info = 'jobs ' + fmt(first) + '–' + fmt(first + shown - 1);
  }
  const total = counts && !search.value.trim() ? (select.value ? counts.jobs[select.value] : counts.total) : undefined;
  if (total !== undefined && !cursors[0]) info += ' of ' + fmt(total);
  else if (next) info += ', older ones follow';
  $('page-info').textContent = info;
}

// restart shows the newest page of a new selection.
function restart() {
  cursors = [''];
  next = '';
  remember();
  poller.now();
}

const poller = poll(refresh, 2000);
init('jobs', () => poller.now());

select.addEventListener('change', restart);
limitSel.addEventListener('change', restart);
let typing = null;
search.addEventListener('input', () => {
  clearTimeout(typing);
  typing = setTimeout(restart, 300);
});
$('search').addEventListener('submit', (ev) => {
  ev.preventDefault();
  clearTimeout(typing);
  restart();
});
$('older').addEventListener('click', () => {
  if (!next) return;
  cursors.push(next);
  next = '';
  remember();
  poller.now();
});
$('newer').addEventListener('click', () => {
  if (cursors.length > 1) cursors.pop();
  else cursors = [''];
  remember();
  poller.now();
});
$('newest').addEventListener('click', () => {
  cursors = [''];
  remember();
  poller.now();
});
