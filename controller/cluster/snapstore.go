package cluster

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"jobsuite/controller/snapshot"
)

// CheckpointStore is the raft.SnapshotStore of a node (design 5.1-5.3):
// each snapshot is a directory TERM-INDEX-MS/ holding meta.json (raft's
// metadata, the files and their sizes, and for a received snapshot the
// SHA-256 of the stream it arrived as) and db/, the Pebble checkpoint's
// files.
//
//   - A snapshot this node takes (Create, then FSM.Snapshot's Persist)
//     is the checkpoint directory itself, renamed into place: its SSTs
//     are hard links to the live store's, nothing is copied.
//   - A snapshot streamed to it (a follower installing the leader's, an
//     operator's raft.Restore) is unpacked as it arrives (Write) into
//     ID.tmp/db/ with package snapshot's checks (plain file names,
//     lengths, the stream's SHA-256, nothing after it); Close syncs it
//     and renames ID.tmp to ID, Cancel or a bad stream removes it.
//   - Open yields the snapshot format's stream of db/, made lazily as it
//     is read, and meta.Size is that stream's exact length, computed up
//     front from the file names and sizes (raft's InstallSnapshot
//     refuses a stream whose length differs). FSM.Restore, given that
//     reader, builds the next store from db/ with hard links and does
//     not read the stream at all.
//
// Snapshots that raft.FileSnapshotStore wrote before (in DIR/snapshots/:
// TERM-INDEX-MS/ with meta.json and state.bin, which holds the same
// stream format) are moved up into DIR at start and listed and opened
// as they are, so an upgraded node starts on its old
// snapshots and sends them to followers; retention removes them once
// newer ones exist. Start-up removes *.tmp leftovers. A snapshot that
// Open has handed out is not removed by retention until its reader is
// closed.
type CheckpointStore struct {
	dir    string
	retain int
	now    func() time.Time
	log    hclog.Logger

	mu    sync.Mutex
	inUse map[string]int // open readers by snapshot ID
}

var _ raft.SnapshotStore = (*CheckpointStore)(nil)

// CheckpointStoreOptions configures NewCheckpointStore.
type CheckpointStoreOptions struct {
	// Retain is how many snapshots are kept (at least 1; 0 means 2).
	Retain int
	// Now names snapshots (TERM-INDEX-MS); nil is time.Now.
	Now func() time.Time
	// Logger receives the store's log lines; nil discards them.
	Logger hclog.Logger
}

const (
	metaFile      = "meta.json"
	dbDir         = "db"
	legacyState   = "state.bin" // raft.FileSnapshotStore's stream file
	ckptFormat    = "jobsuite-checkpoint/1"
	defaultRetain = 2
)

// ckptMeta is a snapshot's meta.json.
type ckptMeta struct {
	Format string            `json:"format"`
	Raft   raft.SnapshotMeta `json:"raft"`
	Files  []ckptFile        `json:"files"`
	// Received is the hex SHA-256 of the stream the snapshot arrived as
	// (checked then); empty for one this node took.
	Received string `json:"received_sha256,omitempty"`
}

type ckptFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// legacyMeta is raft.FileSnapshotStore's meta.json.
type legacyMeta struct {
	raft.SnapshotMeta
	CRC []byte
}

// NewCheckpointStore opens (creating it if needed) the snapshot store in
// dir and removes what an interrupted snapshot left (*.tmp).
func NewCheckpointStore(dir string, opts CheckpointStoreOptions) (*CheckpointStore, error) {
	s := &CheckpointStore{dir: dir, retain: opts.Retain, now: opts.Now, log: opts.Logger, inUse: map[string]int{}}
	if s.retain <= 0 {
		s.retain = defaultRetain
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	if err := s.moveLegacy(); err != nil {
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			s.log.Info("removing an unfinished snapshot", "path", e.Name())
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("cluster: snapshot store: %w", err)
			}
		}
	}
	return s, nil
}

// moveLegacy moves the snapshots raft.FileSnapshotStore kept in
// DIR/snapshots/ up into DIR, where List and Open read them as they
// are (a rename each, atomic: a crash midway leaves the rest for the
// next start), and removes what is left of DIR/snapshots/ (unfinished
// ones).
func (s *CheckpointStore) moveLegacy() error {
	old := filepath.Join(s.dir, "snapshots")
	entries, err := os.ReadDir(old)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, _, _, ok := parseName(e.Name()); !ok || !e.IsDir() {
			continue
		}
		to := filepath.Join(s.dir, e.Name())
		if _, err := os.Lstat(to); err == nil {
			continue
		}
		if err := os.Rename(filepath.Join(old, e.Name()), to); err != nil {
			return err
		}
		s.log.Info("kept a snapshot of the old layout", "id", e.Name())
	}
	if err := snapshot.SyncDir(s.dir); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// snapName is raft's TERM-INDEX-MS.
