package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/julienschmidt/httprouter"

	"jobsuite/controller/clock/clocktest"
	"jobsuite/controller/cluster"
	"jobsuite/controller/outchan"
	"jobsuite/controller/store"
)

// chanReplica is a follower node's store for an outchan.Follower, with
// every round applied; while gate is open (nil) or closed its syncs go
// through or wait (a follower that withholds its acks).
type chanReplica struct {
	st   *store.Store
	mu   sync.Mutex
	gate chan struct{}
}

func (r *chanReplica) Store() *store.Store {
	r.mu.Lock()
	g := r.gate
	r.mu.Unlock()
	if g != nil {
		<-g
	}
	return r.st
}
func (r *chanReplica) ApplyOutput(cmds ...store.Command) ([]store.Result, error) {
	return r.st.Apply(cmds...)
}
func (r *chanReplica) Applied() (uint64, uint64) { return 0, 0 }
func (r *chanReplica) WaitApplied(ctx context.Context, _ uint64) error {
	<-ctx.Done()
	return ctx.Err()
}

// hold makes the follower's syncs wait until the returned func runs.
func (r *chanReplica) hold() (release func()) {
	g := make(chan struct{})
	r.mu.Lock()
	r.gate = g
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			r.gate = nil
			r.mu.Unlock()
			close(g)
		})
	}
}

// fillFixture is a leader's term Server over a store that holds job 1
// running (inherited: dispatched by an earlier leader), with two peers:
// "f", a real outchan.Follower over its own store on loopback, and "g",
// which nothing answers. The gap fill's OpEnd to f waits until endGate
// is closed (nil: at once). The clock is fake.
type fillFixture struct {
	t       *testing.T
	s       *Server
	clk     *clocktest.Fake
	fol     *outchan.Follower
	rep     *chanReplica
	endGate chan struct{}
	asked   chan struct{} // a value each time f is asked for its end
}

