// Package cluster holds the building blocks of highly available
// controllers on hashicorp/raft (issue 14). A single controller does not
// use it: it writes its store directly, exactly as before; a cluster
// node (controller.Node) runs on it.
//
// # What exists
//
// FSM (fsm.go) is a raft.BatchingFSM whose state is a store.Store. One
// raft log entry (LogCommand) is one committer round, encoded with
// store.EncodeRound. ApplyBatch decodes the entries raft hands it and
// applies all their commands as one Pebble batch with store.ApplyNoWait,
// followed by store.SetApplied with the last entry's index and term, in
// the same batch: the store's "zi" key says exactly which entries it
// holds. An entry at or below that index is skipped (Response.Skipped),
// so a replay after a restart — raft replays its log from its last
// snapshot — applies nothing twice, and a store that lost its unsynced
// tail in a crash gets it back from the log: the FSM opens its store
// with NoSync, because the raft log, fsynced by the log store, is the
// write-ahead log. A configuration entry writes the membership into the
// store (store.SetConfiguration, the "zc" key, with the entry's index)
// in the same batch: FSM.Configuration reads it.
//
// Each entry's *Response carries one store.Result per command of its
// round, in order: raft hands it to the proposer's ApplyFuture. An
// entry that is not a round (store.ErrBadRound) is refused alike on
// every node, since decoding is a pure function of its bytes: its
// Response has the error and nothing is applied, but the index moves
// past it. An entry this node cannot apply although the others can —
// an unknown non-ignorable command type (a newer release wrote it) or a
// store failure (I/O, full disk) — calls Options.Fatal and stops
// applying: skipping it would make the node diverge; restarting replays
// it.
//
// Snapshots (snapshot.go) are Pebble checkpoints, taken on raft's FSM
// goroutine (store.Checkpoint syncs the WAL first, so the store is
// durable up to the snapshot before raft compacts its log: hard links
// to the SSTs, copies of the manifest, options and WAL). A node's
// raft.SnapshotStore is CheckpointStore (snapstore.go, design 5.1-5.3):
// a snapshot is a directory TERM-INDEX-MS/ with meta.json (raft's
// metadata and the files' names and sizes, plus the stream's SHA-256
// for one that arrived as a stream) and db/, the checkpoint. Persist
// hands the checkpoint directory to a CheckpointStore's sink by a
// rename: taking a snapshot copies no data, whatever the store's size
// (any other sink, or another file system, gets the stream). Open
// yields package snapshot's checksummed stream format (a list of named
// files and a SHA-256 over the stream; a single controller's backup,
// GET /operator/snapshot, is the same format), made from db/ as it is
// read, with meta.Size its exact length computed up front (raft's
// InstallSnapshot compares the two). A stream written into a sink (a
// follower installing the leader's snapshot, an operator's
// raft.Restore) is unpacked as it arrives into ID.tmp/db/ with the
// format's checks (plain file names only, lengths, the SHA-256, nothing
// after it), synced and renamed to ID on Close; a bad stream or Cancel
// leaves nothing. Two snapshots are kept (a snapshot an open reader
// streams stays until it is closed); start-up removes *.tmp leftovers.
// Snapshots raft.FileSnapshotStore wrote before (raft/snapshots/
// snapshots/, meta.json and state.bin, which holds the same stream) are
// moved up at start-up and read as they are — opened, sent to
// followers, restored from — until retention removes them: no copy at
// upgrade, and never a moment with a compacted log and no snapshot.
//
// Restore, given a CheckpointStore's reader (under raft's
// ReadCloserWrapper), builds the next store directory from the
// snapshot's db/ without reading the stream: SSTs and blob files
// hard-linked, the files Pebble writes to or replaces (MANIFEST,
// OPTIONS, WAL, markers) copied, so the snapshot stays intact. Any
// other stream (a bare raft.SnapshotStore, a FileSnapshotStore
// snapshot) is read into the new directory and checked. Either way the
// result is opened as a store, and only then the FSM's "store" link is
// swapped to it with an atomic rename; a corrupt, truncated or foreign
// stream is refused with ErrSnapshot and the live store is untouched.
// Options.Restored is told once the new store is live (a snapshot
// brings no rounds: the output channel's repair reads the new store's
// repair queue then).
// Open undoes whatever an interrupted restore or snapshot left. The
// reader also carries raft's metadata of the snapshot (CheckpointStore
// always; SnapshotStore wraps any other store to add it): Restore
// writes the index and term raft numbers the snapshot with, and its
// configuration, into the new store (synced) before it goes live. That
// index may differ from the one inside the snapshot's store — raft
// snapshots at its last entry, possibly a no-op, and an operator's
// restore (raft.Restore: a single controller's backup or another
// cluster's, controller/node_restore.go) is numbered past the live
// log's end whatever the file says — and only raft's makes the next
// entries apply and a replay skip exactly what the store holds.
//
// Disk: the SSTs of a snapshot are the live store's files as they were
// then; once compaction replaces them, a snapshot keeps them alive, so
// with two kept the data directory may hold up to about three stores'
// worth of SSTs (the live one and two older ones), plus a copy of the
// WAL and manifest per snapshot.
//
// Start-up (design 5.4): before raft starts, RestoreOnStart compares the
// store's applied index with the newest snapshot's. A store at or past
// it (the usual case: Snapshot syncs the store first) starts raft with
// NoSnapshotRestoreOnStart, so a restart replays only the log after the
// snapshot onto the live store instead of reinstalling the whole
// snapshot; a store behind it (lost, replaced by an older copy) lets
// raft restore the snapshot first, since starting without it would
// skip the entries in between.
//
// Readers take the live store from FSM.Store for one operation at a
// time: a Restore closes the store it replaces (after readers in
// flight), so a reader that gets store.ErrClosed takes the store again
// and retries.
//
// The cluster port (transport.go): controllers talk to each other over
// TCP with mutual TLS 1.3 on a port of their own, and only controller
// certificates of the cluster's CA that a revocation check accepts get
// in, either way. One port carries raft (ALPN jobsuite-raft/1, through
// StreamLayer under raft.NetworkTransport) and requests between
// controllers (jobsuite-cluster/1, rpc.go: one length-prefixed JSON
// request and answer per connection, the caller known by its
// certificate). Formation (formation.go) forms a cluster from
// -bootstrap-expect N and -join without hand-run commands: the N fresh
// controllers with the smallest IDs bootstrap the same configuration, a
// controller that finds a running cluster asks its leader to add it, and
// one with state resumes. A node's ID is its certificate's name.
//
// # How it plugs into the committer
//
// The controller's committer (controller/doc.go, "The write seam")
// gathers a round of commands; in cluster mode it hands the round to Log
// (log.go, a sched.Log), which encodes it (store.EncodeRound, split into
// several entries at command boundaries past MaxEntryBytes), calls
// raft.Apply, and whose Proposal waits on the ApplyFutures: Error() nil
// means committed on a quorum and applied to the leader's FSM, and
// Response() is this package's *Response with the round's results.
// Futures complete in log order, so the committer's "an earlier round
// is durable before a later one" promise holds. The controller's Node
// (controller/node.go) wires the rest: the cluster port, formation, raft
// with raft-wal, the leadership lifecycle.
//
// # The raft log store
//
// A node's raft log and stable store (term, vote) are raft-wal v0.4.2
// (controller/node.go: OpenWAL, behind raft.NewLogCache(128)), kept
// after measuring it against raft-boltdb/v2 v2.3.1 (BENCHMARKS.md,
// "Issue 14: raft-wal vs raft-boltdb (session 8)"; tests and benchmarks
// in logstore_*_test.go). Under repeated kill -9 (TestLogStoreCrash)
// both kept every acknowledged entry byte for byte, but raft-wal alone
// leaves a store that refuses every StoreLogs ("segment is sealed", on
// every reopen) after a kill between the append that seals a segment
// and the background rotation (TestLogStoreWALKillAtSegmentEnd).
// OpenWAL (walstore.go) finishes that rotation before raft-wal opens the
// directory: one metadata commit, the one the rotation would have made,
// after every entry of the sealed segment was read back through its
// index (TestRepairSealedTail, TestRepairSealedTailTrustsNoTornIndex).
// A kill -9 keeps the page cache, so these tests say nothing of power
// loss, for which both rely on fsync (raft-wal one per StoreLogs and a
// CRC per commit that drops a torn tail; raft-boltdb two fdatasyncs per
// transaction). raft-wal stores our rounds 2-5 times faster
// (BenchmarkLogStore: one fsync and an append against two fdatasyncs
// and B+tree pages) and gives a compacted head back to the file system
// (whole segments: -raft-wal-segment-bytes) where a bbolt file never
// shrinks; so it stays, with its crash defect repaired at start-up.
//
// A Log given a LagBound (lag.go, Log.Bounded) first waits in Propose
// while a live voter is past the follower-lag bound (design 3.2): more
// than the bound's entries behind the leader's last index (plus the
// entries in flight), or more than its bytes of this term's proposals.
// Voters report through LagBound.Report (the controller's Node asks
// them every LagPoll); a voter silent for LagLive, or behind and
// applying nothing for LagLive, is not waited for, so a dead or stuck
// one never stops the cluster. Every hold ends when the Log's context
// (the term's) does.
//
// # Output
//
// Agents' output does not ride the rounds by default: the leader sends
// it to the followers on a channel of its own beside raft
// (controller/outchan; controller/doc.go "Cluster mode" says why, with
// bench rows 9h, 9p and 9d). With controller Config.OutputInRaft output
// chunks are store.Output commands in the rounds like any other, and
// Log.Propose splits a round whose output alone passes MaxEntryBytes
// before encoding it, so a fast job's many chunks are encoded once
// each.
package cluster
