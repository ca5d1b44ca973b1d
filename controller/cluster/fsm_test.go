package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"jobsuite/controller/snapshot"
	"jobsuite/controller/store"
)

// openFSM opens an FSM in dir whose Fatal records its error, and closes
// it when the test ends.
func openFSM(t testing.TB, dir string) (*FSM, *[]error) {
	t.Helper()
	var fatal []error
	f, err := Open(dir, Options{Logger: testLogger(t, "fsm"), Store: store.Options{Logger: testLogger(t, "store")},
		Fatal: func(err error) { fatal = append(fatal, err) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f, &fatal
}

// entries makes n log entries of a workload's rounds from index first,
// in term 1.
func entries(t testing.TB, w *workload, first uint64, n int) []*raft.Log {
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Index: first + uint64(i), Term: 1, Type: raft.LogCommand, Data: encode(t, w.next())}
	}
	return logs
}

func response(t *testing.T, r any) *Response {
	t.Helper()
	resp, ok := r.(*Response)
	if !ok {
		t.Fatalf("response %#v, want a *Response", r)
	}
	return resp
}

// TestApplyBatch: every entry's round lands with its results, the
// applied index is the last entry's, a replay of the same entries is
// skipped whole, and an entry that is not a round is refused without
// stopping anything.
func TestApplyBatch(t *testing.T) {
	f, fatal := openFSM(t, t.TempDir())
	w := newWorkload()
	logs := entries(t, w, 1, 6)
	logs = slices.Insert(logs, 3, &raft.Log{Index: 0, Term: 1, Type: raft.LogConfiguration, Data: []byte("conf")})
	bad := &raft.Log{Type: raft.LogCommand, Data: []byte("not a round")}
	logs = slices.Insert(logs, 5, bad)
	for i, l := range logs {
		l.Index, l.Term = uint64(i+1), uint64(1+i/4)
	}
	resp := f.ApplyBatch(logs)
	if len(resp) != len(logs) {
		t.Fatalf("%d responses for %d entries", len(resp), len(logs))
	}
	for i, l := range logs {
		switch {
		case l.Type == raft.LogConfiguration:
			if resp[i] != nil {
				t.Errorf("entry %d (configuration): response %#v", i, resp[i])
			}
		case l == bad:
			if r := response(t, resp[i]); !errors.Is(r.Err, store.ErrBadRound) || r.Results != nil {
				t.Errorf("entry %d (garbage): %+v, want ErrBadRound", i, r)
			}
		default:
			r := response(t, resp[i])
			cmds, err := store.DecodeRound(l.Data)
			if err != nil {
				t.Fatal(err)
			}
			if r.Err != nil || r.Skipped || len(r.Results) != len(cmds) {
				t.Errorf("entry %d: %+v for %d commands", i, r, len(cmds))
			}
		}
	}
	// Each round repeats a key once: the store says who owns it, and
	// every other command applied.
	var refused []store.Result
	for _, res := range response(t, resp[1]).Results {
		if res.Err != nil {
			refused = append(refused, res)
		}
	}
	if len(refused) != 1 || !errors.Is(refused[0].Err, store.ErrExists) || refused[0].Owner != w.dupOwners[1] {
		t.Errorf("round 2 refused %+v, want one ErrExists owned by job %d", refused, w.dupOwners[1])
	}
	lastLog := logs[len(logs)-1]
	if i, term := f.Applied(); i != lastLog.Index || term != lastLog.Term {
		t.Errorf("Applied() = %d, %d; want %d, %d", i, term, lastLog.Index, lastLog.Term)
	}
	if i, term, err := f.Store().Applied(); err != nil || i != lastLog.Index || term != lastLog.Term {
		t.Errorf("the store's applied index %d, %d, %v; want %d, %d", i, term, err, lastLog.Index, lastLog.Term)
	}
	before := dump(t, f.Store())
	if s := f.Stats(); s.Applied != 6 || s.Skipped != 0 {
		t.Errorf("stats %+v, want 6 applied", s)
	}

	// A replay: everything skipped, nothing written.
	again := f.ApplyBatch(logs)
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			if r := response(t, again[i]); !r.Skipped {
				t.Errorf("replayed entry %d: %+v, want skipped", i, r)
			}
		}
	}
	if s := f.Stats(); s.Applied != 6 || s.Skipped != uint64(len(logs)) {
		t.Errorf("stats after the replay %+v, want 6 applied, %d skipped", s, len(logs))
	}
	if after := dump(t, f.Store()); after != before {
		t.Errorf("the replay changed the store: %s", firstDiff(before, after))
	}
	if len(*fatal) != 0 {
		t.Errorf("fatal: %v", *fatal)
	}
}

