package controller

import "time"

// clock is the time the scheduler and the retention loop run on: the
// real one in production, a fake in tests, so that leases, retries,
// timeouts and retention are tested in milliseconds instead of waited
// for. Time is given to them, not taken (Config has no clock: a Server
// always runs on realClock).
type clock interface {
	Now() time.Time
	// NewTimer is time.NewTimer: the timer sends the time on C once d
	// has passed; Reset and Stop are time.Timer's (since Go 1.23: no
	// stale value is received after either returns).
	NewTimer(d time.Duration) timer
}

// timer is the part of *time.Timer a clock gives out.
type timer interface {
	C() <-chan time.Time
	Reset(d time.Duration) bool
	Stop() bool
}

// realClock is the system's clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.Timer.C }
