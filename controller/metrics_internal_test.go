package controller

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/hub"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
)

type fakeStats store.Stats

func (f fakeStats) Metrics() store.Stats { return store.Stats(f) }

// gather returns the value of one series of m's registry: a counter's or
// gauge's value, a histogram's sample count. labels are name, value
// pairs.
func gather(t *testing.T, m *metrics, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, s := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range s.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case s.Counter != nil:
				return s.GetCounter().GetValue()
			case s.Gauge != nil:
				return s.GetGauge().GetValue()
			case s.Histogram != nil:
				return float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// TestMetricsTransitions drives the counting through a job's life with
// a lost attempt and a retry, as the scheduler reports it.
func TestMetricsTransitions(t *testing.T) {
	// A job the scheduler loaded at start is counted from the outset.
	st := testStore(t)
	waiting := &store.Job{ID: st.NextID(), Command: "true", State: store.Waiting, Priority: 50}
	if err := applyAll(st, store.NewTransition(waiting, store.Event{Type: "retry"})); err != nil {
		t.Fatal(err)
	}
	sched := testScheduler(t, st)
	if err := sched.Load(); err != nil {
		t.Fatal(err)
	}
	m := newMetrics(hclog.NewNullLogger(), sched, hub.New(), fakeStats{DiskBytes: 123, Compactions: 4, WriteStalls: 2, MemtableBytes: 5}, metricsOptions{})
	if got := gather(t, m, "jobsuite_jobs", "state", "waiting"); got != 1 {
		t.Fatalf("waiting = %v after load, want 1", got)
	}

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := &store.Job{ID: 1, State: store.Queued, Priority: 75, QueuedAt: t0}
	steps := []func(prev *store.Job) *store.Job{
		func(p *store.Job) *store.Job { // dispatched after 2s in the queue
			n := p.Clone()
			n.State = store.Dispatched
			n.Attempts = append(n.Attempts, store.Attempt{Number: 1, QueuedAt: t0, DispatchedAt: t0.Add(2 * time.Second)})
			return n
		},
		func(p *store.Job) *store.Job {
			n := p.Clone()
			n.State = store.Running
			n.Current().StartedAt = t0.Add(3 * time.Second)
			return n
		},
		func(p *store.Job) *store.Job { // lost 10s later, retry scheduled
			n := p.Clone()
			n.State = store.Waiting
			c := n.Current()
			c.Outcome, c.FinishedAt = "lost", t0.Add(13*time.Second)
			return n
		},
		func(p *store.Job) *store.Job {
			n := p.Clone()
			n.State = store.Queued
			n.QueuedAt = t0.Add(20 * time.Second)
			return n
		},
		func(p *store.Job) *store.Job {
			n := p.Clone()
			n.State = store.Dispatched
			n.Attempts = append(n.Attempts, store.Attempt{Number: 2, QueuedAt: n.QueuedAt, DispatchedAt: n.QueuedAt})
			return n
		},
		func(p *store.Job) *store.Job {
			n := p.Clone()
			n.State = store.Running
			n.Current().StartedAt = t0.Add(21 * time.Second)
			return n
		},
		func(p *store.Job) *store.Job { // cancel requested: same state, no count changes
			n := p.Clone()
			n.CancelRequested = true
			return n
		},
		func(p *store.Job) *store.Job {
			n := p.Clone()
			n.State = store.Completed
			c := n.Current()
			c.Outcome, c.Duration, c.FinishedAt = "completed", 4*time.Second, t0.Add(25*time.Second)
			return n
		},
	}
	m.Transition(nil, j)
	if got := gather(t, m, "jobsuite_queue_depth", "priority", "high"); got != 1 {
		t.Fatalf("queue depth high = %v after submit, want 1", got)
	}
	for _, step := range steps {
		next := step(j)
		m.Transition(j, next)
		j = next
	}
	m.LogBytes(10)
	m.LogBytes(5)

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"jobsuite_submissions_total", nil, 1},
		{"jobsuite_completions_total", []string{"result", "completed"}, 1},
		{"jobsuite_completions_total", []string{"result", "failed"}, 0},
		{"jobsuite_retries_total", nil, 1},
		{"jobsuite_lost_attempts_total", nil, 1},
		{"jobsuite_dispatch_latency_seconds", nil, 2},
		{"jobsuite_attempt_duration_seconds", nil, 2}, // the lost one by its start and loss, the other as reported
		{"jobsuite_jobs", []string{"state", "queued"}, 0},
		{"jobsuite_jobs", []string{"state", "dispatched"}, 0},
		{"jobsuite_jobs", []string{"state", "running"}, 0},
		{"jobsuite_jobs", []string{"state", "waiting"}, 1}, // job 7
		{"jobsuite_queue_depth", []string{"priority", "high"}, 0},
		{"jobsuite_log_bytes_total", nil, 15},
		{"jobsuite_agents_connected", nil, 0},
		{"jobsuite_store_disk_usage_bytes", nil, 123},
		{"jobsuite_store_compactions_total", nil, 4},
		{"jobsuite_store_write_stalls_total", nil, 2},
		{"jobsuite_store_memtable_bytes", nil, 5},
	} {
		if got := gather(t, m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// The histograms saw the right values: 2s in the queue, then 0s; 10s
	// and 4s of run time.
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "jobsuite_dispatch_latency_seconds":
			if s := mf.GetMetric()[0].GetHistogram().GetSampleSum(); s != 2 {
				t.Errorf("dispatch latency sum = %v, want 2", s)
			}
		case "jobsuite_attempt_duration_seconds":
			if s := mf.GetMetric()[0].GetHistogram().GetSampleSum(); s != 14 {
				t.Errorf("attempt duration sum = %v, want 14", s)
			}
		}
	}

	// It follows the scheduler's own transitions.
	if _, _, err := sched.Submit(&store.Job{Command: "true", Priority: 25}, nil); err != nil {
		t.Fatal(err)
	}
	if got := gather(t, m, "jobsuite_submissions_total"); got != 2 {
		t.Errorf("submissions = %v after the scheduler's submit, want 2: newMetrics did not hook into the scheduler", got)
	}

	// A nil *metrics (a scheduler built without a Server) ignores hooks.
	var none *metrics
	none.Transition(nil, j)
	none.LogBytes(1)
}

