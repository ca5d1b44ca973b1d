package clock

import "time"

// Clock is the time the scheduler and the retention loop run on: Real
// in production, a fake (clocktest.Fake) in tests, so that leases,
// retries, timeouts and retention are tested in milliseconds instead of
// waited for. Time is given to them, not taken (controller.Config has
// no clock: a Server always runs on Real).
type Clock interface {
	Now() time.Time
	// NewTimer is time.NewTimer: the timer sends the time on C once d
	// has passed; Reset and Stop are time.Timer's (since Go 1.23: no
	// stale value is received after either returns).
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Clock gives out.
type Timer interface {
	C() <-chan time.Time
	Reset(d time.Duration) bool
	Stop() bool
}

// Real is the system's clock.
type Real struct{}

func (Real) Now() time.Time { return time.Now() }

func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.Timer.C }
