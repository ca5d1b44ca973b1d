package sched

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/clock/clocktest"
	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// Scheduler tests on a clock of their own: a fake clock the tests move
// (or synctest's bubble for the loops), a store in memory and sessions
// that only collect what they are sent. Leases of minutes run in
// microseconds, and every time is exact.

var schedT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type schedFixture struct {
	t     *testing.T
	s     *Scheduler
	ms    *memStore
	clock *clocktest.Fake
}

// newSchedFixture is a scheduler on a fake clock at schedT0 over a
// memStore. Unset options get test defaults (a lease of 10s, retries
// after 1s up to 1m, a kill grace of 1s); Jitter is 0.5, which adds
// nothing.
func newSchedFixture(t *testing.T, o Options) *schedFixture {
	t.Helper()
	clk := clocktest.NewFake(schedT0)
	o.Clock = clk
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.KillGrace == 0 {
		o.KillGrace = time.Second
	}
	if o.BackoffBase == 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = time.Minute
	}
	if o.Jitter == nil {
		o.Jitter = func() float64 { return 0.5 }
	}
	s, ms := memScheduler(t, o)
	return &schedFixture{t: t, s: s, ms: ms, clock: clk}
}

// fakeAgent is an agent's session (Session): what the scheduler sends
// it stays in its queue (see sent), and it records being closed.
type fakeAgent struct {
	name   string
	labels map[string]string
	slots  int
	log    hclog.Logger
	out    chan protocol.Message

	mu     sync.Mutex
	closed string
}

func (a *fakeAgent) Name() string              { return a.name }
func (a *fakeAgent) Labels() map[string]string { return a.labels }
func (a *fakeAgent) Slots() int                { return a.slots }
func (a *fakeAgent) Log() hclog.Logger         { return a.log }

func (a *fakeAgent) Send(m protocol.Message) {
	select {
	case a.out <- m:
	default:
		a.Close("control stream backlog full")
	}
}

func (a *fakeAgent) Close(reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed == "" {
		a.closed = reason
	}
}

func (a *fakeAgent) closeReason() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// newAgent is a session of agent name with slots, connected to s (no
// credits yet). What s sends it stays in its queue: see sent.
func newAgent(t *testing.T, s *Scheduler, name string, slots int) *fakeAgent {
	t.Helper()
	a := &fakeAgent{name: name, slots: slots, log: testLog(t, name), out: make(chan protocol.Message, 1024)}
	s.Register(a, nil)
	return a
}

// sent returns the messages queued for a since the last call.
func sent(a *fakeAgent) []protocol.Message {
	var out []protocol.Message
	for {
		select {
		case m := <-a.out:
			out = append(out, m)
		default:
			return out
		}
	}
}

// cancels returns the Cancel messages queued for a since the last call.
func cancels(a *fakeAgent) []*protocol.Cancel {
	var out []*protocol.Cancel
	for _, m := range sent(a) {
		if c, ok := m.(*protocol.Cancel); ok {
			out = append(out, c)
		}
	}
	return out
}

// dispatch runs one dispatch round as dispatchLoop does — the Dispatches
// go out once the round is durable — and returns them.
func (f *schedFixture) dispatch() []*protocol.Dispatch {
	f.t.Helper()
	r, ok := f.s.dispatch()
	if !ok {
		return nil
	}
	if err := r.b.Wait(); err != nil {
		f.t.Fatal(err)
	}
	var out []*protocol.Dispatch
	for _, o := range r.out {
		o.a.Send(o.m)
		out = append(out, o.m.(*protocol.Dispatch))
	}
	return out
}

func (f *schedFixture) submit(j *store.Job) *store.Job {
	f.t.Helper()
	j, created, err := f.s.Submit(j, nil)
	if err != nil || !created {
		f.t.Fatalf("submit: created %v, %v", created, err)
	}
	return j
}

// job returns the scheduler's latest version of job id.
func (f *schedFixture) job(id uint64) *store.Job {
	f.t.Helper()
	j := f.s.Snapshot(id)
	if j == nil {
		var err error
		if j, err = f.ms.Get(id); err != nil {
			f.t.Fatalf("job %d: %v", id, err)
		}
	}
	return j
}

