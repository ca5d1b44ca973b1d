// Package snapshot is the store's snapshot stream: the one format in
// which a copy of a whole store travels, whether raft streams it to a
// lagging follower (package cluster) or an operator saves a single
// controller's backup (GET /operator/snapshot, 'jobsuite operator
// snapshot save') and restores it ('jobsuite operator snapshot
// restore'), offline into a single controller's data directory or
// online into a cluster.
//
// A snapshot is the files of a Pebble checkpoint of the store
// (store.Checkpoint) written one after the other, in name order, with a
// SHA-256 over everything at the end (format.go has the grammar). Write
// streams a checkpoint directory with a fixed buffer. Read writes a
// stream's files into a new directory, checking the header, every name
// (plain file names only, no duplicates), every length, that a Pebble
// manifest is among them, the checksum and that nothing follows it;
// Verify checks the same without writing anything (a download checked
// as it is saved). A stream failing a check gives ErrSnapshot.
//
// The checksum covers transport and storage errors: a truncated or
// corrupted file is refused before anything is restored from it. It is
// not a signature: whoever can write a snapshot file can make one that
// checks out. Snapshots hold every job's command, environment and
// output and the API tokens' hashes (SECURITY.md).
//
// Restore (restore.go) puts a snapshot in place of a stopped single
// controller's data directory: it takes the directory's lock
// (store.Lock; a running controller holds it), writes and checks the
// new store beside the live one, opens it, copies the node's own files
// (node/) over, and swaps the two directories with one
// renameat2(RENAME_EXCHANGE), so that a crash at any point leaves the
// data directory holding the old store or the new one, whole; the old
// one is kept as DIR.before-restore-STAMP. A file system without
// RENAME_EXCHANGE gets ErrUnsupported and nothing changes; a cluster
// node's data directory (fsm/, raft/) gets ErrClusterNode — a cluster
// restores while it runs, through raft (controller/node_restore.go). Inspect
// reads a snapshot into a scratch directory to report what it holds.
package snapshot
