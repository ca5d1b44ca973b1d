package sched

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// fakeNotifier wants starts and ends of every job with a Notify URL,
// one entry per URL, and records what it is handed back.
type fakeNotifier struct {
	mu     sync.Mutex
	queued chan store.Delivery
}

func (n *fakeNotifier) Deliveries(j *store.Job, event string, now time.Time) []store.Delivery {
	var out []store.Delivery
	for i, u := range j.Notify() {
		out = append(out, store.Delivery{
			ID: fmt.Sprintf("%d.%s.%d", j.ID, event, i), Job: j.ID, Event: event, URL: u,
			Body: []byte(`{"state":"` + string(j.State) + `"}`), NextTry: now, CreatedAt: now,
		})
	}
	return out
}

func (n *fakeNotifier) Queued(ds ...store.Delivery) {
	for _, d := range ds {
		n.queued <- d
	}
}

// deliveriesIn returns the outbox entries of job id written in round r
// for event ("" for any).
func deliveriesIn(r []store.Command, id uint64, event string) []store.Delivery {
	var out []store.Delivery
	for _, c := range r {
		if p, ok := c.(*store.PutDelivery); ok && p.Delivery.Job == id && (event == "" || p.Delivery.Event == event) {
			out = append(out, p.Delivery)
		}
	}
	return out
}

// A job's start and end each write one outbox entry per target in the
// very round of the transition, and the Notifier is handed them back
// once that round is durable; a job without targets writes none.
func TestNotifyOutboxRounds(t *testing.T) {
	n := &fakeNotifier{queued: make(chan store.Delivery, 10)}
	f := newSchedFixture(t, Options{Notify: n})
	a := newAgent(t, f.s, "a", 1)
	j := f.submit(&store.Job{Command: "x", Orchestration: &store.Orchestration{Notify: []string{"https://a.example/h", "https://b.example/h"}}})
	quiet := f.submit(&store.Job{Command: "y"})

	f.s.Credit(a, 1)
	d := f.dispatch()
	if err := f.s.Started(a.name, j.ID, d[0].Attempt, &protocol.Started{}); err != nil {
		t.Fatal(err)
	}
	f.finish(a, j.ID, d[0].Attempt, protocol.OutcomeFailed, 3)
	f.run(a, quiet.ID, protocol.OutcomeCompleted)

	tests := map[string]struct {
		state store.State
		event string
	}{
		"started":  {store.Running, EventStarted},
		"finished": {store.Failed, EventFinished},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// (Started does not wait for its round, so the start and the
			// end may share one: each entry must be in its transition's.)
			ds := deliveriesIn(f.roundOf(j.ID, tc.state), j.ID, tc.event)
			if len(ds) != 2 {
				t.Fatalf("the round to %s holds %d outbox entries, want 2", tc.state, len(ds))
			}
			for i, d := range ds {
				if d.Event != tc.event || d.URL != j.Notify()[i] || d.Job != j.ID {
					t.Errorf("entry %d: %+v", i, d)
				}
			}
		})
	}
	if ds := deliveriesIn(f.roundOf(quiet.ID, store.Completed), quiet.ID, ""); len(ds) != 0 {
		t.Errorf("a job without targets wrote %+v", ds)
	}
	got := map[string]bool{}
	for range 4 {
		select {
		case d := <-n.queued:
			got[d.ID] = true
		case <-time.After(30 * time.Second): // a hang guard
			t.Fatalf("handed back %v, want 4 entries", got)
		}
	}
	for _, id := range []string{"1.job.started.0", "1.job.started.1", "1.job.finished.0", "1.job.finished.1"} {
		if !got[id] {
			t.Errorf("entry %s not handed back (got %v)", id, got)
		}
	}
}
