// The live log of a job: decodes the WebSocket's base64 output, renders
// ANSI colours (SGR) as classes on text spans, marks where each attempt
// of a retried job begins and when each line arrived, and keeps the view
// at the bottom unless the user scrolled up.

// Ansi turns terminal text into [text, className] pieces. It keeps the
// colour state and an escape sequence cut at the end of a chunk for the
// next one. Supported: SGR 0 (reset), 1 bold, 2 faint, 3 italic,
// 4 underline, 22–24 (their ends), 30–37 and 90–97 foreground, 39,
// 40–47 and 100–107 background, 49, and 38;5;n / 48;5;n for n < 16.
// Other escape sequences (cursor movement, erase, OSC titles and links)
// are dropped; a lone carriage return starts a new line.
export class Ansi {
  constructor() {
    this.reset();
    this.carry = '';
  }

  reset() {
    this.fg = -1;
    this.bg = -1;
    this.bold = false;
    this.faint = false;
    this.italic = false;
    this.underline = false;
  }

  className() {
    const c = [];
    if (this.fg >= 0) c.push('a-fg' + this.fg);
    if (this.bg >= 0) c.push('a-bg' + this.bg);
    if (this.bold) c.push('a-b');
    if (this.faint) c.push('a-f');
    if (this.italic) c.push('a-i');
    if (this.underline) c.push('a-u');
    return c.join(' ');
  }

  sgr(params) {
    const a = params === '' ? [0] : params.split(/[;:]/).map((x) => parseInt(x, 10) || 0);
    for (let k = 0; k < a.length; k++) {
      const n = a[k];
      if (n === 0) this.reset();
      else if (n === 1) this.bold = true;
      else if (n === 2) this.faint = true;
      else if (n === 3) this.italic = true;
      else if (n === 4) this.underline = true;
      else if (n === 22) this.bold = this.faint = false;
      else if (n === 23) this.italic = false;
      else if (n === 24) this.underline = false;
      else if (n >= 30 && n <= 37) this.fg = n - 30;
      else if (n >= 90 && n <= 97) this.fg = n - 90 + 8;
      else if (n === 39) this.fg = -1;
      else if (n >= 40 && n <= 47) this.bg = n - 40;
      else if (n >= 100 && n <= 107) this.bg = n - 100 + 8;
      else if (n === 49) this.bg = -1;
      else if (n === 38 || n === 48) {
        // 38;5;n (256 colours: the first 16 are shown) or 38;2;r;g;b (skipped).
        let c = -1;
        if (a[k + 1] === 5) {
          c = a[k + 2] < 16 ? a[k + 2] : -1;
          k += 2;
        } else if (a[k + 1] === 2) {
          k += 4;
        }
        if (n === 38) this.fg = c;
        else this.bg = c;
      }
    }
  }

  // feed returns the pieces of text, each with the class of its style.
  feed(text) {
    text = this.carry + text;
    this.carry = '';
    const out = [];
    let start = 0;
    let i = 0;
    const push = (end) => {
      if (end > start) out.push([text.slice(start, end), this.className()]);
    };
    const hold = (from) => {
      // An escape sequence continues in the next chunk; one that never
      // ends is dropped rather than held forever.
      if (text.length - from < 256) this.carry = text.slice(from);
      return out;
    };
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x1b) {
        push(i);
        if (i + 1 >= text.length) return hold(i);
        const next = text[i + 1];
        if (next === '[') {
          let j = i + 2;
          while (j < text.length && text.charCodeAt(j) >= 0x20 && text.charCodeAt(j) <= 0x3f) j++;
          if (j >= text.length) return hold(i);
          const f = text.charCodeAt(j);
          if (f >= 0x40 && f <= 0x7e) {
            if (text[j] === 'm') this.sgr(text.slice(i + 2, j));
            i = j + 1;
          } else {
            i = j; // malformed: drop what was read
          }
        } else if (next === ']' || next === 'P' || next === '_' || next === '^') {
          // OSC, DCS, APC, PM: up to BEL or ST (ESC \).
          let j = i + 2;
          while (j < text.length && text.charCodeAt(j) !== 0x07 && !(text.charCodeAt(j) === 0x1b && text[j + 1] === '\\')) j++;
          if (j >= text.length || (text.charCodeAt(j) === 0x1b && j + 1 >= text.length)) return hold(i);
          i = text.charCodeAt(j) === 0x07 ? j + 1 : j + 2;
        } else {
          i += 2; // a two-character escape
        }
        start = i;
        continue;
      }
      if (c === 0x0d) {
        push(i);
        if (i + 1 >= text.length) return hold(i);
        if (text[i + 1] !== '\n') out.push(['\n', this.className()]);
        i++;
        start = i;
        continue;
      }
      if (c < 0x20 && c !== 0x0a && c !== 0x09) {
        push(i); // BEL, backspace and other controls are not shown
        i++;
        start = i;
        continue;
      }
      i++;
    }
    push(text.length);
    return out;
  }

  // flush ends the stream: a held partial sequence is dropped.
  flush() {
    this.carry = '';
    return [];
  }
}

