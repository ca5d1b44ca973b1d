package agent

import (
	"sync"
	"sync/atomic"
)

// runners keeps goroutines that have run an attempt's work (runJob, the
// shipper and its reader) for the next one. A new goroutine starts with
// a small stack and grows it on the way down a job's start path (each
// growth a runtime.morestack that copies the stack): in a profile of the
// agent under row 3 of the benchmark that was about 2% of its CPU. One
// that stays keeps the stack it grew, and a job costs no goroutine
// creation either. At most max wait idle — an attempt's few goroutines
// times the slots, enough for a full agent — and a waiting one holds
// only its stack; past that a goroutine ends when its work does, as
// before. A nil or zero runners just starts goroutines. stop (at the
// end of Agent.Run) ends the waiting ones, and each running one once
// its work is done.
type runners struct {
	work     chan func() // unbuffered: a send succeeds only when one waits
	done     chan struct{}
	stopOnce sync.Once
	idle     atomic.Int32
	max      int32
}

func newRunners(max int) *runners {
	return &runners{work: make(chan func()), done: make(chan struct{}), max: int32(max)}
}

// stop ends the waiting goroutines; goRun still works, with goroutines
// that end with their work.
func (r *runners) stop() {
	if r == nil || r.done == nil {
		return
	}
	r.stopOnce.Do(func() { close(r.done) })
}

// goRun runs f on a waiting goroutine, or on a new one.
func (r *runners) goRun(f func()) {
	if r == nil || r.work == nil {
		go f()
		return
	}
	select {
	case r.work <- f:
	default:
		go r.run(f)
	}
}

func (r *runners) run(f func()) {
	for {
		f()
		f = nil // the closure's references go with the work
		if !r.wait() {
			return
		}
		select {
		case f = <-r.work:
			r.idle.Add(-1)
		case <-r.done:
			r.idle.Add(-1)
			return
		}
	}
}

// wait counts one more waiting goroutine, unless max already wait or
// the runners stopped.
func (r *runners) wait() bool {
	for {
		select {
		case <-r.done:
			return false
		default:
		}
		n := r.idle.Load()
		if n >= r.max {
			return false
		}
		if r.idle.CompareAndSwap(n, n+1) {
			return true
		}
	}
}
