package cluster

import (
	"context"
	"testing"
	"time"

	"jobsuite/controller/clock/clocktest"
)

var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// decide decides the rule now for a leader at last.
func (b *LagBound) decide(last uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	hold, _ := b.over(b.clock.Now(), last)
	return hold
}

// TestLagBoundRule: the admission rule over fake voter reports.
func TestLagBoundRule(t *testing.T) {
	type report struct {
		peer          string
		applied, last uint64
		ago           time.Duration // before the decision
	}
	cases := map[string]struct {
		entries, bytes uint64
		sizes          []int // proposals this term, committed at 1, 2, …
		reports        []report
		last           uint64
		hold           bool
	}{
		"nobody reported": {entries: 100, last: 5000, hold: false},
		"within the bound": {entries: 100, last: 1000,
			reports: []report{{"b", 900, 1000, 0}, {"c", 950, 1000, 0}}, hold: false},
		"exactly at the bound": {entries: 100, last: 1000,
			reports: []report{{"b", 900, 1000, 0}}, hold: false},
		"one voter past the bound": {entries: 100, last: 1000,
			reports: []report{{"b", 899, 1000, 0}, {"c", 1000, 1000, 0}}, hold: true},
		"past the bound, heard from 2 s ago": {entries: 100, last: 1000,
			reports: []report{{"b", 10, 20, 2 * time.Second}}, hold: true},
		"past the bound but dead (silent over 2 s)": {entries: 100, last: 1000,
			reports: []report{{"b", 10, 20, 2*time.Second + time.Millisecond}}, hold: false},
		"past the bound, stuck (heard, not applying, for over 2 s)": {entries: 100, last: 1000,
			reports: []report{{"b", 10, 20, 3 * time.Second}, {"b", 10, 20, 1 * time.Second}, {"b", 10, 20, 0}}, hold: false},
		"past the bound, applying slowly": {entries: 100, last: 1000,
			reports: []report{{"b", 10, 20, 3 * time.Second}, {"b", 11, 20, 1 * time.Second}, {"b", 11, 20, 0}}, hold: true},
		"entries bound off": {entries: 0, bytes: 1 << 20, last: 1_000_000,
			reports: []report{{"b", 1, 1, 0}}, hold: false},
		"bytes past the bound, entries within": {entries: 100, bytes: 1000,
			sizes: []int{600, 600, 600}, last: 3, reports: []report{{"b", 1, 3, 0}}, hold: true},
		"bytes within the bound": {entries: 100, bytes: 1000,
			sizes: []int{600, 600, 600}, last: 3, reports: []report{{"b", 2, 3, 0}}, hold: false},
		"bytes of a voter behind this term's first entry": {entries: 100, bytes: 1000,
			sizes: []int{600, 600}, last: 2, reports: []report{{"b", 0, 0, 0}}, hold: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			clk := clocktest.NewFake(t0)
			b := NewLagBound(tc.entries, tc.bytes, clk)
			for i, sz := range tc.sizes {
				b.Committed(uint64(i+1), b.Proposed(sz))
			}
			// Reports come oldest first; the clock ends at the decision.
			start := t0
			if len(tc.reports) > 0 {
				start = t0.Add(-tc.reports[0].ago)
			}
			clk = clocktest.NewFake(start)
			b.clock = clk
			for _, r := range tc.reports {
				clk.Advance(t0.Add(-r.ago).Sub(clk.Now()))
				b.Report(r.peer, r.applied, r.last)
			}
			clk.Advance(t0.Sub(clk.Now()))
			if got := b.decide(tc.last); got != tc.hold {
				t.Fatalf("hold = %v, want %v (lags %+v)", got, tc.hold, b.Lags(tc.last))
			}
		})
	}
}

// waitAsync runs b.Wait in a goroutine; the channel closes when it
// returns.
func waitAsync(ctx context.Context, b *LagBound, last uint64) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Wait(ctx, func() uint64 { return last })
	}()
	return done
}

