package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// A cluster of controller nodes in this process, on loopback.
type nodeCluster struct {
	t      *testing.T
	dir    string // PKI
	cfgs   []controller.Config
	nodes  []*controller.Node
	stops  []context.CancelFunc
	dones  []chan error
	client *http.Client
	// before, if set, is called with each node before it runs.
	before func(i int, nd *controller.Node)
}

func startNodes(t *testing.T, n int) *nodeCluster {
	t.Helper()
	return startNodesWith(t, n, nil)
}

// startNodesWith is startNodes with set applied to each node's Config.
func startNodesWith(t *testing.T, n int, set func(*controller.Config)) *nodeCluster {
	t.Helper()
	return startNodesHooked(t, n, set, nil)
}

// startNodesHooked is startNodesWith with before called with each node
// before it runs (nodeCluster.before).
func startNodesHooked(t *testing.T, n int, set func(*controller.Config), before func(int, *controller.Node)) *nodeCluster {
	t.Helper()
	c := &nodeCluster{t: t, dir: newPKI(t), before: before}
	var join []string
	for i := range n {
		name := fmt.Sprintf("ctl-%d", i+1)
		if _, _, err := certs.IssueFiles(c.dir, certs.Request{Role: certs.RoleController, Name: name, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
			t.Fatal(err)
		}
		cfg := controller.Config{
			HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), name),
			TLS: files(c.dir, name), LeaseTTL: 3 * time.Second, KillGrace: 500 * time.Millisecond,
			BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
			ClusterAddr: freeAddr(t), BootstrapExpect: n,
			MetricsAddr: "127.0.0.1:0",
			// Slower elections than raft's defaults: this shared machine
			// runs the race detector on two cores.
			RaftMultiplier: 2,
		}
		if set != nil {
			set(&cfg)
		}
		join = append(join, cfg.ClusterAddr)
		c.cfgs = append(c.cfgs, cfg)
	}
	c.nodes = make([]*controller.Node, n)
	c.stops = make([]context.CancelFunc, n)
	c.dones = make([]chan error, n)
	for i := range c.cfgs {
		c.cfgs[i].Join = join
		c.start(i)
	}
	c.client = (&cluster{t: t, dir: c.dir}).httpClient("operator")
	t.Cleanup(func() {
		for i := range c.nodes {
			if c.stops[i] != nil {
				c.stop(i)
			}
		}
	})
	return c
}

