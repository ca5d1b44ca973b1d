package cluster

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"jobsuite/controller/snapshot"
)

// tickingClock is a given clock: each call is one millisecond later, so
// every snapshot gets its own name.
func tickingClock() func() time.Time {
	now := time.UnixMilli(1_700_000_000_000)
	return func() time.Time {
		now = now.Add(time.Millisecond)
		return now
	}
}

func newCkptStore(t testing.TB, dir string, retain int) *CheckpointStore {
	t.Helper()
	s, err := NewCheckpointStore(dir, CheckpointStoreOptions{Retain: retain, Now: tickingClock(), Logger: testLogger(t, "snaps")})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var testConf = raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "a", Address: "a:1"}}}

// persist takes f's snapshot into s the way raft does (Create, Persist,
// Close, Release) at index and returns its ID.
func persist(t testing.TB, f *FSM, s *CheckpointStore, index uint64) string {
	t.Helper()
	return persistWith(t, f, s, index, func(string) {})
}

// persistWith is persist, showing the checkpoint directory to look
// before it is persisted.
func persistWith(t testing.TB, f *FSM, s *CheckpointStore, index uint64, look func(dir string)) string {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	look(snap.(*checkpoint).dir)
	defer snap.Release()
	sink, err := s.Create(raft.SnapshotVersionMax, index, 1, testConf, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil { // raft closes it again
		t.Fatal(err)
	}
	return sink.ID()
}

// receive writes stream into a new snapshot of s in chunks, as raft's
// io.Copy does, and returns the ID and Close's error.
func receive(t testing.TB, s *CheckpointStore, index uint64, stream []byte) (string, error) {
	t.Helper()
	sink, err := s.Create(raft.SnapshotVersionMax, index, 2, testConf, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for rest := stream; len(rest) > 0; {
		n := min(len(rest), 7<<10)
		if _, err := sink.Write(rest[:n]); err != nil {
			_ = sink.Cancel()
			return sink.ID(), err
		}
		rest = rest[n:]
	}
	return sink.ID(), sink.Close()
}

// readAll opens snapshot id and reads its whole stream.
func readAll(t testing.TB, s *CheckpointStore, id string) (*raft.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return meta, b
}

// TestCheckpointStoreRoundTrip: a snapshot this node takes is the
// checkpoint itself (its SSTs the live store's files, not copies);
// List and Open give its metadata with the exact Size of the stream
// Open yields, which checks out; received by another store, the same
// stream unpacks into a snapshot that streams the same bytes.
func TestCheckpointStoreRoundTrip(t *testing.T) {
	w := newWorkload()
	f := withSSTs(t, w, 30)
	s := newCkptStore(t, t.TempDir(), 2)
	var taken map[string]os.FileInfo
	id := persistWith(t, f, s, 30, func(dir string) {
		taken = map[string]os.FileInfo{}
		for _, name := range dirNames(t, dir) {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			taken[name] = fi
		}
	})

	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].Index != 30 || list[0].Term != 1 {
		t.Fatalf("List = %+v, %v; want the one snapshot %s at 30", list, err, id)
	}
	meta, stream := readAll(t, s, id)
	if meta.Size != int64(len(stream)) || list[0].Size != meta.Size {
		t.Fatalf("meta.Size %d (List: %d), the stream is %d bytes", meta.Size, list[0].Size, len(stream))
	}
	if len(meta.Configuration.Servers) != 1 || meta.ConfigurationIndex != 1 {
		t.Errorf("configuration %+v at %d", meta.Configuration, meta.ConfigurationIndex)
	}
	if _, err := snapshot.Verify(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}

	// Handed over: every file of the snapshot is the very file of the
	// checkpoint Snapshot took (whose SSTs Pebble hard-linked to the
	// live store's), none a copy.
	db := filepath.Join(s.dir, id, dbDir)
	ssts := 0
	for _, name := range dirNames(t, db) {
		a, err := os.Stat(filepath.Join(db, name))
		if b, ok := taken[name]; err != nil || !ok || !os.SameFile(a, b) {
			t.Errorf("%s: not the checkpoint's file (%v)", name, err)
		}
		if strings.HasSuffix(name, ".sst") {
			ssts++
		}
	}
	if ssts == 0 || len(taken) != len(dirNames(t, db)) {
		t.Fatalf("the snapshot holds %d SSTs, %d files of the checkpoint's %d", ssts, len(dirNames(t, db)), len(taken))
	}
	if names := dirNames(t, f.dir); slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, cpPrefix) }) {
		t.Errorf("the checkpoint is still in the FSM's directory: %v", names)
	}

	other := newCkptStore(t, t.TempDir(), 2)
	rid, err := receive(t, other, 31, stream)
	if err != nil {
		t.Fatal(err)
	}
	rmeta, again := readAll(t, other, rid)
	if !bytes.Equal(again, stream) || rmeta.Size != int64(len(again)) {
		t.Errorf("the received snapshot streams %d bytes (Size %d), the original %d", len(again), rmeta.Size, len(stream))
	}
	var m ckptMeta
	if b, err := os.ReadFile(filepath.Join(other.dir, rid, metaFile)); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("meta.json: %v", err)
	}
	if m.Received != hexSum(stream) || m.Raft.Index != 31 || len(m.Files) != len(dirNames(t, db)) {
		t.Errorf("meta.json = %+v", m)
	}
}