// TestApplyBatchStops: an entry this node cannot apply (a command type
// from a newer release) calls Fatal, applies nothing of the batch, and
// every later entry is refused with ErrStopped.
func TestApplyBatchStops(t *testing.T) {
	f, fatal := openFSM(t, t.TempDir())
	w := newWorkload()
	logs := entries(t, w, 1, 2)
	// A well-formed round whose only command has type 99, not ignorable.
	future := []byte{'J', 1, 1, 0, 0, 0, 0, 99, 0}
	logs = append(logs, &raft.Log{Index: 3, Term: 1, Type: raft.LogCommand, Data: fixCRC(future)})
	resp := f.ApplyBatch(logs)
	if len(*fatal) != 1 || !errors.Is((*fatal)[0], store.ErrUnknownCommand) {
		t.Fatalf("fatal = %v, want one ErrUnknownCommand", *fatal)
	}
	for i := range resp {
		if r := response(t, resp[i]); !errors.Is(r.Err, ErrStopped) {
			t.Errorf("entry %d: %+v, want ErrStopped", i, r)
		}
	}
	if i, _ := f.Applied(); i != 0 {
		t.Errorf("applied index %d after a refused batch, want 0", i)
	}
	if r := response(t, f.Apply(&raft.Log{Index: 4, Type: raft.LogCommand, Data: encode(t, w.next())})); !errors.Is(r.Err, ErrStopped) {
		t.Errorf("an entry after the stop: %+v, want ErrStopped", r)
	}
	if len(*fatal) != 1 {
		t.Errorf("Fatal called %d times, want once", len(*fatal))
	}
}

// fixCRC sets the checksum of a one-byte-count round built by hand.
func fixCRC(round []byte) []byte {
	body := round[7:]
	sum := crc32c(body)
	round[3], round[4], round[5], round[6] = byte(sum>>24), byte(sum>>16), byte(sum>>8), byte(sum)
	return round
}