// finish reports attempt of job id ended with exit code, and waits
// until that is durable.
func (f *schedFixture) finish(a *fakeAgent, id uint64, attempt uint32, outcome protocol.Outcome, code int32) {
	f.t.Helper()
	b, err := f.s.Finished(a.name, id, attempt, &protocol.Finished{Outcome: outcome, ExitCode: code})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := b.Wait(); err != nil {
		f.t.Fatal(err)
	}
}

// expire runs the expiry at the clock's time and returns when the next
// entry is due.
func (f *schedFixture) expire() time.Time { return f.s.expire(f.clock.Now()) }

func ref(id uint64, attempt uint32) []protocol.AttemptRef {
	return []protocol.AttemptRef{{JobID: id, Attempt: attempt}}
}

// A heartbeat that lists an attempt renews its lease: the expiry entry
// queued for the first deadline finds it renewed and moves on, and only
// a lease left alone for its whole length runs out — the attempt is
// lost, the job waits to retry, and the agent is told to stop it.
func TestSchedulerLeaseRenewedThenLost(t *testing.T) {
	f := newSchedFixture(t, Options{})
	j := f.submit(&store.Job{Command: "true", Retries: 1})
	a := newAgent(t, f.s, "a", 1)
	f.s.Credit(a, 1)
	if d := f.dispatch(); len(d) != 1 || d[0].JobID != j.ID || d[0].Attempt != 1 {
		t.Fatalf("dispatched %+v, want job %d attempt 1", d, j.ID)
	}
	if err := f.s.Started(a.name, j.ID, 1, &protocol.Started{PID: 7}); err != nil {
		t.Fatal(err)
	}

	f.clock.Advance(9 * time.Second)
	f.s.Heartbeat(a, ref(j.ID, 1), nil) // until 19s
	if next := f.expire(); !next.Equal(schedT0.Add(10 * time.Second)) {
		t.Fatalf("next expiry at %v, want the first deadline, 10s", next.Sub(schedT0))
	}
	f.clock.Advance(time.Second)
	if next := f.expire(); !next.Equal(schedT0.Add(19 * time.Second)) {
		t.Fatalf("after the first deadline: next at %v, want the renewed one, 19s", next.Sub(schedT0))
	}
	if st := f.job(j.ID).State; st != store.Running {
		t.Fatalf("a renewed lease ran out: %s", st)
	}
	f.clock.Advance(9*time.Second - 1)
	f.expire()
	if st := f.job(j.ID).State; st != store.Running {
		t.Fatalf("lost before its lease ran out: %s", st)
	}
	f.clock.Advance(1)
	if next := f.expire(); !next.IsZero() {
		t.Errorf("entries left after the loss: next at %v", next.Sub(schedT0))
	}
	got := f.job(j.ID)
	c := got.Attempts[0]
	if got.State != store.Waiting || c.Outcome != store.OutcomeLost || !strings.Contains(c.Error, "did not renew the lease within 10s") {
		t.Fatalf("after the lease: %s, attempt %q (%s); want waiting, lost", got.State, c.Outcome, c.Error)
	}
	if want := schedT0.Add(20 * time.Second); !got.NotBefore.Equal(want) {
		t.Errorf("retry at %v, want the loss + 1s", got.NotBefore.Sub(schedT0))
	}
	if cs := cancels(a); len(cs) != 1 || cs[0].JobID != j.ID || cs[0].Attempt != 1 || cs[0].Reason != "lease expired" {
		t.Errorf("cancels sent %+v, want one for attempt 1, lease expired", cs)
	}
	// A late report of the lost attempt is refused (fencing).
	if _, err := f.s.Finished(a.name, j.ID, 1, &protocol.Finished{Outcome: protocol.OutcomeCompleted}); !errors.Is(err, ErrStaleAttempt) {
		t.Errorf("report of the lost attempt: %v, want ErrStaleAttempt", err)
	}
}

