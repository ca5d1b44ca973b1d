// The jobs page: GET /jobs (newest 100, optionally of one state),
// refreshed every 2s.
import { api, el, badge, when, seconds, clearBanner, poll, init, patchRows } from '/ui/app.js';

const select = document.getElementById('state');
const tbody = document.querySelector('#jobs tbody');
const updated = document.getElementById('updated');
const limit = 100;

select.value = new URLSearchParams(location.search).get('status') || '';
if (select.selectedIndex < 0) select.value = '';

function row(j) {
  const href = '/ui/job?id=' + encodeURIComponent(j.job_id);
  const attempts = j.attempts || [];
  const agent = attempts.length ? attempts[attempts.length - 1].agent : '';
  return el('tr', { 'data-key': j.job_id, 'data-job': j.job_id },
    el('td', { class: 'num' }, el('a', { href }, String(j.job_id))),
    el('td', { class: 'name' }, el('a', { href, title: j.params ? j.command + ' ' + j.params : j.command }, j.name || '-')),
    el('td', {}, badge(j.status), j.cancel_requested && j.status !== 'cancelled' ? el('span', { class: 'hint' }, ' cancelling') : null),
    el('td', {}, String(j.priority)),
    el('td', { class: 'num' }, j.exit_code === null || j.exit_code === undefined ? '-' : String(j.exit_code)),
    el('td', {}, agent || '-'),
    el('td', {}, when(j.created_at)),
    el('td', { class: 'num' }, j.duration !== undefined ? seconds(j.duration) : '-'));
}

async function refresh() {
  const q = new URLSearchParams({ limit: String(limit) });
  if (select.value) q.set('status', select.value);
  const jobs = await api('GET', '/jobs?' + q);
  clearBanner('update', 'auth');
  updated.textContent = 'updated ' + new Date().toLocaleTimeString();
  patchRows(tbody, jobs.length ? jobs.map(row)
    : [el('tr', {}, el('td', { colspan: 8, class: 'empty' }, select.value ? 'No ' + select.value + ' jobs.' : 'No jobs yet. Submit one with jobsuite submit.'))]);
  document.getElementById('more').hidden = jobs.length < limit;
}

const poller = poll(refresh, 2000);
init('jobs', () => poller.now());

select.addEventListener('change', () => {
  const u = new URL(location.href);
  if (select.value) u.searchParams.set('status', select.value);
  else u.searchParams.delete('status');
  history.replaceState(null, '', u);
  poller.now();
});
