package sched

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// With Options.OutputChannel the scheduler counts an attempt's output
// only as far as OutputDurable says a quorum holds it: a lost attempt
// records that end (not more), its round cuts every node's copy there
// (TruncateLog), the next attempt starts there, a late durable end of
// the lost attempt is ignored, and a finished attempt records the end it
// was told of.
func TestSchedulerOutputChannel(t *testing.T) {
	f := newSchedFixture(t, Options{OutputChannel: true})
	j := f.submit(&store.Job{Command: "yes", Retries: 1})
	a := newAgent(t, f.s, "a", 1)
	f.s.Credit(a, 1)
	f.dispatch()
	if d, ok := f.s.OutputDurable(j.ID, 1, 40); !ok || d != 40 {
		t.Fatalf("OutputDurable(40) = %d, %v; want 40, true", d, ok)
	}
	if d, ok := f.s.OutputDurable(j.ID, 1, 25); !ok || d != 40 {
		t.Fatalf("OutputDurable(25) after 40 = %d, %v; want 40 (never back), true", d, ok)
	}
	if d, ok := f.s.OutputDurable(j.ID, 2, 90); ok {
		t.Fatalf("OutputDurable of an attempt not dispatched = %d, true", d)
	}
	f.clock.Advance(10 * time.Second) // the lease runs out
	f.expire()
	if _, ok := f.s.OutputDurable(j.ID, 1, 100); ok {
		t.Fatal("OutputDurable of the lost attempt moved its end")
	}
	got := f.job(j.ID)
	if got.LogBytes != 40 || got.Attempts[0].OutputBytes != 40 {
		t.Errorf("lost attempt: log %d bytes, attempt %d; want 40, 40", got.LogBytes, got.Attempts[0].OutputBytes)
	}
	f.clock.Advance(time.Second)
	f.s.requeueDue(f.clock.Now())
	f.s.Credit(a, 1)
	f.dispatch()
	if start := f.job(j.ID).Attempts[1].LogStart; start != 40 {
		t.Errorf("attempt 2 begins at %d, want 40", start)
	}
	if d, ok := f.s.OutputDurable(j.ID, 2, 0); !ok || d != 40 {
		t.Errorf("attempt 2's durable end before any output = %d, %v; want its LogStart 40", d, ok)
	}
	f.s.OutputDurable(j.ID, 2, 75)
	f.finish(a, j.ID, 2, protocol.OutcomeCompleted, 0)
	if got := f.job(j.ID); got.State != store.Completed || got.LogBytes != 75 || got.Attempts[1].OutputBytes != 35 {
		t.Errorf("finished: %s, log %d, attempt %d bytes; want completed, 75, 35", got.State, got.LogBytes, got.Attempts[1].OutputBytes)
	}
	if err := f.s.c.Barrier().Wait(); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, c := range f.ms.applied() {
		switch c := c.(type) {
		case *store.Output:
			order = append(order, "output")
		case *store.Transition:
			order = append(order, c.Event.Type)
		case *store.TruncateLog:
			order = append(order, fmt.Sprintf("truncate@%d", c.At))
		}
	}
	want := "submitted dispatched retry truncate@40 requeued dispatched finished truncate@75"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("commands %q, want %q", got, want)
	}
}

// Without it nothing changes: no TruncateLog in any round.
func TestSchedulerNoOutputChannelNoTruncate(t *testing.T) {
	f := newSchedFixture(t, Options{})
	j := f.submit(&store.Job{Command: "true"})
	a := newAgent(t, f.s, "a", 1)
	f.s.Credit(a, 1)
	f.dispatch()
	f.finish(a, j.ID, 1, protocol.OutcomeCompleted, 0)
	if err := f.s.c.Barrier().Wait(); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.ms.applied() {
		if _, ok := c.(*store.TruncateLog); ok {
			t.Fatal("a TruncateLog without the output channel")
		}
	}
}