// backoff is base·2^(n-1), capped, ±20% by the jitter; the job's own
// base and cap win over the scheduler's.
func TestSchedulerBackoff(t *testing.T) {
	tests := map[string]struct {
		job    store.Job
		n      int
		jitter float64
		want   time.Duration
	}{
		"first, no jitter":         {store.Job{}, 1, 0.5, time.Second},
		"third, no jitter":         {store.Job{}, 3, 0.5, 4 * time.Second},
		"capped":                   {store.Job{}, 20, 0.5, time.Minute},
		"jitter low end":           {store.Job{}, 2, 0, 1600 * time.Millisecond},
		"jitter high end":          {store.Job{}, 2, 1, 2400 * time.Millisecond},
		"job's base":               {store.Job{BackoffBase: 10 * time.Second}, 2, 0.5, 20 * time.Second},
		"job's cap":                {store.Job{BackoffMax: 3 * time.Second}, 5, 0.5, 3 * time.Second},
		"job's cap below its base": {store.Job{BackoffBase: 5 * time.Second, BackoffMax: 2 * time.Second}, 1, 0.5, 2 * time.Second},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newSchedFixture(t, Options{Jitter: func() float64 { return tt.jitter }})
			if got := f.s.backoff(&tt.job, tt.n); got != tt.want {
				t.Errorf("backoff(%d) = %v, want %v", tt.n, got, tt.want)
			}
		})
	}
}

// A job that fails retries after base, 2·base, … (capped, here with
// +10% jitter), waiting in the delay heap until exactly then, and fails
// for good after its last retry.
func TestSchedulerRetriesWithBackoff(t *testing.T) {
	f := newSchedFixture(t, Options{BackoffBase: time.Second, BackoffMax: 3 * time.Second, Jitter: func() float64 { return 0.75 }})
	j := f.submit(&store.Job{Command: "false", Retries: 3})
	a := newAgent(t, f.s, "a", 1)
	waits := []time.Duration{1100 * time.Millisecond, 2200 * time.Millisecond, 3300 * time.Millisecond}
	for n := uint32(1); n <= 4; n++ {
		f.s.Credit(a, 1)
		if d := f.dispatch(); len(d) != 1 || d[0].Attempt != n {
			t.Fatalf("attempt %d: dispatched %+v", n, d)
		}
		f.clock.Advance(time.Second) // it runs a second
		f.finish(a, j.ID, n, protocol.OutcomeFailed, 1)
		got := f.job(j.ID)
		if n == 4 {
			if got.State != store.Failed || got.Reason != "attempt 4 failed: exit code 1" {
				t.Fatalf("after the last retry: %s (%s), want failed", got.State, got.Reason)
			}
			break
		}
		due := f.clock.Now().Add(waits[n-1])
		if got.State != store.Waiting || !got.NotBefore.Equal(due) {
			t.Fatalf("after attempt %d: %s until %v, want waiting %v", n, got.State, got.NotBefore.Sub(f.clock.Now()), waits[n-1])
		}
		if want := fmt.Sprintf("retry %d of 3", n); !strings.Contains(got.Reason, want) {
			t.Errorf("reason %q lacks %q", got.Reason, want)
		}
		if next := f.s.requeueDue(due.Add(-1)); !next.Equal(due) {
			t.Fatalf("requeue before it is due: next at %v, want %v", next, due)
		}
		if st := f.job(j.ID).State; st != store.Waiting {
			t.Fatalf("requeued early: %s", st)
		}
		f.clock.Advance(waits[n-1])
		if next := f.s.requeueDue(f.clock.Now()); !next.IsZero() {
			t.Errorf("delay heap not empty after the requeue: %v", next)
		}
		if got := f.job(j.ID); got.State != store.Queued || !got.QueuedAt.Equal(due) {
			t.Fatalf("at the retry: %s queued at %v, want queued at %v", got.State, got.QueuedAt, due)
		}
	}
	// Every decision is in the commands: the retries carry their NotBefore.
	var retries []time.Time
	for _, c := range f.ms.applied() {
		if tr, ok := c.(*store.Transition); ok && tr.Event.Type == "retry" {
			retries = append(retries, tr.Job.NotBefore)
		}
	}
	if len(retries) != 3 {
		t.Errorf("%d retry transitions stored, want 3", len(retries))
	}
}

