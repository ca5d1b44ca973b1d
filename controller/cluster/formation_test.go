package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// fakeNet is a set of nodes answering hellos from memory.
type fakeNet struct {
	mu     sync.Mutex
	hellos map[string]Hello // by address
	joined []string         // leaders asked to add someone
	boots  map[string][]Member
}

func (n *fakeNet) formation(self Member, expect int, join ...string) *Formation {
	return &Formation{
		Self: self, Expect: expect, Join: join, Interval: time.Millisecond, Log: hclog.NewNullLogger(),
		HasState: func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			return n.hellos[self.Addr].HasState
		},
		Hello: func(_ context.Context, addr string) (Hello, error) {
			n.mu.Lock()
			defer n.mu.Unlock()
			h, ok := n.hellos[addr]
			if !ok {
				return Hello{}, errors.New("unreachable")
			}
			return h, nil
		},
		Bootstrap: func(servers []Member) error {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.boots[self.ID] = servers
			h := n.hellos[self.Addr]
			h.HasState, h.Servers = true, servers
			n.hellos[self.Addr] = h
			return nil
		},
		AskJoin: func(_ context.Context, leader string) error {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.joined = append(n.joined, self.ID+"→"+leader)
			return nil
		},
	}
}

func member(i int) Member {
	return Member{ID: fmt.Sprintf("c%d", i), Addr: fmt.Sprintf("10.0.0.%d:7000", i)}
}

func newFakeNet(ids ...int) *fakeNet {
	n := &fakeNet{hellos: map[string]Hello{}, boots: map[string][]Member{}}
	for _, i := range ids {
		m := member(i)
		n.hellos[m.Addr] = Hello{Member: m}
	}
	return n
}

// TestFormationBootstrap: three fresh nodes that know of each other
// (one only through another) all bootstrap the same configuration.
func TestFormationBootstrap(t *testing.T) {
	n := newFakeNet(1, 2, 3)
	// c3 is only known to c2: c1 learns of it from c2's hello.
	h := n.hellos[member(2).Addr]
	h.Known = []string{member(3).Addr}
	n.hellos[member(2).Addr] = h
	var wg sync.WaitGroup
	for i, join := range [][]string{{member(2).Addr}, {member(1).Addr, member(3).Addr}, {member(2).Addr, member(1).Addr}} {
		f := n.formation(member(i+1), 3, join...)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := f.Run(ctx); err != nil {
				t.Errorf("%s: %v", f.Self.ID, err)
			}
		})
	}
	wg.Wait()
	want := []Member{member(1), member(2), member(3)}
	for _, id := range []string{"c1", "c2", "c3"} {
		if got := n.boots[id]; !slices.Equal(got, want) {
			t.Errorf("%s bootstrapped %v, want %v", id, got, want)
		}
	}
}

// TestFormationWaits: with fewer nodes than expected, nothing happens
// until the context ends.
func TestFormationWaits(t *testing.T) {
	n := newFakeNet(1, 2)
	f := n.formation(member(1), 3, member(2).Addr, member(3).Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want the context's end", err)
	}
	if len(n.boots) != 0 {
		t.Errorf("bootstrapped with 2 of 3: %v", n.boots)
	}
}

// TestFormationJoinsRunningCluster: a peer that knows a leader means a
// cluster runs; the node asks the leader instead of bootstrapping.
func TestFormationJoinsRunningCluster(t *testing.T) {
	n := newFakeNet(1, 2, 3, 4)
	for _, i := range []int{1, 2, 3} {
		h := n.hellos[member(i).Addr]
		h.HasState, h.Leader = true, member(2).Addr
		n.hellos[member(i).Addr] = h
	}
	f := n.formation(member(4), 3, member(1).Addr)
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(n.boots) != 0 || !slices.Equal(n.joined, []string{"c4→" + member(2).Addr}) {
		t.Errorf("boots %v, joins %v; want one join through the leader", n.boots, n.joined)
	}
}

