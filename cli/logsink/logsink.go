// Package logsink coalesces log lines into few write(2) calls.
//
// hclog formats a line and writes it to its output in one Write, under
// its lock. With one write(2) per line, a busy controller (four lines per
// job: submitted, dispatched, started, finished) spends more time in the
// system call than in formatting — about 2 µs of the 3 µs a line costs —
// and it does so while the scheduler lock is held, since transitions log
// under it. A Writer instead copies the line into a buffer and returns; a
// goroutine writes whatever has accumulated in one call. It is group
// commit for log lines: the goroutine is woken by the first line, and
// every line that arrives while a write is in progress rides along with
// the next one.
//
// With a linger (NewLinger) the goroutine, once woken, waits that long
// before it writes, so the lines of a lightly loaded process share a
// write too: a controller running 250 jobs a second logs ≈ 1,200 lines a
// second, and without a linger nearly every one of them finds the sink
// idle and costs a goroutine wake-up (a thread's, when the process is
// idle) and a write(2) of its own. The commands use DefaultLinger.
//
// Nothing is dropped: a Write that finds more than the buffer limit
// pending waits until the output catches up (as a blocking write would
// have), and makes the goroutine write at once. Flush waits until
// everything written so far has reached the output, without waiting for
// the linger; Close flushes and stops the goroutine, after which Writes
// go straight to the output. A crash (kill -9) loses at most the lines
// not yet handed to the kernel: the last linger's worth.
package logsink

import (
	"io"
	"sync"
	"time"
)

// DefaultLimit is how many pending bytes make Write wait.
const DefaultLimit = 1 << 20

// DefaultLinger is the linger of the commands' log sinks (cli.NewLogger).
const DefaultLinger = 5 * time.Millisecond

// Writer is an io.Writer that hands its bytes to w from a goroutine of
// its own. Safe for concurrent use.
type Writer struct {
	w      io.Writer
	limit  int
	linger time.Duration

	mu      sync.Mutex
	cond    *sync.Cond // signalled when a write to w finishes
	buf     []byte     // pending bytes
	spare   []byte     // the buffer being written, reused afterwards
	writing bool       // the goroutine is in w.Write
	closed  bool
	err     error // the first error from w, returned by Flush and Close
	kick    chan struct{}
	hurry   chan struct{} // ends the linger: Flush, Close, a full buffer
	done    chan struct{}
}

// New starts a Writer for w. limit is the pending size at which Write
// waits; 0 means DefaultLimit.
func New(w io.Writer, limit int) *Writer {
	return NewLinger(w, limit, 0)
}

// NewLinger starts a Writer for w whose goroutine, woken by a line,
// waits up to linger for more before it writes (0: none).
func NewLinger(w io.Writer, limit int, linger time.Duration) *Writer {
	if limit <= 0 {
		limit = DefaultLimit
	}
	lw := &Writer{w: w, limit: limit, linger: linger, kick: make(chan struct{}, 1),
		hurry: make(chan struct{}, 1), done: make(chan struct{})}
	lw.cond = sync.NewCond(&lw.mu)
	go lw.run()
	return lw
}

// hurryUp ends the goroutine's linger, if it lingers.
func (lw *Writer) hurryUp() {
	select {
	case lw.hurry <- struct{}{}:
	default:
	}
}

// Write copies p into the pending buffer and returns len(p). It waits
// while more than the limit is pending. After Close it writes p to the
// output directly.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	for len(lw.buf) >= lw.limit && !lw.closed {
		lw.hurryUp()
		lw.cond.Wait()
	}
	if lw.closed {
		lw.mu.Unlock()
		<-lw.done // the last pending bytes go first
		return lw.w.Write(p)
	}
	lw.buf = append(lw.buf, p...)
	select { // under mu: Close cannot have closed kick
	case lw.kick <- struct{}{}:
	default:
	}
	lw.mu.Unlock()
	return len(p), nil
}

// run writes what is pending each time it is kicked, until kick is
// closed; then it writes what is left and returns.
func (lw *Writer) run() {
	defer close(lw.done)
	var t *time.Timer
	if lw.linger > 0 {
		t = time.NewTimer(lw.linger)
		t.Stop()
	}
	for {
		_, open := <-lw.kick
		if open && t != nil {
			t.Reset(lw.linger)
			select {
			case <-t.C:
			case <-lw.hurry:
				t.Stop()
			}
		}
		lw.mu.Lock()
		for len(lw.buf) > 0 {
			out := lw.buf
			lw.buf = lw.spare[:0]
			lw.writing = true
			lw.mu.Unlock()
			_, err := lw.w.Write(out)
			lw.mu.Lock()
			if err != nil && lw.err == nil {
				lw.err = err
			}
			lw.spare = out
			lw.writing = false
			lw.cond.Broadcast()
		}
		lw.mu.Unlock()
		if !open {
			return
		}
	}
}

// Flush waits until every byte written before it has been handed to the
// output, and returns the first error the output returned, if any.
func (lw *Writer) Flush() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.buf) > 0 {
		lw.hurryUp()
	}
	for (len(lw.buf) > 0 || lw.writing) && !lw.closed {
		lw.cond.Wait()
	}
	if lw.closed {
		lw.mu.Unlock()
		<-lw.done
		lw.mu.Lock()
	}
	return lw.err
}

// Close writes what is pending, stops the goroutine and makes later
// Writes go straight to the output. It does not close the output. It
// returns the first error the output returned, if any, and is
// idempotent.
func (lw *Writer) Close() error {
	lw.mu.Lock()
	if !lw.closed {
		lw.closed = true
		close(lw.kick)
		lw.hurryUp()
		lw.cond.Broadcast()
	}
	lw.mu.Unlock()
	<-lw.done
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.err
}