// The controller's deadline ends an attempt whose agent heartbeats but
// does not stop it at its timeout: timeout + kill grace + lease after the
// dispatch, with a Cancel to the agent; with a retry left, it is retried.
func TestSchedulerControllerDeadline(t *testing.T) {
	f := newSchedFixture(t, Options{LeaseTTL: time.Minute, KillGrace: time.Second})
	j := f.submit(&store.Job{Command: "sleep 999", Timeout: 10 * time.Second, Retries: 1})
	a := newAgent(t, f.s, "a", 1)
	f.s.Credit(a, 1)
	f.dispatch()
	deadline := schedT0.Add(71 * time.Second)
	for f.clock.Now().Before(deadline.Add(-20 * time.Second)) {
		f.clock.Advance(20 * time.Second)
		f.s.Heartbeat(a, ref(j.ID, 1), nil)
		if next := f.expire(); next.After(deadline) {
			t.Fatalf("at %v the next expiry is %v, after the deadline", f.clock.Now().Sub(schedT0), next.Sub(schedT0))
		}
	}
	if st := f.job(j.ID).State; st != store.Dispatched {
		t.Fatalf("ended before the deadline: %s", st)
	}
	f.clock.Advance(deadline.Sub(f.clock.Now()))
	f.expire()
	got := f.job(j.ID)
	c := got.Attempts[0]
	if got.State != store.Waiting || c.Outcome != store.OutcomeTimeout || !strings.Contains(c.Error, "controller's deadline passed") {
		t.Fatalf("at the deadline: %s, %q (%s); want waiting, timeout", got.State, c.Outcome, c.Error)
	}
	if cs := cancels(a); len(cs) != 1 || cs[0].Reason != "timeout (controller deadline)" {
		t.Errorf("cancels %+v, want one for the deadline", cs)
	}
}

// Credits: the agent's grants, capped at its slots, and dispatch checks
// both credits and free slots; a lost credit comes back with the next
// heartbeat, which counts what the agent holds (not what it lists as
// ended) and what it was sent but has not seen yet.
func TestSchedulerCredits(t *testing.T) {
	f := newSchedFixture(t, Options{})
	var jobs []*store.Job
	for range 6 {
		jobs = append(jobs, f.submit(&store.Job{Command: "true"}))
	}
	a := newAgent(t, f.s, "a", 3)
	if d := f.dispatch(); len(d) != 0 {
		t.Fatalf("dispatched %d without credits", len(d))
	}
	f.s.Credit(a, 2)
	if d := f.dispatch(); len(d) != 2 {
		t.Fatalf("2 credits: dispatched %d", len(d))
	}
	f.s.Credit(a, 5) // capped at 3 slots, of which 2 are taken
	if d := f.dispatch(); len(d) != 1 {
		t.Fatalf("after 5 more credits: dispatched %d, want the one free slot", len(d))
	}
	info := f.s.Agents()[0]
	if info.Running != 3 || info.Credits != 2 {
		t.Fatalf("agent: %d running, %d credits; want 3, 2", info.Running, info.Credits)
	}
	// Job 0 ends, and a heartbeat the agent sent before it saw jobs 1
	// and 2 lists nothing: they were sent, so they count as held.
	f.finish(a, jobs[0].ID, 1, protocol.OutcomeCompleted, 0)
	f.s.Heartbeat(a, nil, nil)
	if info := f.s.Agents()[0]; info.Credits != 1 {
		t.Fatalf("after a heartbeat: %d credits, want 1 (3 slots, 2 sent but not yet seen)", info.Credits)
	}
	if d := f.dispatch(); len(d) != 1 {
		t.Fatalf("after the resync: dispatched %d, want 1", len(d))
	}
	// The agent holds jobs 1 and 3, and job 2 has ended on its side
	// (its process is gone; the report is on its way).
	f.s.Heartbeat(a, []protocol.AttemptRef{{JobID: jobs[1].ID, Attempt: 1}, {JobID: jobs[2].ID, Attempt: 1}, {JobID: jobs[3].ID, Attempt: 1}},
		ref(jobs[2].ID, 1))
	if info := f.s.Agents()[0]; info.Credits != 1 {
		t.Fatalf("after a heartbeat with an ended attempt: %d credits, want 1", info.Credits)
	}
	if len(cancels(a)) != 0 {
		t.Error("a heartbeat of current attempts drew a Cancel")
	}
	// An attempt the agent runs that is not current is cancelled.
	f.s.Heartbeat(a, ref(jobs[0].ID, 1), nil)
	if cs := cancels(a); len(cs) != 1 || cs[0].JobID != jobs[0].ID {
		t.Errorf("cancels %+v, want one for job %d's finished attempt", cs, jobs[0].ID)
	}
}

