package sched

import (
	"testing"

	"jobsuite/controller/store"
)

// TestCancelledReason: an attempt cancelled by request says so once; one
// that ended otherwise while a cancel was pending says both.
func TestCancelledReason(t *testing.T) {
	tests := map[string]struct {
		outcome   store.Outcome
		msg, want string
	}{
		"killed on cancel":           {store.OutcomeCancelled, "killed by SIGTERM", "attempt 1 cancelled: killed by SIGTERM"},
		"failed while cancel was on": {store.OutcomeFailed, "exit code 1", "attempt 1 failed: cancelled: exit code 1"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s, _ := memScheduler(t, Options{})
			j, _, err := s.Submit(&store.Job{Command: "sleep 9", Priority: 50, Cancellable: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			prev := s.jobs[j.ID]
			next := prev.Clone()
			next.State = store.Running
			next.CancelRequested = true
			next.Attempts = append(next.Attempts, store.Attempt{Number: 1, Agent: "a"})
			b := s.endAttempt(prev, next, tt.outcome, tt.msg, 0)
			s.mu.Unlock()
			if err := b.Wait(); err != nil {
				t.Fatal(err)
			}
			if next.State != store.Cancelled || next.Reason != tt.want {
				t.Errorf("job %s with reason %q; want cancelled with %q", next.State, next.Reason, tt.want)
			}
		})
	}
}
