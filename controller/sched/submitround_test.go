package sched

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// roundLog records the event types of each round the committer applies.
type roundLog struct {
	mu     sync.Mutex
	rounds [][]string
}

func (l *roundLog) record(cmds []store.Command) {
	var types []string
	for _, c := range cmds {
		if tr, ok := c.(*store.Transition); ok {
			types = append(types, tr.Event.Type)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rounds = append(l.rounds, types)
}

// take returns the rounds recorded since the last call.
func (l *roundLog) take() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rounds
	l.rounds = nil
	return r
}

// A job submitted while a slot is free is written in one round with its
// dispatch: the submit's round waits for the dispatch loop, which adds
// the dispatch and starts the round — one fsync for both, and the submit
// returns without waiting for submitWait. A job no agent can take now
// (no free slot, or none matching) has its round alone, at once.
func TestSubmitSharesTheDispatchRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := newMemStore()
		var log roundLog
		c := NewCommitter(nil, CommitOptions{})
		c.apply = func(cmds []store.Command) (syncer, []store.Result, error) {
			log.record(cmds)
			return ms.apply(cmds)
		}
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- c.Run(stop) }()
		defer func() {
			close(stop)
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		s := New(testLog(t, "scheduler"), ms, c, Options{LeaseTTL: time.Minute, KillGrace: time.Second,
			BackoffBase: time.Second, BackoffMax: time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		loopDone := make(chan struct{})
		go func() {
			defer close(loopDone)
			s.DispatchLoop(ctx)
		}()
		defer func() {
			cancel()
			<-loopDone
		}()

		submit := func(j *store.Job) (*store.Job, time.Duration) {
			t.Helper()
			start := time.Now()
			j, _, err := s.Submit(j, nil)
			if err != nil {
				t.Fatal(err)
			}
			return j, time.Since(start)
		}

		// No agent yet: the submit's round is its own, at once.
		j0, took := submit(&store.Job{Command: "true"})
		synctest.Wait()
		if got := log.take(); len(got) != 1 || len(got[0]) != 1 || got[0][0] != "submitted" {
			t.Fatalf("no agent: rounds %v, want [[submitted]]", got)
		}
		if took != 0 {
			t.Errorf("no agent: the submit took %s, want no wait", took)
		}

		a := newAgent(t, s, "a", 1)
		s.Credit(a, 1) // job 0 is dispatched in a round of its own
		synctest.Wait()
		if d := dispatches(a); len(d) != 1 || d[0].JobID != j0.ID {
			t.Fatalf("dispatched %+v, want job %d", d, j0.ID)
		}
		log.take()
		finish := func(id uint64) {
			t.Helper()
			b, err := s.Finished("a", id, 1, &protocol.Finished{Outcome: protocol.OutcomeCompleted})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Wait(); err != nil {
				t.Fatal(err)
			}
			s.Credit(a, 1)
			synctest.Wait()
			log.take()
		}
		finish(j0.ID)

		// A free slot: submit and dispatch in one round, no wait.
		for range 3 {
			j, took := submit(&store.Job{Command: "true"})
			synctest.Wait()
			if d := dispatches(a); len(d) != 1 || d[0].JobID != j.ID {
				t.Fatalf("dispatched %+v, want job %d", d, j.ID)
			}
			if got := log.take(); len(got) != 1 || len(got[0]) != 2 || got[0][0] != "submitted" || got[0][1] != "dispatched" {
				t.Fatalf("free slot: rounds %v, want [[submitted dispatched]]", got)
			}
			if took != 0 {
				t.Errorf("free slot: the submit took %s, want no wait (the dispatch loop starts the round)", took)
			}
			finish(j.ID)
		}

		// A free slot no agent matches: the dispatch loop finds nothing
		// and starts the submit's round itself.
		_, took = submit(&store.Job{Command: "true", Labels: map[string]string{"gpu": "yes"}})
		synctest.Wait()
		if got := log.take(); len(got) != 1 || len(got[0]) != 1 || got[0][0] != "submitted" {
			t.Fatalf("unmatched: rounds %v, want [[submitted]]", got)
		}
		if took != 0 {
			t.Errorf("unmatched: the submit took %s, want no wait", took)
		}
	})
}
