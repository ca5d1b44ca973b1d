package cluster

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"jobsuite/controller/store"
)

// BenchmarkSnapshot measures a raft snapshot of a store of about
// JOBSUITE_SNAPBENCH_MIB MiB (default 200) of job output, the way a node
// takes one and the way a follower installs one, with raft's
// FileSnapshotStore streaming the checkpoint (before: what a node did
// until the CheckpointStore) and with the CheckpointStore handing the
// checkpoint over (after). Besides ns/op it reports the process's CPU
// time (user+system) and the bytes it wrote to storage
// (/proc/self/io write_bytes; Pebble's own background work included)
// per operation. Run by hand, not by make bench:
//
//	go test -run XXX -bench BenchmarkSnapshot -benchtime 3x ./controller/cluster
func BenchmarkSnapshot(b *testing.B) {
	mib := 200
	if v, err := strconv.Atoi(os.Getenv("JOBSUITE_SNAPBENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	leader := benchStore(b, mib)
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "a", Address: "a:1"}}}
	_, trans := raft.NewInmemTransport("a:1")
	index, _ := leader.Applied()
	stores := map[string]func(b *testing.B) raft.SnapshotStore{
		"before-FileSnapshotStore": func(b *testing.B) raft.SnapshotStore {
			s, err := raft.NewFileSnapshotStoreWithLogger(b.TempDir(), 2, testLogger(b, "snaps"))
			if err != nil {
				b.Fatal(err)
			}
			return SnapshotStore{s}
		},
		"after-CheckpointStore": func(b *testing.B) raft.SnapshotStore {
			return newCkptStore(b, b.TempDir(), 2)
		},
	}
	for _, name := range []string{"before-FileSnapshotStore", "after-CheckpointStore"} {
		mk := stores[name]
		b.Run("take/"+name, func(b *testing.B) {
			s := mk(b)
			var size int64
			measure(b, func() {
				snap, err := leader.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				sink, err := s.Create(raft.SnapshotVersionMax, index, 1, conf, 1, trans)
				if err != nil {
					b.Fatal(err)
				}
				if err := snap.Persist(sink); err != nil {
					b.Fatal(err)
				}
				if err := sink.Close(); err != nil {
					b.Fatal(err)
				}
				snap.Release()
			})
			list, err := s.List()
			if err != nil || len(list) == 0 {
				b.Fatal(list, err)
			}
			size = list[0].Size
			b.ReportMetric(float64(size)/(1<<20), "stream-MiB")
		})
		b.Run("install/"+name, func(b *testing.B) {
			// The leader's snapshot, in the same kind of store.
			from := mk(b)
			id := persistAny(b, leader, from, index, conf, trans)
			to := mk(b)
			follower, _ := openFSM(b, b.TempDir())
			measure(b, func() {
				meta, rc, err := from.Open(id)
				if err != nil {
					b.Fatal(err)
				}
				sink, err := to.Create(raft.SnapshotVersionMax, meta.Index, meta.Term, conf, 1, trans)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(sink, rc)
				rc.Close()
				if err != nil || n != meta.Size {
					b.Fatalf("copied %d of %d bytes: %v", n, meta.Size, err)
				}
				if err := sink.Close(); err != nil {
					b.Fatal(err)
				}
				_, in, err := to.Open(sink.ID())
				if err != nil {
					b.Fatal(err)
				}
				if err := follower.Restore(wrapped{in}); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

func persistAny(b *testing.B, f *FSM, s raft.SnapshotStore, index uint64, conf raft.Configuration, trans raft.Transport) string {
	snap, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Release()
	sink, err := s.Create(raft.SnapshotVersionMax, index, 1, conf, 1, trans)
	if err != nil {
		b.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		b.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		b.Fatal(err)
	}
	return sink.ID()
}

// measure runs op b.N times (b.Loop) and reports CPU time and storage
// bytes written per op.
func measure(b *testing.B, op func()) {
	cpu0, w0 := cpuTime(b), writeBytes(b)
	for b.Loop() {
		op()
	}
	n := float64(b.N)
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Millisecond)/n, "cpu-ms/op")
	b.ReportMetric(float64(writeBytes(b)-w0)/(1<<20)/n, "written-MiB/op")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeBytes is /proc/self/io's write_bytes: what the process caused to
// be written to storage.
func writeBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Skip("no write_bytes in /proc/self/io")
	return 0
}

// benchStore is an FSM holding some jobs and about mib MiB of output in
// 64 KiB chunks of log-like text (Pebble compresses it about as much
// as real output).
func benchStore(b *testing.B, mib int) *FSM {
	b.Helper()
	f, _ := openFSM(b, b.TempDir())
	w := newWorkload()
	f.ApplyBatch(entries(b, w, 1, 50))
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"building", "step", "ok", "warning:", "compiling", "test", "passed", "PASS", "ms", "pkg/", "main.go", "error", "0x1f", "done"}
	line := func(buf *bytes.Buffer) {
		buf.WriteString(time.Unix(1_700_000_000+rng.Int64N(1_000_000), 0).UTC().Format(time.RFC3339))
		for range 4 + rng.IntN(10) {
			buf.WriteByte(' ')
			buf.WriteString(words[rng.IntN(len(words))])
			buf.WriteString(strconv.Itoa(rng.IntN(100000)))
		}
		buf.WriteByte('\n')
	}
	const chunk = 64 << 10
	index := uint64(51)
	var offset uint64
	for written := 0; written < mib<<20; {
		var round []store.Command
		for range 16 {
			var buf bytes.Buffer
			for buf.Len() < chunk {
				line(&buf)
			}
			data := buf.Bytes()[:chunk]
			round = append(round, &store.Output{Job: 1 + uint64(written>>24), Chunk: store.Chunk{Offset: offset, Stream: 1, Data: data, Time: epoch}})
			offset += chunk
			written += chunk
		}
		f.ApplyBatch([]*raft.Log{{Index: index, Term: 1, Type: raft.LogCommand, Data: encode(b, round)}})
		index++
	}
	live, err := filepath.EvalSymlinks(filepath.Join(f.dir, liveLink))
	if err != nil {
		b.Fatal(err)
	}
	size, err := dirSize(live)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("store: %d MiB of output in %d entries, %d MiB on disk", mib, index-1, size>>20)
	return f
}

func dirSize(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}
