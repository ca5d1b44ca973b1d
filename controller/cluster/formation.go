package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Forming a cluster without hand-run bootstrap commands (issue 14):
// every controller of a new cluster starts with -bootstrap-expect N and
// -join naming some of the others. Each asks the controllers it knows
// "hello" until it sees N controllers, itself included, none of which
// has state; then the N with the smallest IDs bootstrap raft, each with
// the same configuration (those N, sorted by ID) — raft accepts the same
// bootstrap on every member. One of the N that hears from a peer which
// bootstrapped first, with it in the configuration, bootstraps with
// that configuration too. A controller that finds a cluster already
// running (a peer knows a leader) asks the leader to add it instead, and
// one that has state of its own does nothing: raft resumes from it.
//
// A node's ID is the name on its controller certificate, and a hello's
// answer is only believed from a peer whose verified certificate carries
// the ID it claims; a join asks to add the caller itself only. So a
// certificate is a node's one identity, and no node can enrol another.

// Operation names on the cluster port.
const (
	opHello = "hello"
	opJoin  = "join"
)

// Member is a controller as formation sees it.
type Member struct {
	ID   string `json:"id"`   // its certificate's name
	Addr string `json:"addr"` // its cluster address, host:port
}

// Hello is a controller's answer to "hello".
type Hello struct {
	Member
	HasState bool     `json:"has_state"`        // it has raft state: it is (or was) in a cluster
	Leader   string   `json:"leader,omitempty"` // the leader's cluster address, if it knows one
	Known    []string `json:"known,omitempty"`  // cluster addresses it knows of
	// Servers is its raft configuration, when it has state: a node
	// that finds itself in a peer's configuration bootstraps with that
	// same configuration (a peer of the first N got there first).
	Servers []Member `json:"servers,omitempty"`
}

// JoinRequest asks a leader to add the caller as a voter.
type JoinRequest struct {
	Member
}

// Formation brings a node into a cluster: Run returns once the node
// bootstrapped one, joined one, or has state to resume from.
type Formation struct {
	Self   Member
	Expect int      // how many controllers a new cluster starts with; 0: only join
	Join   []string // cluster addresses to ask
	// HasState reports whether the node has raft state already.
	HasState func() bool
	// Hello asks the controller at addr; the answer's ID is checked
	// against the peer's certificate by the default (Identity) version.
	Hello func(ctx context.Context, addr string) (Hello, error)
	// Bootstrap starts a new cluster of servers (sorted by ID).
	Bootstrap func(servers []Member) error
	// AskJoin asks the leader at addr to add Self.
	AskJoin func(ctx context.Context, leader string) error
	// Interval is the time between rounds of hellos; 0: 1 s.
	Interval time.Duration
	Log      hclog.Logger
}

// Run tries every Interval until the node is in a cluster or ctx ends.
func (f *Formation) Run(ctx context.Context) error {
	interval := f.Interval
	if interval <= 0 {
		interval = time.Second
	}
	known := map[string]bool{}
	for _, a := range f.Join {
		if a != f.Self.Addr {
			known[a] = true
		}
	}
	for round := 0; ; round++ {
		if f.HasState() {
			return nil
		}
		done, err := f.round(ctx, known)
		if done || err != nil {
			return err
		}
		if round%10 == 0 {
			f.Log.Info("waiting for the cluster to form", "expect", f.Expect, "known", len(known)+1)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: forming: %w", ctx.Err())
		case <-time.After(interval):
		}
	}
}

