package controller

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/snapshot"
	"jobsuite/protocol"
)

// POST /operator/snapshot/restore: an operator's restore of a running
// cluster (operator role, audited; 'jobsuite operator snapshot restore
// FILE'). The body is a snapshot stream — a cluster's or a single
// controller's backup (GET /operator/snapshot), the same format — and a
// follower forwards it to the leader like any request. The leader:
//
//  1. receives the whole stream into DATA/restore.tmp/, checking it as it
//     arrives (snapshot.Verify: format, lengths, SHA-256), then unpacks
//     it into a scratch directory and opens it as a store (it must open,
//     and its job counts are reported): a stream that fails any check is
//     refused with 400 before raft sees a byte;
//  2. stops its term's Server (the scheduler, agent sessions, the
//     committer) while holding the leadership lifecycle's lock, so no
//     new term starts meanwhile and nothing built from the old store
//     proposes anything after the restore; its agents first get a
//     farewell Redirect naming this node (restoreFarewell), and one
//     that comes back before the new term is up is held for it
//     (Node.holdAgent), so none sits out its reconnect backoff;
//  3. hands the file to raft.Restore: raft writes it into its snapshot
//     store (cluster.CheckpointStore unpacks it as it comes, checking it
//     again) under a new index past the log's end (in the current term),
//     restores it into this node's FSM (hard links from the unpacked
//     snapshot) — which writes that index and the cluster's
//     configuration into the restored store — drops the log before it,
//     and waits until a quorum has installed the snapshot and committed
//     a no-op after it;
//  4. releases the lifecycle: raft keeps this node leader through a
//     restore, in the same term, so the lifecycle would not notice; the
//     stopped term is what makes it build a new Server — barrier, queue,
//     leases and timers rebuilt from the restored store, as after a
//     failover — and the handler waits (up to restoreServeWait) for it
//     to audit the restore in the restored store's own audit log.
//
// One restore at a time (429). A single controller answers 409: its
// restore is offline (snapshot.Restore, 'operator snapshot restore
// -data-dir DIR FILE' with the controller stopped). Below the data
// directory's free-space floor: 507 (the stream is written there twice,
// once as a file and once unpacked into the snapshot store; the store
// built from it is hard links).

const (
	restoreTmpDir    = "restore.tmp"
	auditRestore     = "snapshot-restore"
	restoreTimeout   = time.Minute      // raft.Restore's enqueue timeout
	restoreServeWait = 20 * time.Second // for the new term's Server
)

// Errors of a restore that the handler turns into statuses.
var (
	errRestoreBusy = errors.New("a restore is under way already")
	errRestoreBad  = errors.New("not a usable snapshot")
)

// restored is what Node.restore reports.
type restored struct {
	res api.SnapshotRestored
	srv *Server // the new term's Server; nil if it was not up in time
}

func (s *Server) handleSnapshotRestore(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if s.cluster == nil {
		writeError(w, http.StatusConflict, "this is a single controller: it restores offline. Stop it, run 'jobsuite operator snapshot restore -data-dir DIR FILE' on its machine, and start it again (README, \"Backup and restore\")")
		return
	}
	if !s.disk.Accepting() {
		writeError(w, http.StatusInsufficientStorage, "the data directory is below its free-space floor (-min-free-bytes); a restore writes the snapshot there twice: free space first")
		return
	}
	out, err := s.cluster.restore(r.Context(), r.Body)
	switch {
	case errors.Is(err, errRestoreBusy):
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusTooManyRequests, "%v; try again when it is done", err)
		return
	case errors.Is(err, errRestoreBad):
		writeError(w, http.StatusBadRequest, "%v; nothing was changed", err)
		return
	case err != nil:
		s.log.Error("snapshot restore failed", "error", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "restoring the snapshot: %v", err)
		return
	}
	detail := fmt.Sprintf("%d bytes, sha256 %s, raft index %d (the file's: %d)", out.res.Bytes, out.res.SHA256, out.res.Index, out.res.SnapshotIndex)
	if out.srv != nil {
		// Into the restored store's audit log, through the new term.
		out.srv.auditDetail(r, auditRestore, "store", detail)
	} else {
		s.log.Warn("the snapshot is restored, but the new term was not serving in time to audit it", "detail", detail)
	}
	writeJSON(w, http.StatusOK, out.res)
}

