package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"

	"jobsuite/controller/snapshot"
	"jobsuite/controller/store"
)

// A snapshot is a Pebble checkpoint of the store (store.Checkpoint:
// hard-linked SSTables, copies of the manifest, options and WAL), taken
// on raft's FSM goroutine so that it holds exactly the entries applied
// up to the snapshot's index. Persist hands the checkpoint directory to
// a CheckpointStore (snapstore.go) by a rename, copying nothing; to any
// other raft.SnapshotStore it streams it in the format of package
// snapshot (a list of named files and a SHA-256 over the stream), the
// same a single controller's backup uses. Restore builds a new store
// directory beside the live store — from a CheckpointStore snapshot's
// directory by hard links (linkCheckpoint), from any other stream by
// reading it (snapshot.Read checks the sum and that the stream ends
// right after it) — opens the result as a store, and only then swaps
// the "store" link over to it (an atomic rename) and closes the old
// store. A snapshot that fails any check is refused (ErrSnapshot) and
// its directory removed; the live store is not touched.

// Snapshot takes a checkpoint of the store. Raft calls it on the FSM
// goroutine, so no ApplyBatch runs meanwhile: the checkpoint holds
// exactly the entries applied so far, and the store is durable up to
// them (the checkpoint syncs the WAL first) before raft records the
// snapshot and compacts its log.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, fmt.Errorf("cluster: snapshot: %w", ErrClosed)
	}
	dir := filepath.Join(f.dir, fmt.Sprintf("%s%d", cpPrefix, f.checkpoints.Add(1)))
	if err := f.st.Checkpoint(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("cluster: snapshot: %w", err)
	}
	index, _ := f.Applied()
	f.log.Debug("checkpoint taken", "dir", dir, "applied_index", index)
	return &checkpoint{dir: dir}, nil
}

// checkpoint is a raft.FSMSnapshot: a checkpoint directory that Persist
// streams and Release removes.
type checkpoint struct{ dir string }

