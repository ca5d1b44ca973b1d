package cluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Issue 14's throughput comparison of raft-wal and raft-boltdb, both as
// a node opens them (fsync on; raft-wal's 64 MiB segments). Not run by
// make bench (its rows are the product's); BENCHMARKS.md, "Issue 14:
// raft-wal vs raft-boltdb (session 8)", has a run and how to repeat it:
//
//	go test -run '^$' -bench 'BenchmarkLogStore' -benchmem ./controller/cluster/
//
// The stores themselves, without raft's LogCache (a node puts
// raft.NewLogCache(128, ...) in front, which serves a follower's recent
// entries from memory).

// logStoreKinds is the order the benchmarks run the stores in.
var logStoreKinds = []string{"wal", "bolt"}

// logStoreSetups are the stores of the restart and disk benchmarks:
// also raft-wal with 8 MiB segments (-raft-wal-segment-bytes), since
// raft-wal frees a compacted head only a whole segment at a time.
var logStoreSetups = []struct {
	name, kind string
	segment    int
}{{"wal", "wal", 0}, {"wal-8MiB", "wal", 8 << 20}, {"bolt", "bolt", 0}}

// BenchmarkLogStore is one StoreLogs call per op, batch entries of size
// bytes each (200 B: a small round; 4 KiB; 64 KiB: a large round),
// fsynced as raft needs it before it acknowledges. entries/s is the
// rate, MB/s the payload bytes.
func BenchmarkLogStore(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"200B", 200}, {"4KiB", 4 << 10}, {"64KiB", 64 << 10}}
	for _, kind := range logStoreKinds {
		b.Run(kind, func(b *testing.B) {
			for _, size := range sizes {
				b.Run(size.name, func(b *testing.B) {
					for _, batch := range []int{1, 16, 64} {
						b.Run(strconv.Itoa(batch), func(b *testing.B) {
							benchStoreLogs(b, kind, size.n, batch)
						})
					}
				})
			}
		})
	}
}

func benchStoreLogs(b *testing.B, kind string, size, batch int) {
	s, err := logStores[kind](filepath.Join(b.TempDir(), kind), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), uint64(batch)))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	logs := make([]*raft.Log, batch)
	for k := range logs {
		logs[k] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
	}
	next := uint64(1)
	b.SetBytes(int64(size * batch))
	for b.Loop() {
		for k, l := range logs {
			l.Index = next + uint64(k)
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		next += uint64(batch)
	}
	b.ReportMetric(float64(next-1)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkLogStoreGet is one GetLog per op, at a random index of a log
// of 4096 entries of the given size (a follower catching up, or a
// leader's replication past the LogCache).
func BenchmarkLogStoreGet(b *testing.B) {
	const entries = 4096
	for _, kind := range logStoreKinds {
		b.Run(kind, func(b *testing.B) {
			for _, size := range []int{200, 4 << 10, 64 << 10} {
				b.Run(bytesLabel(size), func(b *testing.B) {
					s, err := logStores[kind](filepath.Join(b.TempDir(), kind), 0)
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					data := make([]byte, size)
					logs := make([]*raft.Log, 64)
					for i := uint64(1); i <= entries; i += uint64(len(logs)) {
						for k := range logs {
							logs[k] = &raft.Log{Index: i + uint64(k), Term: 1, Type: raft.LogCommand, Data: data}
						}
						if err := s.StoreLogs(logs); err != nil {
							b.Fatal(err)
						}
					}
					r := rand.New(rand.NewPCG(1, 2))
					var l raft.Log
					b.SetBytes(int64(size))
					for b.Loop() {
						if err := s.GetLog(1+r.Uint64N(entries), &l); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

func bytesLabel(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// logBenchEntries is the log length of BenchmarkLogStoreOpen and
// BenchmarkLogStoreDisk: JOBSUITE_LOGBENCH_ENTRIES, default 20000 (a
// node's log between two snapshots holds up to SnapshotThreshold 8192
// plus TrailingLogs 10240 entries with raft's defaults), entries of the
// crash test's mix (entryData: about 2.3 KiB on average, 46 MB in all).
func logBenchEntries() uint64 {
	if v, err := strconv.ParseUint(os.Getenv("JOBSUITE_LOGBENCH_ENTRIES"), 10, 64); err == nil && v >= 64 {
		return v
	}
	return 20000
}

// fillLog appends entries from..to (as the crash test's writer: batches
// of batchLen) and returns the last index written.
func fillLog(b *testing.B, s logStore, from, to uint64) uint64 {
	last := from - 1
	for last < to {
		var err error
		if last, err = appendBatch(s, last+1); err != nil {
			b.Fatal(err)
		}
	}
	return last
}

// BenchmarkLogStoreOpen is a restart: one op closes the store and opens
// it again over a log of logBenchEntries entries, then reads its first
// and last index and its last entry (what raft reads first). The page
// cache is warm (a process restart, not a reboot).
func BenchmarkLogStoreOpen(b *testing.B) {
	n := logBenchEntries()
	for _, setup := range logStoreSetups {
		kind, segment := setup.kind, setup.segment
		dir := filepath.Join(b.TempDir(), kind)
		s, err := logStores[kind](dir, segment)
		if err != nil {
			b.Fatal(err)
		}
		fillLog(b, s, 1, n)
		b.Run(setup.name, func(b *testing.B) {
			var l raft.Log
			for b.Loop() {
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				if s, err = logStores[kind](dir, segment); err != nil {
					b.Fatal(err)
				}
				last, err := s.LastIndex()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.FirstIndex(); err != nil {
					b.Fatal(err)
				}
				if err := s.GetLog(last, &l); err != nil {
					b.Fatal(err)
				}
			}
		})
		s.Close()
	}
}

// BenchmarkLogStoreDisk reports the space each store takes (allocated
// blocks, MiB) after logBenchEntries entries (full-MiB), after raft's
// compaction following a snapshot (DeleteRange of all but the last
// quarter: compacted-MiB), and after as many entries again and the
// next compaction (steady-MiB: what the log settles at); and the rate
// of the first fill (fill-entries/s: the crash test's mix of sizes and
// batches, one fsynced StoreLogs per batch). One op does all of it; run
// it with -benchtime=1x.
func BenchmarkLogStoreDisk(b *testing.B) {
	n := logBenchEntries()
	keep := n / 4
	for _, setup := range logStoreSetups {
		kind := setup.kind
		b.Run(setup.name, func(b *testing.B) {
			var full, compacted, steady int64
			var fill time.Duration
			for b.Loop() {
				dir := filepath.Join(b.TempDir(), kind)
				s, err := logStores[kind](dir, setup.segment)
				if err != nil {
					b.Fatal(err)
				}
				space := func() int64 {
					a, _, err := diskBytes(dir)
					if err != nil {
						b.Fatal(err)
					}
					return a
				}
				start := time.Now()
				last := fillLog(b, s, 1, n)
				fill = time.Since(start)
				full = space()
				if err := s.DeleteRange(1, last-keep); err != nil {
					b.Fatal(err)
				}
				compacted = space()
				first := last - keep + 1
				last = fillLog(b, s, last+1, last+n-keep)
				if err := s.DeleteRange(first, last-keep); err != nil {
					b.Fatal(err)
				}
				steady = space()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(full)/(1<<20), "full-MiB")
			b.ReportMetric(float64(compacted)/(1<<20), "compacted-MiB")
			b.ReportMetric(float64(steady)/(1<<20), "steady-MiB")
			b.ReportMetric(float64(n)/fill.Seconds(), "fill-entries/s")
		})
	}
}
