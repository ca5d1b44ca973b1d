package snapshot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// A single controller's data directory is a Pebble directory (plus its
// node/ files). Restore replaces it with the store of a snapshot, for a
// stopped controller:
//
//  1. Take the directory's lock (store.Lock): a running controller, or
//     another restore, makes it fail with store.ErrLocked.
//  2. Finish what an interrupted restore left beside it (recoverLeftovers).
//  3. Create DIR.restore-STAMP.tmp beside it, write the marker file
//     "jobsuite-restore" (holding STAMP) into it, then the stream's files,
//     checking the stream to its checksum; open the result as a store
//     (its applied index and job counts are reported) and close it; copy
//     the live directory's node/ files into it; sync it all.
//  4. Exchange the two directories with one renameat2(RENAME_EXCHANGE):
//     the commit point. Before it DIR is the old store, after it the new
//     one; DIR is always a whole store and never missing, so a
//     controller started after any crash opens one of the two whole.
//  5. Rename DIR.restore-STAMP.tmp, which now holds the old store, to
//     DIR.before-restore-STAMP (or remove it: DiscardOld).
//
// A crash leaves at most a DIR.restore-STAMP.tmp. Its marker tells which
// store it holds: the marker of its own STAMP means the new store, never
// swapped in (possibly partial): the next restore removes it; anything
// else (no marker, an older restore's) means the old store, swapped
// out: the next restore renames it to DIR.before-restore-STAMP.
//
// A data directory that is a symlink stays one: the directory it names
// is exchanged. A cluster node's data directory (fsm/, raft/) is refused
// with ErrClusterNode: its store is the raft log's state, and replacing
// it under raft would make the node diverge; a cluster restores online. A data directory that does not exist is created from the
// snapshot with a plain rename.
const (
	markerName    = "jobsuite-restore"
	nodeDirName   = "node" // store's node-local files, kept across a restore
	restoreInfix  = ".restore-"
	beforeInfix   = ".before-restore-"
	stagingSuffix = ".tmp"
	stampLayout   = "20060102T150405.000Z"
)

// clusterDirs are what a cluster node's data directory holds instead of
// a store (controller.Node): Restore refuses such a directory.
var clusterDirs = []string{"fsm", "raft"}

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// Now names the directories Restore makes (STAMP); required.
	Now time.Time
	// DiscardOld removes the replaced store instead of keeping it as
	// DIR.before-restore-STAMP.
	DiscardOld bool
	// Logger receives the stores' log lines while Restore opens the new
	// one; nil discards them.
	Logger hclog.Logger
}

// Restored describes a finished Restore.
type Restored struct {
	Dir       string         // the data directory restored (symlinks resolved)
	Before    string         // where the replaced store is kept; "" when there was none or DiscardOld
	Recovered []string       // what was done with an interrupted restore's leftovers
	Info      Info           // the stream
	Index     uint64         // the store's applied index ("zi"); 0 for a single controller's snapshot
	Term      uint64         // and its term
	Jobs      map[string]int // jobs by state name
}

