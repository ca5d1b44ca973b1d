// Package logsink coalesces log lines into few write(2) calls.
//
// hclog formats a line and writes it to its output in one Write, under
// its lock. With one write(2) per line, a busy controller (four lines per
// job: submitted, dispatched, started, finished) spends more time in the
// system call than in formatting — about 2 µs of the 3 µs a line costs —
// and it does so while the scheduler lock is held, since transitions log
// under it. A Writer instead copies the line into a buffer and returns; a
// goroutine writes whatever has accumulated in one call. It is group
// commit for log lines: when the process is idle a line goes out at once
// (the goroutine is woken by the first line), and under load every line
// that arrives while a write is in progress rides along with the next
// one. No timer, so nothing waits for a tick.
//
// Nothing is dropped: a Write that finds more than the buffer limit
// pending waits until the output catches up (as a blocking write would
// have). Flush waits until everything written so far has reached the
// output; Close flushes and stops the goroutine, after which Writes go
// straight to the output. A crash (kill -9) loses at most the lines not
// yet handed to the kernel, microseconds' worth.
package logsink

import (
	"io"
	"sync"
)

// DefaultLimit is how many pending bytes make Write wait.
const DefaultLimit = 1 << 20

// Writer is an io.Writer that hands its bytes to w from a goroutine of
// its own. Safe for concurrent use.
type Writer struct {
	w     io.Writer
	limit int

	mu      sync.Mutex
	cond    *sync.Cond // signalled when a write to w finishes
	buf     []byte     // pending bytes
	spare   []byte     // the buffer being written, reused afterwards
	writing bool       // the goroutine is in w.Write
	closed  bool
	err     error // the first error from w, returned by Flush and Close
	kick    chan struct{}
	done    chan struct{}
}

// New starts a Writer for w. limit is the pending size at which Write
// waits; 0 means DefaultLimit.
func New(w io.Writer, limit int) *Writer {
	if limit <= 0 {
		limit = DefaultLimit
	}
	lw := &Writer{w: w, limit: limit, kick: make(chan struct{}, 1), done: make(chan struct{})}
	lw.cond = sync.NewCond(&lw.mu)
	go lw.run()
	return lw
}

// Write copies p into the pending buffer and returns len(p). It waits
// while more than the limit is pending. After Close it writes p to the
// output directly.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	for len(lw.buf) >= lw.limit && !lw.closed {
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
	for {
		_, open := <-lw.kick
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
		lw.cond.Broadcast()
	}
	lw.mu.Unlock()
	<-lw.done
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.err
}
