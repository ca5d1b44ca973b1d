// Search in a job's log: every match of the text typed is highlighted
// (the CSS Custom Highlight API: the log's own text and spans stay as
// they are), the count is shown, and Enter / Shift+Enter (or the arrow
// buttons) move between matches, scrolling the log to each. New output
// is searched as it arrives.

const maxMatches = 10000;

export function attachLogSearch(pre, input, countEl, prevBtn, nextBtn) {
  const supported = typeof CSS !== 'undefined' && CSS.highlights && typeof Highlight !== 'undefined';
  let ranges = [];
  let current = -1;
  let pending = false;

  const clear = () => {
    if (supported) {
      CSS.highlights.delete('log-match');
      CSS.highlights.delete('log-current');
    }
  };

  // find collects the ranges of every match, case-insensitively.
  const find = () => {
    ranges = [];
    const needle = input.value.toLowerCase();
    if (!needle) return;
    const walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node && ranges.length < maxMatches; node = walker.nextNode()) {
      const hay = node.data.toLowerCase();
      for (let i = hay.indexOf(needle); i >= 0 && ranges.length < maxMatches; i = hay.indexOf(needle, i + needle.length)) {
        const r = document.createRange();
        r.setStart(node, i);
        r.setEnd(node, i + needle.length);
        ranges.push(r);
      }
    }
  };

  const show = (scroll) => {
    clear();
    const n = ranges.length;
    if (!input.value) {
      countEl.textContent = '';
    } else if (!n) {
      countEl.textContent = 'no match';
    } else {
      current = Math.min(Math.max(current, 0), n - 1);
      countEl.textContent = (current + 1) + ' of ' + n + (n >= maxMatches ? '+' : '');
    }
    prevBtn.disabled = nextBtn.disabled = n === 0;
    if (!n || !supported) return;
    CSS.highlights.set('log-match', new Highlight(...ranges));
    const cur = new Highlight(ranges[current]);
    cur.priority = 1; // over log-match where they overlap
    CSS.highlights.set('log-current', cur);
    if (scroll) {
      const box = pre.getBoundingClientRect();
      const at = ranges[current].getBoundingClientRect();
      pre.scrollTop += at.top - box.top - pre.clientHeight / 3;
    }
  };

  const search = () => {
    current = 0;
    find();
    show(true);
  };
  const step = (d) => {
    if (!ranges.length) return;
    current = (current + d + ranges.length) % ranges.length;
    show(true);
  };

  input.addEventListener('input', search);
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      step(ev.shiftKey ? -1 : 1);
    } else if (ev.key === 'Escape') {
      input.value = '';
      search();
    }
  });
  prevBtn.addEventListener('click', () => step(-1));
  nextBtn.addEventListener('click', () => step(1));
  // Output that arrives (or a log trimmed at its start) is searched
  // again, at most once per frame, without moving the view.
  new MutationObserver(() => {
    if (!input.value || pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      find();
      show(false);
    });
  }).observe(pre, { childList: true, characterData: true, subtree: true });
  prevBtn.disabled = nextBtn.disabled = true;
}
