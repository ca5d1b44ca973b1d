// Shared code of the jobsuite dashboard pages: API calls, sign-in, DOM
// helpers, formatting. Plain ES module, no build step.
//
// Every value from the API reaches the page through textContent or an
// attribute set with setAttribute, never parsed as HTML: job names,
// commands and output are data, not markup.

const tokenKey = 'jobsuite.token';

// A sign-in link ('jobsuite dev' prints one) carries a token after '#',
// which the browser never sends: keep it for this tab and drop it from
// the address bar and history.
takeTokenFromLink();
window.addEventListener('hashchange', () => {
  // The link opened on a page already shown: sign in, and start over.
  if (takeTokenFromLink()) location.reload();
});

function takeTokenFromLink() {
  const m = /^#token=([A-Za-z0-9_~+/=.-]+)$/.exec(location.hash);
  if (!m) return false;
  setToken(m[1]);
  history.replaceState(null, '', location.pathname + location.search);
  return true;
}

// token is the API token the user pasted in this tab, or ''.
export function token() {
  try {
    return sessionStorage.getItem(tokenKey) || '';
  } catch {
    return '';
  }
}

function setToken(t) {
  try {
    if (t) sessionStorage.setItem(tokenKey, t);
    else sessionStorage.removeItem(tokenKey);
  } catch {
    // Storage disabled: the token lives until the page is left.
  }
}

// ApiError is an error answer of the controller.
export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || '';
  }
}

// api calls the controller's API at path and returns the decoded JSON
// answer. With a token it is sent as a bearer token; without one the
// browser's client certificate (if any) is what identifies the user.
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'cannot reach the controller (' + err.message + ')');
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const msg = data && data.error ? data.error : 'the controller answered ' + resp.status + ' ' + resp.statusText;
    const err = new ApiError(resp.status, msg, data && data.field);
    if (resp.status === 401) needSignIn(msg);
    throw err;
  }
  if (signedOut) signedIn();
  return data;
}

// apiPage is api for a paged list: the decoded JSON and the response
// header next that names the following page ('' on the last one).
export async function apiPage(path, next) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  let resp;
  try {
    resp = await fetch(path, { headers, credentials: 'same-origin', cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, 'cannot reach the controller (' + err.message + ')');
  }
  if (!resp.ok) {
    let data = null;
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
    const msg = data && data.error ? data.error : 'the controller answered ' + resp.status + ' ' + resp.statusText;
    if (resp.status === 401) needSignIn(msg);
    throw new ApiError(resp.status, msg, data && data.field);
  }
  const data = await resp.json();
  if (signedOut) signedIn();
  return { data, next: resp.headers.get(next) || '' };
}

// wsURL is the WebSocket address of an API path. A browser cannot set
// headers on a WebSocket, so the token goes in ?access_token=.
export function wsURL(path) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const t = token();
  if (t) u.searchParams.set('access_token', t);
  return u.toString();
}

// el builds an element: el('a', {href: '/x', class: 'c'}, 'text', child).
// Strings become text nodes; null and false children are skipped.
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// patchRows makes tbody show rows, each a <tr> with a data-key, changing
// only the cells that differ from what is shown: a refresh does not
// swallow a click on a button or a text selection in an unchanged cell.
// Rows without a data-key (a "nothing here" row) replace everything.
export function patchRows(tbody, rows) {
  if (rows.some((r) => !r.dataset.key)) {
    tbody.replaceChildren(...rows);
    return;
  }
  const shown = new Map();
  for (const r of [...tbody.children]) {
    if (r.dataset.key) shown.set(r.dataset.key, r);
    else r.remove();
  }
  let prev = null;
  for (const row of rows) {
    let cur = shown.get(row.dataset.key);
    shown.delete(row.dataset.key);
    if (!cur || cur.cells.length !== row.cells.length) {
      if (cur) cur.remove();
      cur = row;
    } else if (!cur.isEqualNode(row)) {
      for (const a of [...cur.attributes]) if (!row.hasAttribute(a.name)) cur.removeAttribute(a.name);
      for (const a of [...row.attributes]) cur.setAttribute(a.name, a.value);
      const want = [...row.cells];
      [...cur.cells].forEach((c, i) => {
        if (!c.isEqualNode(want[i])) c.replaceWith(want[i]);
      });
    }
    const at = prev ? prev.nextSibling : tbody.firstChild;
    if (cur !== at) tbody.insertBefore(cur, at);
    prev = cur;
  }
  for (const r of shown.values()) r.remove();
}

