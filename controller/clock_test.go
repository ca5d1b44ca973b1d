package controller

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when a test says so (Advance);
// its timers fire then. Its timers behave as time.Timer does since Go
// 1.23: a channel with room for one value, cleared by Reset and Stop.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed *sync.Cond // a timer was made or reset
}

type fakeTimer struct {
	c      *fakeClock
	ch     chan time.Time
	when   time.Time
	active bool
}

func newFakeClock(now time.Time) *fakeClock {
	c := &fakeClock{now: now}
	c.changed = sync.NewCond(&c.mu)
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1), when: c.now.Add(d), active: true}
	c.timers = append(c.timers, t)
	c.fire()
	c.changed.Broadcast()
	return t
}

// Advance moves the clock on by d and fires the timers due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fire()
}

// waitTimers waits until n timers are armed.
func (c *fakeClock) waitTimers(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.armed() < n {
		c.changed.Wait()
	}
}

func (c *fakeClock) armed() int {
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
func (c *fakeClock) fire() {
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

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.clear()
	t.when, t.active = t.c.now.Add(d), true
	t.c.fire()
	t.c.changed.Broadcast()
	return was
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	t.clear()
	return was
}

func (t *fakeTimer) clear() {
	select {
	case <-t.ch:
	default:
	}
}

func TestFakeClock(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newFakeClock(t0)
	a, b := c.NewTimer(time.Second), c.NewTimer(time.Minute)
	c.Advance(time.Second - 1)
	select {
	case <-a.C():
		t.Fatal("fired early")
	default:
	}
	c.Advance(1)
	if got := <-a.C(); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("fired at %v", got)
	}
	if !b.Stop() || b.Stop() {
		t.Error("Stop reports the timer armed once, then not")
	}
	c.Advance(time.Hour)
	select {
	case <-b.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	if b.Reset(0) {
		t.Error("Reset of a stopped timer says it was armed")
	}
	if got := <-b.C(); !got.Equal(t0.Add(time.Hour + time.Second)) {
		t.Fatalf("reset to 0 fired at %v", got)
	}
}