func snapName(term, index uint64, ms int64) string { return fmt.Sprintf("%d-%d-%d", term, index, ms) }

// parseName reads TERM-INDEX-MS; ok is false for any other name.
func parseName(name string) (term, index uint64, ms int64, ok bool) {
	parts := strings.Split(name, "-")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	term, err1 = strconv.ParseUint(parts[0], 10, 64)
	index, err2 = strconv.ParseUint(parts[1], 10, 64)
	ms, err3 = strconv.ParseInt(parts[2], 10, 64)
	return term, index, ms, err1 == nil && err2 == nil && err3 == nil
}

// Create starts a snapshot: a sink that either adopts a checkpoint
// directory (Persist of this package's FSM) or unpacks the stream
// written to it.
func (s *CheckpointStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	if version < 1 || version > raft.SnapshotVersionMax {
		return nil, fmt.Errorf("cluster: snapshot version %d not supported", version)
	}
	id := snapName(term, index, s.now().UnixMilli())
	tmp := filepath.Join(s.dir, id+tmpSuffix)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: create snapshot: %w", err)
	}
	return &checkpointSink{
		store: s,
		id:    id,
		tmp:   tmp,
		meta: raft.SnapshotMeta{Version: version, ID: id, Index: index, Term: term,
			Configuration: configuration, ConfigurationIndex: configurationIndex},
	}, nil
}

// List returns the snapshots, newest first (by term, index, then name).
// A directory that is not a whole snapshot of either layout is skipped.
func (s *CheckpointStore) List() ([]*raft.SnapshotMeta, error) {
	all, err := s.list()
	if err != nil {
		return nil, err
	}
	metas := make([]*raft.SnapshotMeta, 0, len(all))
	for _, e := range all {
		if e.meta != nil {
			metas = append(metas, e.meta)
		}
	}
	return metas, nil
}

type listed struct {
	name        string
	term, index uint64
	ms          int64
	meta        *raft.SnapshotMeta // nil: not a whole snapshot
}

// list returns every TERM-INDEX-MS entry, newest first.
func (s *CheckpointStore) list() ([]listed, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("cluster: listing snapshots: %w", err)
	}
	var all []listed
	for _, e := range entries {
		term, index, ms, ok := parseName(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		l := listed{name: e.Name(), term: term, index: index, ms: ms}
		if m, _, err := s.readMeta(e.Name()); err == nil {
			l.meta = m
		} else {
			s.log.Warn("skipping a snapshot that does not read", "id", e.Name(), "error", err)
		}
		all = append(all, l)
	}
	slices.SortFunc(all, func(a, b listed) int {
		return cmp.Or(cmp.Compare(b.term, a.term), cmp.Compare(b.index, a.index), cmp.Compare(b.ms, a.ms), strings.Compare(b.name, a.name))
	})
	return all, nil
}

// readMeta reads snapshot id's metadata; files is nil for a snapshot in
// raft.FileSnapshotStore's layout.
func (s *CheckpointStore) readMeta(id string) (*raft.SnapshotMeta, []ckptFile, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, id, metaFile))
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(filepath.Join(s.dir, id, legacyState)); err == nil {
		var m legacyMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", metaFile, err)
		}
		m.SnapshotMeta.ID = id
		return &m.SnapshotMeta, nil, nil
	}
	var m ckptMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", metaFile, err)
	}
	if m.Format != ckptFormat {
		return nil, nil, fmt.Errorf("%s: format %q, this build reads %q", metaFile, m.Format, ckptFormat)
	}
	m.Raft.ID = id
	return &m.Raft, m.Files, nil
}

// Open returns snapshot id's metadata and its stream in the snapshot
// format. For a checkpoint snapshot the stream is made from db/ as it is
// read, and the reader also tells FSM.Restore the directory (Dir), so a
// restore on this node never reads it. Retention keeps the snapshot
// until the reader is closed.
func (s *CheckpointStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if _, _, _, ok := parseName(id); !ok {
		return nil, nil, fmt.Errorf("cluster: open snapshot %q: not a snapshot ID", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	meta, files, err := s.readMeta(id)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: open snapshot %s: %w", id, err)
	}
	release := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inUse[id]--; s.inUse[id] <= 0 {
			delete(s.inUse, id)
		}
	}
	if files == nil {
		// raft.FileSnapshotStore's layout: state.bin is the stream.
		f, err := os.Open(filepath.Join(s.dir, id, legacyState))
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: open snapshot %s: %w", id, err)
		}
		if fi, err := f.Stat(); err != nil || fi.Size() != meta.Size {
			f.Close()
			return nil, nil, fmt.Errorf("cluster: open snapshot %s: %s is not the %d bytes its meta says (%v)", id, legacyState, meta.Size, err)
		}
		s.inUse[id]++
		return meta, &legacyReader{File: f, meta: *meta, release: release}, nil
	}
	db := filepath.Join(s.dir, id, dbDir)
	if err := checkFiles(db, files); err != nil {
		return nil, nil, fmt.Errorf("cluster: open snapshot %s: %w", id, err)
	}
	meta.Size = streamSize(files)
	s.inUse[id]++
	return meta, &checkpointReader{dir: db, meta: *meta, release: release}, nil
}

