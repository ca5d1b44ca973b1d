package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// A full disk must never reach the store: Pebble panics when a write to
// its log fails (ENOSPC included), and a store restarted on a full disk
// loops on background errors instead of serving. So the controller keeps
// headroom, in two steps below a floor of free space (Config.MinFreeBytes):
//
//   - below the floor, growth is refused: new jobs (507 Insufficient
//     Storage), new output (the job stream ends with CodeStorageFull; the
//     agent keeps the output spooled and sends it again later, the job
//     blocks once its spool is full) and dispatch (no new job starts).
//     Everything already running can still finish: its transitions are a
//     few hundred bytes each. Reads are served as usual.
//   - below half the floor, every write waits: the committer holds its
//     next batch until space returns (readers, and whoever waits for the
//     batch, wait with it) rather than hand Pebble a write it cannot make.
//
// Both lift by themselves once free space is back above the floor (plus a
// margin, so a disk hovering at the floor does not flap); no restart is
// needed. Each change is logged and exported (jobsuite_disk_*).
//
// Free space is statfs's f_bavail (what an unprivileged writer may use),
// read at most every diskCheckEvery and estimated in between from the
// bytes the controller wrote since, and once a second in the background
// so the state lifts without traffic.
type diskGuard struct {
	dir   string
	floor uint64 // growth is refused below this much free space
	log   hclog.Logger
	// statfs returns the free and total bytes of dir's file system;
	// tests replace it.
	statfs func(dir string) (free, size uint64, err error)

	mu      sync.Mutex
	free    uint64    // at the last statfs
	checked time.Time // of the last statfs
	written uint64    // bytes written since
	low     bool      // growth refused
	refused uint64    // refusals, for the metrics
	err     error     // the last statfs error, if it failed
}

// diskCheckEvery bounds how stale the free-space figure may be; writes in
// between count against it.
const diskCheckEvery = 100 * time.Millisecond

// diskMargin is how far above the floor free space must be before a
// refusal lifts: a tenth of the floor, at least 1 MiB.
func (g *diskGuard) margin() uint64 { return max(g.floor/10, 1<<20) }

func statfs(dir string) (free, size uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// diskSize returns the size of the file system that holds dir (or would:
// its nearest existing parent), or 0 if it cannot tell.
func diskSize(dir string) uint64 {
	for {
		if _, size, err := statfs(dir); err == nil {
			return size
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return 0
		}
		dir = parent
	}
}

// Defaults that follow the size of the data directory's file system.
const (
	maxDefaultMemTable = 64 << 20
	minDefaultMemTable = 4 << 20
	maxDefaultFloor    = 1 << 30
	maxDefaultOutput   = 1 << 30
)

// defaultMemTable sizes Pebble's memtable (and so its log files) to the
// disk: 64 MiB, or a sixty-fourth of a small file system (at least 4 MiB),
// so that flushing one never needs a large share of it.
func defaultMemTable(size uint64) uint64 {
	if size == 0 {
		return maxDefaultMemTable
	}
	return min(max(size/64, minDefaultMemTable), maxDefaultMemTable)
}

// defaultMinFree is the floor: a twentieth of the file system, at least
// four memtables (room for Pebble to flush and compact while growth is
// refused) and at most 1 GiB.
func defaultMinFree(size uint64) uint64 {
	return min(max(size/20, 4*defaultMemTable(size)), maxDefaultFloor)
}

// defaultMaxOutput caps one attempt's stored output: 1 GiB, or a quarter
// of a smaller file system, so one job cannot fill the disk.
func defaultMaxOutput(size uint64) uint64 {
	if size == 0 {
		return maxDefaultOutput
	}
	return min(size/4, maxDefaultOutput)
}

func newDiskGuard(dir string, floor uint64, log hclog.Logger) *diskGuard {
	return &diskGuard{dir: dir, floor: floor, log: log, statfs: statfs}
}

// refresh reads the free space if the last reading is stale, or if
// writing n more bytes would bring the estimate near the floor (or
// force), and updates the state. The caller holds g.mu.
func (g *diskGuard) refresh(now time.Time, force bool, n uint64) {
	need := g.written + n
	if !force && now.Sub(g.checked) < diskCheckEvery && g.free >= need && g.free-need >= g.floor+g.margin() {
		return
	}
	free, _, err := g.statfs(g.dir)
	g.checked, g.written = now, 0
	if err != nil {
		if g.err == nil {
			g.log.Error("cannot read the free space of the data directory; assuming there is enough", "error", err)
		}
		g.err = err
		return
	}
	g.err = nil
	g.free = free
	switch {
	case !g.low && free < g.floor:
		g.low = true
		g.log.Error("the data directory's disk is nearly full: refusing new jobs, new output and dispatch until space is freed",
			"free", free, "floor", g.floor, "dir", g.dir)
	case g.low && free >= g.floor+g.margin():
		g.low = false
		g.log.Info("the data directory's disk has room again: new jobs, output and dispatch resume", "free", free, "floor", g.floor)
	}
}

// Room reports whether n more bytes may be written as growth (a job, a
// chunk of output). If not, it returns an error that says why and what
// to do; the refusal is counted.
func (g *diskGuard) Room(n int) error {
	if g == nil || g.floor == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refresh(time.Now(), false, uint64(n))
	need := g.written + uint64(n)
	if g.err != nil || !g.low && g.free >= need && g.free-need >= g.floor {
		g.written = need // cannot tell (a failed statfs): do not refuse on a guess
		return nil
	}
	g.refused++
	return fmt.Errorf("%w: %d bytes free in %s, below the floor of %d (-min-free-bytes); new jobs and output are refused until space is freed (finished jobs are removed per -retain-for and -retain-jobs)",
		ErrDiskLow, g.free, g.dir, g.floor)
}

// Accepting reports whether growth is accepted, as of the last reading
// (dispatch asks, under the scheduler's lock: no statfs here).
func (g *diskGuard) Accepting() bool {
	if g == nil || g.floor == 0 {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.low
}

// writable reports whether the store may be written at all: free space
// is above half the floor.
func (g *diskGuard) writable() bool {
	if g == nil || g.floor == 0 {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refresh(time.Now(), g.low, 0) // while low, a fresh reading each time
	return g.err != nil || g.free >= g.floor/2
}

// state returns the last reading for the metrics.
func (g *diskGuard) state() (free, floor uint64, low bool, refused uint64) {
	if g == nil {
		return 0, 0, false, 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.free, g.floor, g.low, g.refused
}

// watch refreshes the reading once a second until ctx is done, so that a
// refusal lifts when space returns even with no writes, and the metrics
// stay current. kick is called when it lifts (dispatch resumes).
func (g *diskGuard) watch(ctx context.Context, kick func()) {
	if g == nil || g.floor == 0 {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.mu.Lock()
			was := g.low
			g.refresh(now, true, 0)
			lifted := was && !g.low
			g.mu.Unlock()
			if lifted {
				kick()
			}
		}
	}
}
