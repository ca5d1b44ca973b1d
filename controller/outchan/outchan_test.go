package outchan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

func TestQuorumSeq(t *testing.T) {
	tests := map[string]struct {
		own   uint64
		peers []uint64
		q     int
		want  uint64
	}{
		"3 nodes, leader ahead":         {10, []uint64{7, 3}, 2, 7},
		"3 nodes, a follower ahead":     {5, []uint64{9, 3}, 2, 5},
		"3 nodes, one follower silent":  {10, []uint64{0, 8}, 2, 8},
		"3 nodes, both followers quiet": {10, []uint64{0, 0}, 2, 0},
		"5 nodes":                       {10, []uint64{9, 8, 2, 1}, 3, 8},
		"5 nodes, two silent":           {10, []uint64{9, 0, 0, 7}, 3, 7},
		"single node":                   {4, nil, 1, 4},
		"too few values":                {4, []uint64{4}, 3, 0},
		"all equal":                     {6, []uint64{6, 6}, 2, 6},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := quorumSeq(tt.own, tt.peers, tt.q); got != tt.want {
				t.Errorf("quorumSeq(%d, %v, %d) = %d, want %d", tt.own, tt.peers, tt.q, got, tt.want)
			}
		})
	}
}

// replica is a node's store with an applied index the test moves.
type replica struct {
	st      *store.Store
	mu      sync.Mutex
	applied uint64
	moved   chan struct{}
	waiting chan struct{} // gets a value each time WaitApplied starts waiting
}