func TestPriorityBucket(t *testing.T) {
	for p, want := range map[int]string{25: "low", 50: "mid", 75: "high", 0: "other", 60: "other", 100: "other"} {
		if got := priorityBucket(p); got != want {
			t.Errorf("priorityBucket(%d) = %q, want %q", p, got, want)
		}
	}
}

// testScheduler is a scheduler over st with a running committer, as a
// Server builds it, without the rest of the Server.
func testScheduler(t *testing.T, st *store.Store) *sched.Scheduler {
	t.Helper()
	c := sched.NewCommitter(st, sched.CommitOptions{})
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- c.Run(stop) }()
	t.Cleanup(func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sched.New(testLog(t, "scheduler"), st, c, sched.Options{})
}

// The schedule label is bounded: the first maxScheduleSeries names keep
// theirs, later ones share "_other".
func TestScheduleLabelBounded(t *testing.T) {
	m := &metrics{schedNames: map[string]bool{}}
	for i := range maxScheduleSeries {
		if got, name := m.scheduleLabel(fmt.Sprintf("s%d", i)), fmt.Sprintf("s%d", i); got != name {
			t.Fatalf("schedule %s labelled %q", name, got)
		}
	}
	tests := map[string]string{"s0": "s0", "s99": "s99", "new": "_other", "another": "_other"}
	for name, want := range tests {
		if got := m.scheduleLabel(name); got != want {
			t.Errorf("schedule %s labelled %q, want %q", name, got, want)
		}
	}
}
