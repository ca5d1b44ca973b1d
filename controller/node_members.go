package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/cluster"
)

// Operator views of the cluster: GET /operator/members and DELETE
// /operator/members/:id (remove-peer), and the cluster's figures in
// /metrics. The term Server asks its node through clusterView; a single
// controller has none and answers for itself.

// clusterView is what a term Server asks of its cluster node.
type clusterView interface {
	members(ctx context.Context) []api.Member
	removePeer(id string) error
	transferLeadership(ctx context.Context) (to string, err error)
	restore(ctx context.Context, snap io.Reader) (restored, error) // node_restore.go
	stats() clusterStats
	advertisedAgent() string // the node's own agent address, as members list it
}

// clusterStats are the node's raft figures for /metrics.
type clusterStats struct {
	Leader                          bool
	Term, CommitIndex, AppliedIndex uint64
	LastIndex, Voters               uint64
	// LastContact is how long ago a follower last heard from the
	// leader; negative for the leader itself and before any contact.
	LastContact time.Duration
	// Lags are the voters' lags as the leader sees them (the
	// follower-lag bound, node_lag.go); empty on a follower.
	Lags []cluster.Lag
	// Held is how long the bound held new rounds since the node
	// started, in Holds holds.
	Held  time.Duration
	Holds uint64
	// Watches are the agents' watch sessions the node serves
	// (node_watch.go).
	Watches int
}

// opStatus asks a node on the cluster port for its own view.
const opStatus = "status"

// memberStatus is a node's answer to opStatus.
type memberStatus struct {
	State        string   `json:"state"`
	Term         uint64   `json:"term"`
	AppliedIndex uint64   `json:"applied_index"`
	LastIndex    uint64   `json:"last_index"`
	LastContact  *float64 `json:"last_contact_seconds,omitempty"`
	Addrs        NodeAddrs
	Watches      int `json:"watch_sessions,omitempty"`
	// Output is how the node, as leader, would send output to the
	// others: "channel" or "raft" (Config.OutputInRaft, unless the
	// cluster has used the channel: Node.termOutput). Empty from a node
	// older than the setting's default.
	Output string `json:"output,omitempty"`
}

// outputMode is this node's memberStatus.Output: how it would send
// output if it led now (termOutput).
func (n *Node) outputMode() string {
	if !n.cfg.OutputInRaft {
		return "channel"
	}
	if on, err := n.fsm.Store().OutputChannel(); err == nil && on {
		return "channel"
	}
	return "raft"
}

// status is this node's memberStatus.
func (n *Node) status() memberStatus {
	st := memberStatus{State: "starting", Addrs: n.addrs, Watches: n.watching.count(), Output: n.outputMode()}
	st.AppliedIndex, _ = n.fsm.Applied()
	r := n.raftNode()
	if r == nil {
		return st
	}
	st.State = strings.ToLower(r.State().String())
	st.Term = r.CurrentTerm()
	st.LastIndex = r.LastIndex()
	if r.State() != raft.Leader {
		if lc := r.LastContact(); !lc.IsZero() {
			secs := time.Since(lc).Seconds()
			st.LastContact = &secs
		}
	}
	return st
}