// restore puts the snapshot body streams in place of the cluster's
// store, as the comment at the top of this file says.
func (n *Node) restore(ctx context.Context, body io.Reader) (restored, error) {
	var out restored
	if !n.restoreMu.TryLock() {
		return out, errRestoreBusy
	}
	defer n.restoreMu.Unlock()

	dir := filepath.Join(n.cfg.DataDir, restoreTmpDir)
	if err := os.RemoveAll(dir); err != nil {
		return out, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return out, err
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			n.log.Warn("removing the restore's scratch directory", "dir", dir, "error", err)
		}
	}()
	f, err := os.Create(filepath.Join(dir, "snapshot"))
	if err != nil {
		return out, err
	}
	defer f.Close()
	info, err := snapshot.Verify(io.TeeReader(body, f))
	if err != nil {
		if ctx.Err() != nil || !errors.Is(err, snapshot.ErrSnapshot) {
			return out, fmt.Errorf("receiving the snapshot: %w", err)
		}
		return out, fmt.Errorf("%w: %v", errRestoreBad, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return out, err
	}
	checked, err := snapshot.Inspect(f, filepath.Join(dir, "check"), n.log.Named("restore"))
	if err != nil {
		return out, fmt.Errorf("%w: %v", errRestoreBad, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return out, err
	}
	out.res = api.SnapshotRestored{Bytes: info.StreamBytes, SHA256: hex.EncodeToString(info.SHA256[:]),
		SnapshotIndex: checked.Index, Jobs: checked.Jobs, Leader: n.id}

	r := n.raftNode()
	if r == nil || r.State() != raft.Leader {
		return out, fmt.Errorf("controller: %s does not lead the cluster (leadership moved); retry", n.id)
	}
	n.log.Warn("restoring a snapshot: the cluster's store is replaced", "bytes", info.StreamBytes, "jobs", checked.Jobs)
	err = n.restoreLocked(r, f, info.StreamBytes)
	// Whatever happened, the term was stopped: the lifecycle builds the
	// next term's Server (from the restored store, if it was restored).
	select {
	case n.wake <- struct{}{}:
	default:
	}
	if err != nil {
		return out, err
	}
	out.res.Index, _ = n.fsm.Applied()
	n.log.Warn("snapshot restored on a quorum; the leader rebuilds its scheduler from it", "index", out.res.Index)
	wait, cancel := context.WithTimeout(ctx, restoreServeWait)
	defer cancel()
	for {
		if t := n.term.Load(); t != nil && !t.ended() {
			out.srv = t.srv
			return out, nil
		}
		select {
		case <-wait.Done():
			return out, nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// restoreLocked stops the term's Server and restores the snapshot
// through raft, holding the leadership lifecycle's lock throughout.
func (n *Node) restoreLocked(r *raft.Raft, snap io.Reader, size int64) error {
	n.leadMu.Lock()
	defer n.leadMu.Unlock()
	if t := n.term.Load(); t != nil {
		n.endTerm(t, "restoring a snapshot", n.restoreFarewell)
	}
	// Index 0: raft numbers the restored state past its own log's end.
	// The index stored in the file (another cluster's, or none) means
	// nothing here, and the FSM writes raft's into the restored store.
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	if err := r.Restore(meta, snap, restoreTimeout); err != nil {
		return fmt.Errorf("controller: raft restore: %w", err)
	}
	return nil
}

// restoreFarewell tells term t's agents to come straight back to this
// node, which stays leader through the restore: a Redirect naming it is
// followed at once (where a session that merely ended would send them
// into their reconnect backoff, up to -reconnect-max), and the node
// holds an agent that arrives before the restored term's Server is up
// (holdAgent) rather than turning it away.
func (n *Node) restoreFarewell(_ context.Context, t *term) {
	if t.ended() {
		return
	}
	t.srv.sayFarewell(&protocol.Redirect{Leader: n.addrs.Agent, Members: n.agentMembers()})
}
