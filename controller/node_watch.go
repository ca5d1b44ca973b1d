package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"jobsuite/certs"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// Watch sessions (PROTOCOL.md §2.4, FeatureLeaderWatch): an agent
// attached to the leader keeps a second session with another node,
// whose control stream starts with WatchLeader{Term, Leader} instead of
// Hello. The node says nothing until it knows the leader of a later
// term, then sends a Redirect naming it and closes the session.
//
// Why: a leader killed outright (kill -9, a lost host) closes nothing,
// and over QUIC its agents learn it only when their sessions time out,
// a quarter of the lease (3.75 s at the default 15 s) after the last
// packet — after the rest of the cluster has already elected a new
// leader (about 2 s). With a watch, an agent leaves as soon as the node
// it watches has heard from the new leader. The cost is one idle
// session per agent on a follower, kept alive by the transport's
// keep-alives.
//
// A node re-checks on every leader change raft reports (leaderEpoch)
// and at least every watchRecheck. It keeps at most one watch session
// per agent name (a newer one replaces the older: an agent moving its
// watch, or one that reconnected) and at most maxWatches in all.

// maxWatches bounds the watch sessions one node keeps.
const maxWatches = 65536

// watchRecheck is how often a watch is re-checked without a leader
// change reported.
const watchRecheck = time.Second

// watches are the node's watch sessions by agent name.
type watches struct {
	mu     sync.Mutex
	byName map[string]transport.Session
}

// add makes sess the watch of name, closing the one it replaces; false
// if the node keeps too many.
func (w *watches) add(name string, sess transport.Session) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byName == nil {
		w.byName = map[string]transport.Session{}
	}
	if old := w.byName[name]; old != nil {
		old.Close("replaced by a newer watch session of the agent")
	} else if len(w.byName) >= maxWatches {
		return false
	}
	w.byName[name] = sess
	return true
}

// count is how many watch sessions the node serves.
func (w *watches) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byName)
}

// remove forgets sess, if it is still name's watch.
func (w *watches) remove(name string, sess transport.Session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byName[name] == sess {
		delete(w.byName, name)
	}
}

// serveWatch serves a watch session whose first frame, m, arrived on
// ctrl; it returns when it has sent the Redirect or the session ends.
func (n *Node) serveWatch(ctx context.Context, sess transport.Session, ctrl transport.Stream, w *protocol.Writer, m *protocol.WatchLeader) {
	refuse := func(code uint16, msg string) {
		_ = w.Write(&protocol.Error{Code: code, Message: msg})
	}
	role, name, err := certs.PeerIdentity(sess.ConnectionState())
	switch {
	case err != nil || role != certs.RoleAgent:
		refuse(protocol.CodeForbidden, fmt.Sprintf("certificate role %q may not open a watch session", role))
		return
	case m.Name != "" && m.Name != name:
		refuse(protocol.CodeForbidden, fmt.Sprintf("agent name %q does not match its certificate name %q", m.Name, name))
		return
	case protocol.CheckVersion(m.Version) != nil:
		refuse(protocol.CodeVersion, protocol.CheckVersion(m.Version).Error())
		return
	}
	if !n.watching.add(name, sess) {
		refuse(protocol.CodeShutdown, "this controller keeps too many watch sessions; watch another")
		return
	}
	defer n.watching.remove(name, sess)
	_ = ctrl.SetReadDeadline(time.Time{})
	_ = ctrl.SetWriteDeadline(time.Time{})
	tick := time.NewTicker(watchRecheck)
	defer tick.Stop()
	for {
		epoch := n.leaderEpoch() // before the check: a change after it wakes the wait
		if rd, err := n.watchAnswer(ctx, m); err != nil {
			refuse(protocol.CodeProtocol, err.Error())
			return
		} else if rd != nil {
			_ = ctrl.SetWriteDeadline(time.Now().Add(time.Second))
			_ = w.Write(rd) // a lost one: the agent's session to the old leader still ends on its own
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			return
		case <-epoch:
		case <-tick.C:
		}
	}
}

// watchAnswer is the Redirect a watch of m gets now: the leader of a
// term after m.Term, once this node knows its agent address (itself, if
// it leads, even before its term's Server is up: holdAgent keeps the
// agent until it is). Nil while the watched leader may still lead or
// no later leader is known; an error if this node leads m.Term itself.
func (n *Node) watchAnswer(ctx context.Context, m *protocol.WatchLeader) (*protocol.Redirect, error) {
	r := n.raftNode()
	if r == nil {
		return nil, nil
	}
	term := r.CurrentTerm()
	if term <= m.Term {
		if r.State() == raft.Leader && term == m.Term {
			return nil, fmt.Errorf("this controller is the leader of term %d that the agent is attached to: watch another controller of the cluster", term)
		}
		return nil, nil
	}
	addr, id := r.LeaderWithID()
	switch {
	case r.State() == raft.Leader:
		return &protocol.Redirect{Leader: n.addrs.Agent, Members: n.agentMembers()}, nil
	case id == "" || string(id) == n.id:
		return nil, nil // an election is under way
	}
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	a, err := n.fwd.addrsOf(actx, string(id), string(addr))
	if err != nil {
		return nil, nil // asked again at the next check
	}
	return &protocol.Redirect{Leader: a.Agent, Members: n.agentMembers()}, nil
}
