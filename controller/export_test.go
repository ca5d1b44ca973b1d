package controller

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"jobsuite/controller/store"
)

// RecordRounds makes s hand every round of commands its committer
// applied, and the results the store decided, to fn, in order, from the
// applier goroutine. Call it before Run.
func (s *Server) RecordRounds(fn func(cmds []store.Command, results []store.Result)) {
	s.rounds = fn
}

// PruneNow runs one retention pass at once, as the retention loop does
// on its timer.
func (s *Server) PruneNow(ctx context.Context) {
	s.retention().pass(ctx, s.clock.Now())
}

// SetApplyHook makes fn run before each batch of entries raft hands the
// node's FSM (a slow follower). Call it before Run.
func (n *Node) SetApplyHook(fn func(entries int)) { n.applyHook = fn }

// RaftIndexes returns the node's applied index and the last index of
// its raft log.
func (n *Node) RaftIndexes() (applied, last uint64) {
	applied, _ = n.fsm.Applied()
	if r := n.raftNode(); r != nil {
		last = r.LastIndex()
	}
	return applied, last
}

// SetStaleHook makes fn run in each try of a stale read once it has
// taken its store.
func (n *Node) SetStaleHook(fn func()) { n.staleHook = fn }

// InstallOwnSnapshot takes a snapshot of the node's store and installs
// it, as a follower catching up installs the leader's: the live store
// is swapped for a copy and closed. Only for a cluster that writes
// nothing meanwhile.
func (n *Node) InstallOwnSnapshot() error {
	snap, err := n.fsm.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		return err
	}
	return n.fsm.Restore(io.NopCloser(&sink.Buffer))
}

// memSink is a raft.SnapshotSink into memory.
type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

// Handler is the API's http.Handler, for calling it without a listener.
func (s *Server) Handler() http.Handler { return s.handler }

// APIProtocols are the protocols the API offers by ALPN under godebug.
func APIProtocols(godebug string) []string { return apiProtocols(godebug) }

// HoldRepair keeps the node's output repair from running until release
// is called (a node that stops before it repaired what it missed). Call
// it before Run.
func (n *Node) HoldRepair() (release func()) {
	n.repairGate = make(chan struct{})
	var once sync.Once
	return func() { once.Do(func() { close(n.repairGate) }) }
}

// TakeSnapshot makes raft snapshot the node's store now: a restart then
// replays only the entries after it.
func (n *Node) TakeSnapshot() error { return n.raftNode().Snapshot().Error() }

// TransferLeadershipTo hands this node's leadership to the voter id.
func (n *Node) TransferLeadershipTo(id string) error {
	r := n.raftNode()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return r.LeadershipTransferToServer(s.ID, s.Address).Error()
		}
	}
	return fmt.Errorf("no voter %q", id)
}

// RaftFirstIndex is the first index of the node's raft log (entries
// before it were compacted into a snapshot).
func (n *Node) RaftFirstIndex() uint64 {
	i, _ := n.logs.FirstIndex()
	return i
}

// Restores is how many snapshots the node's FSM restored since it
// started (a follower that installed the leader's).
func (n *Node) Restores() uint64 { return n.fsm.Stats().Restores }

// PunchLogHole removes [from, to) of job id's output from the node's own
// store, keeping what lies past to, as a node that missed those chunks
// holds it; nothing repairs it (the cut's repair queue entry is taken
// out again, and the repair hears only of applied rounds).
func (n *Node) PunchLogHole(id, from, to uint64) error {
	st := n.fsm.Store()
	var keep []store.Chunk
	for pos := to; ; {
		chunks, err := st.ReadLog(id, pos, 0)
		if err != nil {
			return err
		}
		if len(chunks) == 0 {
			break
		}
		keep = append(keep, chunks...)
		last := chunks[len(chunks)-1]
		pos = last.Offset + uint64(len(last.Data))
	}
	if _, err := st.Apply(&store.TruncateLog{Job: id, At: from}, &store.RepairDone{Job: id, At: from}); err != nil {
		return err
	}
	for _, c := range keep {
		if _, err := st.Apply(&store.Output{Job: id, Chunk: c}); err != nil {
			return err
		}
	}
	return nil
}

// OutputStreaming reports whether a leader streams output to the node
// now (outchan.Follower.Streaming); false without the output channel.
func (n *Node) OutputStreaming() bool { return n.follower.Streaming() }
