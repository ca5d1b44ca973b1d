package sched

import (
	"iter"
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// TestSchedulerLoad checks what load rebuilds from a store holding jobs
// in every state: the jobs map, the queue in its order (with a label
// class and priorities), the delay heap, leases, the output ends (from
// the store for a running attempt, none for jobs without output) and what
// the metrics were told.
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

	s := New(hclog.NewNullLogger(), st, nil, Options{LeaseTTL: time.Minute})
	m := &countingMetrics{states: map[store.State]int{}, queued: map[int]int{}}
	s.SetMetrics(m)
	if err := s.Load(); err != nil {
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
	// What the metrics were told: every job held, once.
	wantStates := map[store.State]int{store.Queued: 4, store.Waiting: 1, store.Running: 1}
	wantQueued := map[int]int{25: 1, 50: 2, 75: 1} // by priority
	if !maps.Equal(m.states, wantStates) || !maps.Equal(m.queued, wantQueued) {
		t.Errorf("metrics counted states %v, queued by priority %v; want %v, %v", m.states, m.queued, wantStates, wantQueued)
	}
}

// countingMetrics is a Metrics that counts the jobs it is told of.
type countingMetrics struct {
	states map[store.State]int
	queued map[int]int // queued jobs by priority
	noMetrics
}

func (m *countingMetrics) CountAll(jobs iter.Seq[*store.Job]) {
	for j := range jobs {
		m.states[j.State]++
		if j.State == store.Queued {
			m.queued[j.Priority]++
		}
	}
}
