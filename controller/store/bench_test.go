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
			if err := s.Apply(NewUpdate(nil, j, Event{Time: j.CreatedAt, Type: "submitted"})); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkAppendLog measures storing 32 KiB output chunks (unsynced).
func BenchmarkAppendLog(b *testing.B) {
	s := open(b)
	data := make([]byte, 32<<10)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var off uint64
	for b.Loop() {
		if err := s.AppendLog(1, Chunk{Offset: off, Stream: 1, Data: data}); err != nil {
			b.Fatal(err)
		}
		off += uint64(len(data))
	}
	if err := s.Sync(); err != nil {
		b.Fatal(fmt.Errorf("sync: %w", err))
	}
}
