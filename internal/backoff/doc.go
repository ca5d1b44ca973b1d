// Package backoff is jobsuite's one exponential backoff: the delay
// before retry n is Base·2^(n-1), capped at Max, then moved by a jitter
// the caller passes in. The scheduler's job retries, the agent's
// reconnects, the CLI's log-stream reconnects and the transport's
// accept retries all use it.
//
// Why a small package and not github.com/cenkalti/backoff/v5: that
// library keeps the attempt count and draws its jitter inside its
// BackOff value, from its own random source, and hands out the next
// delay as a side effect. The scheduler cannot use that shape: a retry
// delay is chosen before the store command that carries it is made (the
// command must hold everything that varies, so that replaying it gives
// the same store), its jitter comes from the scheduler's injected
// source so tests fix it, and the attempt number is the job's own,
// kept in the store, not in a Go value that a restart loses. So Delay
// is a pure function of (policy, attempt, jitter); callers that loop
// keep their own counter, which is one integer.
//
// Jitter is written as how far a delay may move down and up, as
// fractions of it: the scheduler spreads retries ±20% (Down 0.2, Up
// 0.2) so that many jobs failing together do not come back in
// lockstep; the agent and the CLI wait between half and all of the
// delay (Down 0.5), so they never wait longer than the un-jittered
// schedule; the transport's accept retry has no jitter (it waits out a
// local shortage such as file descriptors, with no crowd to spread).
package backoff
