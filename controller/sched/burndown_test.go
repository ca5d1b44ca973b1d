package sched

import (
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
// (-benchmem) and where they come from (-memprofile).
func BenchmarkBurnDown(b *testing.B) {
	bd := newBurnDown(b, b.N)
	defer bd.stop()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		bd.job(b)
	}
}
