package sched

import (
	"strings"
	"testing"
	"time"

	"jobsuite/controller/store"
)

// expiryFixture is a scheduler over a real store and committer, with
// running jobs put straight into its maps: expire is then driven with
// explicit times, so leases of a minute are tested without waiting.
type expiryFixture struct {
	t  *testing.T
	s  *Scheduler
	st *store.Store
	t0 time.Time
}

func newExpiryFixture(t *testing.T, lease time.Duration) *expiryFixture {
	st := testStore(t)
	c := NewCommitter(st, CommitOptions{})
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stop) }()
	t.Cleanup(func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	s := New(testLog(t, "scheduler"), st, c, Options{
		LeaseTTL: lease, KillGrace: time.Second, BackoffBase: time.Second, BackoffMax: time.Second,
	})
	return &expiryFixture{t: t, s: s, st: st, t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// running stores a job whose attempt n runs on agent "a" since t0, with
// timeout (0: none) and retries, and gives it a lease until t0+lease.
func (f *expiryFixture) running(n uint32, timeout time.Duration, retries int) uint64 {
	f.t.Helper()
	s := f.s
	j := &store.Job{ID: s.st.NextID(), Command: "true", Priority: 50, State: store.Running, CreatedAt: f.t0,
		Timeout: timeout, Retries: retries}
	for i := uint32(1); i <= n; i++ {
		a := store.Attempt{Number: i, Agent: "a", DispatchedAt: f.t0}
		if i < n {
			a.Outcome = "lost"
		}
		j.Attempts = append(j.Attempts, a)
	}
	if err := applyAll(f.st, store.NewTransition(j, store.Event{Type: "submitted"})); err != nil {
		f.t.Fatal(err)
	}
	s.mu.Lock()
	s.jobs[j.ID] = j
	s.setLease(j.ID, n, f.t0.Add(s.opts.LeaseTTL))
	s.setHardDeadline(j.ID, n, f.t0, timeout)
	s.mu.Unlock()
	return j.ID
}

func (f *expiryFixture) renew(id uint64, attempt uint32, at time.Duration) {
	f.s.mu.Lock()
	f.s.setLease(id, attempt, f.t0.Add(at+f.s.opts.LeaseTTL))
	f.s.mu.Unlock()
}

// expire runs the expiry at t0+at and returns when the next entry is due,
// relative to t0 (-1 if none).
func (f *expiryFixture) expire(at time.Duration) time.Duration {
	next := f.s.expire(f.t0.Add(at))
	if next.IsZero() {
		return -1
	}
	return next.Sub(f.t0)
}

// state returns the job's state and its last attempt's outcome and error.
func (f *expiryFixture) state(id uint64) (store.State, store.Outcome, string) {
	f.s.mu.Lock()
	j := f.s.jobs[id]
	if j == nil {
		j = f.s.ended[id].job
	}
	f.s.mu.Unlock()
	if j == nil {
		f.t.Fatalf("job %d is gone", id)
	}
	c := j.Current()
	return j.State, c.Outcome, c.Error
}

func TestLeaseRunsOutAtItsDeadline(t *testing.T) {
	f := newExpiryFixture(t, time.Minute)
	id := f.running(1, 0, 1)

	if next := f.expire(59 * time.Second); next != time.Minute {
		t.Fatalf("next expiry at %v, want the lease's end, 1m", next)
	}
	if st, _, _ := f.state(id); st != store.Running {
		t.Fatalf("before its lease ran out the job is %s", st)
	}
	f.expire(time.Minute)
	st, outcome, why := f.state(id)
	if st != store.Waiting || outcome != "lost" || !strings.Contains(why, "did not renew the lease within 1m0s") {
		t.Fatalf("at the lease's end: %s, attempt %q (%s); want waiting to retry, lost", st, outcome, why)
	}
}

func TestRenewedLeaseMovesItsExpiry(t *testing.T) {
	f := newExpiryFixture(t, time.Minute)
	id := f.running(1, 0, 0)
	f.renew(id, 1, 40*time.Second) // now until 1m40s

	// The entry queued for 1m finds the lease renewed and goes back in
	// at the new deadline, once.
	if next := f.expire(time.Minute); next != 100*time.Second {
		t.Fatalf("after the renewed lease's first due: next at %v, want 1m40s", next)
	}
	if n := f.s.expiry.Len(); n != 1 {
		t.Errorf("%d expiry entries for one lease, want 1", n)
	}
	if st, _, _ := f.state(id); st != store.Running {
		t.Fatalf("a renewed lease ran out: %s", st)
	}
	f.expire(100 * time.Second)
	if st, outcome, _ := f.state(id); st != store.Failed || outcome != "lost" {
		t.Fatalf("at the renewed lease's end: %s, %q; want failed (no retries), lost", st, outcome)
	}
	if next := f.expire(time.Hour); next != -1 {
		t.Errorf("entries left after the attempt ended: next at %v", next)
	}
}

// A lease set shorter than the entry already queued (an agent that
// reattaches within the restart grace and then goes silent) runs out at
// its own deadline, not the grace's.
func TestShortenedLeaseRunsOutEarly(t *testing.T) {
	f := newExpiryFixture(t, time.Minute)
	s := f.s
	id := f.running(1, 0, 0)
	s.mu.Lock()
	s.setLease(id, 1, f.t0.Add(s.restartGrace())) // as load does
	s.mu.Unlock()
	f.renew(id, 1, 0) // reattached at t0: until 1m

	if next := f.expire(59 * time.Second); next != time.Minute {
		t.Fatalf("next expiry at %v, want 1m", next)
	}
	f.expire(time.Minute)
	if st, outcome, _ := f.state(id); st != store.Failed || outcome != "lost" {
		t.Fatalf("at the shortened lease's end: %s, %q; want failed, lost", st, outcome)
	}
	// The entry at the grace's end finds nothing to do.
	if next := f.expire(s.restartGrace()); next != -1 {
		t.Errorf("entries left: next at %v", next)
	}
}

func TestControllerDeadlineEndsATimedOutAttempt(t *testing.T) {
	f := newExpiryFixture(t, time.Minute)
	id := f.running(1, 10*time.Second, 0)
	// Heartbeats keep the lease alive: only the deadline can end it.
	for at := 20 * time.Second; at <= 80*time.Second; at += 20 * time.Second {
		f.renew(id, 1, at)
		f.expire(at)
	}
	// timeout 10s + kill grace 1s + lease 1m = 71s after the dispatch.
	st, outcome, why := f.state(id)
	if st != store.Timeout || outcome != "timeout" || !strings.Contains(why, "controller's deadline passed") {
		t.Fatalf("after the controller's deadline: %s, %q (%s); want timeout", st, outcome, why)
	}
}

// Entries of an attempt that was superseded (lost and retried) do not
// touch the attempt that followed it.
func TestStaleExpiryEntriesAreIgnored(t *testing.T) {
	f := newExpiryFixture(t, time.Minute)
	s := f.s
	id := f.running(2, 0, 1)
	s.mu.Lock()
	s.pushExpiry(expiryItem{due: f.t0, id: id, attempt: 1})
	s.pushExpiry(expiryItem{due: f.t0, id: id, attempt: 1, hard: true})
	s.mu.Unlock()
	if next := f.expire(time.Second); next != time.Minute {
		t.Fatalf("next expiry at %v, want attempt 2's lease at 1m", next)
	}
	if st, _, _ := f.state(id); st != store.Running {
		t.Fatalf("attempt 1's entries ended attempt 2: %s", st)
	}
}

// The restart grace counts from when the controller starts serving, not
// from when it loaded the store: a slow start does not eat into it.
func TestRestartGraceCountsFromServing(t *testing.T) {
	f := newExpiryFixture(t, time.Minute)
	s := f.s
	id := f.running(1, 0, 0)
	s.mu.Lock()
	s.setLease(id, 1, f.t0.Add(s.restartGrace())) // as load does
	s.mu.Unlock()
	serving := f.t0.Add(10 * time.Minute)
	s.StartServing(serving)
	f.expire(5 * time.Minute) // past the grace counted from the load
	if st, _, _ := f.state(id); st != store.Running {
		t.Fatalf("lost before the controller served: %s", st)
	}
	if next := f.s.expire(serving.Add(s.restartGrace() - time.Second)); !next.Equal(serving.Add(s.restartGrace())) {
		t.Fatalf("next expiry at %v, want the grace after serving began", next.Sub(f.t0))
	}
	f.s.expire(serving.Add(s.restartGrace()))
	if st, outcome, _ := f.state(id); st != store.Failed || outcome != "lost" {
		t.Fatalf("after the grace: %s, %q; want failed, lost", st, outcome)
	}
}