// TestReopenKeepsApplied: the applied index survives a reopen, and
// what an interrupted restore or snapshot left is removed.
func TestReopenKeepsApplied(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, Options{Logger: testLogger(t, "fsm")})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorkload()
	f.ApplyBatch(entries(t, w, 1, 3))
	want := dump(t, f.Store())
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{"store-000002.tmp", "store-000003", "checkpoint-4"} {
		if err := os.MkdirAll(filepath.Join(dir, junk, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	g, _ := openFSM(t, dir)
	if i, term := g.Applied(); i != 3 || term != 1 {
		t.Errorf("Applied after reopening = %d, %d; want 3, 1", i, term)
	}
	if got := dump(t, g.Store()); got != want {
		t.Errorf("store changed across a reopen: %s", firstDiff(want, got))
	}
	names := dirNames(t, dir)
	if !slices.Equal(names, []string{"store", "store-000001"}) {
		t.Errorf("directory holds %v, want only the store and its link", names)
	}
}

// TestOpenRefusesMissingStore: a link naming a store that is gone is an
// error, never a fresh empty store that would claim to have applied
// nothing.
func TestOpenRefusesMissingStore(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, Options{Logger: testLogger(t, "fsm")})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch(entries(t, newWorkload(), 1, 1))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, storeDirName(1))); err != nil {
		t.Fatal(err)
	}
	if g, err := Open(dir, Options{Logger: testLogger(t, "fsm")}); err == nil {
		g.Close()
		t.Fatal("Open made a new store in place of the missing one")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"store"}) {
		t.Errorf("the refused Open left %v", names)
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// memSink is a raft.SnapshotSink into memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

// snapshotOf takes a snapshot of f and returns its stream.
func snapshotOf(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// TestRestoreRefusesBadSnapshots: a stream that is corrupt, truncated,
// extended, foreign or names a file outside the directory is refused,
// and the live store is exactly as it was and still applies; then the
// good stream restores, swapping the store.
func TestRestoreRefusesBadSnapshots(t *testing.T) {
	src, _ := openFSM(t, t.TempDir())
	w := newWorkload()
	src.ApplyBatch(entries(t, w, 1, 20))
	good := snapshotOf(t, src)
	want := dump(t, src.Store())

	dir := t.TempDir()
	dst, fatal := openFSM(t, dir)
	other := newWorkload()
	other.nextID = 1000 // a different history
	dst.ApplyBatch(entries(t, other, 1, 3))
	live := dump(t, dst.Store())

	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	evil := []byte(snapshot.Magic + "\x01")
	evil = append(evil, 5)
	evil = append(evil, "../x1"...)
	evil = append(evil, 1, 'x', 0)
	for name, data := range map[string][]byte{
		"empty":           nil,
		"foreign":         []byte("PK\x03\x04 a zip file"),
		"newer version":   append([]byte(snapshot.Magic+"\x02"), good[len(snapshot.Magic)+1:]...),
		"flipped early":   flip(len(snapshot.Magic) + 40),
		"flipped middle":  flip(len(good) / 2),
		"flipped sum":     flip(len(good) - 1),
		"truncated":       good[:len(good)/2],
		"no checksum":     good[:len(good)-sha256Size],
		"one byte short":  good[:len(good)-1],
		"trailing byte":   append(bytes.Clone(good), 0),
		"path escape":     evil,
		"empty store dir": append([]byte(snapshot.Magic+"\x01\x00"), sumOf(snapshot.Magic+"\x01\x00")...),
	} {
		t.Run(name, func(t *testing.T) {
			err := dst.Restore(nopCloser{bytes.NewReader(data)})
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("Restore = %v, want ErrSnapshot", err)
			}
			if got := dump(t, dst.Store()); got != live {
				t.Fatalf("the refused snapshot changed the live store: %s", firstDiff(live, got))
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"store", "store-000001"}) {
				t.Errorf("the refused snapshot left %v", names)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x1")); err == nil {
				t.Errorf("a file escaped the snapshot directory")
			}
		})
	}
	if i, _ := dst.Applied(); i != 3 {
		t.Errorf("applied index %d after refused snapshots, want 3", i)
	}

	if err := dst.Restore(nopCloser{bytes.NewReader(good)}); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, dst.Store()); got != want {
		t.Errorf("restored store differs from the source: %s", firstDiff(want, got))
	}
	if i, _ := dst.Applied(); i != 20 {
		t.Errorf("applied index %d after the restore, want 20", i)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"store", "store-000002"}) {
		t.Errorf("after the restore the directory holds %v, want the new store and its link", names)
	}
	if target, err := os.Readlink(filepath.Join(dir, "store")); err != nil || target != "store-000002" {
		t.Errorf("store link = %q, %v", target, err)
	}
	// It goes on from there: the source's next entry applies the same.
	next := entries(t, w, 21, 1)
	src.ApplyBatch(next)
	dst.ApplyBatch(next)
	if a, b := dump(t, src.Store()), dump(t, dst.Store()); a != b {
		t.Errorf("after one more entry: %s", firstDiff(a, b))
	}
	if len(*fatal) != 0 {
		t.Errorf("fatal: %v", *fatal)
	}
}

