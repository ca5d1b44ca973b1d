package controller

import (
	"errors"
	"testing"

	"jobsuite/controller/store"
)

// TestEndedEntriesAreForgotten: a job that reaches a final state is kept
// in the scheduler's ended map until its batch is durable (so a cancel
// sees the final version), and is dropped by the next terminal
// transition once it is: the map does not grow with the jobs that ever
// finished.
func TestEndedEntriesAreForgotten(t *testing.T) {
	st := testStore(t)
	c := newCommitter(st)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.run(stop) }()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	s := newScheduler(testLog(t, "scheduler"), st, c, newHub(), schedOptions{})

	const n = 50
	var ids []uint64
	for range n {
		j, _, err := s.submit(&store.Job{Command: "true", Priority: 50}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, pending, err := s.cancel(j.ID); err != nil || pending {
			t.Fatalf("cancel of queued job %d: pending %v, %v", j.ID, pending, err)
		}
		ids = append(ids, j.ID)
	}
	s.mu.Lock()
	nEnded, nQ := len(s.ended), len(s.endedQ)
	s.mu.Unlock()
	if nEnded > 1 || nQ > 1 {
		t.Errorf("after %d jobs ended one after another: %d ended entries, %d queued; want at most the last one", n, nEnded, nQ)
	}
	// A cancel of any of them still answers with its final state.
	for _, id := range []uint64{ids[0], ids[n-1]} {
		j, pending, err := s.cancel(id)
		if err != nil || pending || j.State != store.Cancelled {
			t.Errorf("repeated cancel of job %d: %v pending %v, %v", id, j, pending, err)
		}
	}
	if _, _, err := s.cancel(ids[n-1] + 1000); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancel of an unknown job: %v, want ErrNotFound", err)
	}
}
