// One job: its fields, attempts and events (GET /jobs/:id and
// /jobs/:id/events, refreshed every 2s until it ends), its live log (the
// log WebSocket in format=json, with attempt markers) and a Cancel button
// (DELETE /jobs/:id).
import {
  api, wsURL, el, badge, when, whenFull, seconds, bytes, labels, banner, clearBanner, showError, poll, init, patchRows, finalStates, token, ApiError,
  isOperator, onWho,
} from '/ui/app.js';
import { LogView } from '/ui/log.js';
import { liveBox } from '/ui/live.js';
import { attachLogSearch } from '/ui/logsearch.js';

const raw = new URLSearchParams(location.search).get('id') || '';
const id = /^[1-9][0-9]{0,19}$/.test(raw) ? raw : '';

const $ = (sel) => document.getElementById(sel);
let job = null;
let ended = false; // the log's end message arrived
let gone = false; // the controller has no such job: stop asking
let poller = null;

init('jobs', () => {
  if (poller) poller.now();
  if (!ended) connect();
});

function field(dl, name, value) {
  if (value === null || value === undefined || value === '' || value === '-') return;
  dl.append(el('dt', {}, name), el('dd', {}, value));
}

function renderJob(j) {
  document.title = 'Job ' + j.job_id + ' · ' + (j.name || '') + ' · jobsuite';
  $('job-title').textContent = 'Job ' + j.job_id + ' — ' + j.name;
  const status = $('job-status');
  status.textContent = j.status;
  status.className = 'badge s-' + j.status;
  $('job-reason').textContent = j.reason || (j.cancel_requested && j.status !== 'cancelled' ? 'cancel requested' : '');

  const cancel = $('cancel');
  cancel.hidden = finalStates.includes(j.status) || !j.cancellable || !isOperator();
  $('again').hidden = !isOperator();
  cancel.disabled = !!j.cancel_requested;
  cancel.textContent = j.cancel_requested ? 'Cancelling…' : 'Cancel job';

  const dl = el('dl', { class: 'fields' });
  field(dl, 'Command', el('code', {}, j.params ? j.command + ' ' + j.params : j.command));
  field(dl, 'Priority', String(j.priority) + (typeof j.priority === 'string' ? ' (' + j.priority_value + ')' : ''));
  field(dl, 'Timeout', j.timeout ? seconds(j.timeout) : 'none');
  field(dl, 'Retries', j.max_retries ? String(j.max_retries) : '0');
  field(dl, 'Labels', Object.keys(j.labels || {}).length ? labels(j.labels) : '');
  if (j.after && j.after.length) {
    const deps = el('span', {});
    j.after.forEach((id, i) => {
      if (i) deps.append(', ');
      deps.append(el('a', { href: '/ui/job?id=' + id }, String(id)));
    });
    deps.append(j.after_any ? ' (once all ended, whatever their outcome)' : ' (once all completed)');
    field(dl, 'Runs after', deps);
  }
  if (j.parent) {
    field(dl, 'Fan-out', el('span', {}, 'child of job ', el('a', { href: '/ui/job?id=' + j.parent }, String(j.parent)),
      ', pinned to agent ', el('a', { href: '/ui/agent?name=' + encodeURIComponent(j.agent) }, j.agent)));
  }
  if (j.fanout) {
    const f = j.fanout;
    let how = (Object.keys(f.labels || {}).length ? 'agents matching ' + labels(f.labels) : 'every agent') +
      (f.include_disconnected ? ', disconnected ones included' : '') + '; ' +
      (f.batch ? f.batch + ' at a time' : 'all at once') +
      (f.max_failures !== undefined && f.max_failures !== null ? ', stops at ' + f.max_failures + ' failures' : '') +
      (f.stopped ? ' (stopped)' : '');
    field(dl, 'Fan-out', f.children + ' hosts: ' + how);
  }
  if (j.schedule) field(dl, 'Schedule', el('a', { href: '/ui/schedules#' + encodeURIComponent(j.schedule) }, j.schedule));
  if (j.env && Object.keys(j.env).length) {
    field(dl, 'Environment', el('details', {}, el('summary', {}, Object.keys(j.env).length + ' variables'),
      el('code', { class: 'block' }, Object.keys(j.env).sort().map((k) => k + '=' + j.env[k]).join('\n'))));
  }
  field(dl, 'Directory', j.dir || '');
  field(dl, 'Idempotency key', j.idempotency_key || '');
  field(dl, 'Created', whenFull(j.created_at));
  if (j.queued_at) field(dl, 'Queued', whenFull(j.queued_at));
  if (j.retry_at) field(dl, 'Retry at', whenFull(j.retry_at));
  if (j.started_at) field(dl, 'Started', whenFull(j.started_at));
  if (j.finished_at) field(dl, 'Finished', whenFull(j.finished_at));
  if (j.duration !== undefined) field(dl, 'Duration', seconds(j.duration));
  if (j.exit_code !== null && j.exit_code !== undefined) field(dl, 'Exit code', String(j.exit_code));
  if (j.result && j.result.signal) field(dl, 'Signal', j.result.signal);
  field(dl, 'Output', j.logs ? bytes(j.log_bytes) + (finalStates.includes(j.status) ? '' : ' so far') + (j.output === 'split' ? ', stdout and stderr apart' : '') : 'not captured (logs: false)');
  field(dl, 'Terminal', j.tty === true ? 'yes' : j.tty === false ? 'no' : '');
  $('fields').replaceChildren(dl);
  renderLive(j);
  renderHosts(j);

  const rows = (j.attempts || []).map((a) => el('tr', { 'data-key': a.number },
    el('td', {}, '#' + a.number),
    el('td', {}, a.agent ? el('a', { href: '/ui/agent?name=' + encodeURIComponent(a.agent) }, a.agent) : '-'),
    el('td', {}, when(a.dispatched_at)),
    el('td', {}, a.started_at ? when(a.started_at) : '-'),
    el('td', {}, a.outcome ? badge(a.outcome) : badge(finalStates.includes(j.status) ? '-' : 'running')),
    el('td', { class: 'num' }, a.exit_code === null || a.exit_code === undefined ? '-' : String(a.exit_code)),
    el('td', {}, a.signal || '-'),
    el('td', { class: 'num' }, a.duration ? seconds(a.duration) : '-'),
    el('td', { class: 'num' }, a.user_cpu || a.system_cpu ? seconds(a.user_cpu || 0) + ' / ' + seconds(a.system_cpu || 0) : '-'),
    el('td', { class: 'num' }, a.max_rss ? bytes(a.max_rss) : '-'),
    el('td', { class: 'wrap' }, a.error || '')));
  patchRows($('attempts'), rows.length ? rows : [el('tr', {}, el('td', { colspan: 11, class: 'empty' }, 'No attempts yet.'))]);
}

