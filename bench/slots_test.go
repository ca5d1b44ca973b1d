package bench

import (
	"testing"
	"time"
)

// TestSlotWaits checks the diagnosis of late dispatch decisions: a late
// job counts as waiting for a slot only if every slot was held when it
// was submitted.
func TestSlotWaits(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	job := func(id uint64, created, dispatched, finished int) *jobRecord {
		r := &jobRecord{JobID: id, CreatedAt: at(created)}
		f := at(finished)
		r.Attempts = append(r.Attempts, attemptRecord{Number: 1, DispatchedAt: at(dispatched), FinishedAt: &f})
		return r
	}
	recs := map[uint64]*jobRecord{
		1: job(1, 0, 0, 20),   // holds slot A 0–20 ms
		2: job(2, 0, 1, 30),   // holds slot B 1–30 ms
		3: job(3, 10, 20, 25), // late (10 ms), both slots held at 10 ms: waited for a slot
		4: job(4, 40, 50, 55), // late (10 ms), nothing held at 40 ms: waited for something else
		5: job(5, 50, 51, 52), // on time
	}
	n, full := slotWaits(recs, 2, 5*time.Millisecond)
	if n != 2 || full != 1 {
		t.Fatalf("slotWaits = %d late, %d with every slot held; want 2, 1", n, full)
	}
	if n, full := slotWaits(recs, 3, 5*time.Millisecond); n != 2 || full != 0 {
		t.Fatalf("with 3 slots: %d late, %d full; want 2, 0", n, full)
	}
}