// decodeBase64 turns the base64 of a LogMessage's data into bytes.
export function decodeBase64(s) {
  const bin = atob(s || '');
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// maxChars is how much output the page keeps; older output is removed
// from the view (the raw log has all of it).
const maxChars = 4 << 20;

// stamp is how a line's time shows (local time of day, milliseconds);
// '' for output stored before the controller kept times.
export function stamp(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n, w) => String(n).padStart(w || 2, '0');
  return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
}

// LogView appends a job's output to a <pre> that scrolls by itself.
// Attempt separators and times are elements whose text is drawn by CSS
// from a data attribute (style.css), so the <pre>'s text stays exactly
// the output; the times show when the <pre> has class show-ts.
export class LogView {
  constructor(pre, onTrim) {
    this.pre = pre;
    this.onTrim = onTrim || (() => {});
    this.offset = 0; // log bytes shown so far: where a reconnect resumes
    this.chars = 0;
    this.streams = {};
    this.last = null;
    this.lastClass = null;
    this.lineStart = true; // the next text begins a line
    this.marked = 0; // the last attempt marked
    this.first = null; // attempt 1's separator, shown once there is a second
    this.stick = true;
    pre.addEventListener('scroll', () => {
      this.stick = this.atBottom();
      this.pre.dispatchEvent(new CustomEvent('stick', { detail: this.stick }));
    });
  }

  atBottom() {
    const p = this.pre;
    return p.scrollHeight - p.scrollTop - p.clientHeight < 8;
  }

  stream(name) {
    if (!this.streams[name]) this.streams[name] = { dec: new TextDecoder('utf-8'), ansi: new Ansi() };
    return this.streams[name];
  }

  // write shows an "output" LogMessage, skipping bytes already shown
  // (a reconnect starts at the chunk holding the offset asked for).
  write(m) {
    let data = decodeBase64(m.data);
    const start = m.offset || 0;
    const end = start + data.length;
    if (end <= this.offset) return;
    if (start < this.offset) data = data.subarray(this.offset - start);
    this.offset = end;
    const name = m.stream === 'stderr' ? 'stderr' : 'stdout';
    const s = this.stream(name);
    this.append(name, s.ansi.feed(s.dec.decode(data, { stream: true })), stamp(m.time));
  }

  // marker shows where an attempt begins (an "attempt" LogMessage): a
  // separator with its number, agent and dispatch time. Attempt 1's is
  // hidden while the job has had only one attempt.
  marker(m) {
    if (!m.attempt || m.attempt <= this.marked) return; // seen before a reconnect
    this.marked = m.attempt;
    const when = m.time ? new Date(m.time).toLocaleString() : '';
    const label = 'Attempt ' + m.attempt + (m.agent ? ' · ' + m.agent : '') + (when ? ' · ' + when : '');
    const sep = document.createElement('span');
    sep.className = 'attempt';
    sep.dataset.attempt = String(m.attempt);
    sep.dataset.label = label;
    sep.setAttribute('role', 'separator');
    sep.setAttribute('aria-label', label);
    if (m.attempt === 1 && !(m.attempts > 1)) {
      sep.classList.add('solo');
      this.first = sep;
    } else if (this.first) {
      this.first.classList.remove('solo');
      this.first = null;
    }
    const stick = this.stick;
    this.pre.append(sep);
    this.last = null;
    this.lineStart = true;
    if (stick) this.scrollToEnd();
  }

  // end flushes the decoders at the end of the output.
  end() {
    for (const [name, s] of Object.entries(this.streams)) {
      this.append(name, s.ansi.feed(s.dec.decode()), null);
      s.ansi.flush();
    }
  }

  // append shows pieces of text of stream. ts, the time the output they
  // came in arrived, goes before the first line that begins in them (one
  // time per piece of output the controller received: the lines after it
  // arrived with it), unless ts is null.
  append(stream, pieces, ts) {
    if (!pieces.length) return;
    const stick = this.stick;
    let stamped = ts === null;
    for (const [whole, cls] of pieces) {
      const c = (stream === 'stderr' ? 'err' : 'out') + (cls ? ' ' + cls : '');
      let text = whole;
      while (text.length) {
        let part = text;
        if (!stamped) {
          if (this.lineStart) {
            const t = document.createElement('span');
            t.className = 'ts';
            t.dataset.t = ts || '–';
            this.pre.append(t);
            this.last = null;
            stamped = true;
          } else {
            // Up to the end of the line the piece continues.
            const nl = text.indexOf('\n');
            if (nl >= 0) part = text.slice(0, nl + 1);
          }
        }
        text = text.slice(part.length);
        this.lineStart = part.endsWith('\n');
        if (this.last && this.lastClass === c) {
          this.last.firstChild.appendData(part);
        } else {
          const span = document.createElement('span');
          span.className = c;
          span.textContent = part;
          this.pre.append(span);
          this.last = span;
          this.lastClass = c;
        }
        this.chars += part.length;
      }
    }
    if (this.chars > maxChars) this.trim();
    if (stick) this.scrollToEnd();
  }

  trim() {
    while (this.chars > maxChars * 0.75 && this.pre.firstChild && this.pre.firstChild !== this.last) {
      this.chars -= this.pre.firstChild.textContent.length;
      this.pre.firstChild.remove();
    }
    this.onTrim();
  }

  scrollToEnd() {
    this.pre.scrollTop = this.pre.scrollHeight;
    this.stick = true;
  }
}