// start starts node i (again, on the same addresses and data).
func (c *nodeCluster) start(i int) {
	c.t.Helper()
	cfg := c.cfgs[i]
	cfg.Logger = testLogger(c.t, filepath.Base(cfg.DataDir))
	nd, err := controller.NewNode(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.cfgs[i].HTTPAddr, c.cfgs[i].AgentAddr = nd.HTTPAddr(), nd.AgentAddr()
	if c.before != nil {
		c.before(i, nd)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.nodes[i], c.stops[i], c.dones[i] = nd, cancel, make(chan error, 1)
	go func() { c.dones[i] <- nd.Run(ctx) }()
}

// stop stops node i and waits for it.
func (c *nodeCluster) stop(i int) {
	c.t.Helper()
	c.stops[i]()
	c.stops[i] = nil
	if err := <-c.dones[i]; err != nil {
		c.t.Errorf("node %d Run: %v", i, err)
	}
}

// leader waits until exactly one running node leads and returns it.
func (c *nodeCluster) leader() int {
	c.t.Helper()
	lead := -1
	(&cluster{t: c.t}).waitFor("a leader", func() bool {
		lead = -1
		for i, nd := range c.nodes {
			if c.stops[i] != nil && nd.Leading() {
				if lead >= 0 {
					return false
				}
				lead = i
			}
		}
		return lead >= 0
	})
	return lead
}

// leadBy restarts the leader until node i leads (elections pick at
// random: a few rounds).
func (c *nodeCluster) leadBy(i int) {
	c.t.Helper()
	for range 20 {
		lead := c.leader()
		if lead == i {
			return
		}
		c.stop(lead)
		c.start(lead)
	}
	c.t.Fatalf("ctl-%d did not win an election in 20", i+1)
}

// other returns a running node that is not i.
func (c *nodeCluster) other(i int) int {
	for j := range c.nodes {
		if j != i && c.stops[j] != nil {
			return j
		}
	}
	c.t.Fatal("no other node runs")
	return -1
}

func (c *nodeCluster) url(i int, path string) string {
	return "https://" + c.cfgs[i].HTTPAddr + path
}

// TestClusterForwardsAndFailsOver: three controller nodes form a
// cluster by themselves; a job submitted through a follower is
// forwarded to the leader, runs on an agent and reads the same on
// every node; after the leader stops, another node leads with every
// acknowledged job, and new jobs run there.
func TestClusterForwardsAndFailsOver(t *testing.T) {
	c := startNodes(t, 3)
	lead := c.leader()
	fol := c.other(lead)

	a := startClusterAgent(t, c, "agent-1", c.cfgs[lead].AgentAddr)
	code, body := doWith(t, c.client, "POST", c.url(fol, "/jobs"), `{"name":"one","command":"echo via-follower","idempotency_key":"k1"}`)
	if code != 201 {
		t.Fatalf("POST /jobs on a follower: %d %s", code, body)
	}
	var j job
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	done := waitNodeState(t, c, fol, j.JobID, "completed")
	if len(done.Attempts) != 1 || done.Attempts[0].Agent != "agent-1" {
		t.Fatalf("job ran as %+v", done.Attempts)
	}
	for i := range c.nodes {
		if code, b := doWith(t, c.client, "GET", c.url(i, fmt.Sprintf("/jobs/%d/logs", j.JobID)), ""); code != 200 || string(b) != "via-follower\n" {
			t.Fatalf("logs on node %d: %d %q", i, code, b)
		}
	}

	// A live log through a follower: the WebSocket is forwarded too.
	gate := filepath.Join(t.TempDir(), "gate")
	code, body = doWith(t, c.client, "POST", c.url(fol, "/jobs"), fmt.Sprintf(`{"command":"echo first; while [ ! -e %s ]; do sleep 0.05; done; echo second"}`, gate))
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var live job
	_ = json.Unmarshal(body, &live)
	pool, cert, err := files(c.dir, "operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"), HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(fmt.Sprintf("wss://%s/ws/jobs/%d/logs", c.cfgs[fol].HTTPAddr, live.JobID), nil)
	if err != nil {
		t.Fatalf("log WebSocket through a follower: %v", err)
	}
	defer ws.Close()
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "first\n" {
		t.Fatalf("first message %q, %v", msg, err)
	}
	waitNodeState(t, c, fol, live.JobID, "running")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "second\n" {
		t.Fatalf("second message %q, %v", msg, err)
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the job ended: %v", err)
	}

	// Who may do what is decided as if the caller came directly.
	viewer := (&cluster{t: t, dir: c.dir}).httpClient("viewer")
	if code, b := doWith(t, viewer, "POST", c.url(fol, "/jobs"), `{"command":"true"}`); code != http.StatusForbidden {
		t.Fatalf("viewer POST through a follower: %d %s", code, b)
	}
	anon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: viewer.Transport.(*http.Transport).TLSClientConfig.Clone()}}
	anon.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	if code, b := doWith(t, anon, "GET", c.url(fol, "/jobs"), ""); code != http.StatusUnauthorized {
		t.Fatalf("no credentials through a follower: %d %s", code, b)
	}
	// Forwarding headers from a client are not believed.
	req, _ := http.NewRequest("GET", c.url(lead, "/jobs"), nil)
	req.Header.Set("Jobsuite-Forwarded-By", "ctl-2")
	if resp, err := viewer.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forwarding headers from a viewer: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Every member answers for itself; the figures are the leader's.
	ms := nodeMembers(t, c, fol)
	if len(ms) != 3 {
		t.Fatalf("members: %+v", ms)
	}
	leaders := 0
	for _, m := range ms {
		if m.Role == "leader" {
			leaders++
			if m.ID != fmt.Sprintf("ctl-%d", lead+1) || m.APIAddr != c.cfgs[lead].HTTPAddr {
				t.Fatalf("leader is %+v, want ctl-%d at %s", m, lead+1, c.cfgs[lead].HTTPAddr)
			}
		}
		if !m.Voter || m.AppliedIndex == 0 {
			t.Fatalf("member %+v", m)
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders in %+v", leaders, ms)
	}
	if code, b := doWith(t, c.client, "GET", c.url(fol, "/metrics"), ""); code != 200 || !strings.Contains(string(b), "jobsuite_cluster_leader 1") || !strings.Contains(string(b), "jobsuite_cluster_voters 3") {
		t.Fatalf("metrics through a follower: %d, leader/voters series missing", code)
	}
	// The plain-HTTP listener answers for its own node: the leader with
	// its term's job series, a follower with its raft figures only.
	for i, want := range map[int][]string{lead: {"jobsuite_cluster_leader 1", "jobsuite_submissions_total", "jobsuite_cluster_voters 3"}, fol: {"jobsuite_cluster_leader 0", "jobsuite_cluster_voters 3", "jobsuite_cluster_last_contact_seconds ", "go_goroutines"}} {
		resp, err := http.Get("http://" + c.nodes[i].MetricsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range want {
			if resp.StatusCode != 200 || !strings.Contains(string(b), w) {
				t.Fatalf("plain metrics of node %d: %d, %q missing", i, resp.StatusCode, w)
			}
		}
		if i == lead && strings.Contains(string(b), "jobsuite_cluster_last_contact_seconds ") {
			t.Fatalf("the leader reports a last contact with itself")
		}
		if i == fol && strings.Contains(string(b), "jobsuite_submissions_total") {
			t.Fatalf("a follower's plain metrics show job series: they are the leader's")
		}
	}

	// Agents: the leader welcomes with its term and the members' agent
	// addresses; a follower redirects an agent that follows redirects
	// to the leader, and tells an older one why it refuses.
	(&cluster{t: t}).waitFor("the leader's welcome with its term and every member", func() bool {
		welcome, sess := agentHello(t, c, c.cfgs[lead].AgentAddr, protocol.FeatureRedirect)
		sess.Close("checked") // a fake agent must not be given jobs
		w, ok := welcome.(*protocol.Welcome)
		if !ok || w.Term == 0 {
			t.Fatalf("the leader's answer to a hello: %#v", welcome)
		}
		return len(w.Members) == 3 && slices.Contains(w.Members, c.cfgs[fol].AgentAddr)
	})
	// (A node learns the others' addresses in the background.)
	(&cluster{t: t}).waitFor("a follower's redirect to the leader, with every member", func() bool {
		redirect, _ := agentHello(t, c, c.cfgs[fol].AgentAddr, protocol.FeatureRedirect)
		r, ok := redirect.(*protocol.Redirect)
		if !ok {
			t.Fatalf("a follower's answer to a hello: %#v", redirect)
		}
		return r.Leader == c.cfgs[lead].AgentAddr && len(r.Members) == 3
	})
	refusal, _ := agentHello(t, c, c.cfgs[fol].AgentAddr, 0)
	if e, ok := refusal.(*protocol.Error); !ok || e.Code != protocol.CodeShutdown || !strings.Contains(e.Message, c.cfgs[lead].AgentAddr) {
		t.Fatalf("a follower's answer to an older agent's hello: %#v", refusal)
	}

	// The leader goes away; the others elect one that has every job.
	a.stop()
	c.stop(lead)
	lead2 := c.leader()
	if lead2 == lead {
		t.Fatal("the stopped node leads")
	}
	fol2 := c.other(lead2)
	got := nodeJob(t, c, fol2, j.JobID)
	if got.Status != "completed" || len(got.Attempts) != 1 {
		t.Fatalf("after failover the job is %s with %d attempts", got.Status, len(got.Attempts))
	}
	// A retried submission with the same key is the same job.
	code, body = doWith(t, c.client, "POST", c.url(fol2, "/jobs"), `{"name":"one","command":"echo via-follower","idempotency_key":"k1"}`)
	if code != 200 && code != 201 {
		t.Fatalf("resubmit: %d %s", code, body)
	}
	var again job
	_ = json.Unmarshal(body, &again)
	if again.JobID != j.JobID {
		t.Fatalf("resubmitted job is %d, want %d", again.JobID, j.JobID)
	}
	startClusterAgent(t, c, "agent-2", c.cfgs[lead2].AgentAddr)
	code, body = doWith(t, c.client, "POST", c.url(fol2, "/jobs"), `{"command":"echo after-failover"}`)
	if code != 201 {
		t.Fatalf("POST after failover: %d %s", code, body)
	}
	var j2 job
	_ = json.Unmarshal(body, &j2)
	if j2.JobID <= j.JobID {
		t.Fatalf("job ID %d after %d: IDs must keep growing across leaders", j2.JobID, j.JobID)
	}
	waitNodeState(t, c, lead2, j2.JobID, "completed")

	// While it is down it is listed as unreachable.
	unreachable := false
	for _, m := range nodeMembers(t, c, lead2) {
		unreachable = unreachable || (m.ID == fmt.Sprintf("ctl-%d", lead+1) && m.Role == "unreachable" && m.Error != "")
	}
	if !unreachable {
		t.Fatal("the stopped node is not listed as unreachable")
	}

	// The stopped node comes back as a follower and catches up.
	c.start(lead)
	(&cluster{t: t}).waitFor("the restarted node to serve the new job", func() bool {
		code, b := doWith(t, c.client, "GET", c.url(lead, fmt.Sprintf("/jobs/%d", j2.JobID)), "")
		return code == 200 && strings.Contains(string(b), `"completed"`)
	})

	// remove-peer: the leader refuses to remove itself, an unknown ID is
	// 404, a follower is removed (and stopped: it is gone for good).
	self := fmt.Sprintf("ctl-%d", c.leader()+1)
	if code, b := doWith(t, c.client, "DELETE", c.url(lead, "/operator/members/"+self), ""); code != http.StatusConflict {
		t.Fatalf("removing the leader: %d %s", code, b)
	}
	if code, b := doWith(t, c.client, "DELETE", c.url(lead, "/operator/members/ctl-9"), ""); code != http.StatusNotFound {
		t.Fatalf("removing an unknown member: %d %s", code, b)
	}
	if code, b := doWith(t, viewer, "DELETE", c.url(lead, "/operator/members/ctl-9"), ""); code != http.StatusForbidden {
		t.Fatalf("viewer removing a member: %d %s", code, b)
	}
	gone := c.other(c.leader())
	c.stop(gone)
	if code, b := doWith(t, c.client, "DELETE", c.url(c.leader(), fmt.Sprintf("/operator/members/ctl-%d", gone+1)), ""); code != 200 {
		t.Fatalf("remove-peer: %d %s", code, b)
	}
	if ms := nodeMembers(t, c, c.leader()); len(ms) != 2 {
		t.Fatalf("after remove-peer: %+v", ms)
	}
}

func nodeMembers(t *testing.T, c *nodeCluster, i int) []api.Member {
	t.Helper()
	code, b := doWith(t, c.client, "GET", c.url(i, "/operator/members"), "")
	if code != 200 {
		t.Fatalf("members on node %d: %d %s", i, code, b)
	}
	var ms []api.Member
	if err := json.Unmarshal(b, &ms); err != nil {
		t.Fatal(err)
	}
	return ms
}

// agentHello says hello to the controller at addr as agent-3 and
// returns its answer.
func agentHello(t *testing.T, c *nodeCluster, addr string, features protocol.Features) (protocol.Message, transport.Session) {
	t.Helper()
	sess := dialAgent3(t, c, addr)
	m, _, _, err := controlReply(sess, &protocol.Hello{Version: protocol.Version, Name: "agent-3", Slots: 1, Features: features})
	if err != nil {
		t.Fatalf("hello to %s: %v", addr, err)
	}
	return m, sess
}

// dialAgent3 opens a QUIC session with the controller at addr as
// agent-3, closed when the test ends.
func dialAgent3(t *testing.T, c *nodeCluster, addr string) transport.Session {
	t.Helper()
	pool, kp, err := files(c.dir, "agent-3").Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := transport.Dial(ctx, addr, certs.ClientTLS(pool, kp, "127.0.0.1"), transport.ModeQUIC, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close("test over") })
	return sess
}

type clusterAgent struct{ stop func() }

// startClusterAgent runs an agent dialling addr.
func startClusterAgent(t *testing.T, c *nodeCluster, name, addr string) clusterAgent {
	t.Helper()
	return startClusterAgentWith(t, c, name, addr, nil)
}

// startClusterAgentWith is startClusterAgent with set applied to the
// agent's configuration.
func startClusterAgentWith(t *testing.T, c *nodeCluster, name, addr string, set func(*agent.Config)) clusterAgent {
	t.Helper()
	cfg := agent.Config{
		Controller: addr, TLS: files(c.dir, name), Slots: 2, Transport: transport.ModeQUIC,
		Logger: testLogger(t, name), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		StateDir: t.TempDir(),
	}
	if set != nil {
		set(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent %s: %v", name, err)
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	(&cluster{t: t}).waitFor("agent "+name+" connected", func() bool {
		code, b := doWith(t, c.client, "GET", c.url(c.leader(), "/agents"), "")
		if code != 200 {
			return false
		}
		var agents []api.AgentInfo
		_ = json.Unmarshal(b, &agents)
		for _, ag := range agents {
			if ag.Name == name {
				return true
			}
		}
		return false
	})
	return clusterAgent{stop: stop}
}

func nodeJob(t *testing.T, c *nodeCluster, i int, id uint64) job {
	t.Helper()
	code, b := doWith(t, c.client, "GET", c.url(i, fmt.Sprintf("/jobs/%d", id)), "")
	if code != 200 {
		t.Fatalf("GET job %d on node %d: %d %s", id, i, code, b)
	}
	var j job
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	return j
}

func waitNodeState(t *testing.T, c *nodeCluster, i int, id uint64, state string) job {
	t.Helper()
	var j job
	(&cluster{t: t}).waitFor(fmt.Sprintf("job %d %s", id, state), func() bool {
		j = nodeJob(t, c, i, id)
		return j.Status == state
	})
	return j
}

// TestSingleControllerMembers: a single controller is a cluster of one
// to the operator commands.
func TestSingleControllerMembers(t *testing.T) {
	c := startCluster(t)
	var ms []api.Member
	c.getJSON("/operator/members", &ms)
	if len(ms) != 1 || ms[0].ID != "controller" || ms[0].Role != "leader" || !ms[0].Voter ||
		ms[0].APIAddr != c.srv.HTTPAddr() || ms[0].AgentAddr != c.srv.AgentAddr() {
		t.Fatalf("members: %+v; want the controller at its bound addresses %s, %s", ms, c.srv.HTTPAddr(), c.srv.AgentAddr())
	}
	if code, b := c.do("DELETE", "/operator/members/controller", ""); code != http.StatusConflict {
		t.Fatalf("remove-peer on a single controller: %d %s", code, b)
	}
	if code, b := c.do("POST", "/operator/transfer-leadership", ""); code != http.StatusConflict {
		t.Fatalf("transfer-leadership on a single controller: %d %s", code, b)
	}
	if code, b := c.do("GET", "/metrics", ""); code != 200 || strings.Contains(string(b), "jobsuite_cluster_") {
		t.Fatalf("a single controller's metrics: %d, cluster series present: %v", code, strings.Contains(string(b), "jobsuite_cluster_"))
	}
}

// TestNodeConfigRefusals: settings a cluster node cannot honour are
// refused with a clear error, before anything is opened.
func TestNodeConfigRefusals(t *testing.T) {
	dir := newPKI(t)
	base := controller.Config{HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", TLS: files(dir, "controller"), ClusterAddr: "127.0.0.1:0", BootstrapExpect: 1}
	for name, tc := range map[string]struct {
		mod  func(*controller.Config)
		want string
	}{
		"wildcard cluster address": {func(c *controller.Config) { c.ClusterAddr = ":7444" }, "not a wildcard"},
		"two controllers":          {func(c *controller.Config) { c.BootstrapExpect = 2 }, "1, 3, 5 or 7"},
		"four controllers":         {func(c *controller.Config) { c.BootstrapExpect = 4 }, "1, 3, 5 or 7"},
		"nine controllers":         {func(c *controller.Config) { c.BootstrapExpect = 9 }, "1, 3, 5 or 7"},
		"expect without join":      {func(c *controller.Config) { c.BootstrapExpect = 3 }, "needs -join"},
		"no fsync":                 {func(c *controller.Config) { c.NoSync = true }, "fsync"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			cfg.DataDir = t.TempDir()
			tc.mod(&cfg)
			_, err := controller.NewNode(cfg)
			if err == nil || !errors.Is(err, controller.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewNode: %v; want ErrConfig saying %q", err, tc.want)
			}
		})
	}
	// A port that is taken is an error, not a panic (the cleanup once
	// read the nil Node a failed NewNode returns), and it leaves nothing
	// open: the data directory's lock is free for the next try.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := base
	busy.DataDir, busy.HTTPAddr = t.TempDir(), taken.Addr().String()
	for try := range 2 {
		if _, err := controller.NewNode(busy); err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("NewNode with its API port taken, try %d: %v; want the bind error", try+1, err)
		}
	}
	// A single controller's data directory is not a node's.
	c := startCluster(t)
	c.stopController()
	cfg := base
	cfg.DataDir = c.data
	if _, err := controller.NewNode(cfg); err == nil || !strings.Contains(err.Error(), "single controller") ||
		!strings.Contains(err.Error(), "operator snapshot save") || !strings.Contains(err.Error(), "operator snapshot restore -force") {
		t.Fatalf("NewNode on a single controller's data: %v", err)
	}
	c.startController() // for the cleanup
}

// TestFarewellRedirect: POST /operator/transfer-leadership hands the
// leadership on, and a leader that loses its leadership tells the
// agents that follow redirects where to go — a Redirect, the last
// message of the session, naming the members (and the new leader once
// it is known) — instead of only closing their sessions.
func TestFarewellRedirect(t *testing.T) {
	c := startNodes(t, 3)
	lead := c.leader()
	pool, kp, err := files(c.dir, "agent-3").Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := transport.Dial(ctx, c.cfgs[lead].AgentAddr, certs.ClientTLS(pool, kp, "127.0.0.1"), transport.ModeQUIC, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close("test over")
	m, r, w, err := controlReply(sess, &protocol.Hello{Version: protocol.Version, Name: "agent-3", Slots: 1, Features: protocol.FeatureRedirect})
	if err != nil {
		t.Fatal(err)
	}
	welcome, ok := m.(*protocol.Welcome)
	if !ok {
		t.Fatalf("hello to the leader: %#v", m)
	}
	go func() { // heartbeats, so the session outlives the lease
		tick := time.NewTicker(welcome.HeartbeatInterval)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-sess.Done():
				return
			case <-tick.C:
			}
			if w.Write(&protocol.Heartbeat{Seq: seq}) != nil {
				return
			}
		}
	}()
	// Through a follower, which forwards it to the leader.
	fol := (lead + 1) % 3
	code, b := doWith(t, c.client, "POST", c.url(fol, "/operator/transfer-leadership"), "")
	var moved struct{ From, To string }
	if err := json.Unmarshal(b, &moved); code != 200 || err != nil || moved.From != fmt.Sprintf("ctl-%d", lead+1) || moved.To == moved.From {
		t.Fatalf("transfer-leadership: %d %s", code, b)
	}
	for {
		m, err := r.Read()
		if err != nil {
			t.Fatalf("the session ended without a Redirect: %v", err)
		}
		rd, ok := m.(*protocol.Redirect)
		if !ok {
			continue // a status request, say
		}
		if len(rd.Members) != 3 {
			t.Fatalf("the farewell names members %v; want all three", rd.Members)
		}
		if rd.Leader != "" {
			next := slices.IndexFunc(c.cfgs, func(cfg controller.Config) bool { return cfg.AgentAddr == rd.Leader })
			if next < 0 || next == lead {
				t.Fatalf("the farewell names leader %q: not another member (%d)", rd.Leader, next)
			}
		}
		t.Logf("farewell: leader %q, members %v", rd.Leader, rd.Members)
		return
	}
}

// TestOrchestrationAcrossLeaders: a fan-out rolling one host at a time,
// with a webhook on its end, outlives a change of leader mid-rollout —
// the new leader goes on with the rollout from the replicated store
// (every child runs once, on its own host), and its webhook worker
// delivers the parent's end, signed with the replicated notify secret.
func TestOrchestrationAcrossLeaders(t *testing.T) {
	r := newHookReceiver(t, nil)
	c := startNodesWith(t, 3, r.notifyConfig)
	lead := c.leader()
	var addrs []string
	for _, cfg := range c.cfgs {
		addrs = append(addrs, cfg.AgentAddr)
	}
	for _, name := range []string{"agent-1", "agent-2"} {
		startClusterAgent(t, c, name, strings.Join(addrs, ","))
	}
	(&cluster{t: t}).waitFor("both agents at the leader", func() bool {
		var agents []api.AgentInfo
		code, b := doWith(t, c.client, "GET", c.url(lead, "/agents"), "")
		return code == 200 && json.Unmarshal(b, &agents) == nil && len(agents) == 2
	})
	code, b := doWith(t, c.client, "POST", c.url(lead, "/jobs"), fmt.Sprintf(
		`{"command": "sleep 0.5; echo on $JOBSUITE_AGENT", "fanout": {"all": true, "batch": 1}, "notify": [%q]}`, r.srv.URL+"/fan"))
	if code != 201 {
		t.Fatalf("fan-out: %d %s", code, b)
	}
	var parent struct {
		JobID    uint64 `json:"job_id"`
		Children []struct {
			JobID uint64 `json:"job_id"`
			Agent string `json:"agent"`
		} `json:"children"`
	}
	if err := json.Unmarshal(b, &parent); err != nil || len(parent.Children) != 2 {
		t.Fatalf("fan-out answer %s: %v", b, err)
	}
	waitNodeState(t, c, lead, parent.Children[0].JobID, "running")
	if err := c.nodes[lead].TransferLeadership(); err != nil {
		t.Fatal(err)
	}
	lead2 := -1
	(&cluster{t: t}).waitFor("another node to lead", func() bool {
		for i, nd := range c.nodes {
			if i != lead && nd.Leading() && !c.nodes[lead].Leading() {
				lead2 = i
				return true
			}
		}
		return false
	})
	waitNodeState(t, c, lead2, parent.JobID, "completed")
	for _, ch := range parent.Children {
		j := nodeJob(t, c, lead2, ch.JobID)
		if j.Status != "completed" || len(j.Attempts) != 1 || j.Attempts[0].Agent != ch.Agent {
			t.Errorf("child %d on %s: %s, attempts %+v; want completed once on its host", ch.JobID, ch.Agent, j.Status, j.Attempts)
		}
	}
	var sec api.NotifySecretView
	code, b = doWith(t, c.client, "GET", c.url(lead2, "/webhooks/secret"), "")
	if code != 200 || json.Unmarshal(b, &sec) != nil {
		t.Fatalf("notify secret: %d %s", code, b)
	}
	(&cluster{t: t}).waitFor("the parent's end delivered", func() bool { return len(r.requests("/fan")) > 0 })
	for _, q := range r.requests("/fan") {
		n := verifyDelivery(t, q, []byte(sec.Secret))
		if n.Event != api.EventJobFinished || n.Job.JobID != parent.JobID || n.Job.Status != "completed" {
			t.Errorf("delivery %+v; want the parent's end, completed", n)
		}
	}
}

// TestNoLeader503: with two of three controllers stopped, the third
// knows no leader. A write and a plain read through it wait a bounded
// time for one (leaderWait), then answer 503 with Retry-After and say
// why (a stale read answers from the node's own store for a while:
// node_stale_test.go). Once a second controller is back, the write
// retried with its idempotency key (what the CLI does) succeeds.
func TestNoLeader503(t *testing.T) {
	c := startNodes(t, 3)
	lead := c.leader()
	code, body := doWith(t, c.client, "POST", c.url(lead, "/jobs"), `{"command":"true","idempotency_key":"before"}`)
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var j job
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	keep := c.other(lead)
	stale := fmt.Sprintf("/jobs/%d?stale=1", j.JobID)
	(&cluster{t: t}).waitFor("the job on the node kept", func() bool {
		code, _ := doWith(t, c.client, "GET", c.url(keep, stale), "")
		return code == 200
	})
	for i := range c.nodes {
		if i != keep {
			c.stop(i)
		}
	}
	write := `{"command":"true","idempotency_key":"during"}`
	do := func(method, path, body string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequest(method, c.url(keep, path), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
	}
	// Until raft on the node kept gives up on the old leader, requests
	// may still go its way; then every one is a 503.
	(&cluster{t: t}).waitFor("a 503 for a write", func() bool {
		code, _, _ := do("POST", "/jobs", write)
		return code == http.StatusServiceUnavailable
	})
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/jobs", write},
		{"GET", fmt.Sprintf("/jobs/%d", j.JobID), ""},
	} {
		code, retry, b := do(r.method, r.path, r.body)
		if code != http.StatusServiceUnavailable || retry == "" || !strings.Contains(b, "no leader") {
			t.Errorf("%s %s with no leader: %d, Retry-After %q, %s; want 503 with Retry-After saying there is no leader", r.method, r.path, code, retry, b)
		}
	}

	c.start((keep + 1) % len(c.nodes))
	var after job
	(&cluster{t: t}).waitFor("the write to succeed once a quorum is back", func() bool {
		code, _, b := do("POST", "/jobs", write)
		return (code == 201 || code == 200) && json.Unmarshal([]byte(b), &after) == nil
	})
	code, _, b := do("POST", "/jobs", write)
	var again job
	if code != 200 || json.Unmarshal([]byte(b), &again) != nil || again.JobID != after.JobID {
		t.Errorf("the write retried with its key: %d %s; want 200 and job %d", code, b, after.JobID)
	}
}
