package sched

import (
	"testing"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// An attempt a new leader inherited (Options.OutputChannel: running
// when the scheduler loads) is not ended before its gap fill found its
// durable end: a lease that ran out, the controller's deadline passed,
// a revoked agent each wait for Filled, and the attempt's LogBytes is
// then the filled end — not what the fill's chunks had made durable
// when the lease ran out.
func TestInheritedAttemptEndsAfterItsFill(t *testing.T) {
	tests := map[string]struct {
		timeout time.Duration // the job's, for the controller's deadline
		// end makes the end due (the clock is past the restart grace
		// and every deadline when it runs) and returns the outcome.
		end     func(f *schedFixture, s *Scheduler, id uint64)
		outcome store.Outcome
		// renewed: a heartbeat renewed the lease after it ran out and
		// before the fill: the attempt lives on.
		renewed bool
	}{
		"lease runs out": {
			end:     func(f *schedFixture, s *Scheduler, id uint64) { s.expire(f.clock.Now()) },
			outcome: store.OutcomeLost,
		},
		"controller's deadline": {
			timeout: time.Second,
			end:     func(f *schedFixture, s *Scheduler, id uint64) { s.expire(f.clock.Now()) },
			outcome: store.OutcomeTimeout,
		},
		"agent revoked": {
			end: func(f *schedFixture, s *Scheduler, id uint64) {
				a := &fakeAgent{name: "a", slots: 1, log: testLog(t, "a"), out: make(chan protocol.Message, 16)}
				s.Register(a, ref(id, 1)) // it reattached
				if ids, _ := s.LoseAttempts(a, "revoked"); len(ids) != 0 {
					t.Errorf("LoseAttempts listed %v before the fill", ids)
				}
			},
			outcome: store.OutcomeLost,
		},
		"lease renewed after it ran out": {
			end:     func(f *schedFixture, s *Scheduler, id uint64) { s.expire(f.clock.Now()) },
			renewed: true,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newSchedFixture(t, Options{OutputChannel: true})
			j := f.submit(&store.Job{Command: "yes", Retries: 1, Timeout: tt.timeout})
			a := newAgent(t, f.s, "a", 1)
			f.s.Credit(a, 1)
			f.dispatch()
			f.s.OutputDurable(j.ID, 1, 30) // the old leader's count
			if err := f.s.c.Barrier().Wait(); err != nil {
				t.Fatal(err)
			}

			// A new leader loads the store: attempt 1 is inherited.
			s, _ := memSchedulerOver(t, f.ms, f.s.opts)
			if err := s.Load(); err != nil {
				t.Fatal(err)
			}
			s.StartServing(f.clock.Now())
			f.clock.Advance(time.Hour) // past the grace and every deadline
			tt.end(f, s, j.ID)
			// The fill's chunks make 60 durable; the fill ends at 100.
			s.OutputDurable(j.ID, 1, 60)
			if got := s.Snapshot(j.ID); got.State != store.Running && got.State != store.Dispatched {
				t.Fatalf("before the fill: %s (%s), want still running", got.State, got.Reason)
			}
			if tt.renewed {
				b := &fakeAgent{name: "a", slots: 1, log: testLog(t, "a"), out: make(chan protocol.Message, 16)}
				s.Register(b, ref(j.ID, 1))
			} else if n := s.FillWaiting(); n != 1 {
				t.Errorf("FillWaiting = %d, want 1", n)
			}
			s.Filled(j.ID, 1, 100)
			s.expire(f.clock.Now())
			if err := s.c.Barrier().Wait(); err != nil {
				t.Fatal(err)
			}
			if n := s.FillWaiting(); n != 0 {
				t.Errorf("FillWaiting after the fill = %d, want 0", n)
			}
			got := s.Snapshot(j.ID)
			if got == nil {
				got, _ = f.ms.Get(j.ID)
			}
			if tt.renewed {
				if got.State != store.Running && got.State != store.Dispatched {
					t.Fatalf("renewed lease: %s (%s), want still running", got.State, got.Reason)
				}
				return
			}
			at := got.Attempts[0]
			if at.Outcome != tt.outcome || got.LogBytes != 100 || at.OutputBytes != 100 {
				t.Fatalf("after the fill: attempt %q, log %d, attempt %d bytes; want %q at 100, 100", at.Outcome, got.LogBytes, at.OutputBytes, tt.outcome)
			}
		})
	}
}

// Without the output channel nothing is held: the lease runs out as
// it always did.
func TestRestartedAttemptLostWithoutChannel(t *testing.T) {
	f := newSchedFixture(t, Options{})
	j := f.submit(&store.Job{Command: "yes"})
	a := newAgent(t, f.s, "a", 1)
	f.s.Credit(a, 1)
	f.dispatch()
	s, _ := memSchedulerOver(t, f.ms, f.s.opts)
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	s.StartServing(f.clock.Now())
	f.clock.Advance(time.Hour)
	s.expire(f.clock.Now())
	if got := s.Snapshot(j.ID); got != nil && got.State.Active() {
		t.Fatalf("without the channel: %s, want lost at once", got.State)
	}
}
