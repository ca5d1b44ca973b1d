// Package clocktest is a fake clock.Clock for tests: it moves only when
// the test says so (Advance), and its timers fire then, so a test walks
// leases, retries, timeouts and retention in microseconds instead of
// waiting for them.
package clocktest
