package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Issue 14 asks for raft-wal v0.4.2 and raft-boltdb/v2 v2.3.1 measured
// side by side (kill -9 and throughput). This file holds what the crash
// test (logstore_crash_test.go) and the benchmarks
// (logstore_bench_test.go) share: both stores behind one interface,
// and log entries whose every byte follows from their index, so a
// checker needs nothing but the index to know what must be there.

// logStore is what raft needs of a node's log: the log and the stable
// store (term, vote) in one, as both candidates provide.
type logStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// logStores opens each candidate in dir, the way a node would: raft-wal
// through OpenWAL (which first finishes a segment rotation a stop cut
// short) with its defaults (64 MiB segments, an fsync per StoreLogs, the
// stable store in its bbolt meta file) or with segment bytes of its own
// (segment > 0), raft-boltdb with its defaults (bbolt with an fsync per
// transaction, NoSync off).
var logStores = map[string]func(dir string, segment int) (logStore, error){
	"wal": func(dir string, segment int) (logStore, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		return OpenWAL(dir, segment, hclog.NewNullLogger())
	},
	"bolt": func(dir string, _ int) (logStore, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		return raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	},
}

// entryTerm is the term of the entry at index i.
func entryTerm(i uint64) uint64 { return 1 + i/1000 }

// entryData is the payload of the entry at index i: a pseudo-random
// stream seeded by i, so its bytes are a checksum of the index. Sizes
// are those of our rounds: 15 in 16 are small (150-250 bytes: a
// dispatch, a result, a lease), every 16th is large (4-64 KiB: a batch
// submit, a burst of output riding a round).
func entryData(i uint64) []byte {
	r := rand.New(rand.NewPCG(i, 0x6a6f627375697465))
	n := 150 + r.IntN(101)
	if i%16 == 0 {
		n = 4<<10 + r.IntN(60<<10+1)
	}
	b := make([]byte, n)
	for j := 0; j < n; j += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && j+k < n; k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// entry is the log entry at index i.
func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: entryTerm(i), Type: raft.LogCommand, Data: entryData(i)}
}

// batchLen is the number of entries of the StoreLogs batch that starts
// at index start: 1 to 32, as raft hands a leader's or a follower's
// log store what one dispatch or one AppendEntries carries (up to
// MaxAppendEntries, 64 by default). It depends on start alone, so a
// checker knows where every batch of a chain ends.
func batchLen(start uint64) uint64 {
	return 1 + rand.New(rand.NewPCG(start, 0x6261746368)).Uint64N(32)
}

// appendBatch stores the batch that starts at start with one StoreLogs
// call and returns its last index.
func appendBatch(s raft.LogStore, start uint64) (uint64, error) {
	n := batchLen(start)
	logs := make([]*raft.Log, n)
	for k := range logs {
		logs[k] = entry(start + uint64(k))
	}
	if err := s.StoreLogs(logs); err != nil {
		return 0, err
	}
	return start + n - 1, nil
}

// Raft's stable store keys (raft.go in hashicorp/raft v1.7.2).
var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
	keyLastVoteCand = []byte("LastVoteCand")
)

// voteCand is the candidate voted for in term t.
func voteCand(t uint64) []byte { return fmt.Appendf(nil, "node-%d", t) }

// setTerm writes a new term and vote the way raft does on an election:
// three separate writes, current term first.
func setTerm(s raft.StableStore, t uint64) error {
	if err := s.SetUint64(keyCurrentTerm, t); err != nil {
		return err
	}
	if err := s.SetUint64(keyLastVoteTerm, t); err != nil {
		return err
	}
	return s.Set(keyLastVoteCand, voteCand(t))
}

// stableUint64 reads a uint64 as raft does: a missing key (raft-boltdb
// says "not found", raft-wal says nothing) is 0.
func stableUint64(s raft.StableStore, key []byte) (uint64, error) {
	v, err := s.GetUint64(key)
	if err != nil && err.Error() == "not found" {
		return 0, nil
	}
	return v, err
}

// acked is what a writer had acknowledged when it died, each value
// printed only after the store returned, or what a checker found in
// the store after it died (the next writer continues from there): the
// last log index, and the term each stable key holds (the current
// term, the last vote's term, the term of the last vote's candidate;
// 0 for none).
type acked struct {
	index uint64
	cur   uint64
	vote  uint64
	cand  uint64
}