func hexSum(stream []byte) string { return hex.EncodeToString(stream[len(stream)-sha256Size:]) }

// TestCheckpointStoreRefuses: a stream that is not a whole, checked
// snapshot — a name that is not a plain file name, a wrong sum, short,
// long, empty, foreign — is refused by Write or Close, and nothing of it
// is left: no snapshot listed, no directory. Cancel leaves nothing too.
func TestCheckpointStoreRefuses(t *testing.T) {
	f, _ := openFSM(t, t.TempDir())
	f.ApplyBatch(entries(t, newWorkload(), 1, 10))
	good := snapshotOf(t, f)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		return b
	}
	named := func(name string) []byte {
		b := []byte(snapshot.Magic + "\x01")
		b = append(b, byte(len(name)))
		b = append(b, name...)
		b = append(b, 1, 'x', 0)
		return append(b, sumOf(string(b))...)
	}
	for name, data := range map[string][]byte{
		"path escape":    named("../x1"),
		"subdirectory":   named("a/b"),
		"dot":            named("."),
		"wrong sum":      flip(len(good) - 1),
		"flipped data":   flip(len(good) / 2),
		"short":          good[:len(good)-1],
		"half":           good[:len(good)/2],
		"trailing bytes": append(bytes.Clone(good), 0, 0, 0),
		"empty":          nil,
		"foreign":        []byte("PK\x03\x04 a zip file, not a snapshot at all"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "snaps")
			s := newCkptStore(t, dir, 2)
			if _, err := receive(t, s, 5, data); err == nil {
				t.Fatal("the stream was accepted")
			}
			if list, err := s.List(); err != nil || len(list) != 0 {
				t.Errorf("List = %v, %v after a refused stream", list, err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("the refused stream left %v", names)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x1")); err == nil {
				t.Error("a file escaped the snapshot directory")
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "snaps")
		s := newCkptStore(t, dir, 2)
		sink, err := s.Create(raft.SnapshotVersionMax, 5, 1, testConf, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Write(good[:len(good)/2]); err != nil {
			t.Fatal(err)
		}
		if err := sink.Cancel(); err != nil {
			t.Fatal(err)
		}
		if names := dirNames(t, dir); len(names) != 0 {
			t.Errorf("Cancel left %v", names)
		}
		if _, err := sink.Write(good[:1]); err == nil {
			t.Error("Write after Cancel succeeded")
		}
	})
}

// TestCheckpointStoreRetention: only the newest Retain snapshots stay,
// except one a reader still has open, which goes at the next snapshot
// after its reader closes; unfinished leftovers (*.tmp) are removed when
// the store opens.
func TestCheckpointStoreRetention(t *testing.T) {
	f, _ := openFSM(t, t.TempDir())
	w := newWorkload()
	f.ApplyBatch(entries(t, w, 1, 5))
	dir := filepath.Join(t.TempDir(), "snaps")
	s := newCkptStore(t, dir, 2)
	first := persist(t, f, s, 5)
	_, rc, err := s.Open(first)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		f.ApplyBatch(entries(t, w, uint64(6+i), 1))
		ids = append(ids, persist(t, f, s, uint64(6+i)))
	}
	if names := dirNames(t, dir); !slices.Contains(names, first) || len(names) != 3 {
		t.Errorf("with %s open the store holds %v, want it and the newest 2", first, names)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch(entries(t, w, 9, 1))
	ids = append(ids, persist(t, f, s, 9))
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list {
		got = append(got, m.ID)
	}
	if want := []string{ids[3], ids[2]}; !slices.Equal(got, want) {
		t.Errorf("List = %v, want the newest two %v", got, want)
	}
	if names := dirNames(t, dir); len(names) != 2 {
		t.Errorf("the store holds %v, want 2 snapshots", names)
	}

	// A leftover of an interrupted snapshot goes at the next start.
	if err := os.MkdirAll(filepath.Join(dir, "1-10-5.tmp", dbDir), 0o700); err != nil {
		t.Fatal(err)
	}
	s = newCkptStore(t, dir, 2)
	if names := dirNames(t, dir); len(names) != 2 || slices.Contains(names, "1-10-5.tmp") {
		t.Errorf("after a restart the store holds %v", names)
	}
	if list, err := s.List(); err != nil || len(list) != 2 {
		t.Errorf("after a restart List = %v, %v", list, err)
	}
}

// withSSTs opens an FSM holding n entries of w, reopened once so that
// Pebble flushed them into an SST: a checkpoint then has files to link.
func withSSTs(t testing.TB, w *workload, n int) *FSM {
	t.Helper()
	dir := t.TempDir()
	f, _ := openFSM(t, dir)
	f.ApplyBatch(entries(t, w, 1, n))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ = openFSM(t, dir)
	return f
}

