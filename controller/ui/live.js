// The live state of a running job, as GET /jobs/:id?live=1 answers it
// from the job's agent: process, elapsed time, CPU, memory, output so far
// and the last line. Shown on the job page and the agent page.
import { el, seconds, bytes } from '/ui/app.js';

// visibleLine is what a terminal shows of a line: no escape sequences,
// and after a carriage return (a progress bar) the last text written.
export function visibleLine(s) {
  const text = String(s || '')
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, '')
    .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)?/g, '')
    .replace(/\x1b[@-_]?/g, '');
  const parts = text.split('\r').filter((p) => p.trim() !== '');
  return (parts.length ? parts[parts.length - 1] : '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
}

// cpu shows user and system CPU seconds.
export function cpu(l) {
  return seconds(l.user_cpu || 0) + ' user, ' + seconds(l.system_cpu || 0) + ' sys';
}

// liveBox shows a live part in a box; stale parts say why.
export function liveBox(l) {
  if (!l) return null;
  if (l.stale) {
    return el('div', { class: 'livebox stale' }, el('strong', {}, 'Live: '), 'not available (' + (l.error || 'no answer from the agent') + ')');
  }
  const dl = el('dl', { class: 'fields' });
  const add = (k, v) => dl.append(el('dt', {}, k), el('dd', {}, v));
  add('Agent', 'attempt ' + l.attempt + ' on ' + l.agent);
  add('PID', l.pid ? String(l.pid) : '- (not started)');
  add('Elapsed', seconds(l.elapsed));
  add('CPU', cpu(l));
  add('Memory (RSS)', bytes(l.rss));
  add('Processes', String(l.processes || 0));
  add('Output so far', bytes(l.output_bytes));
  add('Last line', el('span', { class: 'last-line' }, visibleLine(l.last_line) || '-'));
  return el('div', { class: 'livebox', id: 'live-state' }, el('h2', {}, 'Live'), dl);
}