// round asks every known address once and acts on what it learnt.
func (f *Formation) round(ctx context.Context, known map[string]bool) (done bool, err error) {
	var hellos []Hello
	addrs := make([]string, 0, len(known))
	for a := range known {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		h, err := f.Hello(ctx, a)
		if err != nil {
			f.Log.Debug("no hello", "addr", a, "error", err)
			continue
		}
		hellos = append(hellos, h)
		for _, k := range h.Known {
			if k != f.Self.Addr {
				known[k] = true
			}
		}
	}
	// A peer of the first N bootstrapped already, with this node in its
	// configuration: do the same, with the same configuration.
	for _, h := range hellos {
		if h.HasState && slices.Contains(h.Servers, f.Self) {
			f.Log.Info("bootstrapping the cluster a peer started", "peer", h.ID, "servers", h.Servers)
			if err := f.Bootstrap(h.Servers); err != nil {
				return false, fmt.Errorf("cluster: bootstrap: %w", err)
			}
			return true, nil
		}
	}
	// A cluster that runs: join it through its leader.
	for _, h := range hellos {
		if h.Leader == "" {
			continue
		}
		if err := f.AskJoin(ctx, h.Leader); err != nil {
			f.Log.Warn("joining the cluster failed; trying again", "leader", h.Leader, "error", err)
			return false, nil
		}
		f.Log.Info("joined the cluster", "leader", h.Leader)
		return true, nil
	}
	if f.Expect <= 0 {
		return false, nil
	}
	fresh := []Member{f.Self}
	for _, h := range hellos {
		if h.HasState {
			// A cluster exists but has no leader right now: wait for one
			// rather than start a second cluster beside it.
			return false, nil
		}
		if !slices.ContainsFunc(fresh, func(m Member) bool { return m.ID == h.ID }) {
			fresh = append(fresh, h.Member)
		}
	}
	if len(fresh) < f.Expect {
		return false, nil
	}
	slices.SortFunc(fresh, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	chosen := fresh[:f.Expect]
	if !slices.Contains(chosen, f.Self) {
		return false, nil // not among the first: join once they lead
	}
	f.Log.Info("bootstrapping the cluster", "servers", chosen)
	if err := f.Bootstrap(chosen); err != nil {
		return false, fmt.Errorf("cluster: bootstrap: %w", err)
	}
	return true, nil
}

// Node is what the formation handlers need of the local raft node.
type Node interface {
	State() raft.RaftState
	LeaderWithID() (raft.ServerAddress, raft.ServerID)
	GetConfiguration() raft.ConfigurationFuture
	AddVoter(id raft.ServerID, addr raft.ServerAddress, prevIndex uint64, timeout time.Duration) raft.IndexFuture
}

// HandleFormation adds the "hello" and "join" operations to s for the
// node self: hasState and node (nil until raft runs) answer for it,
// known lists the addresses it was told to join.
func HandleFormation(s *RPCServer, self Member, known []string, hasState func() bool, node func() Node) {
	s.Handle(opHello, func(ctx context.Context, peer string, _ json.RawMessage) (any, error) {
		h := Hello{Member: self, HasState: hasState(), Known: known}
		if n := node(); n != nil {
			if addr, _ := n.LeaderWithID(); addr != "" {
				h.Leader = string(addr)
			}
			if f := n.GetConfiguration(); f.Error() == nil {
				for _, srv := range f.Configuration().Servers {
					h.Servers = append(h.Servers, Member{ID: string(srv.ID), Addr: string(srv.Address)})
				}
			}
		}
		return h, nil
	})
	s.Handle(opJoin, func(ctx context.Context, peer string, body json.RawMessage) (any, error) {
		var req JoinRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("bad join request: %w", err)
		}
		if req.ID != peer {
			return nil, fmt.Errorf("a controller may only join as itself: certificate %q asked to add %q", peer, req.ID)
		}
		n := node()
		if n == nil || n.State() != raft.Leader {
			return nil, errors.New("not the leader")
		}
		if err := n.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, rpcTimeout).Error(); err != nil {
			return nil, fmt.Errorf("adding %s: %w", req.ID, err)
		}
		return struct{}{}, nil
	})
}

// HelloVia returns a Formation.Hello that asks over the cluster port and
// believes an answer only if the peer's certificate names the ID it
// gives.
func (id *Identity) HelloVia() func(ctx context.Context, addr string) (Hello, error) {
	return func(ctx context.Context, addr string) (Hello, error) {
		var h Hello
		peer, err := id.call(ctx, addr, opHello, nil, &h)
		if err != nil {
			return Hello{}, err
		}
		if h.ID != peer {
			return Hello{}, fmt.Errorf("cluster: hello from %s: it says it is %q but its certificate is %q", addr, h.ID, peer)
		}
		return h, nil
	}
}

// AskJoinVia returns a Formation.AskJoin over the cluster port.
func (id *Identity) AskJoinVia(self Member) func(ctx context.Context, leader string) error {
	return func(ctx context.Context, leader string) error {
		return id.Call(ctx, leader, opJoin, JoinRequest{Member: self}, nil)
	}
}
