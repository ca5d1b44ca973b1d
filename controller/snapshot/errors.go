package snapshot

import "errors"

// Errors of the snapshot package; check them with errors.Is.
var (
	// ErrSnapshot means a stream is not one Write wrote, or does not
	// hold a store this build opens: bad header, checksum, truncated or
	// trailing bytes, a file name that is not a plain name, no Pebble
	// manifest. Nothing is restored from it.
	ErrSnapshot = errors.New("bad snapshot")
	// ErrUnsupported means the file system cannot swap two directories
	// atomically (renameat2 RENAME_EXCHANGE): Restore refuses rather
	// than replace the data directory in two steps a crash could split.
	ErrUnsupported = errors.New("the file system cannot exchange directories atomically")
	// ErrClusterNode means the data directory is a cluster node's (it
	// holds fsm/ or raft/): Restore replaces a single controller's store
	// only. A cluster restores while it runs, through raft
	// (POST /operator/snapshot/restore).
	ErrClusterNode = errors.New("a cluster node's data directory")
)
