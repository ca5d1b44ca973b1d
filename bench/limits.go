package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"jobsuite/controller/store"
)

// The machine's limits, measured in the same run as the figures they
// bound.

// fsyncProbe writes 4 KiB blocks one after the other into a
// preallocated 64 MiB file (wrapping around), each followed by
// fdatasync, for d in dir — what a write-ahead log on recycled files
// does — and returns the rate and the latencies.
func fsyncProbe(dir string, d time.Duration) (perSec float64, lat []time.Duration, err error) {
	const size = 64 << 20
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		return 0, nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(make([]byte, size)); err != nil {
		return 0, nil, err
	}
	if err := f.Sync(); err != nil {
		return 0, nil, err
	}
	buf := make([]byte, 4096)
	var off int64
	start := time.Now()
	for time.Since(start) < d {
		t := time.Now()
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, nil, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, nil, err
		}
		lat = append(lat, time.Since(t))
		off = (off + int64(len(buf))) % size
	}
	return float64(len(lat)) / time.Since(start).Seconds(), lat, nil
}

// pebbleProbe measures synced store.Apply directly, without the
// controller: writers goroutines each apply per tiny job creations per
// call, for d. It returns updates (jobs) per second and the latency of
// each Apply.
func pebbleProbe(dir string, writers, per int, d time.Duration) (float64, []time.Duration, error) {
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		return 0, nil, err
	}
	defer st.Close()
	var n atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	deadline := start.Add(d)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			ups := make([]store.Command, per)
			for time.Now().Before(deadline) {
				now := time.Now().UTC()
				for i := range ups {
					j := &store.Job{ID: st.NextID(), Name: "true", Command: "true", Priority: 50, Logs: true,
						Cancellable: true, State: store.Queued, CreatedAt: now, QueuedAt: now}
					ups[i] = store.NewTransition(j, store.Event{Time: now, Type: "submitted"})
				}
				t := time.Now()
				if _, err := st.Apply(ups...); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				mine = append(mine, time.Since(t))
				n.Add(int64(per))
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), lat, firstErr
}

// spawnProbe runs /bin/sh -c true from par goroutines for d and returns
// processes per second and the CPU time each cost: in this process
// (os/exec: fork, exec, wait) and in the shell itself.
func spawnProbe(ctx context.Context, par int, d time.Duration) (float64, spawnCost, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, par)
	self0, kids0 := selfCPU(), childrenCPU()
	start := time.Now()
	deadline := start.Add(d)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := exec.Command("/bin/sh", "-c", "true").Run(); err != nil {
					errs <- err
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	self, kids := selfCPU()-self0, childrenCPU()-kids0
	close(errs)
	if err := <-errs; err != nil {
		return 0, spawnCost{}, err
	}
	k := time.Duration(max(n.Load(), 1))
	return float64(n.Load()) / took.Seconds(), spawnCost{spawner: self / k, shell: kids / k}, nil
}

// spawnCost is the CPU time of one bare spawn of /bin/sh -c true.
type spawnCost struct {
	spawner time.Duration // in the process that spawns and waits
	shell   time.Duration // in the shell
}

func (c spawnCost) total() time.Duration { return c.spawner + c.shell }

// pipeProbe times head -c size /dev/zero | cat > /dev/null and returns
// bytes per second.
func pipeProbe(ctx context.Context, size int64) (float64, error) {
	start := time.Now()
	out, err := exec.CommandContext(ctx, "/bin/sh", "-c", fmt.Sprintf("head -c %d /dev/zero | cat > /dev/null", size)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	return float64(size) / time.Since(start).Seconds(), nil
}

// diskProbe writes size bytes sequentially in 1 MiB blocks into a new
// file in dir, then fdatasync, and returns bytes per second.
func diskProbe(dir string, size int64) (float64, error) {
	f, err := os.CreateTemp(dir, "disk-probe-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, err
	}
	return float64(size) / time.Since(start).Seconds(), nil
}

// timerProbe arms n Go timers due at random times within [lo, hi) and
// returns how late each fired: the floor any timer-driven requeue has.
func timerProbe(n int, lo, hi time.Duration) []time.Duration {
	late := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		due := start.Add(lo + time.Duration(rand.Int64N(int64(hi-lo))))
		time.AfterFunc(time.Until(due), func() {
			late[i] = time.Since(due)
			wg.Done()
		})
	}
	wg.Wait()
	return late
}