// renderHosts fills a fan-out parent's per-host table: each child's
// state, exit code and a link to its page and log.
function renderHosts(j) {
  $('hosts-section').hidden = !j.fanout;
  if (!j.fanout) return;
  const rows = (j.children || []).map((c) => el('tr', { 'data-key': c.job_id },
    el('td', {}, el('a', { href: '/ui/agent?name=' + encodeURIComponent(c.agent) }, c.agent)),
    el('td', { class: 'num' }, el('a', { href: '/ui/job?id=' + c.job_id }, String(c.job_id))),
    el('td', {}, badge(c.status)),
    el('td', { class: 'num' }, c.exit_code === null || c.exit_code === undefined ? '-' : String(c.exit_code)),
    el('td', { class: 'wrap' }, c.reason || ''),
    el('td', {}, el('a', { href: '/ui/job?id=' + c.job_id + '#log' }, 'log'))));
  patchRows($('hosts'), rows.length ? rows : [el('tr', {}, el('td', { colspan: 6, class: 'empty' }, 'No children.'))]);
}

// The live state shown, and how many answers in a row were stale: an
// agent slow to answer once keeps its last state on screen (rather than
// the box jumping between the two), twice shows why.
let shownLive = null;
let staleRun = 0;

function renderLive(j) {
  let l = j.live;
  if (finalStates.includes(j.status)) {
    l = null;
  } else if (l && l.stale && shownLive && !shownLive.stale && ++staleRun < 3) {
    l = shownLive;
  } else if (l && !l.stale) {
    staleRun = 0;
  }
  if (!l && j.live === undefined && shownLive && !finalStates.includes(j.status)) l = shownLive; // a refresh without ?live=1
  shownLive = l;
  const box = liveBox(l);
  $('live').hidden = !box;
  $('live').replaceChildren(...(box ? [box] : []));
}

function renderEvents(evs) {
  const rows = (evs || []).map((e) => el('tr', { 'data-key': e.seq },
    el('td', { class: 'num' }, String(e.seq)),
    el('td', {}, when(e.time)),
    el('td', {}, e.type),
    el('td', {}, badge(e.state)),
    el('td', { class: 'num' }, e.attempt ? '#' + e.attempt : ''),
    el('td', {}, e.agent || ''),
    el('td', { class: 'wrap' }, e.message || '')));
  patchRows($('events'), rows.length ? rows : [el('tr', {}, el('td', { colspan: 7, class: 'empty' }, 'No events.'))]);
}

async function refresh() {
  if (gone) return;
  // While the job runs, ask its agent for the live state too.
  const live = job && (job.status === 'running' || job.status === 'dispatched') ? '?live=1&wait=1s' : '';
  let j, evs;
  try {
    [j, evs] = await Promise.all([api('GET', '/jobs/' + id + live), api('GET', '/jobs/' + id + '/events')]);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      noSuchJob();
      return;
    }
    throw err;
  }
  job = j;
  clearBanner('update', 'auth');
  renderJob(j);
  renderEvents(evs);
  if (finalStates.includes(j.status) && ended) poller.stop();
}

// The live log.
const view = new LogView($('log'), () => {
  $('log-trimmed').hidden = false;
});
let socket = null;
let retry = 0;

