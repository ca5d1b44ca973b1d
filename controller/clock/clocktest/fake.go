package clocktest

import (
	"sync"
	"time"

	"jobsuite/controller/clock"
)

// Fake is a clock.Clock that moves only when a test says so (Advance);
// its timers fire then. Its timers behave as time.Timer does since Go
// 1.23: a channel with room for one value, cleared by Reset and Stop.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	changed *sync.Cond // a timer was made or reset
}

type timer struct {
	c      *Fake
	ch     chan time.Time
	when   time.Time
	active bool
}

// NewFake returns a Fake clock at now.
func NewFake(now time.Time) *Fake {
	c := &Fake{now: now}
	c.changed = sync.NewCond(&c.mu)
	return c
}

func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Fake) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, ch: make(chan time.Time, 1), when: c.now.Add(d), active: true}
	c.timers = append(c.timers, t)
	c.fire()
	c.changed.Broadcast()
	return t
}

// Advance moves the clock on by d and fires the timers due by then.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fire()
}

// WaitTimers waits until n timers are armed.
func (c *Fake) WaitTimers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.armed() < n {
		c.changed.Wait()
	}
}

func (c *Fake) armed() int {
	n := 0
	for _, t := range c.timers {
		if t.active {
			n++
		}
	}
	return n
}

// fire sends the time on every armed timer that is due. The caller holds
// c.mu.
func (c *Fake) fire() {
	for _, t := range c.timers {
		if t.active && !t.when.After(c.now) {
			t.active = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.clear()
	t.when, t.active = t.c.now.Add(d), true
	t.c.fire()
	t.c.changed.Broadcast()
	return was
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	t.clear()
	return was
}

func (t *timer) clear() {
	select {
	case <-t.ch:
	default:
	}
}