// TestFormationNoSecondCluster: peers with state but no leader (an
// election under way) make a fresh node wait, not start a cluster of its
// own, even with enough fresh nodes around.
func TestFormationNoSecondCluster(t *testing.T) {
	n := newFakeNet(1, 2, 3, 4)
	h := n.hellos[member(1).Addr]
	h.HasState = true
	n.hellos[member(1).Addr] = h
	f := n.formation(member(2), 2, member(1).Addr, member(3).Addr, member(4).Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.Run(ctx); !errors.Is(err, context.DeadlineExceeded) || len(n.boots) != 0 {
		t.Fatalf("Run = %v, boots %v; want a wait", err, n.boots)
	}
}

// TestFormationOnlyTheFirstN: with more fresh nodes than expected, the
// ones with the largest IDs do not bootstrap.
func TestFormationOnlyTheFirstN(t *testing.T) {
	n := newFakeNet(1, 2, 3, 4)
	f := n.formation(member(4), 3, member(1).Addr, member(2).Addr, member(3).Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.Run(ctx); !errors.Is(err, context.DeadlineExceeded) || len(n.boots) != 0 {
		t.Fatalf("Run = %v, boots %v; want c4 to wait", err, n.boots)
	}
	f = n.formation(member(1), 3, member(2).Addr, member(3).Addr, member(4).Addr)
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []Member{member(1), member(2), member(3)}; !slices.Equal(n.boots["c1"], want) {
		t.Errorf("c1 bootstrapped %v, want %v", n.boots["c1"], want)
	}
}

// raftNode is a real raft node on a real cluster port, formed with
// Formation and the formation handlers.
type raftNode struct {
	self  Member
	mux   *Mux
	id    *Identity
	mu    sync.Mutex
	r     *raft.Raft
	store *raft.InmemStore
	snaps *raft.InmemSnapshotStore
	tr    *raft.NetworkTransport
	conf  *raft.Config
}

func (n *raftNode) node() Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.r == nil {
		return nil
	}
	return n.r
}

func (n *raftNode) hasState() bool {
	ok, err := raft.HasExistingState(n.store, n.store, n.snaps)
	return err == nil && ok
}

// start runs raft on the node (bootstrapping servers first, if any).
func (n *raftNode) start(t *testing.T, servers []Member) error {
	if len(servers) > 0 {
		var c raft.Configuration
		for _, m := range servers {
			c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.Addr)})
		}
		if err := raft.BootstrapCluster(n.conf, n.store, n.store, n.snaps, n.tr, c); err != nil {
			return err
		}
	}
	r, err := raft.NewRaft(n.conf, &countFSM{got: make(chan struct{}, 1)}, n.store, n.store, n.snaps, n.tr)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.r = r
	n.mu.Unlock()
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	return nil
}

func newRaftNode(t *testing.T, p *pki, name string) *raftNode {
	id := identity(t, p.dir, name, nil)
	m := serve(t, id)
	n := &raftNode{self: Member{ID: name, Addr: m.Addr().String()}, mux: m, id: id,
		store: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()}
	n.tr = raft.NewNetworkTransportWithLogger(NewStreamLayer(m, id), 3, 10*time.Second, hclog.NewNullLogger())
	n.conf = raft.DefaultConfig()
	n.conf.LocalID = raft.ServerID(name)
	n.conf.Logger = hclog.NewNullLogger()
	return n
}

// TestFormationOverClusterPort: three controllers started with
// -bootstrap-expect 3 form a cluster over the real cluster port; a
// fourth started later joins it through the leader; a node cannot
// claim another's ID.
func TestFormationOverClusterPort(t *testing.T) {
	p := newPKI(t)
	var nodes []*raftNode
	for i := 1; i <= 4; i++ {
		nodes = append(nodes, newRaftNode(t, p, fmt.Sprintf("c%d", i)))
	}
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.self.Addr)
	}
	for _, n := range nodes {
		rpc := NewRPCServer(hclog.NewNullLogger())
		HandleFormation(rpc, n.self, addrs, n.hasState, n.node)
		go func() { _ = rpc.Serve(n.mux.Listener(ALPNCluster)) }()
	}
	form := func(n *raftNode) *Formation {
		return &Formation{
			Self: n.self, Expect: 3, Join: addrs[:3], Interval: 50 * time.Millisecond, Log: hclog.NewNullLogger(),
			HasState:  func() bool { return n.node() != nil || n.hasState() },
			Hello:     n.id.HelloVia(),
			Bootstrap: func(servers []Member) error { return n.start(t, servers) },
			AskJoin:   n.id.AskJoinVia(n.self),
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // a hang guard
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range nodes[:3] {
		wg.Go(func() {
			if err := form(n).Run(ctx); err != nil {
				t.Errorf("%s: %v", n.self.ID, err)
			}
		})
	}
	wg.Wait()
	for _, n := range nodes[:3] {
		if n.node() == nil {
			t.Fatalf("%s did not start raft", n.self.ID)
		}
	}
	// The fourth: raft runs (empty) so that the leader can add it, and
	// it asks through formation once a leader is known.
	if err := nodes[3].start(t, nil); err != nil {
		t.Fatal(err)
	}
	f4 := form(nodes[3])
	f4.HasState = func() bool { return false }
	if err := f4.Run(ctx); err != nil {
		t.Fatal(err)
	}
	var leader *raft.Raft
	for _, n := range nodes[:3] {
		if n.r.State() == raft.Leader {
			leader = n.r
		}
	}
	if leader == nil {
		t.Fatal("no leader after the join")
	}
	cf := leader.GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range cf.Configuration().Servers {
		ids = append(ids, string(s.ID))
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"c1", "c2", "c3", "c4"}) {
		t.Errorf("configuration %v, want c1..c4", ids)
	}
	// c1 may not ask to add a node under c2's name.
	err := nodes[0].id.Call(ctx, string(mustLeader(t, leader)), opJoin, JoinRequest{Member: Member{ID: "c9", Addr: "127.0.0.1:1"}}, nil)
	if !errors.Is(err, ErrRPC) {
		t.Errorf("join as another = %v, want a refusal", err)
	}
}

func mustLeader(t *testing.T, r *raft.Raft) raft.ServerAddress {
	addr, _ := r.LeaderWithID()
	if addr == "" {
		t.Fatal("no leader address")
	}
	return addr
}