function logState(text, cls) {
  const s = $('log-state');
  s.textContent = text;
  s.className = 'log-state ' + (cls || '');
}

// openTimeout bounds a WebSocket handshake (ms).
const openTimeout = 10000;

function connect() {
  if (gone) return;
  if (socket) socket.close();
  const q = new URLSearchParams({ format: 'json', attempts: '1' });
  if (view.offset) q.set('offset', String(view.offset));
  const ws = new WebSocket(wsURL('/ws/jobs/' + id + '/logs?' + q));
  socket = ws;
  logState(view.offset ? 'reconnecting…' : 'connecting…');
  // A handshake that never completes (a proxy or network that swallows
  // it) would leave the log "connecting…" for good: give up on it after
  // openTimeout; onclose then retries as for a dropped connection.
  const opening = setTimeout(() => {
    if (ws.readyState === WebSocket.CONNECTING) ws.close();
  }, openTimeout);
  ws.onopen = () => {
    clearTimeout(opening);
    logState('live', 'live');
  };
  ws.onmessage = (ev) => {
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return;
    }
    retry = 0;
    if (m.type === 'output') {
      view.write(m);
    } else if (m.type === 'attempt') {
      view.marker(m);
    } else if (m.type === 'end') {
      ended = true;
      view.end();
      let text = 'ended: ' + m.status;
      if (m.exit_code !== undefined && m.exit_code !== null) text += ' (exit code ' + m.exit_code + ')';
      if (m.signal) text += ', ' + m.signal;
      logState(text, 's-' + m.status);
      if (!view.offset) $('log-empty').hidden = false;
      if (poller) poller.now();
    }
  };
  ws.onclose = () => {
    clearTimeout(opening);
    if (socket !== ws || ended || gone) return;
    socket = null;
    // Dropped before the end (controller restart, network): resume from
    // the last byte shown, backing off up to 10s.
    retry = Math.min(retry + 1, 5);
    const wait = Math.min(10000, 500 * 2 ** retry);
    logState('disconnected; retrying in ' + Math.round(wait / 1000) + 's', 'warn');
    setTimeout(() => {
      if (!ended && !socket) connect();
    }, wait);
  };
}

// noSuchJob stops asking for a job the controller does not have.
function noSuchJob() {
  gone = true;
  if (poller) poller.stop();
  if (socket) socket.close();
  logState('no such job', 'warn');
  $('job-status').textContent = 'not found';
  banner('No job ' + id + ': it never existed, or it finished longer ago than the controller keeps jobs (retain_for, retain_jobs). The jobs page lists those it has.', 'fatal');
}

// runAgain queues a copy of the job and opens it.
async function runAgain() {
  if (!job) return;
  const b = $('again');
  b.disabled = true;
  try {
    const copy = await api('POST', '/jobs/resubmit', { job_id: job.job_id });
    location.assign('/ui/job?id=' + encodeURIComponent(copy.job_id));
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showError('Run again failed', err, 'action');
    b.disabled = false;
  }
}

async function cancelJob() {
  if (!job) return;
  if (!confirm('Cancel job ' + job.job_id + ' (' + job.name + ')?')) return;
  const b = $('cancel');
  b.disabled = true;
  try {
    await api('DELETE', '/jobs/' + id);
    clearBanner('action');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showError('Cancel failed', err, 'action');
    b.disabled = false;
  }
  poller.now();
}

async function downloadLog() {
  // A plain link would not carry the token: fetch the text, save a copy.
  try {
    const resp = await fetch('/jobs/' + id + '/logs', {
      headers: token() ? { Authorization: 'Bearer ' + token() } : {}, credentials: 'same-origin', cache: 'no-store',
    });
    if (!resp.ok) throw new ApiError(resp.status, 'the controller answered ' + resp.status + ' ' + resp.statusText);
    const url = URL.createObjectURL(new Blob([await resp.arrayBuffer()], { type: 'text/plain' }));
    const a = el('a', { href: url, download: 'job-' + id + '.log' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    showError('Download failed', err, 'action');
  }
}

if (!id) {
  banner('No job: open this page as /ui/job?id=<job id>, or pick a job on the jobs page.', 'fatal');
} else {
  $('cancel').addEventListener('click', cancelJob);
  $('again').addEventListener('click', runAgain);
  onWho(() => {
    if (job) renderJob(job);
  });
  attachLogSearch($('log'), $('log-search'), $('log-matches'), $('log-prev'), $('log-next'));
  $('download').addEventListener('click', downloadLog);
  const follow = $('follow');
  follow.addEventListener('click', () => view.scrollToEnd());
  const stamps = $('timestamps');
  stamps.addEventListener('click', () => {
    const on = $('log').classList.toggle('show-ts');
    stamps.setAttribute('aria-pressed', String(on));
  });
  $('log').addEventListener('stick', (ev) => {
    follow.hidden = ev.detail;
  });
  poller = poll(refresh, 2000);
  connect();
}
