package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	waltypes "github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
)

// TestSealedWALSays: raft-wal's "segment is sealed" refusal is passed
// on as it is and logged once, with what to do; other errors are not.
func TestSealedWALSays(t *testing.T) {
	var buf bytes.Buffer
	w := &SealedWAL{Log: hclog.New(&hclog.LoggerOptions{Output: &buf})}
	other := errors.New("disk on fire")
	if err := w.check(other); err != other || buf.Len() != 0 {
		t.Fatalf("another error: %v, logged %q", err, buf.String())
	}
	for range 3 {
		sealed := fmt.Errorf("append: %w", waltypes.ErrSealed)
		if err := w.check(sealed); err != sealed {
			t.Fatalf("the refusal came back as %v", err)
		}
	}
	if n := strings.Count(buf.String(), "remove-peer"); n != 1 {
		t.Fatalf("logged the remedy %d times, want once:\n%s", n, buf.String())
	}
}

// sealedTailLog builds, in a new directory, the state a stop leaves
// between raft-wal's append that seals a full segment and the rotation
// that follows it: 1 MiB segments filled with 60 KiB entries until a
// second segment exists, then the metadata set back to what it was
// before that rotation committed (the first segment still called the
// open tail) and the second segment's file removed. It returns the
// directory, the entries the log holds (1..last), the payload of each,
// and the first segment's metadata as the rotation had recorded it.
func sealedTailLog(t *testing.T) (dir string, last uint64, data []byte, sealed waltypes.SegmentInfo) {
	t.Helper()
	dir = t.TempDir()
	data = make([]byte, 60<<10)
	for i := range data {
		data[i] = byte(i * 13)
	}
	w, err := wal.Open(dir, wal.WithSegmentSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 20; i++ {
		if err := w.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var meta metadb.BoltMetaDB
	state, err := meta.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	if len(state.Segments) != 2 || state.Segments[0].SealTime.IsZero() {
		t.Fatalf("20 entries of 60 KiB should fill one 1 MiB segment and begin a second: %+v", state.Segments)
	}
	sealed, second := state.Segments[0], state.Segments[1]
	tail := sealed
	tail.SealTime, tail.MaxIndex, tail.IndexStart = time.Time{}, 0, 0
	state.Segments = state.Segments[:1]
	state.Segments[0] = tail
	state.NextSegmentID = second.ID
	if err := meta.CommitState(state); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, segment.FileName(second))); err != nil {
		t.Fatal(err)
	}
	return dir, sealed.MaxIndex, data, sealed
}

// checkEntries fails unless s holds exactly entries 1..last, each data.
func checkEntries(t *testing.T, s raft.LogStore, last uint64, data []byte) {
	t.Helper()
	if got, err := s.LastIndex(); err != nil || got != last {
		t.Fatalf("last index %d (%v), want %d", got, err, last)
	}
	var l raft.Log
	for i := uint64(1); i <= last; i++ {
		if err := s.GetLog(i, &l); err != nil || l.Index != i || !bytes.Equal(l.Data, data) {
			t.Fatalf("entry %d: %v (index %d, %d bytes)", i, err, l.Index, len(l.Data))
		}
	}
}

