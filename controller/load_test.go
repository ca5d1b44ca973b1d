package controller

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/hub"
	"jobsuite/controller/store"
)

// TestSchedulerLoad checks what load rebuilds from a store holding jobs
// in every state: the jobs map, the queue in its order (with a label
// class and priorities), the delay heap, leases, the output ends (from
// the store for a running attempt, none for jobs without output) and the
// metrics' gauges.
func TestSchedulerLoad(t *testing.T) {
	st := testStore(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	apply := func(prev, next *store.Job) *store.Job {
		t.Helper()
		if err := applyAll(st, store.NewTransition(next, store.Event{Type: "x"})); err != nil {
			t.Fatal(err)
		}
		return next
	}
	mk := func(prio int, at time.Duration, labels map[string]string) *store.Job {
		return apply(nil, &store.Job{ID: st.NextID(), Command: "true", Priority: prio, State: store.Queued,
			CreatedAt: t0, QueuedAt: t0.Add(at), Labels: labels})
	}
	move := func(j *store.Job, state store.State, change func(*store.Job)) *store.Job {
		n := j.Clone()
		n.State = state
		if change != nil {
			change(n)
		}
		return apply(j, n)
	}
	low := mk(25, 0, nil)
	high := mk(75, time.Second, nil)
	gpu := mk(50, 0, map[string]string{"gpu": "true"})
	requeued := mk(50, 2*time.Second, nil)
	requeued = move(requeued, store.Queued, func(j *store.Job) { j.LogBytes = 300 }) // output of an earlier attempt
	waiting := move(mk(50, 0, nil), store.Waiting, func(j *store.Job) { j.NotBefore = t0.Add(time.Hour) })
	running := move(mk(50, 0, nil), store.Running, func(j *store.Job) {
		j.LogBytes = 10
		j.Attempts = []store.Attempt{{Number: 1, Agent: "a", LogStart: 10}}
	})
	if err := applyAll(st, &store.Output{Job: running.ID, Chunk: store.Chunk{Offset: 10, Stream: 1, Data: make([]byte, 90)}}); err != nil {
		t.Fatal(err)
	}
	move(mk(50, 0, nil), store.Completed, nil)

	s := newScheduler(hclog.NewNullLogger(), st, nil, schedOptions{LeaseTTL: time.Minute})
	m := newMetrics(hclog.NewNullLogger(), s, hub.New(), st, metricsOptions{})
	if err := s.load(); err != nil {
		t.Fatal(err)
	}
	if len(s.jobs) != 6 {
		t.Errorf("%d jobs loaded, want 6", len(s.jobs))
	}
	for _, want := range []*store.Job{high, requeued, low} {
		if got := s.q.best(nil); got != want.ID {
			t.Fatalf("best = %d, want %d", got, want.ID)
		}
		s.q.remove(want.ID)
	}
	if got := s.q.best(map[string]string{"gpu": "true"}); got != gpu.ID {
		t.Errorf("best for a GPU agent = %d, want %d", got, gpu.ID)
	}
	if s.delay.Len() != 1 || s.delay[0].id != waiting.ID {
		t.Errorf("delay heap %v, want job %d", s.delay, waiting.ID)
	}
	if _, ok := s.leases[running.ID]; !ok || len(s.leases) != 1 {
		t.Errorf("leases %v, want job %d", s.leases, running.ID)
	}
	wantEnd := map[uint64]uint64{running.ID: 100, requeued.ID: 300}
	if len(s.logEnd) != len(wantEnd) {
		t.Errorf("logEnd %v, want %v", s.logEnd, wantEnd)
	}
	for id, end := range wantEnd {
		if s.logEnd[id] != end {
			t.Errorf("logEnd[%d] = %d, want %d", id, s.logEnd[id], end)
		}
	}
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"jobsuite_jobs", "state", "queued", 4},
		{"jobsuite_jobs", "state", "waiting", 1},
		{"jobsuite_jobs", "state", "running", 1},
		{"jobsuite_jobs", "state", "dispatched", 0},
		{"jobsuite_queue_depth", "priority", "low", 1},
		{"jobsuite_queue_depth", "priority", "mid", 2},
		{"jobsuite_queue_depth", "priority", "high", 1},
	} {
		if got := gather(t, m, c.name, c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
}