// Restore replaces the store in dataDir with the snapshot r streams, as
// the comment above describes. A bad stream (ErrSnapshot), a store that
// does not open, a running controller (store.ErrLocked), a cluster
// node's directory (ErrClusterNode) or a file system without
// RENAME_EXCHANGE (ErrUnsupported) leave dataDir as it was.
func Restore(r io.Reader, dataDir string, opts RestoreOptions) (res Restored, err error) {
	if opts.Now.IsZero() {
		return res, errors.New("snapshot: restore: no time given")
	}
	stamp := opts.Now.UTC().Format(stampLayout)
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	real, exists := dataDir, true
	switch _, err := os.Lstat(dataDir); {
	case errors.Is(err, fs.ErrNotExist):
		exists = false
	case err != nil:
		return res, fmt.Errorf("snapshot: restore: %w", err)
	}
	if exists {
		if real, err = filepath.EvalSymlinks(dataDir); err != nil {
			return res, fmt.Errorf("snapshot: restore: %w", err)
		}
		if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
			return res, fmt.Errorf("snapshot: restore: %s is not a directory", dataDir)
		}
		for _, sub := range clusterDirs {
			if _, err := os.Stat(filepath.Join(real, sub)); err == nil {
				return res, fmt.Errorf("snapshot: restore: %s holds %s/: %w", dataDir, sub, ErrClusterNode)
			}
		}
		// The same spelling as the controller's -data-dir, for an
		// in-process holder (tests); the kernel's lock sees any.
		lock, err := store.Lock(dataDir)
		if err != nil {
			return res, fmt.Errorf("snapshot: restore: %w", err)
		}
		defer lock.Close()
	}
	res.Dir = real
	parent, base := filepath.Dir(real), filepath.Base(real)
	if res.Recovered, err = recoverLeftovers(parent, base); err != nil {
		return res, fmt.Errorf("snapshot: restore: finishing an interrupted restore: %w", err)
	}

	staging := filepath.Join(parent, base+restoreInfix+stamp+stagingSuffix)
	before := filepath.Join(parent, base+beforeInfix+stamp)
	if _, err := os.Lstat(before); err == nil {
		return res, fmt.Errorf("snapshot: restore: %s exists", before)
	}
	if err := os.Mkdir(staging, 0o700); err != nil {
		return res, fmt.Errorf("snapshot: restore: %w", err)
	}
	swapped := false
	defer func() {
		if !swapped {
			_ = os.RemoveAll(staging)
		}
	}()
	if err := writeSynced(filepath.Join(staging, markerName), []byte(stamp+"\n")); err != nil {
		return res, fmt.Errorf("snapshot: restore: %w", err)
	}
	if res.Info, err = readInto(r, staging); err != nil {
		return res, fmt.Errorf("snapshot: restore: %w", err)
	}
	if res.Index, res.Term, res.Jobs, err = check(staging, logger); err != nil {
		return res, fmt.Errorf("snapshot: restore: %w: it does not open as a store: %v", ErrSnapshot, err)
	}
	if exists {
		if err := copyNode(filepath.Join(real, nodeDirName), filepath.Join(staging, nodeDirName)); err != nil {
			return res, fmt.Errorf("snapshot: restore: copying the node files: %w", err)
		}
	}
	if err := errors.Join(SyncDir(staging), SyncDir(parent)); err != nil {
		return res, fmt.Errorf("snapshot: restore: %w", err)
	}

	if !exists {
		if err := os.Rename(staging, real); err != nil {
			return res, fmt.Errorf("snapshot: restore: %w", err)
		}
		swapped = true
		if err := SyncDir(parent); err != nil {
			return res, fmt.Errorf("snapshot: restore: %w", err)
		}
		return res, nil
	}
	if err := exchange(staging, real); err != nil {
		return res, fmt.Errorf("snapshot: restore: %w", err)
	}
	swapped = true // staging now holds the old store
	if err := SyncDir(parent); err != nil {
		return res, fmt.Errorf("snapshot: restore: the new store is in place, but syncing %s: %w", parent, err)
	}
	if opts.DiscardOld {
		if err := os.RemoveAll(staging); err != nil {
			return res, fmt.Errorf("snapshot: restore: the new store is in place, but removing the old one (%s): %w", staging, err)
		}
	} else {
		if err := os.Rename(staging, before); err != nil {
			return res, fmt.Errorf("snapshot: restore: the new store is in place, but the old one is %s: %w", staging, err)
		}
		res.Before = before
	}
	if err := SyncDir(parent); err != nil {
		return res, fmt.Errorf("snapshot: restore: the new store is in place, but syncing %s: %w", parent, err)
	}
	return res, nil
}

// check opens dir as a store and reads its applied index and job counts.
func check(dir string, logger hclog.Logger) (index, term uint64, jobs map[string]int, err error) {
	st, err := store.Open(dir, store.Options{Logger: logger})
	if err != nil {
		return 0, 0, nil, err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	if index, term, err = st.Applied(); err != nil {
		return 0, 0, nil, err
	}
	counts, err := st.StateCounts()
	if err != nil {
		return 0, 0, nil, err
	}
	jobs = map[string]int{}
	for state, n := range counts {
		if n > 0 {
			jobs[string(state)] += n
		}
	}
	return index, term, jobs, nil
}

// Inspect reads the snapshot r streams into a new directory dir,
// checking it, opens it as a store to read its applied index and job
// counts, and removes dir again.
func Inspect(r io.Reader, dir string, logger hclog.Logger) (res Restored, err error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	if res.Info, err = Read(r, dir); err != nil {
		return res, err
	}
	if res.Index, res.Term, res.Jobs, err = check(dir, logger); err != nil {
		return res, fmt.Errorf("%w: it does not open as a store: %v", ErrSnapshot, err)
	}
	return res, nil
}

// recoverLeftovers finishes the restores of base that a crash
// interrupted: a staging directory with its own stamp in its marker was
// never swapped in and is removed; any other was swapped out and is the
// old store, renamed to its before-restore name.
func recoverLeftovers(parent, base string) ([]string, error) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, e := range entries {
		stamp, ok := strings.CutPrefix(e.Name(), base+restoreInfix)
		if !ok || !e.IsDir() {
			continue
		}
		if stamp, ok = strings.CutSuffix(stamp, stagingSuffix); !ok {
			continue
		}
		path := filepath.Join(parent, e.Name())
		marker, err := os.ReadFile(filepath.Join(path, markerName))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return done, err
		}
		if strings.TrimSpace(string(marker)) == stamp {
			if err := os.RemoveAll(path); err != nil {
				return done, err
			}
			done = append(done, fmt.Sprintf("removed %s: the new store of a restore that did not finish", path))
			continue
		}
		before := filepath.Join(parent, base+beforeInfix+stamp)
		if err := os.Rename(path, before); err != nil {
			return done, err
		}
		done = append(done, fmt.Sprintf("kept the store an interrupted restore replaced as %s", before))
	}
	if len(done) > 0 {
		return done, SyncDir(parent)
	}
	return nil, nil
}

// copyNode copies the regular files of the node directory from (if it
// exists) into to, synced.
func copyNode(from, to string) error {
	entries, err := os.ReadDir(from)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		// The live node's files win over any the new store's Open made.
		if err := os.Remove(filepath.Join(to, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := writeSynced(filepath.Join(to, e.Name()), data); err != nil {
			return err
		}
	}
	return SyncDir(to)
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
