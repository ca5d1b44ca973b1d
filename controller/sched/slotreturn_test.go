package sched

import (
	"testing"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// The slot of an attempt whose result returns it (SlotReturned,
// protocol.FeatureCreditWithResult): the result travels on its job
// stream and the heartbeats on the control stream, so either may arrive
// first, and the credit must come out the same — exactly one free slot
// for the ended attempt — in every order, with the old path (a Credit on
// the control stream, the attempt listed as ended) still exact beside
// it. Two slots, two attempts dispatched (0 credits left), then job 0's
// process ends.
func TestSlotReturnedWithResult(t *testing.T) {
	type step func(f *schedFixture, a *fakeAgent, j0, j1 protocol.AttemptRef)
	result := func(f *schedFixture, a *fakeAgent, j0, _ protocol.AttemptRef) {
		f.finish(a, j0.JobID, j0.Attempt, protocol.OutcomeCompleted, 0)
		f.s.SlotReturned(a, j0.JobID, j0.Attempt)
	}
	resultOnly := func(f *schedFixture, a *fakeAgent, j0, _ protocol.AttemptRef) { // an old agent's: no slot with it
		f.finish(a, j0.JobID, j0.Attempt, protocol.OutcomeCompleted, 0)
	}
	credit := func(f *schedFixture, a *fakeAgent, _, _ protocol.AttemptRef) { f.s.Credit(a, 1) }
	// What the agent's heartbeat lists while it waits for job 0's
	// FinishAck: with the slot owed to the result, job 0 as running.
	owedBeat := func(f *schedFixture, a *fakeAgent, j0, j1 protocol.AttemptRef) {
		f.s.Heartbeat(a, []protocol.AttemptRef{j0, j1}, nil)
	}
	// The old path: its Credit went out before, so job 0 is ended.
	endedBeat := func(f *schedFixture, a *fakeAgent, j0, j1 protocol.AttemptRef) {
		f.s.Heartbeat(a, []protocol.AttemptRef{j0, j1}, []protocol.AttemptRef{j0})
	}
	// After the FinishAck the agent lists job 1 alone.
	ackedBeat := func(f *schedFixture, a *fakeAgent, _, j1 protocol.AttemptRef) {
		f.s.Heartbeat(a, []protocol.AttemptRef{j1}, nil)
	}
	for name, tc := range map[string]struct {
		steps   []step
		want    int // credits at the end
		cancels int // of job 0, listed as running once it ended: only when no result returned its slot
	}{
		"result only":                               {[]step{result}, 1, 0},
		"result, then heartbeat":                    {[]step{result, owedBeat}, 1, 0},
		"heartbeat, then result":                    {[]step{owedBeat, result}, 1, 0},
		"heartbeat, result, heartbeat":              {[]step{owedBeat, result, owedBeat}, 1, 0},
		"result, heartbeats after the FinishAck":    {[]step{result, owedBeat, ackedBeat, ackedBeat}, 1, 0},
		"heartbeat, result, heartbeat after ack":    {[]step{owedBeat, result, ackedBeat}, 1, 0},
		"old path: credit, heartbeat, result":       {[]step{credit, endedBeat, resultOnly}, 1, 0},
		"old path: credit, result, heartbeat":       {[]step{credit, resultOnly, endedBeat}, 1, 0},
		"old path: heartbeat after the FinishAck":   {[]step{credit, resultOnly, ackedBeat}, 1, 0},
		"old path: result before its credit":        {[]step{resultOnly, credit, endedBeat}, 1, 0},
		"an old agent's heartbeat counts no result": {[]step{resultOnly, owedBeat}, 0, 1},
	} {
		t.Run(name, func(t *testing.T) {
			f := newSchedFixture(t, Options{})
			for range 4 {
				f.submit(&store.Job{Command: "true"})
			}
			a := newAgent(t, f.s, "a", 2)
			f.s.Credit(a, 2)
			d := f.dispatch()
			if len(d) != 2 {
				t.Fatalf("dispatched %d, want 2", len(d))
			}
			sent(a)
			j0 := protocol.AttemptRef{JobID: d[0].JobID, Attempt: d[0].Attempt}
			j1 := protocol.AttemptRef{JobID: d[1].JobID, Attempt: d[1].Attempt}
			for _, s := range tc.steps {
				s(f, a, j0, j1)
			}
			if info := f.s.Agents()[0]; info.Credits != tc.want || info.Running != 1 {
				t.Fatalf("agent: %d credits, %d running; want %d, 1", info.Credits, info.Running, tc.want)
			}
			if got := len(f.dispatch()); got != tc.want {
				t.Fatalf("dispatched %d, want %d", got, tc.want)
			}
			if cs := cancels(a); len(cs) != tc.cancels {
				t.Errorf("cancels %+v, want %d: an attempt whose result returned its slot has nothing to stop", cs, tc.cancels)
			}
		})
	}
}

// A result returns its slot to the session it ended on only: one that
// arrives on a session the agent has since replaced adds nothing to the
// new one (whose first Credit counted the slot), nor does one that
// arrives while the agent drains; a result counted twice counts once.
func TestSlotReturnedOnce(t *testing.T) {
	setup := func(t *testing.T) (*schedFixture, *fakeAgent, protocol.AttemptRef) {
		f := newSchedFixture(t, Options{})
		f.submit(&store.Job{Command: "true"})
		f.submit(&store.Job{Command: "true"})
		a := newAgent(t, f.s, "a", 1)
		f.s.Credit(a, 1)
		d := f.dispatch()
		if len(d) != 1 {
			t.Fatalf("dispatched %d, want 1", len(d))
		}
		return f, a, protocol.AttemptRef{JobID: d[0].JobID, Attempt: d[0].Attempt}
	}
	for name, tc := range map[string]struct {
		run  func(f *schedFixture, a *fakeAgent, j protocol.AttemptRef) *fakeAgent // the session to look at
		want int
	}{
		"replaced session": {func(f *schedFixture, a *fakeAgent, j protocol.AttemptRef) *fakeAgent {
			b := newAgent(t, f.s, "a", 1) // it reconnected; the attempt ended meanwhile
			f.s.Register(b, []protocol.AttemptRef{j})
			f.s.Credit(b, 1) // its first Credit: the ended attempt holds no slot
			f.finish(a, j.JobID, j.Attempt, protocol.OutcomeCompleted, 0)
			f.s.SlotReturned(a, j.JobID, j.Attempt) // on the old session's stream
			return b
		}, 1},
		"draining": {func(f *schedFixture, a *fakeAgent, j protocol.AttemptRef) *fakeAgent {
			f.s.Stopping(a)
			f.finish(a, j.JobID, j.Attempt, protocol.OutcomeCompleted, 0)
			f.s.SlotReturned(a, j.JobID, j.Attempt)
			return a
		}, 0},
		"twice": {func(f *schedFixture, a *fakeAgent, j protocol.AttemptRef) *fakeAgent {
			f.finish(a, j.JobID, j.Attempt, protocol.OutcomeCompleted, 0)
			f.s.SlotReturned(a, j.JobID, j.Attempt)
			f.s.SlotReturned(a, j.JobID, j.Attempt)
			return a
		}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			f, a, j := setup(t)
			got := tc.run(f, a, j)
			info, ok := f.s.Agent("a")
			if !ok || info.Session != Session(got) {
				t.Fatalf("the agent's session is not the one expected")
			}
			if info.Credits != tc.want {
				t.Fatalf("%d credits, want %d", info.Credits, tc.want)
			}
		})
	}
}