func newReplica(t *testing.T) *replica {
	st, err := store.Open(t.TempDir(), store.Options{Logger: hclog.NewNullLogger(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &replica{st: st, moved: make(chan struct{}), waiting: make(chan struct{}, 16)}
}

func (r *replica) Store() *store.Store { return r.st }
func (r *replica) ApplyOutput(cmds ...store.Command) ([]store.Result, error) {
	return r.st.Apply(cmds...)
}
func (r *replica) Applied() (uint64, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied, 1
}
func (r *replica) WaitApplied(ctx context.Context, index uint64) error {
	for {
		r.mu.Lock()
		if r.applied >= index {
			r.mu.Unlock()
			return nil
		}
		ch := r.moved
		r.mu.Unlock()
		select {
		case r.waiting <- struct{}{}:
		default:
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// apply applies cmds as a committed round would and moves the applied
// index.
func (r *replica) apply(t *testing.T, cmds ...store.Command) {
	t.Helper()
	res, err := r.st.Apply(cmds...)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range res {
		if x.Err != nil {
			t.Fatalf("command %d: %v", i, x.Err)
		}
	}
	r.mu.Lock()
	r.applied++
	close(r.moved)
	r.moved = make(chan struct{})
	r.mu.Unlock()
}

func (r *replica) log(t *testing.T, id uint64) string {
	t.Helper()
	chunks, err := r.st.ReadLog(id, 0, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, c := range chunks {
		b.Write(c.Data)
	}
	return b.String()
}

var t0 = time.Unix(1_700_000_000, 0).UTC()

// job returns a job's creation and its dispatch of attempt 1 at logStart.
func job(id uint64) (create, dispatch *store.Transition) {
	j := &store.Job{ID: id, Name: "j", Command: "true", State: store.Queued, CreatedAt: t0, QueuedAt: t0}
	create = store.NewTransition(j, store.Event{Time: t0, Type: "submitted"})
	d := j.Clone()
	d.State = store.Running
	d.Attempts = append(d.Attempts, store.Attempt{Number: 1, Agent: "a", DispatchedAt: t0})
	dispatch = store.NewTransition(d, store.Event{Time: t0, Type: "running"})
	return create, dispatch
}

// cluster is a leader and its followers over loopback TCP (the cluster
// port's TLS is the Mux's: not needed for the channel's logic).
type cluster struct {
	leader    *Leader
	reps      []*replica // [0] the leader's
	addrs     []string
	q         int
	mu        sync.Mutex
	durable   []string // "job/attempt/end" as Durable was told
	cancel    context.CancelFunc
	done      chan struct{}
	followers []*Follower
	peers     []Peer
	appended  map[int]int     // chunks each follower told Appended of (job 1's)
	refuse    map[uint64]bool // jobs whose durable ends do not count (Durable says false)
	committed map[int]int     // ends each follower told Committed of
}

func newCluster(t *testing.T, nodes, q int) *cluster { return newClusterOf(t, nodes, q, false) }

// newClusterOf is newCluster whose followers, with legacy, speak the
// stream's first version (LeaderOptions.Legacy): no ends frames.
func newClusterOf(t *testing.T, nodes, q int, legacy bool) *cluster {
	c := &cluster{q: q, done: make(chan struct{}), appended: map[int]int{}, refuse: map[uint64]bool{}, committed: map[int]int{}}
	var peers []Peer
	for i := range nodes {
		r := newReplica(t)
		c.reps = append(c.reps, r)
		if i == 0 {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f := NewFollower(FollowerOptions{Replica: r, Term: func() uint64 { return 1 }, Appended: func(job uint64) {
			c.mu.Lock()
			if job == 1 {
				c.appended[i]++
			}
			c.mu.Unlock()
		}, Committed: func(uint64) {
			c.mu.Lock()
			c.committed[i]++
			c.mu.Unlock()
		}})
		c.followers = append(c.followers, f)
		go func() { _ = f.Serve(ln) }()
		t.Cleanup(func() { _ = ln.Close() })
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), Addr: ln.Addr().String()})
	}
	c.peers = peers
	c.leader = NewLeader(LeaderOptions{
		Term: 1, Self: "n0",
		Store: c.reps[0].Store,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		Peers:  func() ([]Peer, int) { return peers, q },
		Legacy: func(net.Conn) bool { return legacy },
		Durable: func(job uint64, attempt uint32, end uint64) bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.durable = append(c.durable, fmt.Sprintf("%d/%d/%d", job, attempt, end))
			return !c.refuse[job]
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { defer close(c.done); c.leader.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// applyAll applies cmds on every node.
func (c *cluster) applyAll(t *testing.T, cmds ...store.Command) {
	t.Helper()
	for _, r := range c.reps {
		r.apply(t, cmds...)
	}
}

func wait(t *testing.T, l *Leader, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.WaitDurable(ctx, seq); err != nil {
		t.Fatalf("WaitDurable(%d): %v", seq, err)
	}
}

// TestChannelReplicates: chunks appended on the leader reach every
// follower's store byte for byte, are reported durable in seq order,
// and the quorum-durable seq covers them.
func TestChannelReplicates(t *testing.T) {
	c := newCluster(t, 3, 3) // a quorum of 3 of 3: every follower must hold it all
	create, dispatch := job(1)
	c.applyAll(t, create)
	c.applyAll(t, dispatch)
	var want bytes.Buffer
	var last uint64
	for i := range 50 {
		data := bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i)
		seq, err := c.leader.Append(1, 1, uint64(want.Len()), 1, t0, data)
		if err != nil {
			t.Fatal(err)
		}
		want.Write(data)
		last = seq
	}
	wait(t, c.leader, last)
	if d, l := c.leader.Durable(); d != last || l != last {
		t.Fatalf("Durable() = %d, %d; want %d, %d", d, l, last, last)
	}
	c.mu.Lock()
	if n := len(c.durable); n != 50 || c.durable[49] != fmt.Sprintf("1/1/%d", want.Len()) {
		t.Errorf("Durable told %d chunks, last %q", n, c.durable[n-1])
	}
	c.mu.Unlock()
	for i, r := range c.reps {
		if got := r.log(t, 1); got != want.String() {
			t.Errorf("node %d holds %d bytes, want %d", i, len(got), want.Len())
		}
	}
	// Each follower told of every chunk it stored (its node rings the
	// job's log followers), and is streaming until the leader stops.
	c.mu.Lock()
	if c.appended[1] != 50 || c.appended[2] != 50 {
		t.Errorf("Appended told of %v chunks of job 1, want 50 on nodes 1 and 2", c.appended)
	}
	c.mu.Unlock()
	for i, f := range c.followers {
		if !f.Streaming() {
			t.Errorf("follower %d is not streaming while the leader runs", i+1)
		}
	}
	c.cancel()
	<-c.done
	deadline := time.Now().Add(20 * time.Second)
	for i, f := range c.followers {
		for f.Streaming() {
			if time.Now().After(deadline) {
				t.Fatalf("follower %d still streaming after the leader stopped", i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestFollowerWaitsForDispatch: a follower stores a chunk only once the
// round that dispatched its attempt is applied there, and acknowledges
// nothing before; a quorum without it moves on.
func TestFollowerWaitsForDispatch(t *testing.T) {
	c := newCluster(t, 3, 3)
	create, dispatch := job(1)
	c.applyAll(t, create)
	c.reps[0].apply(t, dispatch)
	c.reps[1].apply(t, dispatch)
	seq, err := c.leader.Append(1, 1, 0, 1, t0, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.reps[2].waiting:
	case <-time.After(20 * time.Second):
		t.Fatal("the follower without the dispatch never waited for it")
	}
	if got := c.reps[2].log(t, 1); got != "" {
		t.Fatalf("follower stored %q before the dispatch was applied", got)
	}
	if d, _ := c.leader.Durable(); d != 0 {
		t.Fatalf("quorum-durable seq %d with a follower (of 3 needed) still waiting", d)
	}
	c.reps[2].apply(t, dispatch)
	wait(t, c.leader, seq)
	for i, r := range c.reps {
		if got := r.log(t, 1); got != "hello" {
			t.Errorf("node %d: log %q", i, got)
		}
	}
}

// TestUnackedOutputTruncated: output no quorum acknowledged, of an
// attempt lost at its durable end, is gone from every node once the
// loss is applied — the leader's copy included — and a chunk still in
// flight to a follower is dropped there.
func TestUnackedOutputTruncated(t *testing.T) {
	c := newCluster(t, 3, 3)
	create, dispatch := job(1)
	c.applyAll(t, create)
	c.reps[0].apply(t, dispatch)
	c.reps[1].apply(t, dispatch)
	if _, err := c.leader.Append(1, 1, 0, 1, t0, []byte("never acknowledged")); err != nil {
		t.Fatal(err)
	}
	<-c.reps[2].waiting
	if d, _ := c.leader.Durable(); d != 0 {
		t.Fatalf("quorum-durable seq %d", d)
	}
	// The attempt is lost at its durable end, 0.
	lost := dispatch.Job.Clone()
	lost.State = store.Queued
	lost.Attempts[0].Outcome = store.OutcomeLost
	end := store.NewTransition(lost, store.Event{Time: t0, Type: "lost"})
	c.reps[0].apply(t, end, &store.TruncateLog{Job: 1, At: 0})
	c.reps[1].apply(t, end, &store.TruncateLog{Job: 1, At: 0})
	// The third gets the dispatch and the end in one go, its chunk in flight.
	c.reps[2].apply(t, dispatch, end, &store.TruncateLog{Job: 1, At: 0})
	// A later chunk of the lost attempt is refused on the leader.
	if _, err := c.leader.Append(1, 1, 18, 1, t0, []byte("more")); !errors.Is(err, store.ErrStale) {
		t.Fatalf("Append after the loss: %v, want store.ErrStale", err)
	}
	// Seq 1 becomes durable on all three (the third dropped it as stale).
	wait(t, c.leader, 1)
	for i, r := range c.reps {
		if got := r.log(t, 1); got != "" {
			t.Errorf("node %d still holds %q of the lost attempt", i, got)
		}
	}
}

// TestFill: a new leader that holds less of a running attempt's output
// than its peers gets the largest end a quorum knows of, fetches the
// bytes it lacks, and makes them durable on a quorum.
func TestFill(t *testing.T) {
	full := bytes.Repeat([]byte("0123456789"), 30) // 300 bytes
	tests := map[string]struct {
		q       int
		down    int // peer index (1 or 2) whose calls fail; 0: none
		want    uint64
		holders []int // nodes that must hold want bytes afterwards
	}{
		"all answer, quorum of 3":      {q: 3, want: 300, holders: []int{0, 1, 2}},
		"node 1 down, quorum of 2":     {q: 2, down: 1, want: 200, holders: []int{0, 2}},
		"node 2 down, quorum of 2":     {q: 2, down: 2, want: 300, holders: []int{0, 1}},
		"both down, no quorum of 2":    {q: 2, down: -1},
		"nothing to fill when in sync": {q: 3, want: 300},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, 3, tt.q)
			create, dispatch := job(1)
			c.applyAll(t, create)
			c.applyAll(t, dispatch)
			have := []int{100, 300, 200} // the old leader (node 1) had acked 200 on {1, 2}
			if name == "nothing to fill when in sync" {
				have = []int{300, 300, 300}
			}
			for i, r := range c.reps {
				for off := 0; off < have[i]; off += 50 {
					if _, err := r.st.Apply(&store.ReplicaOutput{Job: 1, Attempt: 1, Chunk: store.Chunk{Offset: uint64(off), Stream: 1, Data: full[off : off+50], Time: t0}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			byAddr := map[string]int{}
			peers, _ := c.leader.o.Peers()
			for i, p := range peers {
				byAddr[p.Addr] = i + 1
			}
			call := func(ctx context.Context, addr, op string, body, out any) error {
				i := byAddr[addr]
				if tt.down == i || tt.down == -1 {
					return errors.New("unreachable")
				}
				st := c.reps[i].st
				switch op {
				case OpEnd:
					a, err := AttemptEnd(st, body.(EndRequest))
					*out.(*EndAnswer) = a
					return err
				case OpRead:
					a, err := ReadRange(st, body.(ReadRequest))
					*out.(*ReadAnswer) = a
					return err
				}
				return fmt.Errorf("op %q", op)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			end, err := c.leader.FillOnce(ctx, call, 1, 1, 0)
			if tt.down == -1 {
				if !errors.Is(err, ErrNoQuorum) {
					t.Fatalf("Fill without a quorum: %d, %v; want ErrNoQuorum", end, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if end != tt.want {
				t.Fatalf("Fill = %d, want %d", end, tt.want)
			}
			for _, i := range tt.holders {
				if got := c.reps[i].log(t, 1); got[:tt.want] != string(full[:tt.want]) {
					t.Errorf("node %d holds %d bytes: %q", i, len(got), got)
				}
			}
			// A second call shares the first's result.
			if again, err := c.leader.FillOnce(ctx, call, 1, 1, 0); err != nil || again != end {
				t.Errorf("FillOnce again = %d, %v; want %d", again, err, end)
			}
		})
	}
}

// holeyPair returns two nodes' stores holding job 1, whose attempt 1
// was lost at 30 and attempt 2 completed at 60: peer holds its whole
// output (full), local has holes at 10-20 and 40-60. Both applied the
// rounds that ended the attempts, so both queued the job for a repair.
func holeyPair(t *testing.T) (local, peer *replica, full []byte) {
	t.Helper()
	local, peer = newReplica(t), newReplica(t)
	create, dispatch := job(1)
	lost := dispatch.Job.Clone()
	lost.Attempts[0].Outcome = store.OutcomeLost
	lost.LogBytes = 30
	lost.Attempts = append(lost.Attempts, store.Attempt{Number: 2, Agent: "b", LogStart: 30})
	lostT := store.NewTransition(lost, store.Event{Time: t0, Type: "lost"})
	ended := lost.Clone()
	ended.State = store.Completed
	ended.Attempts[1].Outcome = store.OutcomeCompleted
	ended.LogBytes = 60
	endedT := store.NewTransition(ended, store.Event{Time: t0, Type: "completed"})
	full = []byte("aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffff")
	for _, r := range []*replica{local, peer} {
		r.apply(t, create)
		r.apply(t, dispatch)
	}
	put := func(r *replica, attempt uint32, from, to int) {
		res, err := r.st.Apply(&store.ReplicaOutput{Job: 1, Attempt: attempt, Chunk: store.Chunk{Offset: uint64(from), Stream: 1, Data: full[from:to], Time: t0}})
		if err == nil {
			err = res[0].Err
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	put(peer, 1, 0, 30)
	put(local, 1, 0, 10)
	put(local, 1, 20, 30)
	for _, r := range []*replica{local, peer} {
		r.apply(t, lostT, &store.TruncateLog{Job: 1, At: 30})
	}
	put(peer, 2, 30, 60)
	put(local, 2, 30, 40)
	for _, r := range []*replica{local, peer} {
		r.apply(t, endedT, &store.TruncateLog{Job: 1, At: 60})
	}
	return local, peer, full
}

// readFrom answers OpRead from st's store as a peer would (a nil store:
// the peer is down).
func readFrom(st func() *store.Store) Caller {
	return func(ctx context.Context, addr, op string, body, out any) error {
		if op != OpRead {
			return fmt.Errorf("op %q", op)
		}
		s := st()
		if s == nil {
			return errors.New("peer down")
		}
		a, err := ReadRange(s, body.(ReadRequest))
		*out.(*ReadAnswer) = a
		return err
	}
}

var twoPeers = func() ([]Peer, int) { return []Peer{{ID: "n0", Addr: "self"}, {ID: "n1", Addr: "peer"}}, 2 }

// runRepairer runs r until the test ends.
func runRepairer(t *testing.T, r *Repairer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// queued returns local's store's repair queue.
func queued(t *testing.T, st *store.Store) []store.PendingRepair {
	t.Helper()
	p, err := st.PendingRepairs()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRepair: a node that missed parts of ended attempts' output (a
// hole in the middle, the tail) fetches them from a peer, each byte
// under the attempt it belongs to, and nothing past the last ended
// attempt's end; then the job leaves the store's repair queue.
func TestRepair(t *testing.T) {
	local, peer, full := holeyPair(t)
	repaired := make(chan uint64, 1)
	r := NewRepairer(RepairOptions{
		Self: "n0", Store: local.Store, Call: readFrom(peer.Store), Peers: twoPeers,
		Repaired: func(job uint64) { repaired <- job },
		Logger:   hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr}),
	})
	runRepairer(t, r)
	r.Note(1, 60)
	select {
	case <-repaired:
	case <-time.After(20 * time.Second):
		t.Fatal("no repair")
	}
	if got := local.log(t, 1); got != string(full) {
		t.Fatalf("after repair: %q, want %q", got, full)
	}
	if _, _, hole, err := local.st.LogHole(1, 0, 60); err != nil || hole {
		t.Fatalf("a hole left: %v %v", hole, err)
	}
	waitFor(t, "the job to leave the store's repair queue", func() bool { return len(queued(t, local.st)) == 0 && r.Pending() == 0 })
	if got := r.RepairedBytes(); got != 30 {
		t.Errorf("RepairedBytes = %d, want 30 (10-20 and 40-60)", got)
	}
}

// TestRepairQueueDurable: the repair queue is the store's. A Repairer
// that was never told of the job (the node stopped after applying the
// attempt's end, before it repaired) finds it in the store when it
// starts; one whose peer is down keeps the job queued, in memory and in
// the store, and tries again; and after its store is replaced (a
// snapshot installed), Rescan makes it repair what the new store's
// queue holds.
func TestRepairQueueDurable(t *testing.T) {
	local, peer, full := holeyPair(t)
	var mu sync.Mutex
	cur, up := local.st, false
	r := NewRepairer(RepairOptions{
		Self: "n0", Peers: twoPeers,
		Store: func() *store.Store { mu.Lock(); defer mu.Unlock(); return cur },
		Call: readFrom(func() *store.Store {
			mu.Lock()
			defer mu.Unlock()
			if !up {
				return nil
			}
			return peer.st
		}),
	})
	runRepairer(t, r) // no Note: a restarted node
	waitFor(t, "the queue read from the store", func() bool { return r.Pending() == 1 })
	// The peer is down: the job stays queued, here and in the store.
	if got := queued(t, local.st); len(got) != 1 || got[0] != (store.PendingRepair{Job: 1, At: 60}) {
		t.Fatalf("store's queue while the peer is down: %v", got)
	}
	mu.Lock()
	up = true
	mu.Unlock()
	waitFor(t, "the repair once the peer is back", func() bool { return len(queued(t, local.st)) == 0 && r.Pending() == 0 })
	if got := local.log(t, 1); got != string(full) {
		t.Fatalf("after repair: %q, want %q", got, full)
	}

	// A snapshot replaces the store with another node's copy, holes and
	// queue included: Rescan repairs it.
	installed, _, _ := holeyPair(t)
	mu.Lock()
	cur = installed.st
	mu.Unlock()
	r.Rescan()
	waitFor(t, "the installed store's repair", func() bool { return len(queued(t, installed.st)) == 0 && r.Pending() == 0 })
	if got := installed.log(t, 1); got != string(full) {
		t.Fatalf("installed store after repair: %q, want %q", got, full)
	}
	if got := r.RepairedBytes(); got != 60 {
		t.Errorf("RepairedBytes = %d, want 60 (30 in each store)", got)
	}
}

// waitFor polls cond until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSenderResumesAndFallsBehind: a follower whose stream breaks is
// sent the rest from its durable seq on the next connection; one that
// cannot be reached while more than the ring's bytes pass falls out of
// the quorum count (and says so in Lag), and the others carry on.
func TestSenderResumesAndFallsBehind(t *testing.T) {
	var (
		mu    sync.Mutex
		down  = map[string]bool{}
		conns []net.Conn
	)
	reps := []*replica{newReplica(t), newReplica(t), newReplica(t)}
	var peers []Peer
	for i := 1; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f := NewFollower(FollowerOptions{Replica: reps[i], Term: func() uint64 { return 1 }})
		go func() { _ = f.Serve(ln) }()
		t.Cleanup(func() { _ = ln.Close() })
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), Addr: ln.Addr().String()})
	}
	q := 3
	behind := make(chan string, 2)
	l := NewLeader(LeaderOptions{
		Term: 1, Self: "n0", Store: reps[0].Store, RingBytes: 1000,
		Behind: func(peer string) { behind <- peer },
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			mu.Lock()
			defer mu.Unlock()
			if down[addr] {
				return nil, errors.New("down")
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				conns = append(conns, c)
			}
			return c, err
		},
		Peers: func() ([]Peer, int) { mu.Lock(); defer mu.Unlock(); return peers, q },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	create, dispatch := job(1)
	for _, r := range reps {
		r.apply(t, create)
		r.apply(t, dispatch)
	}
	var want bytes.Buffer
	appendN := func(n int) uint64 {
		var seq uint64
		for range n {
			data := bytes.Repeat([]byte{'a' + byte(want.Len()%26)}, 100)
			var err error
			if seq, err = l.Append(1, 1, uint64(want.Len()), 1, t0, data); err != nil {
				t.Fatal(err)
			}
			want.Write(data)
		}
		return seq
	}
	wait(t, l, appendN(5)) // all three hold 5 chunks
	// Break both streams: the senders dial again and resume.
	mu.Lock()
	for _, c := range conns {
		_ = c.Close()
	}
	mu.Unlock()
	wait(t, l, appendN(5))
	for i, r := range reps {
		if got := r.log(t, 1); got != want.String() {
			t.Fatalf("after a reconnect node %d holds %d bytes, want %d", i, len(got), want.Len())
		}
	}
	// n2 goes away (its stream too) while 3000 bytes pass a ring of 1000:
	// with it counted no quorum of 3 could form, so count 2 of 3.
	mu.Lock()
	q = 2
	down[peers[1].Addr] = true
	for _, c := range conns {
		if c.RemoteAddr().String() == peers[1].Addr {
			_ = c.Close()
		}
	}
	mu.Unlock()
	for range 30 { // one at a time: n1 keeps up, inside the ring
		wait(t, l, appendN(1))
	}
	mu.Lock()
	down[peers[1].Addr] = false
	mu.Unlock()
	select {
	case p := <-behind:
		if p != "n2" {
			t.Fatalf("%s fell behind, want n2", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("n2 never fell behind: %+v", l.Lag())
	}
	if lag := l.Lag(); !lag["n2"].Behind || lag["n1"].Behind {
		t.Fatalf("Lag() = %+v, want only n2 behind", lag)
	}
	wait(t, l, appendN(3)) // the quorum moves on without n2
	if got := reps[1].log(t, 1); got != want.String() {
		t.Fatalf("n1 holds %d bytes, want %d", len(got), want.Len())
	}
	// In bytes: n2 acknowledged the first 10 chunks (1000 bytes) of what
	// the leader synced, n1 everything, once the leader's own sync and
	// n1's last ack are in.
	deadline := time.Now().Add(20 * time.Second)
	for {
		lag := l.Lag()
		if lag["n2"].Bytes == uint64(want.Len()-1000) && lag["n1"].Bytes == 0 && lag["n2"].Seq == uint64(want.Len()/100-10) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lag() = %+v, want n2 %d bytes (%d chunks) behind, n1 none", lag, want.Len()-1000, want.Len()/100-10)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSecondLeaderOfATerm: one node can run two Leaders in one raft
// term (an operator's restore rebuilds the term's Server; raft keeps the
// term), and the second numbers its chunks from 1 again. The follower
// must take its stream as a new one: were it to answer the second
// Leader's hello with the first's durable seq, the second would count
// chunks the follower never got as durable and never send them.
func TestSecondLeaderOfATerm(t *testing.T) {
	c := newCluster(t, 2, 2) // the leader and one follower: both must hold it
	create, dispatch := job(1)
	c.applyAll(t, create)
	c.applyAll(t, dispatch)
	var want bytes.Buffer
	var last uint64
	for i := range 3 {
		data := bytes.Repeat([]byte{byte('a' + i)}, 100)
		seq, err := c.leader.Append(1, 1, uint64(want.Len()), 1, t0, data)
		if err != nil {
			t.Fatal(err)
		}
		want.Write(data)
		last = seq
	}
	wait(t, c.leader, last)
	c.cancel()
	<-c.done

	peers := c.peers
	l := NewLeader(LeaderOptions{
		Term: 1, Self: "n0", Store: c.reps[0].Store,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		Peers: func() ([]Peer, int) { return peers, 2 },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	data := []byte("after the restore")
	seq, err := l.Append(1, 1, uint64(want.Len()), 1, t0, data)
	if err != nil {
		t.Fatal(err)
	}
	want.Write(data)
	if seq != 1 {
		t.Fatalf("the second Leader's first seq is %d, want 1", seq)
	}
	wait(t, l, seq)
	if got := c.reps[1].log(t, 1); got != want.String() {
		t.Fatalf("the follower holds %q, want %q: it took the second Leader's seq 1 as held", got, want.String())
	}
}

// TestFollowersLearnFinalEnds: a follower learns how far each job's
// output is final (ends frames) only once a quorum holds it and the
// leader counted it — not while another follower withholds its ack,
// even though it stored the bytes itself — and never the end of a chunk
// the leader did not count (its attempt had ended: the end's
// TruncateLog cuts it). Ended drops a job's.
func TestFollowersLearnFinalEnds(t *testing.T) {
	t.Run("legacy follower", func(t *testing.T) {
		// A follower of an earlier release gets no ends frames (it would
		// refuse them) and still stores and acks.
		c := newClusterOf(t, 2, 2, true)
		create, dispatch := job(1)
		c.applyAll(t, create, dispatch)
		seq, err := c.leader.Append(1, 1, 0, 1, t0, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		wait(t, c.leader, seq)
		if seq2, err := c.leader.Append(1, 1, 5, 1, t0, []byte("!")); err != nil {
			t.Fatal(err)
		} else {
			wait(t, c.leader, seq2) // a second round trip: an ends frame would be there by now
		}
		if end, ok := c.followers[0].DurableEnd(1); ok {
			t.Fatalf("legacy follower was sent an end (%d)", end)
		}
	})
	c := newCluster(t, 3, 3) // every follower must ack
	c.mu.Lock()
	c.refuse[2] = true
	c.mu.Unlock()
	create1, dispatch1 := job(1)
	create2, dispatch2 := job(2)
	c.applyAll(t, create1, create2)
	// Follower 2 lacks the dispatches: it stores nothing, acks nothing.
	c.reps[0].apply(t, dispatch1, dispatch2)
	c.reps[1].apply(t, dispatch1, dispatch2)
	if _, err := c.leader.Append(1, 1, 0, 1, t0, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	seq, err := c.leader.Append(2, 1, 0, 1, t0, []byte("world"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "follower 1 to store both", func() bool { return c.reps[1].log(t, 1) == "hello" && c.reps[1].log(t, 2) == "world" })
	<-c.reps[2].waiting
	f1 := c.followers[0]
	if end, ok := f1.DurableEnd(1); ok {
		t.Fatalf("follower 1 was told job 1 is final to %d before a quorum held it", end)
	}
	c.reps[2].apply(t, dispatch1, dispatch2)
	wait(t, c.leader, seq)
	for i, f := range c.followers {
		waitFor(t, fmt.Sprintf("follower %d to learn job 1's end", i+1), func() bool {
			end, ok := f.DurableEnd(1)
			return ok && end == 5
		})
	}
	if end, ok := f1.DurableEnd(2); ok {
		t.Errorf("follower 1 was told job 2 is final to %d: the leader did not count it", end)
	}
	c.mu.Lock()
	if c.committed[1] != 1 || c.committed[2] != 1 {
		t.Errorf("Committed told %v times, want once on each follower", c.committed)
	}
	c.mu.Unlock()
	f1.Ended(1)
	if _, ok := f1.DurableEnd(1); ok {
		t.Error("job 1's end kept after Ended")
	}
}

// TestFenceStopsDeposedAcks: once a leader of a later term asked a
// follower for its end (Fence), the follower acknowledges no chunk of
// an earlier term's stream — the deposed leader cannot count, after the
// answer, bytes the answer left out — and refuses that stream when it
// reconnects. A fence at the stream's own term changes nothing.
func TestFenceStopsDeposedAcks(t *testing.T) {
	c := newCluster(t, 2, 2) // the follower's ack is needed for every chunk
	create, dispatch := job(1)
	c.applyAll(t, create)
	c.applyAll(t, dispatch)
	off := uint64(0)
	appendOne := func(data string) uint64 {
		t.Helper()
		seq, err := c.leader.Append(1, 1, off, 1, t0, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		off += uint64(len(data))
		return seq
	}
	wait(t, c.leader, appendOne("before "))
	f := c.followers[0]
	f.Fence(1) // the stream's own term: no change
	wait(t, c.leader, appendOne("same term "))

	f.Fence(2)
	if f.Streaming() {
		t.Fatal("the term-1 stream still runs after a fence at term 2")
	}
	seq := appendOne("after the fence")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.leader.WaitDurable(ctx, seq); err == nil {
		t.Fatal("a chunk of term 1 became quorum-durable through a follower fenced at term 2")
	}
	if d, _ := c.leader.Durable(); d >= seq {
		t.Fatalf("durable seq %d reached the fenced chunk %d", d, seq)
	}
	if f.Streaming() {
		t.Fatal("the follower took the deposed leader's stream again")
	}
}