// TestLagBoundWait: Wait holds while a live voter is past the bound and
// releases when it catches up, when it dies, or when the term ends; the
// time held is counted.
func TestLagBoundWait(t *testing.T) {
	cases := map[string]struct {
		release func(b *LagBound, clk *clocktest.Fake, cancel context.CancelFunc)
		held    time.Duration
	}{
		"the voter catches up": {
			release: func(b *LagBound, clk *clocktest.Fake, _ context.CancelFunc) {
				clk.Advance(300 * time.Millisecond)
				b.Report("b", 500, 1000) // still past the bound: held on
				clk.Advance(200 * time.Millisecond)
				b.Report("b", 950, 1000)
			},
			held: 500 * time.Millisecond,
		},
		"the voter goes silent": {
			release: func(b *LagBound, clk *clocktest.Fake, _ context.CancelFunc) {
				clk.Advance(LagLive)
				clk.Advance(time.Millisecond)
			},
			held: LagLive + time.Millisecond,
		},
		"the term ends": {
			release: func(b *LagBound, clk *clocktest.Fake, cancel context.CancelFunc) {
				clk.Advance(time.Second)
				cancel()
			},
			held: time.Second,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			clk := clocktest.NewFake(t0)
			b := NewLagBound(100, 0, clk)
			b.Report("b", 10, 1000)
			b.Report("c", 1000, 1000)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := waitAsync(ctx, b, 1000)
			clk.WaitTimers(1) // it holds: its timer for b's liveness is armed
			select {
			case <-done:
				t.Fatal("Wait returned while a live voter was past the bound")
			default:
			}
			tc.release(b, clk, cancel)
			<-done
			held, holds := b.Held()
			if held != tc.held || holds != 1 {
				t.Fatalf("held %v in %d holds, want %v in 1", held, holds, tc.held)
			}
		})
	}
}

// TestLagBoundPending: entries handed to raft but not yet committed
// count as the leader's, so rounds in flight cannot carry a voter past
// the bound unseen.
func TestLagBoundPending(t *testing.T) {
	clk := clocktest.NewFake(t0)
	b := NewLagBound(10, 0, clk)
	b.Report("b", 95, 100)
	if b.decide(100) {
		t.Fatal("held within the bound")
	}
	var cums []uint64
	for range 6 {
		cums = append(cums, b.Proposed(10))
	}
	if !b.decide(100) {
		t.Fatal("not held with 5+6 entries behind, 10 allowed")
	}
	for i, c := range cums {
		b.Committed(uint64(101+i), c)
	}
	b.Report("b", 100, 106)
	if b.decide(106) {
		t.Fatal("held after the voter caught up")
	}
}

// TestLagBoundReset: a new term waits for nobody until voters report.
func TestLagBoundReset(t *testing.T) {
	clk := clocktest.NewFake(t0)
	b := NewLagBound(10, 0, clk)
	b.Report("b", 1, 100)
	if !b.decide(100) {
		t.Fatal("not held")
	}
	b.Reset()
	if b.decide(100) {
		t.Fatal("held after Reset")
	}
	if lags := b.Lags(100); len(lags) != 0 {
		t.Fatalf("lags after Reset: %+v", lags)
	}
}

// TestLagBoundOff: without a bound, Wait never holds.
func TestLagBoundOff(t *testing.T) {
	b := NewLagBound(0, 0, clocktest.NewFake(t0))
	b.Report("b", 0, 0)
	b.Wait(context.Background(), func() uint64 { return 1 << 40 })
	if held, holds := b.Held(); held != 0 || holds != 0 {
		t.Fatalf("held %v in %d holds", held, holds)
	}
}

// TestLagBoundContact: a voter's last contact is what it said plus the
// age of its report, so it grows while the voter does not answer;
// unknown (-1) until it said, and a contact before its first Report is
// ignored.
func TestLagBoundContact(t *testing.T) {
	clk := clocktest.NewFake(t0)
	b := NewLagBound(0, 0, clk)
	b.ReportContact("a", time.Second) // no Report yet: nothing to attach it to
	b.Report("b", 5, 5)
	contact := func() map[string]time.Duration {
		out := map[string]time.Duration{}
		for _, l := range b.Lags(5) {
			out[l.Peer] = l.LastContact
		}
		return out
	}
	if got := contact(); len(got) != 1 || got["b"] != -1 {
		t.Fatalf("before b said: %v; want b unknown (-1) and no a", got)
	}
	b.ReportContact("b", 30*time.Millisecond)
	if got := contact()["b"]; got != 30*time.Millisecond {
		t.Fatalf("b's contact = %v, want 30ms", got)
	}
	clk.Advance(2 * time.Second) // b does not answer
	if got := contact()["b"]; got != 2030*time.Millisecond {
		t.Fatalf("b's contact 2 s later = %v, want 2.03s", got)
	}
	b.Report("b", 6, 6)
	b.ReportContact("b", 10*time.Millisecond)
	if got := contact()["b"]; got != 10*time.Millisecond {
		t.Fatalf("b's contact after it answered = %v, want 10ms", got)
	}
}