// Persist hands the checkpoint to sink. A CheckpointStore's sink takes
// the directory itself (a rename: the SSTs stay hard links to the live
// store's, nothing is copied); any other sink gets it streamed in the
// snapshot format, as does a CheckpointStore on another file system.
// Raft calls it off the FSM goroutine; applies go on meanwhile.
func (c *checkpoint) Persist(sink raft.SnapshotSink) error {
	if own, ok := sink.(*checkpointSink); ok {
		if err := own.adopt(c.dir); err == nil {
			return sink.Close()
		}
	}
	if err := snapshot.Write(sink, c.dir); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release removes the checkpoint directory.
func (c *checkpoint) Release() { _ = os.RemoveAll(c.dir) }

// SnapshotStore wraps a raft.SnapshotStore other than CheckpointStore
// (which does the same by itself) with one addition. Open hands out the
// snapshot's stream together with its metadata, so that Restore, which
// raft calls with that stream (wrapped in raft's own counting reader),
// learns the index and term raft gives the restored state and the
// membership configuration that goes with it. That index is not always
// the one inside the snapshot's store: raft takes a snapshot at its last
// applied entry, which may be a no-op past the store's "zi", and an
// operator's restore (raft.Restore) is given a new index past the end
// of the live log. Restore writes raft's into the store, so that the
// store and raft agree on what it holds: the next entry applies, a
// replay skips exactly what it holds, and the start-up check
// (RestoreOnStart) compares like with like.
type SnapshotStore struct{ raft.SnapshotStore }

var _ raft.SnapshotStore = SnapshotStore{}

// Open opens snapshot id and tags its stream with its metadata.
func (s SnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	return meta, &source{ReadCloser: rc, meta: *meta}, nil
}

// source is a snapshot's stream with its metadata (SnapshotStore.Open).
type source struct {
	io.ReadCloser
	meta raft.SnapshotMeta
}

// Meta is the snapshot's raft metadata.
func (s *source) Meta() raft.SnapshotMeta { return s.meta }

// unwrap finds, under whatever raft wrapped rc in
// (raft.ReadCloserWrapper), the reader SnapshotStore or CheckpointStore
// opened: its metadata (tagged) and, for a CheckpointStore snapshot,
// its checkpoint directory (dir != "").
func unwrap(rc io.ReadCloser) (meta raft.SnapshotMeta, tagged bool, dir string) {
	for range 8 {
		if d, ok := rc.(interface{ Dir() string }); ok {
			dir = d.Dir()
		}
		if m, ok := rc.(interface{ Meta() raft.SnapshotMeta }); ok {
			return m.Meta(), true, dir
		}
		w, ok := rc.(raft.ReadCloserWrapper)
		if !ok {
			break
		}
		rc = w.WrappedReadCloser()
	}
	return raft.SnapshotMeta{}, false, ""
}

// Restore replaces the store with the snapshot rc streams (a follower
// catching up, raft restoring its newest snapshot at start, or an
// operator's restore through raft.Restore). The stream goes into a new
// directory; only when it checked out and opened as a store does the
// "store" link move to it, and the old store is closed and removed. A
// bad stream is refused with ErrSnapshot and leaves the live store as it
// was.
//
// When rc came from SnapshotStore.Open (always, in a node), the new
// store's applied index and term become the snapshot's as raft numbers
// it, and its configuration ("zc") the snapshot's, written durably
// before the store goes live; otherwise (a bare raft.SnapshotStore) the
// applied index is the one stored in the snapshot.
//
// Before the swap it carries over the output of attempts still running
// in the new store that the old one holds past the new one's end
// (carryOutput): a follower of the output channel stores and
// acknowledges chunks beside raft, and those that came after the
// checkpoint was taken must not go with the old store.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	meta, tagged, from := unwrap(rc)
	f.mu.RLock()
	gen, closed := f.gen+1, f.closed
	f.mu.RUnlock()
	if closed {
		return fmt.Errorf("cluster: restore: %w", ErrClosed)
	}
	final := filepath.Join(f.dir, storeDirName(gen))
	tmp := final + tmpSuffix
	fail := func(err error) error {
		_ = os.RemoveAll(tmp)
		_ = os.RemoveAll(final)
		f.log.Error("snapshot refused; the live store is unchanged", "error", err)
		return fmt.Errorf("cluster: restore: %w", err)
	}
	if err := errors.Join(os.RemoveAll(tmp), os.RemoveAll(final)); err != nil {
		return fail(err)
	}
	if from != "" {
		// A CheckpointStore snapshot: the store is built from its
		// directory, not from the stream.
		if err := linkCheckpoint(from, tmp); err != nil {
			return fail(err)
		}
	} else if _, err := snapshot.Read(rc, tmp); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	if tagged {
		if err := stamp(final, f.opts, meta); err != nil {
			return fail(err)
		}
	}
	st, err := store.Open(final, f.opts)
	if err != nil {
		return fail(fmt.Errorf("%w: it does not open as a store: %v", ErrSnapshot, err))
	}
	index, term, err := st.Applied()
	if err != nil {
		_ = st.Close()
		return fail(err)
	}

	f.mu.Lock()
	// Output of attempts still running that this node stored after the
	// snapshot's checkpoint was taken: the new store lacks it, and this
	// node may have acknowledged it to the leader, which counted it for
	// the quorum. It is carried over, synced, before the old store goes.
	if carried, err := carryOutput(f.st, st); err != nil {
		f.log.Error("carrying running attempts' output into the restored store failed; the repair fetches it when they end", "error", err)
	} else if carried > 0 {
		f.log.Info("carried running attempts' output into the restored store", "bytes", carried)
	}
	if err := f.link(gen); err != nil {
		// The rename either happened or not: find out which store is live.
		f.mu.Unlock()
		_ = st.Close()
		return fmt.Errorf("cluster: restore: switching the store link: %w (the FSM must be reopened)", err)
	}
	old, oldGen := f.st, f.gen
	f.st, f.gen = st, gen
	f.mu.Unlock()

	// Close waits for readers that still use the old store.
	if err := old.Close(); err != nil {
		f.log.Warn("closing the replaced store", "error", err)
	}
	if err := os.RemoveAll(filepath.Join(f.dir, storeDirName(oldGen))); err != nil {
		f.log.Warn("removing the replaced store", "error", err)
	}
	f.restores.Add(1)
	f.setApplied(index, term)
	f.log.Info("snapshot restored", "store", storeDirName(gen), "applied_index", index, "applied_term", term)
	if f.onRestored != nil {
		f.onRestored()
	}
	return nil
}

// stamp writes raft's index, term and configuration of a snapshot into
// the store restored from it in dir, synced (the store is opened
// without NoSync for it), so that the store says what raft will believe
// it holds before it goes live.
func stamp(dir string, opts store.Options, meta raft.SnapshotMeta) error {
	var cmds []store.Command
	if meta.Index > 0 {
		cmds = append(cmds, &store.SetApplied{Index: meta.Index, Term: meta.Term})
	}
	if meta.ConfigurationIndex > 0 {
		cmds = append(cmds, &store.SetConfiguration{Index: meta.ConfigurationIndex, Data: raft.EncodeConfiguration(meta.Configuration)})
	}
	if len(cmds) == 0 {
		return nil
	}
	opts.NoSync = false
	st, err := store.Open(dir, opts)
	if err != nil {
		return fmt.Errorf("%w: it does not open as a store: %v", ErrSnapshot, err)
	}
	_, err = st.Apply(cmds...)
	return errors.Join(err, st.Close())
}