// TestRestoreUnderReaders: readers that take the store per operation and
// retry once on ErrClosed never fail while Restore swaps it.
func TestRestoreUnderReaders(t *testing.T) {
	src, _ := openFSM(t, t.TempDir())
	w := newWorkload()
	src.ApplyBatch(entries(t, w, 1, 10))
	good := snapshotOf(t, src)
	dst, _ := openFSM(t, t.TempDir())
	dst.ApplyBatch(entries(t, newWorkload(), 1, 10))

	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 1)
	reads := make(chan struct{}, 1)
	go func() {
		defer close(errs)
		for ctx.Err() == nil {
			_, _, err := dst.Store().Applied()
			if errors.Is(err, store.ErrClosed) {
				_, _, err = dst.Store().Applied()
			}
			if err != nil {
				errs <- err
				return
			}
			select {
			case reads <- struct{}{}:
			default:
			}
		}
	}()
	read := func() {
		select {
		case <-reads:
		case err := <-errs:
			t.Fatalf("a reader failed across the restores: %v", err)
		}
	}
	read()
	for range 3 {
		if err := dst.Restore(nopCloser{bytes.NewReader(good)}); err != nil {
			t.Fatal(err)
		}
		read()
	}
	cancel()
	if err := <-errs; err != nil {
		t.Errorf("a reader failed across the restores: %v", err)
	}
	if s := dst.Stats(); s.Restores != 3 {
		t.Errorf("%d restores counted, want 3", s.Restores)
	}
}

// TestWaitApplied waits for an index an ApplyBatch reaches later.
func TestWaitApplied(t *testing.T) {
	f, _ := openFSM(t, t.TempDir())
	done := make(chan error, 1)
	go func() { done <- f.WaitApplied(t.Context(), 2) }()
	w := newWorkload()
	f.ApplyBatch(entries(t, w, 1, 1))
	f.ApplyBatch(entries(t, w, 2, 1))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	if err := f.WaitApplied(ctx, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitApplied for an index never reached = %v", err)
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

const sha256Size = 32

func sumOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// FuzzReadSnapshot: whatever the stream, reading it returns an error or
// a directory of plain files inside the one it was given, never a panic.
func FuzzReadSnapshot(f *testing.F) {
	src, _ := openFSM(f, f.TempDir())
	src.ApplyBatch(entries(f, newWorkload(), 1, 2))
	good := snapshotOf(f, src)
	f.Add(good)
	f.Add(good[:len(good)/3])
	f.Add([]byte(snapshot.Magic + "\x01\x05../x1\x01x\x00"))
	// Each input is read into a directory of its own; on a tmpfs when
	// there is one, where the reader's fsyncs cost nothing (this target
	// checks parsing and where files land, not durability).
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "fuzzsnap"); err == nil {
			base = d
			f.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := ""
		if base != "" {
			d, err := os.MkdirTemp(base, "in")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(d)
			parent = d
		} else {
			parent = t.TempDir()
		}
		dir := filepath.Join(parent, "snap")
		_, err := snapshot.Read(bytes.NewReader(data), dir)
		if names := dirNames(t, parent); !slices.Equal(names, []string{"snap"}) {
			t.Fatalf("reading wrote %v beside its directory", names)
		}
		if err != nil && !errors.Is(err, ErrSnapshot) {
			t.Fatalf("error %v, want ErrSnapshot", err)
		}
	})
}

