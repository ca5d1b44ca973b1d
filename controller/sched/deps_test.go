package sched

import (
	"errors"
	"slices"
	"testing"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// run dispatches job id to a (one free slot) and reports it ended with
// outcome.
func (f *schedFixture) run(a *fakeAgent, id uint64, outcome protocol.Outcome) {
	f.t.Helper()
	f.s.Credit(a, 1)
	d := f.dispatch()
	if len(d) != 1 || d[0].JobID != id {
		f.t.Fatalf("dispatched %+v, want job %d", d, id)
	}
	code := int32(0)
	if outcome != protocol.OutcomeCompleted {
		code = 1
	}
	f.finish(a, id, d[0].Attempt, outcome, code)
}

// roundOf returns the applied batch holding job id's transition to
// state.
func (f *schedFixture) roundOf(id uint64, state store.State) []store.Command {
	f.t.Helper()
	f.ms.mu.Lock()
	defer f.ms.mu.Unlock()
	for _, r := range f.ms.rounds {
		for _, c := range r {
			if tr, ok := c.(*store.Transition); ok && tr.Job.ID == id && tr.Job.State == state {
				return r
			}
		}
	}
	f.t.Fatalf("no round moves job %d to %s", id, state)
	return nil
}

// inRound reports whether round r moves job id to state.
func inRound(r []store.Command, id uint64, state store.State) bool {
	return slices.ContainsFunc(r, func(c store.Command) bool {
		tr, ok := c.(*store.Transition)
		return ok && tr.Job.ID == id && tr.Job.State == state
	})
}

// A chain A → B → C: each waits blocked, naming what it waits for, and
// is queued in the very round its dependency completes.
func TestDepsSuccessChain(t *testing.T) {
	f := newSchedFixture(t, Options{})
	a := newAgent(t, f.s, "a", 1)
	ja := f.submit(&store.Job{Command: "a"})
	jb := f.submit(&store.Job{Command: "b", Orchestration: &store.Orchestration{After: []uint64{ja.ID}}})
	jc := f.submit(&store.Job{Command: "c", Orchestration: &store.Orchestration{After: []uint64{jb.ID}}})
	for _, c := range []struct {
		j    *store.Job
		want string
	}{{jb, "waiting for job 1"}, {jc, "waiting for job 2"}} {
		if got := f.job(c.j.ID); got.State != store.Blocked || got.Reason != c.want {
			t.Fatalf("job %d: %s %q, want blocked %q", c.j.ID, got.State, got.Reason, c.want)
		}
	}
	f.run(a, ja.ID, protocol.OutcomeCompleted)
	if got := f.job(jb.ID); got.State != store.Queued {
		t.Fatalf("after A completed, B is %s (%s), want queued", got.State, got.Reason)
	}
	if r := f.roundOf(ja.ID, store.Completed); !inRound(r, jb.ID, store.Queued) {
		t.Errorf("B's release is not in the round of A's end")
	}
	if got := f.job(jc.ID); got.State != store.Blocked {
		t.Fatalf("C is %s before B ran, want blocked", got.State)
	}
	f.run(a, jb.ID, protocol.OutcomeCompleted)
	f.run(a, jc.ID, protocol.OutcomeCompleted)
	if got := f.job(jc.ID); got.State != store.Completed {
		t.Fatalf("C ended %s, want completed", got.State)
	}
}

// A dependency that ends otherwise than completed cancels its
// dependents, with the reason, and theirs in turn — in the same round;
// with AfterAny the dependent runs whatever the outcome.
func TestDepsFailureCancelsDependents(t *testing.T) {
	tests := map[string]struct {
		outcome protocol.Outcome
		reason  string
	}{
		"failed":    {protocol.OutcomeFailed, "dependency 1 failed"},
		"timed out": {protocol.OutcomeTimeout, "dependency 1 timed out"},
		"cancelled": {protocol.OutcomeCancelled, "dependency 1 was cancelled"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newSchedFixture(t, Options{})
			a := newAgent(t, f.s, "a", 1)
			ja := f.submit(&store.Job{Command: "a"})
			jb := f.submit(&store.Job{Command: "b", Orchestration: &store.Orchestration{After: []uint64{ja.ID}}})
			jc := f.submit(&store.Job{Command: "c", Orchestration: &store.Orchestration{After: []uint64{jb.ID}}})
			jany := f.submit(&store.Job{Command: "any", Orchestration: &store.Orchestration{After: []uint64{ja.ID}, AfterAny: true}})
			f.run(a, ja.ID, tc.outcome)
			if got := f.job(jb.ID); got.State != store.Cancelled || got.Reason != tc.reason {
				t.Errorf("B: %s %q, want cancelled %q", got.State, got.Reason, tc.reason)
			}
			if got := f.job(jc.ID); got.State != store.Cancelled || got.Reason != "dependency 2 was cancelled" {
				t.Errorf("C: %s %q, want cancelled, dependency 2 was cancelled", got.State, got.Reason)
			}
			if got := f.job(jany.ID); got.State != store.Queued {
				t.Errorf("after-any job: %s, want queued", got.State)
			}
			r := f.roundOf(ja.ID, f.job(ja.ID).State)
			if !inRound(r, jb.ID, store.Cancelled) || !inRound(r, jc.ID, store.Cancelled) || !inRound(r, jany.ID, store.Queued) {
				t.Errorf("the dependents' decisions are not in the round of A's end")
			}
		})
	}
}

