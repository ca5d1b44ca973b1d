package sched

import (
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// burnDown is a scheduler over a real store (unsynced) with an agent of
// one slot and a full queue: bench row 2a's path per job (dispatch,
// started, finished) without the network, for allocation counts.
type burnDown struct {
	s    *Scheduler
	a    *fakeAgent
	stop func()
}

func newBurnDown(tb testing.TB, queued int) *burnDown {
	tb.Helper()
	st, err := store.Open(tb.TempDir(), store.Options{Logger: hclog.NewNullLogger(), NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	c := NewCommitter(st, CommitOptions{})
	stopc := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stopc) }()
	s := New(hclog.NewNullLogger(), st, c, Options{LeaseTTL: time.Minute})
	jobs := make([]*store.Job, queued)
	for i := range jobs {
		jobs[i] = &store.Job{Command: "true", Name: "bench"}
	}
	for len(jobs) > 0 {
		n := min(len(jobs), 1000)
		if _, err := s.SubmitBatch(jobs[:n], nil); err != nil {
			tb.Fatal(err)
		}
		jobs = jobs[n:]
	}
	a := &fakeAgent{name: "a", slots: 1, log: hclog.NewNullLogger(), out: make(chan protocol.Message, 16)}
	s.Register(a, nil)
	s.Credit(a, 1)
	return &burnDown{s: s, a: a, stop: func() {
		close(stopc)
		if err := <-done; err != nil {
			tb.Error(err)
		}
		_ = st.Close()
	}}
}

// job runs the next queued job through: its dispatch (durable before it
// is sent), its start, its result (durable before the FinishAck) and
// the agent's Credit for the slot.
func (bd *burnDown) job(tb testing.TB) {
	r, ok := bd.s.dispatch()
	if !ok || len(r.out) != 1 {
		tb.Fatalf("dispatch: ok %v, %d dispatches", ok, len(r.out))
	}
	if err := r.b.Wait(); err != nil {
		tb.Fatal(err)
	}
	d := r.out[0].m.(*protocol.Dispatch)
	if _, _, ok := bd.s.StreamStart(d.JobID, d.Attempt, bd.a.name); !ok {
		tb.Fatalf("job %d: no stream", d.JobID)
	}
	if err := bd.s.Started(bd.a.name, d.JobID, d.Attempt, &protocol.Started{PID: 42, StartedAt: time.Now()}); err != nil {
		tb.Fatal(err)
	}
	b, err := bd.s.Finished(bd.a.name, d.JobID, d.Attempt, &protocol.Finished{Outcome: protocol.OutcomeCompleted})
	if err != nil {
		tb.Fatal(err)
	}
	bd.s.Credit(bd.a, 1)
	if err := b.Wait(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkBurnDown is one job's dispatch, start and result through the
// scheduler and the store, as in bench row 2a: allocations per job
// (-benchmem), where they come from (-memprofile), and the process's
// CPU time per job (the committer's and Pebble's goroutines included).
func BenchmarkBurnDown(b *testing.B) {
	bd := newBurnDown(b, b.N)
	defer bd.stop()
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		bd.job(b)
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/job")
}

// logEnd holds only the jobs that have output: a job submitted, queued,
// dispatched and started without writing any has no entry (a missing
// one reads as 0), so the map does not grow with the queue; the first
// chunk adds the job, and its end removes it.
func TestLogEndOnlyForJobsWithOutput(t *testing.T) {
	f := newSchedFixture(t, Options{})
	for range 3 {
		f.submit(&store.Job{Command: "true"})
	}
	if _, err := f.s.SubmitBatch([]*store.Job{{Command: "true"}, {Command: "true"}}, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.s.logEnd) != 0 {
		t.Fatalf("logEnd after submits: %v, want no entry", f.s.logEnd)
	}
	a := newAgent(t, f.s, "a", 2)
	f.s.Credit(a, 2)
	d := f.dispatch()
	if len(d) != 2 {
		t.Fatalf("dispatched %d, want 2", len(d))
	}
	for _, m := range d {
		if err := f.s.Started(a.name, m.JobID, m.Attempt, &protocol.Started{PID: 1}); err != nil {
			t.Fatal(err)
		}
		if start, end, ok := f.s.StreamStart(m.JobID, m.Attempt, a.name); !ok || start != 0 || end != 0 {
			t.Fatalf("job %d's stream: start %d, end %d, ok %v; want 0, 0, true", m.JobID, start, end, ok)
		}
	}
	if len(f.s.logEnd) != 0 {
		t.Fatalf("logEnd of running jobs without output: %v, want no entry", f.s.logEnd)
	}
	out := d[0]
	b, err := f.s.Output(a.name, out.JobID, out.Attempt, 0, 1, []byte("hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(); err != nil {
		t.Fatal(err)
	}
	if want := map[uint64]uint64{out.JobID: 6}; !maps.Equal(f.s.logEnd, want) {
		t.Fatalf("logEnd after a chunk: %v, want %v", f.s.logEnd, want)
	}
	for _, m := range d {
		f.finish(a, m.JobID, m.Attempt, protocol.OutcomeCompleted, 0)
	}
	if got := f.job(out.JobID).LogBytes; got != 6 {
		t.Errorf("job %d's LogBytes %d, want 6", out.JobID, got)
	}
	if got := f.job(d[1].JobID).LogBytes; got != 0 {
		t.Errorf("job %d's LogBytes %d, want 0", d[1].JobID, got)
	}
	if len(f.s.logEnd) != 0 {
		t.Fatalf("logEnd after both ended: %v, want no entry", f.s.logEnd)
	}
}

// A transition's log line is "job " + its type, with its state as a
// plain string; for the frequent types and every state neither is made
// per line (each was an allocation per transition, three per job).
func TestTransitionLogValues(t *testing.T) {
	for _, typ := range []string{"submitted", "dispatched", "started", "finished", "retry", "cancelled"} {
		if got := logMessage(typ); got != "job "+typ {
			t.Errorf("logMessage(%q) = %q", typ, got)
		}
	}
	states := []store.State{store.Queued, store.Waiting, store.Dispatched, store.Running, store.Completed,
		store.Failed, store.Timeout, store.Cancelled, store.Blocked, "some-later-state"}
	for _, st := range states {
		if got, ok := stateValue(st).(string); !ok || got != string(st) {
			t.Errorf("stateValue(%q) = %#v, want the plain string", st, stateValue(st))
		}
	}
	var (
		msg   string
		value any
	)
	allocs := testing.AllocsPerRun(100, func() {
		for _, typ := range []string{"submitted", "dispatched", "started", "finished"} {
			msg = logMessage(typ)
		}
		for _, st := range states[:len(states)-1] {
			value = stateValue(st)
		}
	})
	_, _ = msg, value
	if allocs != 0 {
		t.Errorf("%v allocations for the log values of the frequent transitions, want 0", allocs)
	}
}
