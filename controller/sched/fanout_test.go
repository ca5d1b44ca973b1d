package sched

import (
	"errors"
	"strings"
	"testing"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// fanoutFixture is a scheduler with agents a1..a5, a2, a4 and a5
// labelled role=web.
func fanoutAgents(t *testing.T, f *schedFixture) map[string]*fakeAgent {
	t.Helper()
	out := map[string]*fakeAgent{}
	for _, n := range []string{"a1", "a2", "a3", "a4", "a5"} {
		a := &fakeAgent{name: n, slots: 2, log: testLog(t, n), out: make(chan protocol.Message, 1024)}
		if n == "a2" || n == "a4" || n == "a5" {
			a.labels = map[string]string{"role": "web"}
		}
		f.s.Register(a, nil)
		out[n] = a
	}
	return out
}

func (f *schedFixture) fanout(spec FanoutSpec) (*store.Job, []*store.Job) {
	f.t.Helper()
	p, children, _, err := f.s.SubmitFanout(&store.Job{Command: "uptime", Logs: true, Cancellable: true}, spec, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return p, children
}

// runOn dispatches job id to agent a (one credit) and ends it with
// outcome; it fails the test when another job is dispatched.
func (f *schedFixture) runOn(a *fakeAgent, id uint64, outcome protocol.Outcome) {
	f.t.Helper()
	f.s.Credit(a, 1)
	d := f.dispatch()
	if len(d) != 1 || d[0].JobID != id {
		f.t.Fatalf("dispatched %+v to %s, want job %d", d, a.name, id)
	}
	code := int32(0)
	if outcome != protocol.OutcomeCompleted {
		code = 1
	}
	f.finish(a, id, d[0].Attempt, outcome, code)
}

// A fan-out picks the agents matching its selector at submit, pins one
// child to each, and a child goes to its own agent only; the parent
// ends in the round of its last child's end.
func TestFanoutSelectsAndPins(t *testing.T) {
	f := newSchedFixture(t, Options{})
	agents := fanoutAgents(t, f)
	p, children := f.fanout(FanoutSpec{Selector: map[string]string{"role": "web"}})
	var hosts []string
	for _, c := range children {
		hosts = append(hosts, c.Agent())
		if c.Parent() != p.ID || c.State != store.Queued {
			t.Errorf("child %d: parent %d state %s, want parent %d, queued", c.ID, c.Parent(), c.State, p.ID)
		}
	}
	if got := strings.Join(hosts, ","); got != "a2,a4,a5" {
		t.Fatalf("children on %s, want a2,a4,a5", got)
	}
	if p.State != store.Running || p.Fanout().FirstChild != p.ID+1 || p.Fanout().Children != 3 {
		t.Fatalf("parent %+v", p)
	}
	// a1 and a3 have credits but get nothing; a2's child goes to a2.
	for _, n := range []string{"a1", "a3"} {
		f.s.Credit(agents[n], 2)
	}
	if d := f.dispatch(); len(d) != 0 {
		t.Fatalf("dispatched %+v to agents the fan-out did not pick", d)
	}
	f.runOn(agents["a2"], children[0].ID, protocol.OutcomeCompleted)
	f.runOn(agents["a4"], children[1].ID, protocol.OutcomeCompleted)
	if got := f.job(p.ID); got.State != store.Running || got.Reason != "2 completed, 1 queued" {
		t.Errorf("parent: %s %q, want running \"2 completed, 1 queued\"", got.State, got.Reason)
	}
	f.runOn(agents["a5"], children[2].ID, protocol.OutcomeCompleted)
	if got := f.job(p.ID); got.State != store.Completed || got.Reason != "3 completed" {
		t.Errorf("parent: %s %q, want completed \"3 completed\"", got.State, got.Reason)
	}
	if r := f.roundOf(children[2].ID, store.Completed); !inRound(r, p.ID, store.Completed) {
		t.Errorf("the parent's end is not in the round of its last child's end")
	}
}

// With no agent to run on, nothing is created.
func TestFanoutNoAgents(t *testing.T) {
	f := newSchedFixture(t, Options{})
	fanoutAgents(t, f)
	_, _, _, err := f.s.SubmitFanout(&store.Job{Command: "x"}, FanoutSpec{Selector: map[string]string{"role": "db"}}, nil)
	if !errors.Is(err, ErrNoAgents) || !strings.Contains(err.Error(), "role=db") {
		t.Fatalf("err %v, want ErrNoAgents naming role=db", err)
	}
	if err := f.s.c.Barrier().Wait(); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.ms.applied() {
		if _, ok := c.(*store.PutAgent); !ok {
			t.Errorf("applied %T, want only the agents' records", c)
		}
	}
}

// Batch 1: one child released at a time, the next in the round of the
// previous one's end, in host order.
func TestFanoutBatchOne(t *testing.T) {
	f := newSchedFixture(t, Options{})
	agents := fanoutAgents(t, f)
	p, children := f.fanout(FanoutSpec{Batch: Count{N: 1}})
	if len(children) != 5 {
		t.Fatalf("%d children, want 5", len(children))
	}
	for i, c := range children {
		want := store.Blocked
		if i == 0 {
			want = store.Queued
		}
		if c.State != want {
			t.Fatalf("child %d on %s: %s, want %s", i, c.Agent(), c.State, want)
		}
	}
	if r := f.s.Reason(f.job(children[3].ID)); !strings.Contains(r, "3 ahead of it") {
		t.Errorf("child 3's reason %q, want 3 ahead of it", r)
	}
	for i, c := range children {
		for j, o := range children {
			st := f.job(o.ID).State
			if j > i && st != store.Blocked {
				t.Fatalf("while child %d runs, child %d is %s", i, j, st)
			}
		}
		f.runOn(agents[c.Agent()], c.ID, protocol.OutcomeCompleted)
		if i+1 < len(children) {
			if r := f.roundOf(c.ID, store.Completed); !inRound(r, children[i+1].ID, store.Queued) {
				t.Errorf("child %d's release is not in the round of child %d's end", i+1, i)
			}
		}
	}
	if got := f.job(p.ID); got.State != store.Completed {
		t.Errorf("parent %s, want completed", got.State)
	}
}

// Percentages resolve against the children: 40% of 5 is 2.
func TestFanoutPercent(t *testing.T) {
	tests := map[string]struct {
		c    Count
		n    int
		want int
	}{
		"40% of 5":  {Count{40, true}, 5, 2},
		"10% of 5":  {Count{10, true}, 5, 1},
		"100% of 3": {Count{100, true}, 3, 3},
		"plain 4":   {Count{4, false}, 5, 4},
		"unset":     {Count{}, 5, 0},
	}
	for name, tc := range tests {
		if got := tc.c.of(tc.n); got != tc.want {
			t.Errorf("%s: %d, want %d", name, got, tc.want)
		}
	}
}

// Failures reaching max_failures stop the rollout: the children not
// started are cancelled with the reason, the running one goes on, and
// the parent fails when it ends.
func TestFanoutMaxFailures(t *testing.T) {
	f := newSchedFixture(t, Options{})
	agents := fanoutAgents(t, f)
	p, children := f.fanout(FanoutSpec{Batch: Count{N: 2}, MaxFailures: Count{N: 1}})
	f.s.Credit(agents["a2"], 1)
	d := f.dispatch()
	if len(d) != 1 || d[0].JobID != children[1].ID {
		t.Fatalf("dispatched %+v, want a2's child", d)
	}
	f.runOn(agents["a1"], children[0].ID, protocol.OutcomeFailed)
	want := "rollout stopped: 1 failures reached max_failures 1"
	for _, c := range children[2:] {
		if got := f.job(c.ID); got.State != store.Cancelled || got.Reason != want {
			t.Errorf("child on %s: %s %q, want cancelled %q", c.Agent(), got.State, got.Reason, want)
		}
	}
	if got := f.job(children[1].ID); got.State != store.Dispatched {
		t.Errorf("the running child is %s, want it left running", got.State)
	}
	if got := f.job(p.ID); got.State != store.Running || !got.Fanout().Stopped {
		t.Errorf("parent %s stopped=%v, want running, stopped", got.State, got.Fanout().Stopped)
	}
	f.finish(agents["a2"], children[1].ID, d[0].Attempt, protocol.OutcomeCompleted, 0)
	got := f.job(p.ID)
	if got.State != store.Failed || got.Reason != "1 completed, 1 failed, 3 cancelled; rollout stopped" {
		t.Errorf("parent: %s %q", got.State, got.Reason)
	}
}

// Cancel of the parent cancels the children not started, asks the
// agents of the running ones to kill them, and the parent is cancelled
// once they ended.
func TestFanoutCancelParent(t *testing.T) {
	f := newSchedFixture(t, Options{})
	agents := fanoutAgents(t, f)
	p, children := f.fanout(FanoutSpec{Batch: Count{N: 2}})
	f.s.Credit(agents["a1"], 1)
	f.s.Credit(agents["a2"], 1)
	d := f.dispatch()
	if len(d) != 2 {
		t.Fatalf("dispatched %d, want 2", len(d))
	}
	sent(agents["a1"])
	sent(agents["a2"])
	cur, pending, err := f.s.Cancel(p.ID)
	if err != nil || !pending || cur.State != store.Running {
		t.Fatalf("cancel: %v pending=%v state %s", err, pending, cur.State)
	}
	for _, n := range []string{"a1", "a2"} {
		if c := cancels(agents[n]); len(c) != 1 {
			t.Errorf("agent %s was sent %d cancels, want 1", n, len(c))
		}
	}
	for _, c := range children[2:] {
		if got := f.job(c.ID); got.State != store.Cancelled {
			t.Errorf("blocked child on %s: %s, want cancelled", c.Agent(), got.State)
		}
	}
	for i, n := range []string{"a1", "a2"} {
		f.finish(agents[n], children[i].ID, d[i].Attempt, protocol.OutcomeCancelled, -1)
	}
	if got := f.job(p.ID); got.State != store.Cancelled {
		t.Errorf("parent %s (%s), want cancelled", got.State, got.Reason)
	}
}

// A child of an agent known but not connected waits, saying so, and
// fails once its agent stayed away for the offline timeout.
func TestFanoutOfflineAgent(t *testing.T) {
	f := newSchedFixture(t, Options{OfflineTimeout: time.Minute})
	agents := fanoutAgents(t, f)
	f.s.Unregister(agents["a3"])
	_, children := f.fanout(FanoutSpec{IncludeOffline: true})
	if len(children) != 5 {
		t.Fatalf("%d children, want 5 (a3 included)", len(children))
	}
	c3 := children[2]
	if c3.Agent() != "a3" {
		t.Fatalf("child 2 on %s", c3.Agent())
	}
	if r := f.s.Reason(f.job(c3.ID)); !strings.Contains(r, "agent a3 is not connected") {
		t.Errorf("reason %q", r)
	}
	f.clock.Advance(time.Minute - time.Nanosecond)
	f.s.failAway(f.clock.Now())
	if got := f.job(c3.ID); got.State != store.Queued {
		t.Fatalf("before the timeout: %s", got.State)
	}
	f.clock.Advance(time.Nanosecond)
	f.s.failAway(f.clock.Now())
	if got := f.job(c3.ID); got.State != store.Failed || got.Reason != "agent a3 did not connect within 1m0s" {
		t.Errorf("after the timeout: %s %q", got.State, got.Reason)
	}
	// Without include_offline a3 is not chosen.
	_, children = f.fanout(FanoutSpec{})
	if len(children) != 4 {
		t.Errorf("%d children without include_offline, want 4", len(children))
	}
}

// A restart mid-rollout finds it where it was: the next child is
// released when the running one ends, none twice.
func TestFanoutLoad(t *testing.T) {
	f := newSchedFixture(t, Options{})
	agents := fanoutAgents(t, f)
	p, children := f.fanout(FanoutSpec{Selector: map[string]string{"role": "web"}, Batch: Count{N: 1}})
	f.runOn(agents["a2"], children[0].ID, protocol.OutcomeCompleted)

	s2, _ := memSchedulerOver(t, f.ms, Options{Clock: f.clock, LeaseTTL: 10 * time.Second})
	if err := s2.Load(); err != nil {
		t.Fatal(err)
	}
	f.s = s2
	a4 := &fakeAgent{name: "a4", labels: map[string]string{"role": "web"}, slots: 1, log: testLog(t, "a4"), out: make(chan protocol.Message, 64)}
	a5 := &fakeAgent{name: "a5", labels: map[string]string{"role": "web"}, slots: 1, log: testLog(t, "a5"), out: make(chan protocol.Message, 64)}
	s2.Register(a4, nil)
	s2.Register(a5, nil)
	s2.Credit(a5, 1)
	if d := f.dispatch(); len(d) != 0 {
		t.Fatalf("dispatched %+v out of turn", d)
	}
	f.runOn(a4, children[1].ID, protocol.OutcomeCompleted)
	f.runOn(a5, children[2].ID, protocol.OutcomeCompleted)
	if got := f.job(p.ID); got.State != store.Completed {
		t.Errorf("parent %s, want completed", got.State)
	}
}

// A job after a fan-out parent waits for the whole fan-out.
func TestFanoutDependency(t *testing.T) {
	f := newSchedFixture(t, Options{})
	agents := fanoutAgents(t, f)
	p, children := f.fanout(FanoutSpec{Selector: map[string]string{"role": "web"}})
	after := f.submit(&store.Job{Command: "after", Orchestration: &store.Orchestration{After: []uint64{p.ID}}})
	f.runOn(agents["a2"], children[0].ID, protocol.OutcomeCompleted)
	f.runOn(agents["a4"], children[1].ID, protocol.OutcomeCompleted)
	if got := f.job(after.ID); got.State != store.Blocked {
		t.Fatalf("after two of three children: %s, want blocked", got.State)
	}
	f.runOn(agents["a5"], children[2].ID, protocol.OutcomeCompleted)
	if got := f.job(after.ID); got.State != store.Queued {
		t.Fatalf("after the fan-out: %s, want queued", got.State)
	}
	if r := f.roundOf(children[2].ID, store.Completed); !inRound(r, after.ID, store.Queued) {
		t.Errorf("the dependent's release is not in the round of the last child's end")
	}
}

// A parent's idempotency key: a second submit with it returns the
// first fan-out and creates nothing.
func TestFanoutIdempotencyKey(t *testing.T) {
	f := newSchedFixture(t, Options{})
	fanoutAgents(t, f)
	p, children, created, err := f.s.SubmitFanout(&store.Job{Command: "x", IdempotencyKey: "k"}, FanoutSpec{}, nil)
	if err != nil || !created || len(children) != 5 {
		t.Fatalf("first: created %v, %d children, %v", created, len(children), err)
	}
	again, children, created, err := f.s.SubmitFanout(&store.Job{Command: "x", IdempotencyKey: "k"}, FanoutSpec{}, nil)
	if err != nil || created || children != nil || again.ID != p.ID {
		t.Fatalf("second: job %v created %v children %d, %v; want job %d again", again, created, len(children), err, p.ID)
	}
	for _, c := range f.s.Children(p) {
		if c.IdempotencyKey != "" {
			t.Errorf("child %d holds the key", c.ID)
		}
	}
}