// A drained agent is sent nothing more, whatever credits or heartbeats
// say, while what it runs goes on and ends as usual.
func TestSchedulerDrain(t *testing.T) {
	f := newSchedFixture(t, Options{})
	first := f.submit(&store.Job{Command: "true"})
	a := newAgent(t, f.s, "a", 2)
	f.s.Credit(a, 1)
	f.dispatch()
	f.submit(&store.Job{Command: "true"})
	if !f.s.Drain("a") || f.s.Drain("nobody") {
		t.Fatal("drain reports the connected agent connected and an unknown one not")
	}
	f.s.Credit(a, 2)
	f.s.Heartbeat(a, ref(first.ID, 1), nil)
	if d := f.dispatch(); len(d) != 0 {
		t.Fatalf("dispatched %d to a draining agent", len(d))
	}
	if info := f.s.Agents()[0]; !info.Draining || info.Credits != 0 {
		t.Errorf("agent: draining %v, %d credits; want true, 0", info.Draining, info.Credits)
	}
	if c, _ := f.s.Capacity(false); c.Agents != 1 || c.Used != 1 || c.Free != 0 || c.Draining != 1 {
		t.Errorf("capacity %+v; want 1 agent, draining, 1 slot used, none free", c)
	}
	f.finish(a, first.ID, 1, protocol.OutcomeCompleted, 0)
	if st := f.job(first.ID).State; st != store.Completed {
		t.Errorf("the drained agent's job ended %s", st)
	}
	if d := f.dispatch(); len(d) != 0 {
		t.Fatalf("dispatched %d to a draining agent after a slot freed", len(d))
	}
}

// Cancel in every state a job can be in.
func TestSchedulerCancel(t *testing.T) {
	type setup func(f *schedFixture, a *fakeAgent) *store.Job
	queued := func(f *schedFixture, _ *fakeAgent) *store.Job {
		return f.submit(&store.Job{Command: "true", Cancellable: true})
	}
	running := func(cancellable bool) setup {
		return func(f *schedFixture, a *fakeAgent) *store.Job {
			j := f.submit(&store.Job{Command: "sleep 9", Cancellable: cancellable, Retries: 2})
			f.s.Credit(a, 1)
			f.dispatch()
			return j
		}
	}
	waiting := func(f *schedFixture, a *fakeAgent) *store.Job {
		j := running(true)(f, a)
		f.finish(a, j.ID, 1, protocol.OutcomeFailed, 1)
		return j
	}
	tests := map[string]struct {
		setup   setup
		pending bool
		err     error
		state   store.State // right after the cancel
		cancel  bool        // a Cancel goes to the agent
		reason  string
	}{
		"queued":          {queued, false, nil, store.Cancelled, false, "cancelled before it ran"},
		"waiting":         {waiting, false, nil, store.Cancelled, false, "cancelled while waiting to retry"},
		"running":         {running(true), true, nil, store.Dispatched, true, "cancel requested"},
		"not cancellable": {running(false), true, ErrNotCancellable, store.Dispatched, false, ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newSchedFixture(t, Options{})
			a := newAgent(t, f.s, "a", 1)
			j := tt.setup(f, a)
			sent(a)
			got, pending, err := f.s.Cancel(j.ID)
			if pending != tt.pending || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("cancel: pending %v, %v; want %v, %v", pending, err, tt.pending, tt.err)
			}
			if got.State != tt.state || !strings.HasPrefix(got.Reason, tt.reason) {
				t.Errorf("job %s (%s), want %s (%s…)", got.State, got.Reason, tt.state, tt.reason)
			}
			if cs := cancels(a); (len(cs) == 1) != tt.cancel || len(cs) > 1 {
				t.Errorf("cancels sent %+v, want one: %v", cs, tt.cancel)
			}
			if !tt.pending || tt.err != nil {
				return
			}
			// Again while the agent stops it: nothing new is sent.
			if _, pending, err := f.s.Cancel(j.ID); !pending || err != nil || len(cancels(a)) != 0 {
				t.Errorf("second cancel: pending %v, %v", pending, err)
			}
			// The agent stops it: the job is cancelled, not retried.
			f.finish(a, j.ID, 1, protocol.OutcomeFailed, -1)
			if got := f.job(j.ID); got.State != store.Cancelled {
				t.Errorf("after the agent stopped it: %s, want cancelled", got.State)
			}
			if _, _, err := f.s.Cancel(j.ID); err != nil {
				t.Errorf("cancel of a cancelled job: %v", err)
			}
		})
	}
	t.Run("finished", func(t *testing.T) {
		f := newSchedFixture(t, Options{})
		a := newAgent(t, f.s, "a", 1)
		j := running(true)(f, a)
		f.finish(a, j.ID, 1, protocol.OutcomeCompleted, 0)
		if _, _, err := f.s.Cancel(j.ID); !errors.Is(err, ErrFinished) {
			t.Errorf("cancel of a completed job: %v, want ErrFinished", err)
		}
	})
}