// candTerm is the term whose candidate c names (voteCand), 0 for none.
func candTerm(c []byte) (uint64, error) {
	if len(c) == 0 {
		return 0, nil
	}
	var t uint64
	if _, err := fmt.Sscanf(string(c), "node-%d", &t); err != nil || !bytes.Equal(c, voteCand(t)) {
		return 0, fmt.Errorf("last vote candidate %q is not one a writer wrote", c)
	}
	return t, nil
}

// checkLog checks a store that a writer of appendBatch and setTerm
// chains left (killed or not) against what it acknowledged, and
// returns what the store holds. The log must start at 1 (nothing is
// ever deleted), hold every acknowledged index with byte-exact data,
// and past the acknowledged end hold nothing or exactly the one whole
// batch the writer may have stored without printing it; nothing past
// LastIndex. Each stable key must hold its acknowledged term or the
// one an election in flight writes (the next term, or the current one
// when a writer completes an election its predecessor left half
// written), in raft's write order: current term, vote term, candidate.
func checkLog(s logStore, a acked) (acked, error) {
	got, err := storeState(s)
	if err != nil {
		return got, err
	}
	first, err := s.FirstIndex()
	if err != nil {
		return got, fmt.Errorf("FirstIndex: %w", err)
	}
	last := got.index
	switch {
	case last < a.index:
		return got, fmt.Errorf("last index %d, but %d was acknowledged", last, a.index)
	case last != a.index && last != a.index+batchLen(a.index+1):
		return got, fmt.Errorf("last index %d: neither the acknowledged %d nor the end of the one batch after it (%d)", last, a.index, a.index+batchLen(a.index+1))
	case last > 0 && first != 1:
		return got, fmt.Errorf("first index %d, want 1 (nothing was deleted)", first)
	case last == 0 && first != 0:
		return got, fmt.Errorf("empty log with first index %d", first)
	}
	var l raft.Log
	for i := first; i <= last && last > 0; i++ {
		if err := s.GetLog(i, &l); err != nil {
			return got, fmt.Errorf("index %d (last %d): %w", i, last, err)
		}
		want := entry(i)
		if l.Index != i || l.Term != want.Term || l.Type != want.Type || !bytes.Equal(l.Data, want.Data) {
			return got, fmt.Errorf("index %d: got index %d term %d type %v and %d bytes, want term %d and its %d bytes", i, l.Index, l.Term, l.Type, len(l.Data), want.Term, len(want.Data))
		}
	}
	for _, i := range []uint64{last + 1, last + 2, last + 64} {
		if err := s.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
			return got, fmt.Errorf("index %d past the last %d: got %v, want raft.ErrLogNotFound", i, last, err)
		}
	}
	in := func(v uint64, set ...uint64) bool {
		for _, x := range set {
			if v == x {
				return true
			}
		}
		return false
	}
	switch {
	case !in(got.cur, a.cur, a.cur+1):
		return got, fmt.Errorf("current term %d, acknowledged %d", got.cur, a.cur)
	case !in(got.vote, a.vote, a.cur, a.cur+1):
		return got, fmt.Errorf("last vote term %d, acknowledged %d (current %d)", got.vote, a.vote, a.cur)
	case !in(got.cand, a.cand, a.cur, a.cur+1):
		return got, fmt.Errorf("last vote candidate of term %d, acknowledged %d (current %d)", got.cand, a.cand, a.cur)
	case got.cand > got.vote || got.vote > got.cur:
		return got, fmt.Errorf("terms out of raft's write order: current %d, vote %d, candidate %d", got.cur, got.vote, got.cand)
	}
	return got, nil
}

// storeState reads a store's last index and stable terms.
func storeState(s logStore) (acked, error) {
	var got acked
	var err error
	if got.index, err = s.LastIndex(); err != nil {
		return got, fmt.Errorf("LastIndex: %w", err)
	}
	if got.cur, err = stableUint64(s, keyCurrentTerm); err != nil {
		return got, fmt.Errorf("current term: %w", err)
	}
	if got.vote, err = stableUint64(s, keyLastVoteTerm); err != nil {
		return got, fmt.Errorf("last vote term: %w", err)
	}
	cand, err := s.Get(keyLastVoteCand)
	if err != nil && err.Error() != "not found" {
		return got, fmt.Errorf("last vote candidate: %w", err)
	}
	got.cand, err = candTerm(cand)
	return got, err
}

// diskBytes is the space the files under dir take on disk (allocated
// blocks, so preallocated segments count in full) and their apparent
// size.
func diskBytes(dir string) (alloc, size int64, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		size += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			alloc += st.Blocks * 512
		}
		return nil
	})
	return alloc, size, err
}