// checkFiles checks that db holds exactly files, with their sizes: the
// stream Open promises is then exactly streamSize(files) long.
func checkFiles(db string, files []ckptFile) error {
	entries, err := os.ReadDir(db)
	if err != nil {
		return err
	}
	if len(entries) != len(files) {
		return fmt.Errorf("%s holds %d files, its meta lists %d", db, len(entries), len(files))
	}
	for _, f := range files {
		fi, err := os.Lstat(filepath.Join(db, f.Name))
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || fi.Size() != f.Size {
			return fmt.Errorf("%s: %d bytes (%s), its meta says %d", f.Name, fi.Size(), fi.Mode().Type(), f.Size)
		}
	}
	return nil
}

// streamSize is the length of the stream snapshot.Write makes of files.
func streamSize(files []ckptFile) int64 {
	n := snapshot.HeaderSize + snapshot.TrailerSize
	for _, f := range files {
		n += snapshot.EntrySize(f.Name, f.Size)
	}
	return n
}

// filesOf lists db's regular files and their sizes, sorted by name.
func filesOf(db string) ([]ckptFile, error) {
	entries, err := os.ReadDir(db)
	if err != nil {
		return nil, err
	}
	files := make([]ckptFile, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file", filepath.Join(db, e.Name()))
		}
		files = append(files, ckptFile{Name: e.Name(), Size: fi.Size()})
	}
	return files, nil
}

// reap removes all but the newest retain whole snapshots, except those
// a reader has open. Unfinished ones (*.tmp) are start-up's business; a
// directory that does not read as a snapshot goes only when it is older
// than the ones kept.
func (s *CheckpointStore) reap() {
	all, err := s.list()
	if err != nil {
		s.log.Warn("retention: listing snapshots", "error", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := 0
	for _, e := range all {
		if e.meta != nil && kept < s.retain {
			kept++
			continue
		}
		if e.meta == nil && kept < s.retain {
			continue // not whole: leave it for an operator to look at
		}
		if s.inUse[e.name] > 0 {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, e.name)); err != nil {
			s.log.Warn("retention: removing a snapshot", "id", e.name, "error", err)
			continue
		}
		s.log.Debug("retention: removed a snapshot", "id", e.name)
	}
}

// checkpointSink is CheckpointStore's raft.SnapshotSink.
type checkpointSink struct {
	store *CheckpointStore
	id    string
	tmp   string // ID.tmp
	meta  raft.SnapshotMeta

	adopted bool // a checkpoint directory was renamed in (adopt)

	// A stream written to the sink is unpacked by snapshot.Read on a
	// goroutine reading the other end of a pipe.
	pw   *io.PipeWriter
	done chan struct{}
	info snapshot.Info
	rerr error

	finished bool // Close or Cancel ran
	ferr     error
}

var errCanceled = errors.New("snapshot canceled")

// ID is the snapshot's ID.
func (k *checkpointSink) ID() string { return k.id }

// Write unpacks the next bytes of a snapshot stream.
func (k *checkpointSink) Write(p []byte) (int, error) {
	if k.finished {
		return 0, fmt.Errorf("cluster: snapshot %s: write after close", k.id)
	}
	if k.adopted {
		return 0, fmt.Errorf("cluster: snapshot %s: write to a sink that adopted a checkpoint", k.id)
	}
	if k.pw == nil {
		pr, pw := io.Pipe()
		k.pw, k.done = pw, make(chan struct{})
		go func() {
			defer close(k.done)
			k.info, k.rerr = snapshot.Read(pr, filepath.Join(k.tmp, dbDir))
			// Writes after a refusal (or past the stream's end) fail.
			if k.rerr != nil {
				pr.CloseWithError(k.rerr)
			} else {
				pr.CloseWithError(fmt.Errorf("%w: bytes after the checksum", snapshot.ErrSnapshot))
			}
		}()
	}
	n, err := k.pw.Write(p)
	if err != nil {
		return n, fmt.Errorf("cluster: snapshot %s: %w", k.id, err)
	}
	return n, nil
}

// adopt makes the checkpoint directory dir the snapshot's db/ by
// renaming it: no byte is copied. It fails (and changes nothing) if
// bytes were written already or dir is on another file system.
func (k *checkpointSink) adopt(dir string) error {
	if k.finished || k.pw != nil || k.adopted {
		return fmt.Errorf("cluster: snapshot %s: cannot adopt a checkpoint now", k.id)
	}
	if err := os.Rename(dir, filepath.Join(k.tmp, dbDir)); err != nil {
		return err
	}
	k.adopted = true
	return nil
}

// Close finishes the snapshot: the stream must have been whole (its
// checksum checked), then meta.json is written, everything synced and
// ID.tmp renamed to ID. Older snapshots past the retention go.
func (k *checkpointSink) Close() error {
	if k.finished {
		return k.ferr
	}
	k.finished = true
	k.ferr = k.close()
	if k.ferr != nil {
		_ = os.RemoveAll(k.tmp)
		k.store.log.Error("snapshot not stored", "id", k.id, "error", k.ferr)
		return k.ferr
	}
	k.store.reap()
	return nil
}

func (k *checkpointSink) close() error {
	m := ckptMeta{Format: ckptFormat, Raft: k.meta}
	db := filepath.Join(k.tmp, dbDir)
	switch {
	case k.pw != nil:
		k.pw.Close()
		<-k.done
		if k.rerr != nil {
			return fmt.Errorf("cluster: snapshot %s: %w", k.id, k.rerr)
		}
		m.Received = hex.EncodeToString(k.info.SHA256[:])
	case k.adopted:
		// Pebble synced the checkpoint's files; the names need the
		// directory synced after the rename.
		if err := snapshot.SyncDir(db); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cluster: snapshot %s: %w: empty stream", k.id, snapshot.ErrSnapshot)
	}
	files, err := filesOf(db)
	if err != nil {
		return err
	}
	m.Files = files
	m.Raft.Size = streamSize(files)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(k.tmp, metaFile), b); err != nil {
		return err
	}
	if err := snapshot.SyncDir(k.tmp); err != nil {
		return err
	}
	if err := os.Rename(k.tmp, filepath.Join(k.store.dir, k.id)); err != nil {
		return err
	}
	return snapshot.SyncDir(k.store.dir)
}