// Output and a loss are ordered by the scheduler lock, and the committer
// keeps that order: a chunk queued before the loss is stored before the
// loss's record (which counts it), one after it is refused, and the
// next attempt's output begins where the lost one's ended.
func TestSchedulerOutputFencing(t *testing.T) {
	f := newSchedFixture(t, Options{})
	j := f.submit(&store.Job{Command: "yes", Retries: 1})
	a := newAgent(t, f.s, "a", 1)
	f.s.Credit(a, 1)
	f.dispatch()
	b, err := f.s.Output("a", j.ID, 1, 0, 1, []byte("hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(10 * time.Second) // the lease runs out
	f.expire()
	if _, err := f.s.Output("a", j.ID, 1, 6, 1, []byte("late\n")); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("output after the loss: %v, want ErrStaleAttempt", err)
	}
	if err := b.Wait(); err != nil {
		t.Fatal(err)
	}
	got := f.job(j.ID)
	if got.LogBytes != 6 || got.Attempts[0].OutputBytes != 6 {
		t.Errorf("lost attempt: log %d bytes, attempt %d; want 6, 6", got.LogBytes, got.Attempts[0].OutputBytes)
	}
	f.clock.Advance(time.Second)
	f.s.requeueDue(f.clock.Now())
	f.s.Credit(a, 1)
	f.dispatch()
	if start := f.job(j.ID).Attempts[1].LogStart; start != 6 {
		t.Errorf("attempt 2 begins at %d, want 6", start)
	}
	// In the store's order: the chunk, then the loss.
	var order []string
	if err := f.s.c.Barrier().Wait(); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.ms.applied() {
		switch c := c.(type) {
		case *store.Output:
			order = append(order, "output "+string(c.Chunk.Data))
		case *store.Transition:
			order = append(order, c.Event.Type)
		}
	}
	want := "submitted dispatched output hello\n retry requeued dispatched"
	if strings.Join(order, " ") != want {
		t.Errorf("commands %q, want %q", strings.Join(order, " "), want)
	}
}

// The loops on their own timers (synctest's bubble: the real clock,
// moved by sleeping): a silent attempt is lost when its lease runs out,
// a silent agent's session is closed, the retry is requeued after its
// backoff and dispatched again.
func TestSchedulerLoops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lease = 4 * time.Second
		s, ms := memScheduler(t, Options{LeaseTTL: lease, KillGrace: time.Second, BackoffBase: time.Second, BackoffMax: time.Second,
			Jitter: func() float64 { return 0.5 }})
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for _, loop := range []func(context.Context){s.DispatchLoop, s.ExpiryLoop, s.DelayLoop} {
			wg.Go(func() { loop(ctx) })
		}
		defer func() {
			cancel()
			wg.Wait()
		}()
		a := newAgent(t, s, "a", 1)
		silent := newAgent(t, s, "silent", 1)
		j, _, err := s.Submit(&store.Job{Command: "true", Retries: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Credit(a, 1)
		synctest.Wait()
		if d := dispatches(a); len(d) != 1 || d[0].Attempt != 1 {
			t.Fatalf("dispatched %+v, want attempt 1", d)
		}

		// Heartbeats that do not list the attempt keep the agent but not
		// the attempt.
		for range 4 {
			time.Sleep(lease / 4)
			s.Heartbeat(a, nil, nil)
			synctest.Wait()
		}
		if got := s.Snapshot(j.ID); got.State != store.Waiting || got.Attempts[0].Outcome != store.OutcomeLost {
			t.Fatalf("after a lease without the attempt: %s", got.State)
		}
		if reason := silent.closeReason(); reason != "" {
			t.Errorf("the silent agent's session closed after a lease, not more: %s", reason)
		}

		s.Credit(a, 1)
		time.Sleep(time.Second) // the backoff
		synctest.Wait()
		if reason := a.closeReason(); reason != "" {
			t.Errorf("the heartbeating agent's session was closed: %s", reason)
		}
		if reason := silent.closeReason(); !strings.Contains(reason, "missed heartbeats") {
			t.Errorf("the silent agent's session: closed %q, want for missed heartbeats", reason)
		}
		if d := dispatches(a); len(d) != 1 || d[0].Attempt != 2 {
			t.Fatalf("after the backoff: dispatched %+v, want attempt 2", d)
		}
		n := 0
		for _, c := range ms.applied() {
			if _, ok := c.(*store.Transition); ok {
				n++
			}
		}
		if n != 5 { // submitted, dispatched, retry, requeued, dispatched (and each agent's record)
			t.Errorf("%d transitions stored, want 5", n)
		}
	})
}

