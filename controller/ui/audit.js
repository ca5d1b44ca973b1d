// The audit page: GET /audit, 50 entries a page (X-Next-Before names the
// next, older page), refreshed every 5s.
import { apiPage, el, whenFull, clearBanner, poll, init, patchRows, ApiError } from '/ui/app.js';

const $ = (id) => document.getElementById(id);
const limit = 50;
let befores = ['']; // the before of each page walked; the last is shown
let next = '';

// target links "job 12" and "agent worker-1" to their pages.
function target(t) {
  let m = /^job (\d+)$/.exec(t || '');
  if (m) return el('a', { href: '/ui/job?id=' + m[1] }, t);
  m = /^agent ([A-Za-z0-9._-]+)$/.exec(t || '');
  if (m) return el('a', { href: '/ui/agent?name=' + encodeURIComponent(m[1]) }, t);
  return t || '-';
}

function row(e) {
  return el('tr', { 'data-key': e.id, 'data-action': e.action },
    el('td', {}, whenFull(e.time)),
    el('td', {}, e.who || '-'),
    el('td', { class: 'hide-narrow' }, e.role || '-'),
    el('td', { class: 'hide-narrow' }, e.via || '-'),
    el('td', {}, e.action),
    el('td', {}, target(e.target)),
    el('td', { class: 'wrap' }, e.detail || ''),
    el('td', { class: 'hide-narrow' }, e.remote || ''));
}

async function refresh() {
  const q = new URLSearchParams({ limit: String(limit) });
  const before = befores[befores.length - 1];
  if (before) q.set('before', before);
  let page;
  try {
    page = await apiPage('/audit?' + q, 'X-Next-Before');
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      patchRows($('audit').tBodies[0], [el('tr', {}, el('td', { colspan: 8, class: 'empty' }, 'The audit log needs an operator certificate or token: ' + err.message))]);
      return;
    }
    throw err;
  }
  clearBanner('update', 'auth');
  next = page.next;
  $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  patchRows($('audit').tBodies[0], page.data.length ? page.data.map(row) : [el('tr', {}, el('td', { colspan: 8, class: 'empty' }, 'No entries.'))]);
  $('older').disabled = !next;
  $('newer').disabled = $('newest').disabled = befores.length === 1;
  $('page-info').textContent = page.data.length ? 'entries ' + ((befores.length - 1) * limit + 1) + '–' + ((befores.length - 1) * limit + page.data.length) : '';
}

const poller = poll(refresh, 5000);
init('audit', () => poller.now());
$('older').addEventListener('click', () => {
  if (!next) return;
  befores.push(next);
  poller.now();
});
$('newer').addEventListener('click', () => {
  if (befores.length > 1) befores.pop();
  poller.now();
});
$('newest').addEventListener('click', () => {
  befores = [''];
  poller.now();
});