// A job after several waits for all of them; the live reason names
// those left.
func TestDepsWaitsForAll(t *testing.T) {
	f := newSchedFixture(t, Options{})
	a := newAgent(t, f.s, "a", 1)
	j1 := f.submit(&store.Job{Command: "1"})
	j2 := f.submit(&store.Job{Command: "2"})
	j3 := f.submit(&store.Job{Command: "3", Orchestration: &store.Orchestration{After: []uint64{j1.ID, j2.ID}}})
	if got := f.job(j3.ID); got.Reason != "waiting for jobs 1, 2" {
		t.Fatalf("reason %q", got.Reason)
	}
	f.run(a, j1.ID, protocol.OutcomeCompleted)
	got := f.job(j3.ID)
	if got.State != store.Blocked {
		t.Fatalf("released with job 2 unfinished: %s", got.State)
	}
	if r := f.s.Reason(got); r != "waiting for job 2" {
		t.Errorf("live reason %q, want waiting for job 2", r)
	}
	f.run(a, j2.ID, protocol.OutcomeCompleted)
	if got := f.job(j3.ID); got.State != store.Queued {
		t.Errorf("after both: %s", got.State)
	}
}

// A job can only run after jobs that exist when it is submitted, so no
// cycle can be made: an unknown ID (its own future one included) is
// refused, and nothing is created.
func TestDepsCycleImpossible(t *testing.T) {
	f := newSchedFixture(t, Options{})
	j1 := f.submit(&store.Job{Command: "1"})
	for name, after := range map[string][]uint64{
		"unknown":     {99},
		"its own ID":  {j1.ID + 1},
		"zero":        {0},
		"one unknown": {j1.ID, 7},
	} {
		_, _, err := f.s.Submit(&store.Job{Command: "x", Orchestration: &store.Orchestration{After: after}}, nil)
		if !errors.Is(err, ErrNoDependency) {
			t.Errorf("%s: %v, want ErrNoDependency", name, err)
		}
	}
	if j := f.submit(&store.Job{Command: "2"}); j.ID != j1.ID+1 {
		t.Errorf("a refused submission took an ID: next is %d", j.ID)
	}
}

