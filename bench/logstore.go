package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
)

// The opt-in group cluster-logstore (rows 9l-wal, 9l-bolt): issue 14's
// two candidate raft log stores, raft-wal v0.4.2 (what a node uses) and
// raft-boltdb/v2 v2.3.1, each opened in the scratch directory as a node
// would (fsync on) and fed for Probe with fsynced StoreLogs batches of
// a round's mix (1-32 entries, 15 in 16 of 150-250 bytes, the rest of
// 4-64 KiB), one after the other. The limit is the disk's fdatasync
// rate: a StoreLogs is at least one of them. controller/cluster's
// BenchmarkLogStore* and its crash test have the rest of the
// comparison; BENCHMARKS.md "Issue 14: raft-wal vs raft-boltdb".

type logStoreCase struct {
	id, name string
	open     func(dir string) (raft.LogStore, func() error, error)
}

var logStoreCases = []logStoreCase{
	{"9l-wal", "raft log store raft-wal v0.4.2 (a node's): fsynced StoreLogs of round-sized batches", func(dir string) (raft.LogStore, func() error, error) {
		w, err := wal.Open(dir)
		if err != nil {
			return nil, nil, err
		}
		return w, w.Close, nil
	}},
	{"9l-bolt", "raft log store raft-boltdb/v2 v2.3.1: the same batches", func(dir string) (raft.LogStore, func() error, error) {
		s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	}},
}

func (e *env) logStores(ctx context.Context) {
	rate, _, err := e.fsync()
	if err != nil {
		for _, c := range logStoreCases {
			e.fail(c.id, c.name, err)
		}
		return
	}
	for _, c := range logStoreCases {
		if ctx.Err() != nil {
			return
		}
		r, err := e.logStoreRow(c)
		if err != nil {
			e.fail(c.id, c.name, err)
			continue
		}
		r.Limit, r.LimitUnit, r.LimitName = rate, "fdatasync/s", "4 KiB writes, one writer: a StoreLogs needs at least one"
		e.add(r)
	}
}

func (e *env) logStoreRow(c logStoreCase) (Row, error) {
	dir := filepath.Join(e.dir, "logstore-"+c.id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Row{}, err
	}
	defer os.RemoveAll(dir)
	s, closeStore, err := c.open(dir)
	if err != nil {
		return Row{}, err
	}
	defer closeStore()
	rng := rand.New(rand.NewPCG(1, 4))
	pool := make([]byte, 64<<10)
	for j := range pool {
		pool[j] = byte(rng.Uint32())
	}
	next, bytes, entries := uint64(1), 0, 0
	var lat []time.Duration
	start := time.Now()
	for time.Since(start) < e.sz.Probe {
		logs := make([]*raft.Log, 1+rng.IntN(32))
		for k := range logs {
			n := 150 + rng.IntN(101)
			if rng.IntN(16) == 0 {
				n = 4<<10 + rng.IntN(60<<10+1)
			}
			logs[k] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: pool[:n]}
			next++
			bytes += n
		}
		t := time.Now()
		if err := s.StoreLogs(logs); err != nil {
			return Row{}, err
		}
		lat = append(lat, time.Since(t))
		entries += len(logs)
	}
	took := time.Since(start).Seconds()
	return Row{
		ID: c.id, Name: c.name, Value: float64(len(lat)) / took, Unit: "calls/s",
		Detail: fmt.Sprintf("%s entries/s, %s MB/s; latency p50 %s ms, p99 %s ms", num(float64(entries)/took), num(float64(bytes)/took/1e6),
			num(ms(percentile(lat, 0.5))), num(ms(percentile(lat, 0.99)))),
	}, nil
}