// Cancel drops the snapshot and everything it wrote.
func (k *checkpointSink) Cancel() error {
	if k.finished {
		return nil
	}
	k.finished = true
	k.ferr = errCanceled
	if k.pw != nil {
		k.pw.CloseWithError(errCanceled)
		<-k.done
	}
	return os.RemoveAll(k.tmp)
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// checkpointReader streams a checkpoint snapshot's db/ in the snapshot
// format, starting when first read; Dir and Meta let FSM.Restore use the
// directory instead.
type checkpointReader struct {
	dir     string
	meta    raft.SnapshotMeta
	release func()

	once   sync.Once
	pr     *io.PipeReader
	done   chan struct{}
	closed sync.Once
}

// Dir is the snapshot's checkpoint directory (db/).
func (r *checkpointReader) Dir() string { return r.dir }

// Meta is the snapshot's raft metadata.
func (r *checkpointReader) Meta() raft.SnapshotMeta { return r.meta }

func (r *checkpointReader) Read(p []byte) (int, error) {
	r.once.Do(func() {
		pr, pw := io.Pipe()
		r.pr, r.done = pr, make(chan struct{})
		go func() {
			defer close(r.done)
			pw.CloseWithError(snapshot.Write(pw, r.dir))
		}()
	})
	if r.pr == nil {
		return 0, io.ErrClosedPipe // closed before it was read
	}
	return r.pr.Read(p)
}

// Close stops the stream and lets retention remove the snapshot.
func (r *checkpointReader) Close() error {
	r.closed.Do(func() {
		r.once.Do(func() {}) // no stream after Close
		if r.pr != nil {
			r.pr.CloseWithError(io.ErrClosedPipe)
			<-r.done
		}
		r.release()
	})
	return nil
}

// legacyReader is a raft.FileSnapshotStore snapshot's state.bin.
type legacyReader struct {
	*os.File
	meta    raft.SnapshotMeta
	release func()
	closed  sync.Once
}

// Meta is the snapshot's raft metadata.
func (r *legacyReader) Meta() raft.SnapshotMeta { return r.meta }

func (r *legacyReader) Close() error {
	err := r.File.Close()
	r.closed.Do(r.release)
	return err
}