// RestoreOnStart is the start-up check of design 5.4, made before raft
// starts: it reports whether raft must restore the newest snapshot of
// snaps into the store (raft.Config.NoSnapshotRestoreOnStart is its
// negation). Raft's habit is to restore its newest snapshot at every
// start and replay the log after it; but the store is durable up to
// every snapshot raft took of it (Snapshot syncs it first), so it
// usually holds at least the snapshot's entries already, and restoring
// would replace it by an older copy of itself only to replay the tail
// again. So: when the store's applied index is at or past the newest
// snapshot's, raft starts without restoring (it takes the snapshot's
// index and configuration from its metadata, and ApplyBatch skips the
// replayed entries the store holds); when it is behind (the store was
// lost or replaced by an older one, or a crash lost a restore's stamp),
// raft restores the snapshot, as it would without the option — starting
// without it would skip the entries between the two silently. No
// snapshot: nothing to restore.
func (f *FSM) RestoreOnStart(snaps raft.SnapshotStore) (restore bool, newest *raft.SnapshotMeta, err error) {
	list, err := snaps.List()
	if err != nil {
		return false, nil, fmt.Errorf("cluster: listing snapshots: %w", err)
	}
	if len(list) == 0 {
		return false, nil, nil
	}
	applied, _ := f.Applied()
	return applied < list[0].Index, list[0], nil
}

// linkCheckpoint makes dst (which must not exist) a store directory
// from the checkpoint src: SSTables and blob files, which Pebble never
// writes to once made, are hard-linked; every other file (MANIFEST,
// OPTIONS, WAL, markers), which the store opened on dst writes to or
// replaces, is copied, so the snapshot's own files stay as they are.
// Files and directory are synced.
func linkCheckpoint(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if !e.Type().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrSnapshot, from)
		}
		if immutable(e.Name()) {
			if err := os.Link(from, to); err == nil {
				continue
			}
			// Another file system, or no hard links: copy it.
		}
		if err := copyFile(from, to); err != nil {
			return err
		}
	}
	return snapshot.SyncDir(dst)
}

// immutable reports whether Pebble never writes to the file name once
// it is made.
func immutable(name string) bool {
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	return errors.Join(err, out.Close())
}

// carryOutput copies into to the output from stores that to lacks of
// the attempts still running in to: for each, the chunks from past the
// end of to's copy of its job's log, if from's current attempt of the
// job is the same one. store.ReplicaOutput refuses what to's record
// does not allow. It syncs to and returns the bytes carried.
func carryOutput(from, to *store.Store) (int64, error) {
	jobs, err := to.Active()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, j := range jobs {
		c := j.Current()
		if c == nil || c.Outcome != "" {
			continue
		}
		old, err := from.Get(j.ID)
		if err != nil || old == nil {
			continue // the job is new to this node: nothing of it here
		}
		if oc := old.Current(); oc == nil || oc.Number != c.Number {
			continue
		}
		end, err := to.LogEnd(j.ID)
		if err != nil {
			return n, err
		}
		for pos := end; ; {
			chunks, err := from.ReadLog(j.ID, pos, 0)
			if err != nil {
				return n, err
			}
			var cmds []store.Command
			for _, ch := range chunks {
				if ch.Offset < pos { // the chunk holding pos: only its part past end
					cut := pos - ch.Offset
					if cut >= uint64(len(ch.Data)) {
						continue
					}
					ch.Data, ch.Offset = ch.Data[cut:], pos
				}
				cmds = append(cmds, &store.ReplicaOutput{Job: j.ID, Attempt: c.Number, Chunk: ch})
				pos = ch.Offset + uint64(len(ch.Data))
			}
			if len(cmds) == 0 {
				break
			}
			res, err := to.Apply(cmds...)
			if err != nil {
				return n, err
			}
			for i, r := range res {
				if r.Err == nil {
					n += int64(len(cmds[i].(*store.ReplicaOutput).Chunk.Data))
				}
			}
		}
	}
	if n > 0 {
		return n, to.SyncOutput()
	}
	return n, nil
}
