// The queue page: GET /stats every 5s. Cards count the stored jobs in
// each state; bars show the slots in use and the queue by priority; two
// charts, drawn here as SVG from the controller's own samples of its
// metrics (an hour of them), show the jobs waiting and running, and the
// jobs finished per minute. No Prometheus needed.
import { api, el, badge, absolute, clearBanner, poll, init, allStates } from '/ui/app.js';

const $ = (id) => document.getElementById(id);
const svgNS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// niceMax rounds a maximum up to 1, 2 or 5 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// chart draws series ({cls, label, points: [[t, v]...]}) into el, time
// on x, a shared y from 0.
function chart(box, series, unit) {
  const w = box.clientWidth || 600;
  const h = box.clientHeight || 220;
  const pad = { l: 44, r: 10, t: 10, b: 22 };
  box.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
  const all = series.flatMap((s) => s.points);
  if (all.length < 2) {
    box.replaceChildren(svg('text', { x: w / 2, y: h / 2, 'text-anchor': 'middle', class: 'axis' }, 'Collecting samples…'));
    return;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const top = niceMax(Math.max(...all.map((p) => p[1])));
  const x = (t) => pad.l + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    parts.push(svg('line', { class: 'grid', x1: pad.l, x2: w - pad.r, y1: y(top * f), y2: y(top * f) }));
    parts.push(svg('text', { class: 'axis', x: pad.l - 6, y: y(top * f) + 4, 'text-anchor': 'end' }, fmt(top * f) + unit));
  }
  const label = (t) => absolute(new Date(t).toISOString()).slice(11, 16);
  parts.push(svg('text', { class: 'axis', x: pad.l, y: h - 6 }, label(t0)));
  parts.push(svg('text', { class: 'axis', x: w - pad.r, y: h - 6, 'text-anchor': 'end' }, label(t1) + ' (now)'));
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1)).join(' ');
    parts.push(svg('path', { class: 'line ' + s.cls, d, 'data-series': s.label }, svg('title', {}, s.label)));
  }
  box.replaceChildren(...parts);
}

function fmt(v) {
  if (v >= 1000) return (Math.round(v / 100) / 10) + 'k';
  return String(Math.round(v * 10) / 10);
}

function bar(box, parts) {
  const total = parts.reduce((a, p) => a + p.n, 0);
  box.replaceChildren(...parts.filter((p) => p.n > 0).map((p) => el('span', { class: p.cls, title: p.label + ': ' + p.n })));
  // Widths through the CSSOM: the page allows no inline style attributes.
  const spans = [...box.children];
  parts.filter((p) => p.n > 0).forEach((p, i) => {
    spans[i].style.width = (100 * p.n / (total || 1)) + '%';
  });
}

function render(st) {
  const cards = [el('a', { class: 'card', href: '/ui/' }, el('div', { class: 'n' }, st.total.toLocaleString()), el('div', { class: 'what' }, 'jobs stored'))];
  for (const s of allStates) {
    cards.push(el('a', { class: 'card', href: '/ui/?status=' + s, 'data-state': s },
      el('div', { class: 'n' }, (st.jobs[s] || 0).toLocaleString()), el('div', { class: 'what' }, badge(s))));
  }
  $('cards').replaceChildren(...cards);

  const a = st.agents;
  $('slots').textContent = a.slots_used + ' of ' + a.slots + ' slots busy on ' + a.connected + ' agent' + (a.connected === 1 ? '' : 's') +
    (a.draining ? ' (' + a.draining + ' draining)' : '') + '; ' + a.slots_free + ' free';
  bar($('slots-bar'), [{ cls: 'p-mid', label: 'busy', n: a.slots_used }, { cls: 'p-low', label: 'idle', n: Math.max(a.slots - a.slots_used, 0) }]);
  const d = st.queue_depth;
  const queued = (d.high || 0) + (d.mid || 0) + (d.low || 0) + (d.other || 0);
  $('depth').textContent = queued ? 'high ' + (d.high || 0) + ', mid ' + (d.mid || 0) + ', low ' + (d.low || 0) + (d.other ? ', other ' + d.other : '') : 'Nothing queued.';
  bar($('depth-bar'), [{ cls: 'p-high', label: 'high', n: d.high || 0 }, { cls: 'p-mid', label: 'mid', n: d.mid || 0 },
    { cls: 'p-low', label: 'low', n: d.low || 0 }, { cls: 'p-other', label: 'other', n: d.other || 0 }]);

  const hist = st.history.map((s) => ({ ...s, t: Date.parse(s.time) }));
  chart($('chart-depth'), [
    { cls: 'c-queued', label: 'queued', points: hist.map((s) => [s.t, s.queued]) },
    { cls: 'c-waiting', label: 'waiting', points: hist.map((s) => [s.t, s.waiting]) },
    { cls: 'c-running', label: 'running', points: hist.map((s) => [s.t, s.running + s.dispatched]) },
    { cls: 'c-slots', label: 'slots', points: hist.map((s) => [s.t, s.slots]) },
  ], '');
  // Per minute between samples; a counter that went down (the
  // controller restarted) starts over.
  const rate = (key) => hist.slice(1).map((s, i) => {
    const p = hist[i];
    const dv = key(s) - key(p);
    const dt = (s.t - p.t) / 60000;
    return [s.t, dv >= 0 && dt > 0 ? dv / dt : 0];
  });
  chart($('chart-rate'), [
    { cls: 'c-completed', label: 'completed per minute', points: rate((s) => s.completed) },
    { cls: 'c-failed', label: 'failed, timed out or cancelled per minute', points: rate((s) => s.failed + s.timeout + s.cancelled) },
  ], '');
  const since = hist.length ? absolute(hist[0].time) : '';
  $('history-note').textContent = 'A sample every ' + st.interval + 's since ' + since + ' (the controller keeps an hour of them; they start over when it restarts).';
}

async function refresh() {
  const st = await api('GET', '/stats');
  clearBanner('update', 'auth');
  $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  render(st);
}

const poller = poll(refresh, 5000);
init('queue', () => poller.now());