func newFillFixture(t *testing.T, own, peer []store.Chunk, endGate chan struct{}) *fillFixture {
	t.Helper()
	fx := &fillFixture{t: t, clk: clocktest.NewFake(time.Unix(1_700_000_100, 0).UTC()), endGate: endGate, asked: make(chan struct{}, 64)}
	fx.rep = &chanReplica{st: replicaStore(t, false, 0, peer...)}
	fx.fol = outchan.NewFollower(outchan.FollowerOptions{Replica: fx.rep, Term: func() uint64 { return 1 }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = fx.fol.Serve(ln) }()
	t.Cleanup(func() { _ = ln.Close() })
	peers := []outchan.Peer{{ID: "f", Addr: ln.Addr().String()}, {ID: "g", Addr: "g.invalid:1"}}
	handlers := outchan.Handlers(func() *store.Store { return fx.rep.st }, nil)
	call := func(ctx context.Context, addr, op string, body, out any) error {
		if addr != peers[0].Addr {
			return errors.New("g does not answer")
		}
		if op == outchan.OpEnd {
			fx.asked <- struct{}{}
			if fx.endGate != nil {
				select {
				case <-fx.endGate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		raw, _ := json.Marshal(body)
		ans, err := handlers[op](ctx, "ctl", raw)
		if err != nil {
			return err
		}
		raw, _ = json.Marshal(ans)
		return json.Unmarshal(raw, out)
	}
	o := outchan.LeaderOptions{
		Term: 1, Self: "ctl",
		Peers: func() ([]outchan.Peer, int) { return peers, 2 },
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	st := replicaStore(t, false, 0, own...)
	cfg := Config{DataDir: t.TempDir(), Logger: testLog(t, "ctl"), LeaseTTL: 10 * time.Second, KillGrace: time.Second,
		BackoffBase: time.Second, BackoffMax: time.Minute, HeartbeatInterval: time.Second}
	s, err := newServer(cfg, &serverDeps{st: st, output: &o, outputCall: call, clock: fx.clk})
	if err != nil {
		t.Fatal(err)
	}
	fx.s = s
	ctx, cancel := context.WithCancel(context.Background())
	stop := make(chan struct{})
	commitDone := make(chan error, 1)
	go func() { commitDone <- s.c.Run(stop) }()
	s.sched.StartServing(fx.clk.Now())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.sched.ExpiryLoop(ctx) }()
	go func() { defer wg.Done(); s.runOutputChannel(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(stop)
		if err := <-commitDone; err != nil {
			t.Error(err)
		}
	})
	return fx
}

// waitFor polls cond (a state the components reach on their own) until
// it holds, failing after 20s.
func (fx *fillFixture) waitFor(what string, cond func() bool) {
	fx.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			fx.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// job returns job 1 as the store holds it.
func (fx *fillFixture) job() *store.Job {
	fx.t.Helper()
	j, err := fx.s.st.Get(1)
	if err != nil {
		fx.t.Fatal(err)
	}
	return j
}

// getLog reads job 1's log through the leader's GET /jobs/1/logs.
func (fx *fillFixture) getLog(offset string) string {
	fx.t.Helper()
	w := httptest.NewRecorder()
	fx.s.handleLogs(w, httptest.NewRequest("GET", "/jobs/1/logs?offset="+offset, nil), httprouter.Params{{Key: "id", Value: "1"}})
	if w.Code != 200 {
		fx.t.Fatalf("GET logs: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

func chunkAt(off uint64, s string) store.Chunk {
	return store.Chunk{Offset: off, Stream: 1, Data: []byte(s), Time: time.Unix(1_700_000_000, 0).UTC()}
}

// TestInheritedAttemptLostAfterFill: a new leader inherits a running
// attempt whose agent never comes back. This node holds 10 bytes of its
// output; peer f holds 30, which a quorum (the old leader and f)
// acknowledged to the agent. The gap fill cannot finish — f's answer to
// OpEnd is held back, g never answers — until well after the attempt's
// lease ran out: the loss waits for it, and records LogBytes 30, every
// acknowledged byte, not the 10 (or 0) known when the lease ran out.
func TestInheritedAttemptLostAfterFill(t *testing.T) {
	gate := make(chan struct{})
	fx := newFillFixture(t,
		[]store.Chunk{chunkAt(0, "0123456789")},
		[]store.Chunk{chunkAt(0, "0123456789"), chunkAt(10, "abcdefghij"), chunkAt(20, "ABCDEFGHIJ")}, gate)
	<-fx.asked // the fill is under way, and held
	fx.clk.Advance(time.Hour)
	fx.waitFor("the lease's end to wait for the fill", func() bool {
		return fx.s.sched.FillWaiting() == 1 || !fx.job().State.Active()
	})
	if j := fx.job(); !j.State.Active() {
		t.Fatalf("lost before the fill: %s, log %d bytes (%s)", j.State, j.LogBytes, j.Reason)
	}
	close(gate)
	fx.waitFor("the attempt's loss", func() bool { return !fx.job().State.Active() })
	j := fx.job()
	if a := j.Attempts[0]; a.Outcome != store.OutcomeLost || j.LogBytes != 30 || a.OutputBytes != 30 {
		t.Fatalf("lost attempt: %q, log %d, attempt %d bytes; want lost at 30", a.Outcome, j.LogBytes, a.OutputBytes)
	}
	if got := fx.getLog("0"); got != "0123456789abcdefghijABCDEFGHIJ" {
		t.Errorf("stored log %q, want the 30 acknowledged bytes", got)
	}
}

// TestLeaderServesOnlyDurableOutput: the leader serves a running
// attempt's output only as far as a quorum holds it (the scheduler's
// count): while its one follower withholds its acks (its syncs wait),
// a GET and a WebSocket follow stop at the durable end although the
// leader stored more; once the follower acks, the follow gets the rest
// at once. When the attempt is then lost with a tail no quorum holds,
// what the follow had read is byte for byte the stored log: no client
// could have read bytes that the loss cut off (and that the next
// attempt would write over).
func TestLeaderServesOnlyDurableOutput(t *testing.T) {
	ten := []store.Chunk{chunkAt(0, "0123456789")}
	fx := newFillFixture(t, ten, ten, nil)
	fx.waitFor("the inherited attempt's fill", func() bool { return fx.getLog("0") == "0123456789" })
	release := fx.rep.hold()
	defer release()
	appendOut := func(off uint64, data string) {
		t.Helper()
		if _, stale, err := fx.s.outputAppend("a", 1, 1, off, 1, []byte(data)); err != nil || stale {
			t.Fatalf("outputAppend at %d: stale %v, %v", off, stale, err)
		}
	}
	appendOut(10, "abcdefghij")
	if chunks, err := fx.s.st.ReadLog(1, 0, 1<<10); err != nil || len(chunks) != 2 {
		t.Fatalf("the leader's store holds %d chunks (%v), want 2", len(chunks), err)
	}
	if got := fx.getLog("0"); got != "0123456789" {
		t.Fatalf("GET before a quorum holds the second chunk: %q", got)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fx.s.handleLogSocket(w, r, httprouter.Params{{Key: "id", Value: "1"}})
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/?format=text", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	var read strings.Builder
	next := func() string {
		t.Helper()
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("follow after %q: %v", read.String(), err)
		}
		read.Write(b)
		return string(b)
	}
	// Text messages carry all the output read at once: the stored tail
	// would be in the first.
	if m := next(); m != "0123456789" {
		t.Fatalf("the follow's first message %q, want only the durable 10 bytes", m)
	}
	release()
	if m := next(); m != "abcdefghij" {
		t.Fatalf("after the follower acked: %q", m)
	}

	release = fx.rep.hold()
	defer release()
	appendOut(20, "KLMNOPQRST")
	if got := fx.getLog("15"); got != "fghij" {
		t.Fatalf("GET from 15 with an unacknowledged tail: %q", got)
	}
	fx.clk.Advance(time.Hour) // the lease runs out: lost at its durable end
	fx.waitFor("the attempt's loss", func() bool { return !fx.job().State.Active() })
	if j := fx.job(); j.LogBytes != 20 {
		t.Fatalf("lost at %d, want the durable 20", j.LogBytes)
	}
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			break // the follow ends with the job
		}
		read.Write(b)
	}
	if got := fx.getLog("0"); got != read.String() || got != "0123456789abcdefghij" {
		t.Fatalf("stored log %q, the follow read %q: want both the 20 durable bytes", got, read.String())
	}
	if got := fx.getLog("20"); got != "" {
		t.Fatalf("resumed at 20: %q", got)
	}
}

// TestDialOutputFallsBack: the leader dials the output stream's current
// version and falls back to the first for a peer that speaks only that
// (an earlier release); a peer that speaks neither fails with the
// first error.
func TestDialOutputFallsBack(t *testing.T) {
	tests := map[string]struct {
		speaks  []string
		want    string // the protocol of the stream opened; "" for an error
		dialled int
	}{
		"current":         {speaks: []string{cluster.ALPNOutput, cluster.ALPNOutputV1}, want: cluster.ALPNOutput, dialled: 1},
		"earlier release": {speaks: []string{cluster.ALPNOutputV1}, want: cluster.ALPNOutputV1, dialled: 2},
		"down":            {dialled: 2},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dialled := 0
			dial := func(_ context.Context, addr, proto string) (net.Conn, error) {
				dialled++
				for _, p := range tt.speaks {
					if p == proto {
						a, b := net.Pipe()
						t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
						return protoConn{a, proto}, nil
					}
				}
				return nil, fmt.Errorf("%s does not speak %s", addr, proto)
			}
			c, err := dialOutput(context.Background(), dial, "peer:1")
			switch {
			case tt.want == "" && err == nil:
				t.Fatalf("opened %s, want an error", c.(protoConn).proto)
			case tt.want == "" && !strings.Contains(err.Error(), cluster.ALPNOutput):
				t.Errorf("error %v, want the current version's", err)
			case tt.want != "" && (err != nil || c.(protoConn).proto != tt.want):
				t.Fatalf("dialOutput: %v, %v; want %s", c, err, tt.want)
			}
			if dialled != tt.dialled {
				t.Errorf("dialled %d times, want %d", dialled, tt.dialled)
			}
		})
	}
}

// protoConn is a connection that says which protocol it was opened with.
type protoConn struct {
	net.Conn
	proto string
}
