package controller_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"jobsuite/controller"
	"jobsuite/controller/store"
)

// BenchmarkRestart times the steps of a controller start on a store
// holding many queued jobs: store.Open, Store.Active and controller.New,
// each reported separately (open-s, active-s, new-s per start, and the
// heap after New per queued job). `make bench-go` runs it with 100,000
// queued jobs in a temporary directory; JOBSUITE_RESTART_JOBS sets the
// number and JOBSUITE_RESTART_DIR a directory that keeps the data
// between runs (built on the first, reused after), for the 1M:
//
//	JOBSUITE_RESTART_DIR=/tmp/restart-data JOBSUITE_RESTART_JOBS=1000000 \
//	  go test -run '^$' -bench BenchmarkRestart -benchtime 3x ./controller/
//
// make bench's row 7b measures the same from exec to /health.
func BenchmarkRestart(b *testing.B) {
	dir := os.Getenv("JOBSUITE_RESTART_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	n := envInt(b, "JOBSUITE_RESTART_JOBS", 100_000)
	data := filepath.Join(dir, "data-"+strconv.Itoa(n))
	if _, err := os.Stat(data); err != nil {
		buildQueued(b, data, n)
	}
	pki := newPKI(b)
	var open, active, newTook time.Duration
	var heap uint64
	runs := 0
	for b.Loop() {
		runs++
		t0 := time.Now()
		st, err := store.Open(data, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		open += time.Since(t0)
		t1 := time.Now()
		jobs, err := st.Active()
		if err != nil {
			b.Fatal(err)
		}
		active += time.Since(t1)
		if len(jobs) != n {
			b.Fatalf("Active returned %d jobs, want %d", len(jobs), n)
		}
		jobs = nil
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		runtime.GC()

		t2 := time.Now()
		srv, err := controller.New(controller.Config{
			HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: data,
			TLS: files(pki, "controller"),
		})
		if err != nil {
			b.Fatal(err)
		}
		newTook += time.Since(t2)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap += ms.HeapInuse
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Run(ctx); err != nil {
			b.Fatal(err)
		}
	}
	r := float64(runs)
	b.ReportMetric(open.Seconds()/r, "open-s")
	b.ReportMetric(active.Seconds()/r, "active-s")
	b.ReportMetric(newTook.Seconds()/r, "new-s")
	b.ReportMetric(float64(heap)/r/float64(n), "heap-B/job")
}

// buildQueued stores n queued jobs shaped like the bench's deep queue
// ({"command":"true","name":"deep","priority":"low"}), created in
// batches of 1,000 as POST /jobs/batch would, plus 10,000 finished ones.
func buildQueued(t testing.TB, data string, n int) {
	t.Helper()
	st, err := store.Open(data, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	for done := 0; done < 10_000; done += 1000 {
		var ups []store.Command
		for range 1000 {
			j := &store.Job{ID: st.NextID(), Name: "hi", Command: "true", Logs: true, Cancellable: true, Priority: 75,
				State: store.Queued, CreatedAt: now, QueuedAt: now}
			ups = append(ups, store.NewTransition(j, store.Event{Time: now, Type: "submitted"}))
			fin := j.Clone()
			fin.State, fin.FinishedAt = store.Completed, now
			ups = append(ups, store.NewTransition(fin, store.Event{Time: now, Type: "finished"}))
		}
		if _, err := st.Apply(ups...); err != nil {
			t.Fatal(err)
		}
	}
	for left := n; left > 0; {
		var ups []store.Command
		for range min(left, 1000) {
			at := time.Now().UTC()
			j := &store.Job{ID: st.NextID(), Name: "deep", Command: "true", Logs: true, Cancellable: true, Priority: 25,
				State: store.Queued, CreatedAt: at, QueuedAt: at}
			ups = append(ups, store.NewTransition(j, store.Event{Time: at, Type: "submitted"}))
		}
		if _, err := st.Apply(ups...); err != nil {
			t.Fatal(err)
		}
		left -= len(ups)
	}
}