// TestRepairSealedTail: raft-wal alone refuses every append to a log
// whose rotation a stop cut short (the failure reproduced first, so the
// test can fail); after RepairSealedTail it appends across further
// rotations and reopens with every entry, and a second repair finds
// nothing to do.
func TestRepairSealedTail(t *testing.T) {
	dir, last, data, sealed := sealedTailLog(t)

	w, err := wal.Open(dir, wal.WithSegmentSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, w, last, data)
	err = w.StoreLogs([]*raft.Log{{Index: last + 1, Term: 1, Type: raft.LogCommand, Data: data}})
	if !errors.Is(err, waltypes.ErrSealed) {
		t.Fatalf("raft-wal alone appended to the sealed tail (%v): the test no longer builds the failure", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	next, err := RepairSealedTail(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if next.ID == 0 || next.ID <= sealed.ID || next.BaseIndex != last+1 || next.MinIndex != last+1 {
		t.Fatalf("the new tail %+v does not follow segment %d at index %d", next, sealed.ID, last+1)
	}
	if again, err := RepairSealedTail(dir, 1<<20); err != nil || again.ID != 0 {
		t.Fatalf("a second repair: %+v, %v; want nothing done", again, err)
	}

	s, err := OpenWAL(dir, 1<<20, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	end := last + 25 // one more rotation, at least
	for i := last + 1; i <= end; i++ {
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 2, Type: raft.LogCommand, Data: data}}); err != nil {
			t.Fatalf("append %d after the repair: %v", i, err)
		}
	}
	checkEntries(t, s, end, data)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenWAL(dir, 1<<20, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkEntries(t, s, end, data)
}

// TestRepairSealedTailTornCommit: a sealing append whose commit is torn
// (a byte of its last entry changed, so the commit's CRC fails) was
// never acknowledged; raft-wal recovers the entries before it and still
// finds the index frame. The index is intact, so the repair seals the
// segment at the last entry recovered and the log goes on from there.
// Through OpenWAL alone, as a node opens its log.
func TestRepairSealedTailTornCommit(t *testing.T) {
	dir, last, data, sealed := sealedTailLog(t)
	flipAt(t, dir, sealed, int64(entryOffset(t, dir, sealed, last))+frameHeader+100)
	s, err := OpenWAL(dir, 1<<20, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// (metaState opens the bbolt file raft-wal holds locked while open.)
	if segs := metaState(t, dir).Segments; len(segs) != 2 || segs[0].MaxIndex != last-1 || segs[1].BaseIndex != last {
		t.Fatalf("segments after the repair: %+v; want the first sealed at %d and a tail from %d", segs, last-1, last)
	}
	if s, err = OpenWAL(dir, 1<<20, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := last; i <= last+3; i++ {
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 2, Type: raft.LogCommand, Data: data}}); err != nil {
			t.Fatalf("append %d after the repair: %v", i, err)
		}
	}
	checkEntries(t, s, last+3, data)
}

// TestRepairSealedTailTrustsNoTornIndex: when the sealed tail's index
// does not lead to the entries a scan finds (here the sealing commit is
// torn inside its index frame), the repair refuses and leaves the
// metadata as it was; the entries recovered stay readable, and raft-wal
// refuses appends as before (SealedWAL then names the remedy).
func TestRepairSealedTailTrustsNoTornIndex(t *testing.T) {
	dir, last, data, sealed := sealedTailLog(t)
	// The index is one 4-byte file offset per entry: point the third
	// entry's at the second's frame.
	f, err := os.OpenFile(filepath.Join(dir, segment.FileName(sealed)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var off [4]byte
	if _, err := f.ReadAt(off[:], int64(sealed.IndexStart)+4); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(off[:], int64(sealed.IndexStart)+8); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	before := metaState(t, dir)
	if next, err := RepairSealedTail(dir, 1<<20); err == nil || next.ID != 0 {
		t.Fatalf("repaired past a torn index: %+v, %v", next, err)
	}
	if after := metaState(t, dir); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused repair changed the metadata:\n%+v\n%+v", before, after)
	}
	s, err := OpenWAL(dir, 1<<20, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The change made the sealing commit's CRC fail: its last entry was
	// never acknowledged, the ones before it are kept.
	checkEntries(t, s, last-1, data)
	err = s.StoreLogs([]*raft.Log{{Index: last, Term: 1, Type: raft.LogCommand, Data: data}})
	if !errors.Is(err, waltypes.ErrSealed) {
		t.Fatalf("append after a refused repair: %v, want raft-wal's refusal", err)
	}
}

// frameHeader is the length of a raft-wal segment frame's header.
const frameHeader = 8

// entryOffset is the file offset of entry i's frame in the sealed
// segment info, read from its index.
func entryOffset(t *testing.T, dir string, info waltypes.SegmentInfo, i uint64) uint32 {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, segment.FileName(info)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], int64(info.IndexStart+(i-info.BaseIndex)*4)); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

// flipAt changes one byte of info's segment file at off.
func flipAt(t *testing.T, dir string, info waltypes.SegmentInfo, off int64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, segment.FileName(info)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func metaState(t *testing.T, dir string) waltypes.PersistentState {
	t.Helper()
	var meta metadb.BoltMetaDB
	defer meta.Close()
	st, err := meta.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestOpenWALCorruptMeta: metadata the repair cannot read is left to
// raft-wal, which refuses it; the repair must not keep the file locked
// (raft-wal would then wait for the lock for ever).
func TestOpenWALCorruptMeta(t *testing.T) {
	dir, _, _, _ := sealedTailLog(t)
	db, err := bbolt.Open(filepath.Join(dir, metadb.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(metadb.MetaBucket)).Put([]byte(metadb.MetaKey), []byte("{not json"))
	})
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	if next, err := RepairSealedTail(dir, 1<<20); err != nil || next.ID != 0 {
		t.Fatalf("repair of unreadable metadata: %+v, %v; want nothing done", next, err)
	}
	s, err := OpenWAL(dir, 1<<20, hclog.NewNullLogger())
	if err == nil {
		s.Close()
		t.Fatal("raft-wal opened unreadable metadata")
	}
	if !errors.Is(err, waltypes.ErrCorrupt) {
		t.Fatalf("open: %v, want raft-wal's corruption error", err)
	}
}