// Final job states: a job in one of them never changes again.
export const finalStates = ['completed', 'failed', 'timeout', 'cancelled'];
export const allStates = ['queued', 'waiting', 'blocked', 'dispatched', 'running', ...finalStates];

// badge shows a job or agent state.
export function badge(state) {
  return el('span', { class: 'badge s-' + String(state).replace(/[^a-z_]/g, '') }, state || '-');
}

function parseTime(s) {
  if (!s) return null;
  const d = new Date(s);
  if (isNaN(d) || d.getUTCFullYear() < 2) return null; // Go's zero time
  return d;
}

// ago shows how long ago an RFC 3339 time was: "3s ago", "5m ago".
export function ago(s) {
  const d = parseTime(s);
  if (!d) return '-';
  let secs = (Date.now() - d.getTime()) / 1000;
  const future = secs < 0;
  secs = Math.abs(secs);
  if (!future && secs < 1) return 'just now';
  const text = secs < 60 ? Math.floor(secs) + 's'
    : secs < 3600 ? Math.floor(secs / 60) + 'm'
      : secs < 48 * 3600 ? Math.floor(secs / 3600) + 'h'
        : Math.floor(secs / 86400) + 'd';
  return future ? 'in ' + text : text + ' ago';
}

// absolute shows an RFC 3339 time as local date and time,
// 2025-07-01 14:03:12, with the time zone in the tooltip of when().
export function absolute(s) {
  const d = parseTime(s);
  if (!d) return '-';
  const p = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
}

// zone is the browser's time zone, for tooltips.
const zone = (() => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
  } catch {
    return 'local time';
  }
})();

// when is a <time> element: relative text, the absolute local time (and
// its zone) as a tooltip.
export function when(s) {
  const d = parseTime(s);
  if (!d) return '-';
  return el('time', { datetime: d.toISOString(), title: absolute(s) + ' ' + zone }, ago(s));
}

// whenFull is a <time> element with both: "2025-07-01 14:03:12 (3m ago)".
export function whenFull(s) {
  const d = parseTime(s);
  if (!d) return '-';
  return el('time', { datetime: d.toISOString(), title: zone }, absolute(s) + ' (' + ago(s) + ')');
}

// seconds shows a duration: 850ms, 12.3s, 4m05s, 2h10m.
export function seconds(v) {
  if (v === null || v === undefined || isNaN(v)) return '-';
  if (v < 1) return Math.round(v * 1000) + 'ms';
  if (v < 60) return (Math.round(v * 10) / 10) + 's';
  const m = Math.floor(v / 60);
  if (m < 60) return m + 'm' + String(Math.floor(v % 60)).padStart(2, '0') + 's';
  return Math.floor(m / 60) + 'h' + String(m % 60).padStart(2, '0') + 'm';
}

// bytes shows a byte count in binary units.
export function bytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

// labels shows k=v pairs sorted by key.
export function labels(m) {
  const keys = Object.keys(m || {}).sort();
  if (!keys.length) return '-';
  return keys.map((k) => k + '=' + m[k]).join(', ');
}

// banner shows an error above the page until it is dismissed or
// cleared. kind says what cleared it: "update" (a refresh failed; the
// next good refresh clears it), "auth" (not signed in), "action" (a
// button's call failed; the next good call of a button clears it).
export function banner(msg, kind = 'update') {
  const b = document.getElementById('banner');
  if (!b) return;
  b.dataset.kind = kind;
  b.replaceChildren(el('span', {}, msg),
    el('button', { type: 'button', class: 'link close', 'aria-label': 'Dismiss', onclick: () => { b.hidden = true; } }, '×'));
  b.hidden = false;
}

// clearBanner hides the banner if it shows an error of one of kinds.
export function clearBanner(...kinds) {
  const b = document.getElementById('banner');
  if (b && !b.hidden && kinds.includes(b.dataset.kind)) b.hidden = true;
}

// showError reports a failed call in the banner.
export function showError(what, err, kind = 'update') {
  banner(what + ': ' + (err && err.message ? err.message : String(err)), kind);
}

