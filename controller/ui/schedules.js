// The schedules page: GET /schedules every 5s; an operator may pause,
// resume, run now or delete each schedule.
import { api, el, badge, when, clearBanner, showError, poll, init, patchRows, isOperator, onWho, ApiError } from '/ui/app.js';

const $ = (id) => document.getElementById(id);
let poller;

async function act(what, method, path) {
  try {
    await api(method, path);
    clearBanner('action');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showError(what + ' failed', err, 'action');
  }
  poller.now();
}

function buttons(s) {
  if (!isOperator()) return '';
  const base = '/schedules/' + encodeURIComponent(s.name);
  return el('span', { class: 'actions' },
    s.paused
      ? el('button', { type: 'button', class: 'link', onclick: () => act('Resume', 'POST', base + '/resume') }, 'Resume')
      : el('button', { type: 'button', class: 'link', onclick: () => act('Pause', 'POST', base + '/pause') }, 'Pause'),
    ' ',
    el('button', { type: 'button', class: 'link', onclick: () => act('Run now', 'POST', base + '/run') }, 'Run now'),
    ' ',
    el('button', {
      type: 'button', class: 'link danger', onclick: () => {
        if (confirm('Delete schedule ' + s.name + '? It creates no more jobs; the jobs it created stay.')) act('Delete', 'DELETE', base);
      },
    }, 'Delete'));
}

function row(s) {
  const last = s.last_job
    ? el('span', {}, el('a', { href: '/ui/job?id=' + encodeURIComponent(s.last_job) }, String(s.last_job)), ' ', s.last_status ? badge(s.last_status) : '')
    : '-';
  const cmd = s.job && s.job.command ? s.job.command : '';
  return el('tr', { 'data-key': s.name, id: s.name },
    el('td', {}, el('a', { href: '/ui/?q=' + encodeURIComponent(s.name) }, s.name)),
    el('td', {}, el('code', {}, s.cron)),
    el('td', { class: 'hide-narrow' }, s.tz),
    el('td', {}, s.paused ? badge('paused') : when(s.next)),
    el('td', {}, last),
    el('td', { class: 'hide-narrow' }, s.overlap),
    el('td', { class: 'hide-narrow' }, s.catch_up),
    el('td', {}, String(s.fired)),
    el('td', {}, String(s.skipped)),
    el('td', { class: 'wrap' }, el('code', {}, cmd)),
    el('td', {}, buttons(s)));
}

async function refresh() {
  const list = await api('GET', '/schedules');
  clearBanner('update', 'auth');
  $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  patchRows($('schedules').tBodies[0], list && list.length ? list.map(row)
    : [el('tr', {}, el('td', { colspan: 11, class: 'empty' }, 'No schedules. Create one with jobsuite schedule create -name NAME -cron SPEC -- COMMAND.'))]);
}

poller = poll(refresh, 5000);
init('schedules', () => poller.now());
onWho(() => poller.now());