// scratch returns a new directory under dir.
func scratch(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(p, 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(p, "run-")
}

// percentile returns the q-quantile (0..1) of ds, nearest rank.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// limits caches the machine limits of a run, so a benchmark that needs
// one another already measured reuses it.
type limits struct {
	fsyncRate float64
	fsyncLat  []time.Duration
	pebble    map[[2]int]float64
	pebbleLat map[[2]int][]time.Duration
	disk      float64 // sequential write MB/s (diskRate), 0 until measured
	measured  []Row
}

func (l *limits) rows() []Row { return l.measured }

// fsync returns the data disk's fdatasync rate and its latencies.
func (e *env) fsync() (float64, []time.Duration, error) {
	l := &e.limits
	if l.fsyncLat != nil {
		return l.fsyncRate, l.fsyncLat, nil
	}
	dir, err := scratch(e.dir, "limits")
	if err != nil {
		return 0, nil, err
	}
	rate, lat, err := fsyncProbe(dir, e.sz.Probe)
	if err != nil {
		return 0, nil, fmt.Errorf("fsync probe: %w", err)
	}
	l.fsyncRate, l.fsyncLat = rate, lat
	l.measured = append(l.measured, Row{Name: "fdatasync/s of the data disk (4 KiB sequential writes into a preallocated file, one writer)", Value: rate, Unit: "/s",
		Detail: fmt.Sprintf("latency p50 %.3f ms, p99 %.3f ms", ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)))})
	e.progress("limit: fdatasync %s/s, p50 %.3f ms", num(rate), ms(percentile(lat, 0.5)))
	return rate, lat, nil
}

// pebbleRate returns synced store.Apply throughput, in jobs/s, with
// writers concurrent appliers of per jobs each, and the latencies of
// the Apply calls.
func (e *env) pebbleRate(writers, per int) (float64, []time.Duration, error) {
	l := &e.limits
	if l.pebble == nil {
		l.pebble, l.pebbleLat = map[[2]int]float64{}, map[[2]int][]time.Duration{}
	}
	k := [2]int{writers, per}
	if v, ok := l.pebble[k]; ok {
		return v, l.pebbleLat[k], nil
	}
	dir, err := scratch(e.dir, "limits")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(dir)
	v, lat, err := pebbleProbe(dir, writers, per, e.sz.Probe)
	if err != nil {
		return 0, nil, fmt.Errorf("pebble probe: %w", err)
	}
	l.pebble[k], l.pebbleLat[k] = v, lat
	l.measured = append(l.measured, Row{Name: fmt.Sprintf("Pebble group commit: synced store.Apply, %d writer(s) × %d job(s) per Apply", writers, per),
		Value: v, Unit: "jobs/s", Detail: fmt.Sprintf("Apply latency p50 %.3f ms, p99 %.3f ms", ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)))})
	e.progress("limit: pebble %d×%d: %s jobs/s", writers, per, num(v))
	return v, lat, nil
}

// spawnRate returns the raw /bin/sh -c true rate with par spawners and
// the CPU time one spawn costs.
func (e *env) spawnRate(ctx context.Context, par int) (float64, spawnCost, error) {
	v, cost, err := spawnProbe(ctx, par, e.sz.Probe)
	if err != nil {
		return 0, cost, fmt.Errorf("spawn probe: %w", err)
	}
	e.limits.measured = append(e.limits.measured, Row{Name: fmt.Sprintf("raw spawn: /bin/sh -c true, %d at a time (os/exec)", par), Value: v, Unit: "processes/s",
		Detail: fmt.Sprintf("CPU per process: spawner %.0f µs, shell %.0f µs", us(cost.spawner), us(cost.shell))})
	e.progress("limit: spawn ×%d: %s/s, CPU %.0f + %.0f µs per process", par, num(v), us(cost.spawner), us(cost.shell))
	return v, cost, nil
}
