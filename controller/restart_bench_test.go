package controller_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"jobsuite/controller"
	"jobsuite/controller/store"
)

// TestRestartTiming times the steps of a controller start on a store
// holding many queued jobs: store.Open, Store.Active and controller.New
// separately. It asserts nothing about time and only runs when
// JOBSUITE_RESTART_DIR names a directory to keep the data in (built on
// the first run, reused after); JOBSUITE_RESTART_JOBS sets the number of
// queued jobs (default 1,000,000) and JOBSUITE_RESTART_RUNS the repeats.
//
//	JOBSUITE_RESTART_DIR=/tmp/restart-data go test -run TestRestartTiming -v ./controller/
func TestRestartTiming(t *testing.T) {
	dir := os.Getenv("JOBSUITE_RESTART_DIR")
	if dir == "" {
		t.Skip("JOBSUITE_RESTART_DIR not set")
	}
	n := envInt(t, "JOBSUITE_RESTART_JOBS", 1_000_000)
	runs := envInt(t, "JOBSUITE_RESTART_RUNS", 3)
	data := filepath.Join(dir, "data-"+strconv.Itoa(n))
	if _, err := os.Stat(data); err != nil {
		buildQueued(t, data, n)
	}
	pki := newPKI(t)
	for r := range runs {
		runtime.GC()
		t0, c0 := time.Now(), cpuTime()
		st, err := store.Open(data, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		open, openCPU := time.Since(t0), cpuTime()-c0
		t1, c1 := time.Now(), cpuTime()
		jobs, err := st.Active()
		if err != nil {
			t.Fatal(err)
		}
		active, activeCPU := time.Since(t1), cpuTime()-c1
		if len(jobs) != n {
			t.Fatalf("Active returned %d jobs, want %d", len(jobs), n)
		}
		jobs = nil
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		runtime.GC()

		t2, c2 := time.Now(), cpuTime()
		srv, err := controller.New(controller.Config{
			HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: data,
			TLS: files(pki, "controller"),
		})
		if err != nil {
			t.Fatal(err)
		}
		newTook, newCPU := time.Since(t2), cpuTime()-c2
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Run(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("run %d: store.Open %s (CPU %s), Active %s (CPU %s, %d jobs); controller.New %s (CPU %s); heap in use after New %.0f MiB (%.0f bytes/job)",
			r, open.Round(time.Millisecond), openCPU.Round(time.Millisecond), active.Round(time.Millisecond), activeCPU.Round(time.Millisecond), n,
			newTook.Round(time.Millisecond), newCPU.Round(time.Millisecond),
			float64(ms.HeapInuse)/(1<<20), float64(ms.HeapInuse)/float64(n))
	}
}

// buildQueued stores n queued jobs shaped like the bench's deep queue
// ({"command":"true","name":"deep","priority":"low"}), created in
// batches of 1,000 as POST /jobs/batch would, plus 10,000 finished ones.
func buildQueued(t *testing.T, data string, n int) {
	t.Helper()
	st, err := store.Open(data, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	for done := 0; done < 10_000; done += 1000 {
		var ups []store.Update
		for range 1000 {
			j := &store.Job{ID: st.NextID(), Name: "hi", Command: "true", Logs: true, Cancellable: true, Priority: 75,
				State: store.Queued, CreatedAt: now, QueuedAt: now}
			ups = append(ups, store.NewUpdate(nil, j, store.Event{Time: now, Type: "submitted"}))
			fin := j.Clone()
			fin.State, fin.FinishedAt = store.Completed, now
			ups = append(ups, store.NewUpdate(j, fin, store.Event{Time: now, Type: "finished"}))
		}
		if err := st.Apply(ups...); err != nil {
			t.Fatal(err)
		}
	}
	for left := n; left > 0; {
		var ups []store.Update
		for range min(left, 1000) {
			at := time.Now().UTC()
			j := &store.Job{ID: st.NextID(), Name: "deep", Command: "true", Logs: true, Cancellable: true, Priority: 25,
				State: store.Queued, CreatedAt: at, QueuedAt: at}
			ups = append(ups, store.NewUpdate(nil, j, store.Event{Time: at, Type: "submitted"}))
		}
		if err := st.Apply(ups...); err != nil {
			t.Fatal(err)
		}
		left -= len(ups)
	}
}

// cpuTime returns the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