// wrapped is a raft.ReadCloserWrapper, as raft hands FSM.Restore the
// reader it opened.
type wrapped struct{ io.ReadCloser }

func (w wrapped) WrappedReadCloser() io.ReadCloser { return w.ReadCloser }

// TestRestoreFromCheckpointDir: FSM.Restore given a CheckpointStore's
// reader (under raft's wrapper) builds the store from the snapshot's
// directory without reading the stream, takes raft's index, and
// leaves the snapshot intact: the new store's writes go to its own
// copies of the manifest and WAL, so the snapshot still streams what
// its meta says and checks out.
func TestRestoreFromCheckpointDir(t *testing.T) {
	w := newWorkload()
	src := withSSTs(t, w, 25)
	want := dump(t, src.Store())
	s := newCkptStore(t, t.TempDir(), 2)
	id := persist(t, src, s, 40) // raft's index may pass the store's

	dstDir := t.TempDir()
	dst, fatal := openFSM(t, dstDir)
	meta, rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(wrapped{rc}); err != nil {
		t.Fatal(err)
	}
	if r := rc.(*checkpointReader); r.pr != nil {
		t.Error("Restore read the stream instead of linking the directory")
	}
	if got := withoutRaft(dump(t, dst.Store())); got != withoutRaft(want) {
		t.Fatalf("restored store differs: %s", firstDiff(withoutRaft(want), got))
	}
	if i, _ := dst.Applied(); i != 40 {
		t.Errorf("applied %d, want raft's 40", i)
	}
	// The restored store writes: entries, then a reopen (a flush, a new
	// manifest, the old WAL and manifest deleted).
	dst.ApplyBatch(entries(t, w, 41, 20))
	if len(*fatal) != 0 {
		t.Errorf("fatal: %v", *fatal)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst, fatal = openFSM(t, dstDir)
	if i, _ := dst.Applied(); i != 60 {
		t.Errorf("reopened, the restored store applied %d, want 60", i)
	}
	again, stream := readAll(t, s, id)
	if again.Size != meta.Size || int64(len(stream)) != meta.Size {
		t.Errorf("after the restored store wrote, the snapshot streams %d bytes, Size %d, was %d", len(stream), again.Size, meta.Size)
	}
	if _, err := snapshot.Verify(bytes.NewReader(stream)); err != nil {
		t.Errorf("the snapshot no longer checks out: %v", err)
	}
	if len(*fatal) != 0 {
		t.Errorf("fatal: %v", *fatal)
	}
}

// TestCheckpointStoreLegacy (migration): snapshots raft.FileSnapshotStore
// wrote before an upgrade are listed and opened (the start-up check and a
// lagging follower use them), restore into an FSM, and go by retention
// once two newer ones exist.
func TestCheckpointStoreLegacy(t *testing.T) {
	src, _ := openFSM(t, t.TempDir())
	w := newWorkload()
	src.ApplyBatch(entries(t, w, 1, 12))
	want := dump(t, src.Store())
	stream := snapshotOf(t, src)
	dir := filepath.Join(t.TempDir(), "snaps")
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, testLogger(t, "old"))
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("a:1")
	sink, err := files.Create(raft.SnapshotVersionMax, 12, 1, testConf, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(stream); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}

	s := newCkptStore(t, dir, 2)
	if names := dirNames(t, dir); !slices.Equal(names, []string{sink.ID()}) {
		t.Errorf("after the start the store holds %v, want the old snapshot moved up", names)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != sink.ID() || list[0].Index != 12 || list[0].Size != int64(len(stream)) {
		t.Fatalf("List = %+v, %v; want the old snapshot at 12 of %d bytes", list, err, len(stream))
	}
	dst, _ := openFSM(t, t.TempDir())
	restore, newest, err := dst.RestoreOnStart(s)
	if err != nil || !restore || newest.Index != 12 {
		t.Fatalf("RestoreOnStart = %v, %+v, %v; want a restore of the old snapshot", restore, newest, err)
	}
	meta, got := readAll(t, s, sink.ID())
	if !bytes.Equal(got, stream) || meta.Size != int64(len(got)) {
		t.Fatalf("the old snapshot streams %d bytes (Size %d), it holds %d", len(got), meta.Size, len(stream))
	}
	_, rc, err := s.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(wrapped{rc}); err != nil {
		t.Fatal(err)
	}
	if g := withoutRaft(dump(t, dst.Store())); g != withoutRaft(want) {
		t.Fatalf("restored from the old snapshot: %s", firstDiff(withoutRaft(want), g))
	}

	dst.ApplyBatch(entries(t, w, 13, 1))
	persist(t, dst, s, 13)
	if names := dirNames(t, dir); !slices.Contains(names, sink.ID()) {
		t.Errorf("one new snapshot removed the old one: %v", names)
	}
	dst.ApplyBatch(entries(t, w, 14, 1))
	persist(t, dst, s, 14)
	if names := dirNames(t, dir); slices.Contains(names, sink.ID()) || len(names) != 2 {
		t.Errorf("after two new snapshots the store holds %v", names)
	}
}
