package store

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkApplySubmit measures synced job creation from many goroutines,
// the path every submit takes; Pebble groups concurrent commits into
// shared fsyncs.
func BenchmarkApplySubmit(b *testing.B) {
	s := open(b)
	b.SetParallelism(8) // 8 × GOMAXPROCS submitters
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			j := &Job{ID: s.NextID(), Name: "bench", Command: "true", Priority: 50,
				State: Queued, CreatedAt: time.Now(), QueuedAt: time.Now()}
			if err := applyAll(s, NewTransition(j, Event{Time: j.CreatedAt, Type: "submitted"})); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkAppendLog measures storing 32 KiB output chunks, one Output
// command per batch as a lone job stream sends them through the
// committer: each batch is synced, several in flight at once, waited
// for every 16.
func BenchmarkAppendLog(b *testing.B) {
	s := open(b)
	data := make([]byte, 32<<10)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var off uint64
	var pending []*Pending
	wait := func() {
		for _, p := range pending {
			if err := p.Wait(); err != nil {
				b.Fatal(fmt.Errorf("sync: %w", err))
			}
		}
		pending = pending[:0]
	}
	for b.Loop() {
		p, err := s.ApplyNoWait(&Output{Job: 1, Chunk: Chunk{Offset: off, Stream: 1, Data: data}})
		if err != nil {
			b.Fatal(err)
		}
		if pending = append(pending, p); len(pending) == 16 {
			wait()
		}
		off += uint64(len(data))
	}
	wait()
}

// finishJobs stores n completed jobs (three events, one output chunk
// each) in unsynced batches of 1000.
func finishJobs(b *testing.B, s *Store, n int) {
	b.Helper()
	for n > 0 {
		var ups []Command
		for range min(n, 1000) {
			j := &Job{ID: s.NextID(), Name: "bench", Command: "true", State: Queued, CreatedAt: t0, QueuedAt: t0}
			ups = append(ups, NewTransition(j, Event{Type: "submitted"}))
			run := j.Clone()
			run.State = Running
			ups = append(ups, NewTransition(run, Event{Type: "started"}))
			done := run.Clone()
			done.State, done.FinishedAt = Completed, t0
			ups = append(ups, NewTransition(done, Event{Type: "finished"}))
			if err := appendLog(s, j.ID, Chunk{Stream: 1, Data: []byte("output\n")}); err != nil {
				b.Fatal(err)
			}
		}
		if err := applyAll(s, ups...); err != nil {
			b.Fatal(err)
		}
		n -= len(ups) / 3
	}
}

// BenchmarkPrune measures removing finished jobs with everything they
// own, in Prune's default batches.
func BenchmarkPrune(b *testing.B) {
	s, err := Open(b.TempDir(), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	finishJobs(b, s, b.N)
	b.ResetTimer()
	n, err := s.Prune(b.Context(), PruneOptions{FinishedBefore: t0.Add(time.Second)}, prune(s))
	if err != nil || n != b.N {
		b.Fatalf("Prune = %d, %v; want %d", n, err, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkListByState measures a page of 100 running jobs among 50,000
// finished ones, read through the state index. Every finished job left a
// deleted "running" key newer than the live ones, so this is the worst
// case, before compactions drop those tombstones.
func BenchmarkListByState(b *testing.B) {
	s, err := Open(b.TempDir(), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for range 100 {
		j := &Job{ID: s.NextID(), Command: "true", State: Running}
		if err := applyAll(s, NewTransition(j, Event{})); err != nil {
			b.Fatal(err)
		}
	}
	finishJobs(b, s, 50_000)
	b.ReportAllocs()
	for b.Loop() {
		jobs, _, err := s.List(ListOptions{State: Running})
		if err != nil || len(jobs) != 100 {
			b.Fatalf("List = %d jobs, %v", len(jobs), err)
		}
	}
}

// BenchmarkEncodeRound measures encoding a committer round of 64
// submissions (each with its audit entry) for the raft log: the
// leader's cost per round in cluster mode, beside its own apply.
func BenchmarkEncodeRound(b *testing.B) {
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	var cmds []Command
	for i := range 64 {
		j := &Job{ID: uint64(i + 1), Name: fmt.Sprintf("bench-%d", i), Command: "echo hello from a benchmark job", Priority: 50,
			State: Queued, CreatedAt: at, QueuedAt: at, Labels: map[string]string{"role": "web"}, Env: map[string]string{"A": "b"}}
		t := NewTransition(j, Event{Time: at, Type: "submitted", Message: "submitted by operator"})
		t.Audit = &AuditEntry{ID: uint64(at.UnixNano()) + uint64(i), Time: at, Who: "operator", Role: "operator", Via: "certificate", Credential: "abc123", Action: "submit", Target: fmt.Sprintf("job %d", i+1)}
		cmds = append(cmds, t)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeRound(cmds); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/64, "ns/cmd")
}

// BenchmarkTruncateLog measures the TruncateLog that ends each attempt
// in a cluster: "known" for a job created since Open (the store knows
// its log's end and reads nothing), "unread" for one created before (it
// seeks the log keys through every level). 20,000 jobs with a chunk
// each are on disk; rounds are not synced, so the read is what differs.
func BenchmarkTruncateLog(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(b), NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	const n = 20000
	mk := func(s *Store) []uint64 {
		ids := make([]uint64, 0, n)
		for range n {
			j := submit(b, s, newJob(s, 0, t0))
			if err := appendLog(s, j.ID, Chunk{Offset: 0, Stream: 1, Data: []byte("out\n")}); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		return ids
	}
	old := mk(s)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	s, err = Open(dir, Options{Logger: testLogger(b), NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	fresh := mk(s)
	for name, ids := range map[string][]uint64{"known": fresh, "unread": old} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := applyErr(s, &TruncateLog{Job: ids[i%n], At: 4}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkActive measures reading 20,000 queued jobs back the way a
// restarted controller does (row 7b's store part); B/op per job is
// mostly the Job records the scheduler then keeps (row 7c).
func BenchmarkActive(b *testing.B) {
	const n = 20_000
	s, err := Open(b.TempDir(), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	at := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	var ts []Command
	for i := range n {
		j := &Job{ID: s.NextID(), Name: "deep", Command: "true", Priority: 10,
			State: Queued, CreatedAt: at, QueuedAt: at.Add(time.Duration(i))}
		ts = append(ts, NewTransition(j, Event{Time: at, Type: "submitted", State: Queued}))
		if len(ts) == 500 {
			if err := applyAll(s, ts...); err != nil {
				b.Fatal(err)
			}
			ts = ts[:0]
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		jobs, err := s.Active()
		if err != nil || len(jobs) != n {
			b.Fatalf("Active = %d jobs, %v", len(jobs), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/job")
}