// poll calls fn now and then every ms milliseconds after it settles,
// never twice at once (a call asked for meanwhile runs right after), and
// not while the tab is hidden. It returns a
// function that stops it and one that runs fn at once.
export function poll(fn, ms) {
  let timer = null;
  let running = false;
  let again = false; // asked for while running: run once more at once
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = true;
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) showError('Update failed', err);
    } finally {
      running = false;
      if (again && !stopped) {
        again = false;
        run();
      } else if (!stopped && !document.hidden) {
        timer = setTimeout(run, ms);
      }
    }
  };
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) run();
  });
  run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    now: run,
  };
}

let onSignIn = () => location.reload();

// signedOut is set while the controller refuses the page's credentials:
// the page's data is hidden (it may belong to whoever signed out) until
// a call succeeds again.
let signedOut = false;

// needSignIn hides the page's data and opens the sign-in form after a
// 401 answer.
function needSignIn(msg) {
  signedOut = true;
  document.body.classList.add('signed-out');
  renderAuth();
  banner('Not signed in: ' + msg + '. Paste an API token in the field above, or open this page in a browser that presents a client certificate.', 'auth');
  const form = document.getElementById('signin');
  if (form && form.hidden) {
    form.hidden = false;
    form.querySelector('input').focus();
  }
}

// signedIn shows the page's data again once a call succeeded.
function signedIn() {
  signedOut = false;
  document.body.classList.remove('signed-out');
  clearBanner('auth');
  loadWho();
}

// who is the identity the controller admitted the page with (GET
// /whoami), or null while not known.
let who = null;
let whoLoading = null;
const whoListeners = [];

// onWho calls fn with the identity whenever it is (re)learned: pages
// hide what a viewer may not do.
export function onWho(fn) {
  whoListeners.push(fn);
  if (who) fn(who);
}

// isOperator reports whether the signed-in identity may change things
// (unknown counts as yes: the controller has the last word).
export function isOperator() {
  return !who || who.role === 'operator';
}

function loadWho() {
  if (whoLoading) return whoLoading;
  whoLoading = (async () => {
    try {
      const headers = { Accept: 'application/json' };
      const t = token();
      if (t) headers.Authorization = 'Bearer ' + t;
      const resp = await fetch('/whoami', { headers, credentials: 'same-origin', cache: 'no-store' });
      who = resp.ok ? await resp.json() : null;
    } catch {
      who = null;
    } finally {
      whoLoading = null;
    }
    renderAuth();
    if (who) whoListeners.forEach((fn) => fn(who));
  })();
  return whoLoading;
}

let renderAuth = () => {};

// init marks the page's navigation link and builds the sign-in form.
// signedIn runs after the token changes (default: reload the page).
export function init(page, signedIn) {
  if (signedIn) onSignIn = signedIn;
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    if (a.dataset.nav === page) a.setAttribute('aria-current', 'page');
  }
  const auth = document.getElementById('auth');
  if (!auth) return;
  const input = el('input', {
    type: 'password', id: 'token', name: 'token', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'API token', 'aria-label': 'API token',
  });
  const form = el('form', { id: 'signin', class: 'signin', hidden: true },
    input,
    el('button', { type: 'submit' }, 'Use token'),
    el('p', { class: 'hint' },
      'The token is kept in this browser tab only (sessionStorage) and sent as a bearer token. ',
      'Without one, the client certificate your browser presents is used.'));
  const state = el('span', { class: 'auth-state' });
  const whoEl = el('span', { class: 'auth-who' });
  const toggle = el('button', { type: 'button', class: 'link' });
  const render = () => {
    const t = token();
    if (signedOut) state.textContent = 'not signed in';
    else state.textContent = t ? 'signed in with a token' : 'client certificate';
    whoEl.textContent = who && !signedOut ? who.name + ' · ' + who.role : '';
    whoEl.title = who ? 'The controller takes this page for ' + who.name + ', role ' + who.role + ', by its ' + who.via : '';
    toggle.textContent = t ? 'Sign out' : 'Use a token';
  };
  renderAuth = render;
  toggle.addEventListener('click', () => {
    if (token()) {
      // Forget the token and everything shown with it.
      setToken('');
      who = null;
      document.body.classList.add('signed-out');
      location.reload();
      return;
    }
    form.hidden = !form.hidden;
    if (!form.hidden) input.focus();
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    input.value = '';
    if (!t) return;
    setToken(t);
    form.hidden = true;
    clearBanner('auth');
    who = null;
    render();
    loadWho();
    onSignIn();
  });
  render();
  auth.append(whoEl, state, toggle);
  auth.after(form);
  loadWho();
}
