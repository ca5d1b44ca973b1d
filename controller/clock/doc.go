// Package clock is the time the controller's loops are given rather
// than take: the scheduler (leases, retries, timeouts, the delay of
// waiting jobs) and the retention loop run on a Clock, Real in
// production, clocktest.Fake in tests.
//
// It is a package of its own, not part of controller/sched, because two
// packages run on it — the scheduler and the controller's retention
// loop — and their tests share one fake: a clock inside sched would put
// the fake in sched's API or have it written twice.
package clock
