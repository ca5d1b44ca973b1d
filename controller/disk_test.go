package controller

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeDisk is a file system whose free space the test sets.
type fakeDisk struct {
	mu    sync.Mutex
	free  uint64
	calls int
	err   error
}

func (d *fakeDisk) set(free uint64) {
	d.mu.Lock()
	d.free = free
	d.mu.Unlock()
}

func (d *fakeDisk) statfs(string) (uint64, uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	return d.free, 1 << 40, d.err
}

func newFakeGuard(t *testing.T, floor, free uint64) (*diskGuard, *fakeDisk) {
	d := &fakeDisk{free: free}
	g := newDiskGuard("/data", floor, testLog(t, "disk"))
	g.statfs = d.statfs
	return g, d
}

func TestDiskGuardRefusesGrowthBelowTheFloor(t *testing.T) {
	const mib = 1 << 20
	g, d := newFakeGuard(t, 100*mib, 200*mib)
	if err := g.Room(mib); err != nil || !g.Accepting() || !g.writable() {
		t.Fatalf("with room: %v, accepting %v, writable %v", err, g.Accepting(), g.writable())
	}
	// Writes between readings count against the free space: far above
	// the floor they need no new reading, near it they get one.
	calls := d.calls
	if err := g.Room(50 * mib); err != nil || d.calls != calls {
		t.Fatalf("far above the floor: %v, %d more readings; want none", err, d.calls-calls)
	}
	d.set(150 * mib) // what the writes took
	if err := g.Room(45 * mib); err != nil || d.calls != calls+1 {
		t.Fatalf("nearing the floor: %v, %d more readings; want one", err, d.calls-calls)
	}
	d.set(105 * mib)
	if err := g.Room(10 * mib); !errors.Is(err, ErrDiskLow) {
		t.Fatalf("a write that would cross the floor: %v, want ErrDiskLow", err)
	}

	d.set(99 * mib)
	g.refresh(time.Now(), true, 0)
	err := g.Room(1)
	if !errors.Is(err, ErrDiskLow) || g.Accepting() || !g.writable() {
		t.Fatalf("below the floor: %v, accepting %v, writable %v; want refused, not accepting, still writable", err, g.Accepting(), g.writable())
	}
	if _, _, low, refused := g.state(); !low || refused != 2 {
		t.Errorf("state: low %v, refused %d; want low, 2 refusals", low, refused)
	}
	d.set(49 * mib)
	if g.writable() {
		t.Error("below half the floor the store is still writable")
	}

	// Just above the floor is not enough to lift it (no flapping)...
	d.set(101 * mib)
	g.refresh(time.Now(), true, 0)
	if g.Accepting() {
		t.Error("refusals lifted at the floor itself, without the margin")
	}
	// ...the floor plus a tenth is.
	d.set(111 * mib)
	g.refresh(time.Now(), true, 0)
	if err := g.Room(mib); err != nil || !g.Accepting() || !g.writable() {
		t.Fatalf("space back: %v, accepting %v, writable %v", err, g.Accepting(), g.writable())
	}
}

func TestDiskGuardOffOrBlind(t *testing.T) {
	off, _ := newFakeGuard(t, 0, 0)
	if err := off.Room(1 << 30); err != nil || !off.Accepting() || !off.writable() {
		t.Errorf("a guard with no floor refused: %v", err)
	}
	var none *diskGuard
	if err := none.Room(1); err != nil || !none.Accepting() || !none.writable() {
		t.Errorf("a nil guard refused: %v", err)
	}
	// A file system it cannot read is not refused on a guess.
	g, d := newFakeGuard(t, 1<<20, 0)
	d.err = errors.New("statfs: input/output error")
	if err := g.Room(1); err != nil || !g.writable() {
		t.Errorf("statfs failing: %v, writable %v; want no refusal", err, g.writable())
	}
}

func TestDiskWatchLiftsWithoutTraffic(t *testing.T) {
	g, d := newFakeGuard(t, 1<<20, 0)
	if err := g.Room(1); !errors.Is(err, ErrDiskLow) {
		t.Fatalf("no space: %v", err)
	}
	kicked := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.watch(ctx, func() { close(kicked) })
	d.set(1 << 30)
	<-kicked // the watcher's next reading lifts it and kicks dispatch
	if !g.Accepting() {
		t.Fatal("kicked while still refusing")
	}
}

func TestDefaultsFollowTheDisk(t *testing.T) {
	const mib, gib = 1 << 20, 1 << 30
	tests := map[string]struct{ size, memtable, floor, output uint64 }{
		"64 MiB tmpfs": {64 * mib, 4 * mib, 16 * mib, 16 * mib},
		"1 GiB":        {gib, 16 * mib, 64 * mib, 256 * mib},
		"20 GiB":       {20 * gib, 64 * mib, gib, gib},
		"250 GiB":      {250 * gib, 64 * mib, gib, gib},
		"unknown":      {0, 64 * mib, 256 * mib, gib},
	}
	for name, tc := range tests {
		if got := defaultMemTable(tc.size); got != tc.memtable {
			t.Errorf("%s: memtable %d MiB, want %d", name, got/mib, tc.memtable/mib)
		}
		if got := defaultMinFree(tc.size); got != tc.floor {
			t.Errorf("%s: floor %d MiB, want %d", name, got/mib, tc.floor/mib)
		}
		if got := defaultMaxOutput(tc.size); got != tc.output {
			t.Errorf("%s: output cap %d MiB, want %d", name, got/mib, tc.output/mib)
		}
	}
}