// Dependencies already ended at submit decide the job at once.
func TestDepsAlreadyEnded(t *testing.T) {
	f := newSchedFixture(t, Options{})
	a := newAgent(t, f.s, "a", 1)
	ok := f.submit(&store.Job{Command: "ok"})
	bad := f.submit(&store.Job{Command: "bad"})
	f.run(a, ok.ID, protocol.OutcomeCompleted)
	f.run(a, bad.ID, protocol.OutcomeFailed)
	tests := map[string]struct {
		job   *store.Job
		state store.State
	}{
		"after completed":     {&store.Job{Command: "x", Orchestration: &store.Orchestration{After: []uint64{ok.ID}}}, store.Queued},
		"after failed":        {&store.Job{Command: "x", Orchestration: &store.Orchestration{After: []uint64{bad.ID}}}, store.Cancelled},
		"after failed, any":   {&store.Job{Command: "x", Orchestration: &store.Orchestration{After: []uint64{bad.ID}, AfterAny: true}}, store.Queued},
		"after both":          {&store.Job{Command: "x", Orchestration: &store.Orchestration{After: []uint64{ok.ID, bad.ID}}}, store.Cancelled},
		"after both, any":     {&store.Job{Command: "x", Orchestration: &store.Orchestration{After: []uint64{ok.ID, bad.ID}, AfterAny: true}}, store.Queued},
		"after failed+queued": {&store.Job{Command: "x", Orchestration: &store.Orchestration{After: []uint64{bad.ID, ok.ID + 100}}}, ""},
	}
	for name, tc := range tests {
		j, _, err := f.s.Submit(tc.job, nil)
		if tc.state == "" {
			if !errors.Is(err, ErrNoDependency) {
				t.Errorf("%s: %v, want ErrNoDependency", name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := f.job(j.ID); got.State != tc.state {
			t.Errorf("%s: %s (%s), want %s", name, got.State, got.Reason, tc.state)
		}
	}
}

// Cancelling a blocked job ends it and cancels the jobs after it.
func TestDepsCancelBlocked(t *testing.T) {
	f := newSchedFixture(t, Options{})
	j1 := f.submit(&store.Job{Command: "1"})
	j2 := f.submit(&store.Job{Command: "2", Orchestration: &store.Orchestration{After: []uint64{j1.ID}}})
	j3 := f.submit(&store.Job{Command: "3", Orchestration: &store.Orchestration{After: []uint64{j2.ID}}})
	got, pending, err := f.s.Cancel(j2.ID)
	if err != nil || pending || got.State != store.Cancelled {
		t.Fatalf("cancel: %v pending %v state %s", err, pending, got.State)
	}
	if got := f.job(j3.ID); got.State != store.Cancelled || got.Reason != "dependency 2 was cancelled" {
		t.Errorf("job 3: %s %q", got.State, got.Reason)
	}
	// Job 1's end no longer finds job 2 blocked: nothing happens to it.
	a := newAgent(t, f.s, "a", 1)
	f.run(a, j1.ID, protocol.OutcomeCompleted)
	if got := f.job(j2.ID); got.State != store.Cancelled {
		t.Errorf("job 2 after job 1 ended: %s", got.State)
	}
}

// Load rebuilds who waits for whom from the blocked jobs, and decides a
// blocked job whose dependencies all ended in a store written otherwise.
func TestDepsLoad(t *testing.T) {
	f := newSchedFixture(t, Options{})
	j1 := f.submit(&store.Job{Command: "1"})
	j2 := f.submit(&store.Job{Command: "2", Orchestration: &store.Orchestration{After: []uint64{j1.ID}}})
	// A blocked job whose dependency ended completed, and one whose
	// dependency failed, without their decisions stored.
	f.ms.put(&store.Job{ID: 10, Command: "done", State: store.Completed, Events: 1})
	f.ms.put(&store.Job{ID: 11, Command: "fail", State: store.Failed, Events: 1})
	f.ms.put(&store.Job{ID: 12, Command: "x", State: store.Blocked, Events: 1, Orchestration: &store.Orchestration{After: []uint64{10}}})
	f.ms.put(&store.Job{ID: 13, Command: "y", State: store.Blocked, Events: 1, Orchestration: &store.Orchestration{After: []uint64{11}}})

	s2, _ := memSchedulerOver(t, f.ms, f.s.opts)
	if err := s2.Load(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint64]store.State{12: store.Queued, 13: store.Cancelled, j2.ID: store.Blocked} {
		if got := s2.Snapshot(id); got == nil || got.State != want {
			t.Errorf("job %d after load: %+v, want %s", id, got, want)
		}
	}
	a := newAgent(t, s2, "a", 1)
	s2.Credit(a, 1)
	r, _ := s2.dispatch()
	if err := r.b.Wait(); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, o := range r.out {
		got = append(got, o.m.(*protocol.Dispatch).JobID)
	}
	if len(got) != 1 || got[0] != j1.ID {
		t.Fatalf("dispatched %v, want job 1 first", got)
	}
	b, err := s2.Finished("a", j1.ID, 1, &protocol.Finished{Outcome: protocol.OutcomeCompleted})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := s2.Snapshot(j2.ID); got.State != store.Queued {
		t.Errorf("job 2 after job 1 ended (loaded): %s", got.State)
	}
}
