package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"

	"jobsuite/controller/snapshot"
	"jobsuite/controller/store"
)

// A snapshot is a Pebble checkpoint of the store (store.Checkpoint:
// hard-linked SSTables, copies of the manifest, options and WAL), taken
// on raft's FSM goroutine so that it holds exactly the entries applied
// up to the snapshot's index, and streamed by Persist in the format of
// package snapshot (a list of named files and a SHA-256 over the
// stream), the same a single controller's backup uses. Restore writes
// the files into a new directory beside the live store (snapshot.Read
// checks the sum and that the stream ends right after it), opens the
// result as a store, and only then swaps the "store" link over to it (an
// atomic rename) and closes the old store. A stream that fails any check
// is refused (ErrSnapshot) and its directory removed; the live store is
// not touched.

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

// Persist writes the checkpoint to sink in the snapshot format. Raft
// calls it off the FSM goroutine; applies go on meanwhile.
func (c *checkpoint) Persist(sink raft.SnapshotSink) error {
	if err := snapshot.Write(sink, c.dir); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release removes the checkpoint directory.
func (c *checkpoint) Release() { _ = os.RemoveAll(c.dir) }

// Restore replaces the store with the snapshot rc streams (a follower
// catching up, or raft restoring its newest snapshot at start). The
// stream goes into a new directory; only when it checked out and opened
// as a store does the "store" link move to it, and the old store is
// closed and removed. A bad stream is refused with ErrSnapshot and
// leaves the live store as it was. The applied index becomes the one
// stored in the snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
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
	if _, err := snapshot.Read(rc, tmp); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
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
	return nil
}