// dispatches returns the Dispatches queued for a since the last call.
func dispatches(a *fakeAgent) []*protocol.Dispatch {
	var out []*protocol.Dispatch
	for _, m := range sent(a) {
		if d, ok := m.(*protocol.Dispatch); ok {
			out = append(out, d)
		}
	}
	return out
}

// featuredAgent is a fakeAgent that announces protocol features.
type featuredAgent struct {
	*fakeAgent
	features protocol.Features
}

func (a featuredAgent) Features() protocol.Features { return a.features }

// A result waits up to resultWait for a round to share only when its
// agent announced that it frees the slot at the process's end (it waits
// for no FinishAck to run its next job); an older agent's result starts
// its round at once.
func TestResultWaitsOnlyForEarlyRelease(t *testing.T) {
	for name, tc := range map[string]struct {
		features protocol.Features
		wait     time.Duration
	}{
		"early release": {protocol.FeatureEarlyRelease | protocol.FeatureRedirect, resultWait},
		"older agent":   {protocol.FeatureRedirect, 0},
		"no features":   {0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newSchedFixture(t, Options{})
				a := featuredAgent{&fakeAgent{name: "a1", slots: 1, log: testLog(t, "a1"), out: make(chan protocol.Message, 16)}, tc.features}
				f.s.Register(a, nil)
				f.s.Credit(a, 1)
				if _, _, err := f.s.Submit(&store.Job{Command: "true"}, nil); err != nil {
					t.Fatal(err)
				}
				d := f.dispatch()
				if len(d) != 1 {
					t.Fatalf("%d dispatches, want 1", len(d))
				}
				synctest.Wait() // the committer is idle
				start := time.Now()
				b, err := f.s.Finished("a1", d[0].JobID, d[0].Attempt, &protocol.Finished{Outcome: protocol.OutcomeCompleted})
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Wait(); err != nil {
					t.Fatal(err)
				}
				if waited := time.Since(start); waited != tc.wait {
					t.Errorf("the result was durable after %s, want %s", waited, tc.wait)
				}
			})
		})
	}
}