// members asks every server of the configuration for its status, at
// most 2 s each, in parallel.
func (n *Node) members(ctx context.Context) []api.Member {
	r := n.raftNode()
	if r == nil {
		return nil
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	servers := f.Configuration().Servers
	out := make([]api.Member, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		m := &out[i]
		m.ID, m.ClusterAddr, m.Voter = string(srv.ID), string(srv.Address), srv.Suffrage == raft.Voter
		wg.Go(func() {
			var st memberStatus
			if m.ID == n.id {
				st = n.status()
			} else {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if err := n.ident.Call(cctx, m.ClusterAddr, opStatus, nil, &st); err != nil {
					m.Role, m.Error = "unreachable", err.Error()
					return
				}
			}
			m.Role, m.Term, m.AppliedIndex, m.LastIndex, m.LastContactSeconds = st.State, st.Term, st.AppliedIndex, st.LastIndex, st.LastContact
			m.APIAddr, m.AgentAddr, m.WatchSessions, m.Output = st.Addrs.API, st.Addrs.Agent, st.Watches, st.Output
		})
	}
	wg.Wait()
	return out
}

// errNotMember: remove-peer named no server of the configuration.
var errNotMember = errors.New("no such cluster member")

// errRemoveLeader: remove-peer named the leader itself.
var errRemoveLeader = errors.New("the leader cannot remove itself: stop it (another controller takes over) and remove it from the new leader, or remove another member")

// removePeer removes server id from the raft configuration.
func (n *Node) removePeer(id string) error {
	r := n.raftNode()
	if id == n.id {
		return errRemoveLeader
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	found := false
	for _, s := range f.Configuration().Servers {
		found = found || string(s.ID) == id
	}
	if !found {
		return fmt.Errorf("%w: %q", errNotMember, id)
	}
	return r.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error()
}

// stats are this node's raft figures.
func (n *Node) stats() clusterStats {
	var s clusterStats
	s.AppliedIndex, _ = n.fsm.Applied()
	r := n.raftNode()
	if r == nil {
		return s
	}
	s.Leader = r.State() == raft.Leader
	s.LastContact = -1
	if lc := r.LastContact(); !s.Leader && !lc.IsZero() {
		s.LastContact = time.Since(lc)
	}
	s.Term = r.CurrentTerm()
	s.LastIndex = r.LastIndex()
	if s.Leader {
		s.Lags = n.lag.Lags(s.LastIndex)
	}
	s.Held, s.Holds = n.lag.Held()
	s.Watches = n.watching.count()
	s.CommitIndex, _ = strconv.ParseUint(r.Stats()["commit_index"], 10, 64)
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				s.Voters++
			}
		}
	}
	return s
}

// handleMembers answers GET /operator/members.
func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if s.cluster == nil {
		name := ""
		if c := s.pki.cur.Load(); c != nil && c.Leaf != nil {
			name = c.Leaf.Subject.CommonName
		}
		// The bound addresses: the configured ones may say port 0.
		m := api.Member{ID: name, APIAddr: s.cfg.HTTPAddr, AgentAddr: s.cfg.AgentAddr, Role: "leader", Voter: true}
		if s.httpLn != nil {
			m.APIAddr = s.HTTPAddr()
		}
		if s.agentLn != nil {
			m.AgentAddr = s.AgentAddr()
		}
		writeJSON(w, http.StatusOK, []api.Member{m})
		return
	}
	writeJSON(w, http.StatusOK, s.cluster.members(r.Context()))
}

// handleRemoveMember answers DELETE /operator/members/:id.
func (s *Server) handleRemoveMember(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id := p.ByName("id")
	if s.cluster == nil {
		writeError(w, http.StatusConflict, "this is a single controller: it has no other members to remove")
		return
	}
	err := s.cluster.removePeer(id)
	switch {
	case errors.Is(err, errNotMember):
		writeError(w, http.StatusNotFound, "%v", err)
		return
	case errors.Is(err, errRemoveLeader):
		writeError(w, http.StatusConflict, "%v", err)
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "removing %s: %v", id, err)
		return
	}
	s.audit(r, "remove-peer", id)
	s.log.Info("cluster member removed", "id", id)
	writeJSON(w, http.StatusOK, map[string]string{"removed": id})
}

// transferLeadership hands leadership to another voter and waits (up
// to ctx) until this node knows the new leader, whose ID it returns.
func (n *Node) transferLeadership(ctx context.Context) (string, error) {
	if err := n.TransferLeadership(); err != nil {
		return "", err
	}
	for {
		if r := n.raftNode(); r != nil {
			if _, id := r.LeaderWithID(); id != "" && string(id) != n.id {
				return string(id), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", nil // handed on; the new leader is not known here yet
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// handleTransferLeadership answers POST /operator/transfer-leadership.
func (s *Server) handleTransferLeadership(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if s.cluster == nil {
		writeError(w, http.StatusConflict, "this is a single controller: there is no other member to hand leadership to")
		return
	}
	from := ""
	if c := s.pki.cur.Load(); c != nil && c.Leaf != nil {
		from = c.Leaf.Subject.CommonName
	}
	// Audited first: once leadership moves, this term can commit nothing.
	s.audit(r, "transfer-leadership", from)
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	to, err := s.cluster.transferLeadership(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "transferring leadership: %v", err)
		return
	}
	s.log.Info("leadership handed on", "to", to)
	writeJSON(w, http.StatusOK, map[string]string{"from": from, "to": to})
}

// encodeStatus is opStatus's handler.
func (n *Node) handleStatus(context.Context, string, json.RawMessage) (any, error) {
	return n.status(), nil
}