// TestAppliedHook: Options.Applied hears the commands of every entry
// applied, and again of entries skipped on a replay (the output
// channel's repair must hear of attempts that ended before a restart).
func TestAppliedHook(t *testing.T) {
	var heard []string
	f, err := Open(t.TempDir(), Options{Logger: testLogger(t, "fsm"), Applied: func(cmds []store.Command) {
		for _, c := range cmds {
			if tl, ok := c.(*store.TruncateLog); ok {
				heard = append(heard, fmt.Sprintf("%d@%d", tl.Job, tl.At))
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	round := func(job, at uint64) []byte {
		b, err := store.EncodeRound([]store.Command{&store.TruncateLog{Job: job, At: at}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	logs := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: round(1, 10)},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: round(2, 20)},
	}
	f.ApplyBatch(logs)
	if want := []string{"1@10", "2@20"}; !slices.Equal(heard, want) {
		t.Fatalf("after applying: heard %v, want %v", heard, want)
	}
	heard = nil
	f.ApplyBatch(append(logs[1:], &raft.Log{Index: 3, Term: 1, Type: raft.LogCommand, Data: round(3, 30)}))
	if want := []string{"2@20", "3@30"}; !slices.Equal(heard, want) {
		t.Fatalf("after a replay and a new entry: heard %v, want %v", heard, want)
	}
}

// TestRestoredHook: Options.Restored is called once per snapshot that
// replaced the store, after the new store is live (the output repair
// reads its queue from it), and not for a snapshot refused.
func TestRestoredHook(t *testing.T) {
	src, _ := openFSM(t, t.TempDir())
	src.ApplyBatch(entries(t, newWorkload(), 1, 10))
	good := snapshotOf(t, src)

	var f *FSM
	var seen []uint64 // the applied index of the store live at each call
	f, err := Open(t.TempDir(), Options{Logger: testLogger(t, "fsm"), Restored: func() {
		index, _, err := f.Store().Applied()
		if err != nil {
			t.Error(err)
		}
		seen = append(seen, index)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if err := f.Restore(nopCloser{bytes.NewReader(good[:len(good)/2])}); err == nil {
		t.Fatal("a truncated snapshot restored")
	}
	if len(seen) != 0 {
		t.Fatalf("Restored called for a refused snapshot: %v", seen)
	}
	if err := f.Restore(nopCloser{bytes.NewReader(good)}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != 10 {
		t.Fatalf("Restored saw applied indexes %v, want [10]", seen)
	}
}

// TestRestoreCarriesRunningOutput: output of running attempts that a
// node stored (and may have acknowledged on the output channel) after
// the snapshot it installs was taken is carried into the restored
// store, so the install does not take acknowledged bytes away.
func TestRestoreCarriesRunningOutput(t *testing.T) {
	f, _ := openFSM(t, t.TempDir())
	t0 := time.Unix(1_700_000_000, 0).UTC()
	dispatched := func(id uint64) (create, dispatch *store.Transition) {
		j := &store.Job{ID: id, Name: "j", Command: "true", State: store.Queued, CreatedAt: t0, QueuedAt: t0}
		create = store.NewTransition(j, store.Event{Time: t0, Type: "submitted"})
		d := j.Clone()
		d.State = store.Running
		d.Attempts = append(d.Attempts, store.Attempt{Number: 1, Agent: "a", DispatchedAt: t0})
		return create, store.NewTransition(d, store.Event{Time: t0, Type: "running"})
	}
	out := func(id uint64, off uint64, data string) store.Command {
		return &store.ReplicaOutput{Job: id, Attempt: 1, Chunk: store.Chunk{Offset: off, Stream: 1, Data: []byte(data), Time: t0}}
	}
	log := func(id uint64) string {
		chunks, err := f.Store().ReadLog(id, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for _, c := range chunks {
			b.Write(c.Data)
		}
		return b.String()
	}
	c1, d1 := dispatched(1)
	c2, d2 := dispatched(2)
	if _, err := f.Store().Apply(c1, c2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Store().Apply(d1, d2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ApplyOutput(out(1, 0, "aaaa"), out(2, 0, "xx")); err != nil {
		t.Fatal(err)
	}
	snap := snapshotOf(t, f)
	// After the checkpoint both streams go on.
	if _, err := f.ApplyOutput(out(1, 4, "bbbbbb"), out(1, 10, "cc"), out(2, 2, "yy")); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(nopCloser{bytes.NewReader(snap)}); err != nil {
		t.Fatal(err)
	}
	if got := log(1); got != "aaaabbbbbbcc" {
		t.Errorf("job 1's log after the restore: %q, want the stream's bytes past the checkpoint carried", got)
	}
	if got := log(2); got != "xxyy" {
		t.Errorf("job 2's log after the restore: %q", got)
	}
}
