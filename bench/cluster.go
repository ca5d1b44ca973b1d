package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"jobsuite/certs"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// The cluster group (issue 14, rows 9a–9h and 9p): three controllers in
// cluster mode on this machine. Rows 9a, 9b, 9c and 9g run the nodes as
// benchmark children (controller.NewNode in a process of its own, so
// -cpuprofile profiles each node); rows 9e and 9f run the built
// jobsuite binary, as an operator would, and kill its leader with
// SIGKILL. Rows 9h and 9p (raftalone.go) and 9d (clusterlog.go)
// measure the output path.

// clusterSize is how many controllers the cluster rows run.
const clusterSize = 3

// raftCluster is three controller children forming one cluster.
type raftCluster struct {
	e      *env
	name   string
	nodes  []*proc
	apis   []*api
	ids    []string // node IDs (certificate names), by index
	leader int
}

// nodeName is the certificate name, and so the node ID, of the i-th
// cluster node (from 1).
func nodeName(i int) string { return fmt.Sprintf("ctl-%d", i) }

// clusterCerts issues the cluster nodes' controller certificates once.
func (e *env) clusterCerts() error {
	for i := 1; i <= clusterSize; i++ {
		if _, err := os.Stat(certs.CertFile(e.pki.dir, nodeName(i))); err == nil {
			continue
		}
		if _, _, err := certs.IssueFiles(e.pki.dir, certs.Request{Role: certs.RoleController, Name: nodeName(i), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
			return err
		}
	}
	return nil
}

// freeTCP returns n loopback addresses free on TCP right now (held
// until all are found, so they differ).
func freeTCP(n int) ([]string, error) {
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// freeTCPUDP returns a loopback address free on both TCP and UDP (an
// agent port serves QUIC and TCP on the same number).
func freeTCPUDP() (string, error) {
	for range 50 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := tl.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr, nil
	}
	return "", errors.New("no port free on both TCP and UDP")
}

// startRaftCluster starts three cluster-node children with fresh data
// directories under Dir/name and waits until one leads and accepts a
// submit.
func (e *env) startRaftCluster(ctx context.Context, name string) (*raftCluster, error) {
	return e.startRaftClusterWith(ctx, name, 1)
}

// startRaftClusterWith is startRaftCluster with the nodes'
// -raft-multiplier.
func (e *env) startRaftClusterWith(ctx context.Context, name string, multiplier int) (*raftCluster, error) {
	if err := e.clusterCerts(); err != nil {
		return nil, err
	}
	base, err := scratch(e.dir, name)
	if err != nil {
		return nil, err
	}
	join, err := freeTCP(clusterSize)
	if err != nil {
		return nil, err
	}
	c := &raftCluster{e: e, name: name}
	for i := 1; i <= clusterSize; i++ {
		id := nodeName(i)
		cfg := childConfig{Mode: "controller", PKI: e.pki.dir, Name: id, Data: filepath.Join(base, id),
			Log: filepath.Join(base, id+".log"), LogLevel: e.cfg.LogLevel,
			ClusterAddr: join[i-1], Join: join, Expect: clusterSize, RaftMultiplier: multiplier, OutputInRaft: e.outputInRaft}
		if e.cfg.ProfileDir != "" {
			cfg.Profile = filepath.Join(e.cfg.ProfileDir, name+"-"+id+".pprof")
		}
		p, err := startChild(ctx, cfg, 5*time.Minute)
		if err != nil {
			c.close()
			return nil, err
		}
		c.nodes = append(c.nodes, p)
		c.apis = append(c.apis, newAPI(e.pki, p.info.HTTP, 128))
		c.ids = append(c.ids, id)
	}
	if c.leader, err = findLeader(ctx, c.apis, c.ids, -1, time.Minute); err != nil {
		c.close()
		return nil, err
	}
	if err := warmSubmit(ctx, c.apis[c.leader], time.Minute); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// fill queues n `true` jobs by batches of per through any node that
// answers; a refused batch (503 while leadership changes on a loaded
// machine) is sent again after a pause, to another node.
func (c *raftCluster) fill(ctx context.Context, n, per int) error {
	body := batchBody(trueJob, per)
	queued, refused := 0, 0
	for k := c.leader; queued < n; k++ {
		b := body
		if n-queued < per {
			b = batchBody(trueJob, n-queued)
		}
		ids, err := c.apis[k%len(c.apis)].batch(ctx, b)
		if err != nil {
			if refused++; refused > 100 {
				return fmt.Errorf("queueing %d jobs: %d batches refused, the last: %w", n, refused, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		queued += len(ids)
		k-- // stay with a node that answers
	}
	return nil
}

// follower returns the index of a node that does not lead.
func (c *raftCluster) follower() int { return (c.leader + 1) % len(c.nodes) }

func (c *raftCluster) close() {
	for _, a := range c.apis {
		a.close()
	}
	for _, p := range c.nodes {
		_ = p.stop()
	}
}

// cpuMeter is cluster.cpuMeter for three controllers: the leader's CPU
// per job, the followers' together, and this process's.
func (c *raftCluster) cpuMeter() func(jobs float64) string {
	cpus := func() (lead, rest time.Duration) {
		for i, p := range c.nodes {
			if i == c.leader {
				lead += p.cpu()
			} else {
				rest += p.cpu()
			}
		}
		return lead, rest
	}
	l0, r0 := cpus()
	self0, t0 := selfCPU(), time.Now()
	return func(jobs float64) string {
		l, r := cpus()
		l, r = l-l0, r-r0
		self, wall := selfCPU()-self0, time.Since(t0)
		return fmt.Sprintf("CPU per job: leader %.0f µs, the two followers %.0f µs, clients %.0f µs (%.2f of %d cores busy)",
			float64(l.Microseconds())/jobs, float64(r.Microseconds())/jobs, float64(self.Microseconds())/jobs,
			(l+r+self).Seconds()/wall.Seconds(), runtime.NumCPU())
	}
}

// member is the part of GET /operator/members the benchmark reads.
type member struct {
	ID   string `json:"id"`
	Role string `json:"role"`
}

// findLeader asks the nodes (all but skip) for the members until one
// names a leader among them, and returns its index.
func findLeader(ctx context.Context, apis []*api, ids []string, skip int, within time.Duration) (int, error) {
	leader := -1
	err := poll(ctx, within, func() (bool, error) {
		for i, a := range apis {
			if i == skip {
				continue
			}
			var ms []member
			if err := a.getJSON(ctx, "/operator/members", &ms); err != nil {
				continue
			}
			for _, m := range ms {
				if m.Role != "leader" {
					continue
				}
				if k := slices.Index(ids, m.ID); k >= 0 && k != skip {
					leader = k
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return -1, fmt.Errorf("no leader: %w", err)
	}
	return leader, nil
}

// warmSubmit submits one job until the cluster accepts it.
func warmSubmit(ctx context.Context, a *api, within time.Duration) error {
	return poll(ctx, within, func() (bool, error) {
		_, err := a.submit(ctx, []byte(trueJob))
		return err == nil, nil
	})
}

// loadNote is the load average, for a row's detail.
func loadNote() string { return "load average " + loadAvg() + " at the row's end" }

func (e *env) cluster(ctx context.Context) {
	e.clusterSubmit(ctx)
	e.clusterCapacity(ctx)
	e.failover(ctx, transport.ModeQUIC, "")
	e.failover(ctx, transport.ModeTCP, "-tcp")
	e.clusterOutput(ctx)
}

// clusterOutput measures what issue 14's output decision rests on, in
// one run: the raft layer alone (9h), the prototype of a separate
// output channel (9p), and the 1 GiB log stream through a cluster (9d),
// whose limit is 9h's figure for the real FSM.
func (e *env) clusterOutput(ctx context.Context) {
	limits := e.raftAlone(ctx)
	e.clusterLog(ctx, limits[256<<10], 1)
	e.clusterLog(ctx, limits[256<<10], 2)
}

// clusterSubmit measures rows 9a, 9g and 9b on one cluster.
func (e *env) clusterSubmit(ctx context.Context) {
	clients := slices.Max(e.sz.Clients)
	name9a := fmt.Sprintf("cluster of %d: durable submit, POST /jobs to the leader, %d keep-alive clients", clusterSize, clients)
	name9g := fmt.Sprintf("cluster of %d: durable submit, POST /jobs through a follower, %d keep-alive clients", clusterSize, clients)
	name9b := fmt.Sprintf("cluster of %d: POST /jobs/batch to the leader, %d jobs per request, %d clients", clusterSize, e.sz.BatchSize, e.sz.BatchClients)
	fail := func(err error) {
		e.fail("9a", name9a, err)
		e.fail("9g", name9g, err)
		e.fail("9b", name9b, err)
	}
	rate, _, err := e.fsync()
	if err != nil {
		fail(err)
		return
	}
	limit, _, err := e.pebbleRate(clients, 1)
	if err != nil {
		fail(err)
		return
	}
	c, err := e.startRaftCluster(ctx, "cluster-submit")
	if err != nil {
		fail(err)
		return
	}
	defer c.close()
	for _, row := range []struct {
		id, name string
		node     int
	}{{"9a", name9a, c.leader}, {"9g", name9g, c.follower()}} {
		cpu := c.cpuMeter()
		got, err := submitLoad(ctx, newAPI(e.pki, c.nodes[row.node].info.HTTP, clients), clients, e.sz.Phase, false, 1)
		if err != nil {
			e.fail(row.id, row.name, err)
			continue
		}
		r := Row{ID: row.id, Name: row.name, Value: got, Unit: "jobs/s",
			Detail: fmt.Sprintf("%.2f× the disk's %s fdatasync/s; %s; %s", got/rate, num(rate), cpu(got*e.sz.Phase.Seconds()), loadNote()),
			Limit:  limit, LimitUnit: "jobs/s", LimitName: fmt.Sprintf("Pebble synced Apply, %d writer(s) × 1 job, one store", clients)}
		if row.id == "9a" {
			r.Target, r.Verdict = "≥ 10,000 jobs/s at 64 clients", atLeast(got, 10000, "jobs/s")
		} else {
			r.Target, r.Verdict = "report (forwarding cost)", "reported"
		}
		e.add(r)
	}
	blimit, _, err := e.pebbleRate(e.sz.BatchClients, e.sz.BatchSize)
	if err != nil {
		e.fail("9b", name9b, err)
		return
	}
	cpu := c.cpuMeter()
	got, err := submitLoad(ctx, newAPI(e.pki, c.nodes[c.leader].info.HTTP, e.sz.BatchClients), e.sz.BatchClients, e.sz.Phase, true, e.sz.BatchSize)
	if err != nil {
		e.fail("9b", name9b, err)
		return
	}
	e.add(Row{ID: "9b", Name: name9b, Value: got, Unit: "jobs/s",
		Detail: fmt.Sprintf("%s requests/s; %s; %s", num(got/float64(e.sz.BatchSize)), cpu(got*e.sz.Phase.Seconds()), loadNote()),
		Limit:  blimit, LimitUnit: "jobs/s", LimitName: fmt.Sprintf("Pebble synced Apply, %d writers × %d jobs, one store", e.sz.BatchClients, e.sz.BatchSize),
		Target: "≥ 60,000 jobs/s batched", Verdict: atLeast(got, 60000, "jobs/s")})
}

// clusterCapacity measures row 9c: jobs queued by batch on a fresh
// cluster, burned down by fake agents connected to the leader.
func (e *env) clusterCapacity(ctx context.Context) {
	mode := transport.ModeQUIC
	name := fmt.Sprintf("cluster of %d: burn-down of %s queued jobs by %d fake agents × %d slots (%s) at the leader",
		clusterSize, count(e.sz.BurnDown), e.sz.FakeAgents, e.sz.FakeSlots, mode)
	id := "9c"
	if e.outputInRaft {
		id += "-raft"
		name += ", -output-channel=false (output in the raft rounds)"
	}
	limit, _, err := e.pebbleRate(e.sz.BatchClients, e.sz.BatchSize)
	if err != nil {
		e.fail(id, name, err)
		return
	}
	c, err := e.startRaftCluster(ctx, "cluster-capacity")
	if err != nil {
		e.fail(id, name, err)
		return
	}
	defer c.close()
	t := time.Now()
	if err := c.fill(ctx, e.sz.BurnDown, e.sz.BatchSize); err != nil {
		e.fail(id, name, err)
		return
	}
	load := time.Since(t)
	// The fake agents dial the leader of now.
	if c.leader, err = findLeader(ctx, c.apis, c.ids, -1, time.Minute); err != nil {
		e.fail(id, name, err)
		return
	}
	// The warm-up job is queued too: one more to burn down.
	goal := e.sz.BurnDown + 1
	cnt := newCounter(goal)
	cpu := c.cpuMeter()
	start := time.Now()
	fl, err := dialFleet(ctx, e.pki, c.nodes[c.leader].info.Agent, mode, "cluster-capacity", e.sz.FakeAgents, e.sz.FakeSlots, e.sz.FakeAgents, true,
		fakeHooks{done: func(*protocol.Dispatch, protocol.Outcome) { cnt.add() }})
	if err != nil {
		e.fail(id, name, err)
		return
	}
	defer fl.close()
	if err := cnt.wait(ctx, burnWithin(goal)); err != nil {
		e.fail(id, name, err)
		return
	}
	took := time.Since(start)
	n := float64(goal)
	got := n / took.Seconds()
	e.add(Row{ID: id, Name: name, Value: got, Unit: "jobs/s",
		Detail: fmt.Sprintf("dispatched, started and completed durably (each committed on a quorum) in %s; %s; queue filled by batch at %s jobs/s; %s",
			took.Round(time.Millisecond), cpu(n), num(n/load.Seconds()), loadNote()),
		Limit: limit / 3, LimitUnit: "jobs/s", LimitName: "Pebble batched Apply rate ÷ 3 synced transitions per job, one store",
		Target: "≥ 10,000 jobs/s", Verdict: atLeast(got, 10000, "jobs/s")})
}

// ---------------------------------------------------------------------
// 9e, 9f: failover with the built binary

// binNode is a jobsuite controller process (the built binary) of the
// failover cluster.
type binNode struct {
	id, dir            string
	args               []string
	http, agent, clust string
	api                *api
	starts             int

	cmd    *exec.Cmd
	exited chan struct{}
}

func (n *binNode) start(bin string) error {
	n.starts++
	logf, err := os.OpenFile(filepath.Join(n.dir, fmt.Sprintf("controller-%d.log", n.starts)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	n.cmd = exec.Command(bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return err
	}
	n.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(n.cmd, n.exited)
	return nil
}

// exitedNodes names the nodes whose process has ended, with the last
// line of each one's log, for the error of a row that found no leader
// (a controller that could not start — its port taken between the
// bench choosing it and the start — leaves two that wait for a third).
func exitedNodes(nodes []*binNode) string {
	var b strings.Builder
	for _, n := range nodes {
		if n.exited == nil {
			continue
		}
		select {
		case <-n.exited:
		default:
			continue
		}
		last := "(no log)"
		if data, err := os.ReadFile(filepath.Join(n.dir, fmt.Sprintf("controller-%d.log", n.starts))); err == nil {
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			last = lines[len(lines)-1]
		}
		fmt.Fprintf(&b, "; %s exited (%s): %s", n.id, n.cmd.ProcessState, last)
	}
	return b.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *binNode) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
}

// stop asks for a clean stop (SIGTERM), then kills after 30 s.
func (n *binNode) stop() {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		n.kill()
	}
}

// jobsuiteBinary returns Config.Jobsuite, or builds the jobsuite
// command into dir (the benchmark runs inside the module, as make
// bench does).
func (e *env) jobsuiteBinary(ctx context.Context) (string, error) {
	if e.cfg.Jobsuite != "" {
		return filepath.Abs(e.cfg.Jobsuite)
	}
	bin := filepath.Join(e.dir, "jobsuite")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "jobsuite").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build jobsuite (run the benchmark inside the module, or give -jobsuite): %v: %s", err, out)
	}
	return bin, nil
}

// failover measures rows 9e and 9f: three jobsuite controller processes
// and real agents that know all three, a light submit load through the
// live nodes, and the leader killed with SIGKILL FaultKills times (and
// started again after each measurement).
//
// The agents use transport mode; suffix is added to the rows' IDs and
// to the scratch directory's name.
func (e *env) failover(ctx context.Context, mode transport.Mode, suffix string) {
	kills := e.sz.FaultKills
	id9e, id9f := "9e"+suffix, "9f"+suffix
	name9e := fmt.Sprintf("cluster of %d: failover, leader kill -9 → the new leader's first dispatch, %s agents, %d kills", clusterSize, mode, kills)
	name9f := fmt.Sprintf("cluster of %d: failover, leader kill -9 → every agent attached to the new leader, %s agents, %d kills", clusterSize, mode, kills)
	fail := func(err error) {
		e.fail(id9e, name9e, err)
		e.fail(id9f, name9f, err)
	}
	if err := e.clusterCerts(); err != nil {
		fail(err)
		return
	}
	bin, err := e.jobsuiteBinary(ctx)
	if err != nil {
		fail(err)
		return
	}
	base, err := scratch(e.dir, "cluster-failover"+suffix)
	if err != nil {
		fail(err)
		return
	}
	clusterAddrs, err := freeTCP(clusterSize)
	if err != nil {
		fail(err)
		return
	}
	https, err := freeTCP(clusterSize)
	if err != nil {
		fail(err)
		return
	}
	var nodes []*binNode
	var agentAddrs []string
	for i := 1; i <= clusterSize; i++ {
		id := nodeName(i)
		agentAddr, err := freeTCPUDP()
		if err != nil {
			fail(err)
			return
		}
		n := &binNode{id: id, dir: filepath.Join(base, id), http: https[i-1], agent: agentAddr, clust: clusterAddrs[i-1]}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			fail(err)
			return
		}
		n.args = []string{"controller", "-data-dir", filepath.Join(n.dir, "data"),
			"-ca", certs.CAFile(e.pki.dir), "-cert", certs.CertFile(e.pki.dir, id), "-key", certs.KeyFile(e.pki.dir, id),
			"-http", n.http, "-listen", n.agent, "-log-level", e.cfg.LogLevel,
			"-cluster-addr", n.clust, "-bootstrap-expect", fmt.Sprint(clusterSize), "-join", strings.Join(clusterAddrs, ",")}
		n.api = newAPI(e.pki, n.http, 16)
		nodes = append(nodes, n)
		agentAddrs = append(agentAddrs, agentAddr)
	}
	defer func() {
		for _, n := range nodes {
			n.api.close()
			n.stop()
		}
	}()
	for _, n := range nodes {
		if err := n.start(bin); err != nil {
			fail(err)
			return
		}
	}
	apis := make([]*api, len(nodes))
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		apis[i], ids[i] = n.api, n.id
	}
	leader, err := findLeader(ctx, apis, ids, -1, 2*time.Minute)
	if err != nil {
		fail(fmt.Errorf("%w%s", err, exitedNodes(nodes)))
		return
	}
	if err := warmSubmit(ctx, apis[leader], time.Minute); err != nil {
		fail(err)
		return
	}

	// Real agents (the binary) that know every controller.
	nAgents := e.sz.RealAgents
	var agents []*exec.Cmd
	defer func() {
		for _, a := range agents {
			_ = a.Process.Signal(syscall.SIGTERM)
			_ = a.Wait()
		}
	}()
	for i := 1; i <= nAgents; i++ {
		name := agentName(i)
		logf, err := os.Create(filepath.Join(base, name+".log"))
		if err != nil {
			fail(err)
			return
		}
		cmd := exec.Command(bin, "agent", "-controller", strings.Join(agentAddrs, ","),
			"-ca", certs.CAFile(e.pki.dir), "-cert", certs.CertFile(e.pki.dir, name), "-key", certs.KeyFile(e.pki.dir, name),
			"-transport", string(mode), "-slots", fmt.Sprint(e.sz.RealSlots), "-state-dir", filepath.Join(base, name+"-state"),
			"-drain-timeout", "0s", "-log-level", e.cfg.LogLevel)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err = cmd.Start()
		logf.Close()
		if err != nil {
			fail(err)
			return
		}
		agents = append(agents, cmd)
	}
	if err := apis[leader].waitAgents(ctx, nAgents, time.Minute); err != nil {
		fail(err)
		return
	}

	// A light load: two clients submit `true` jobs through random live
	// nodes, about 20 a second each, retrying the same key on errors.
	var dead atomic.Int32
	dead.Store(-1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Go(func() {
			for k := 0; !stop.Load(); k++ {
				body := fmt.Appendf(nil, `{"command":"true","idempotency_key":"load-%d-%d"}`, c, k)
				for try := 0; !stop.Load(); try++ {
					i := (c + k + try) % len(nodes)
					if int32(i) == dead.Load() {
						continue
					}
					if _, err := apis[i].submit(ctx, body); err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	var dispatch, accepted, attached []time.Duration
	for k := 1; k <= kills; k++ {
		if leader, err = findLeader(ctx, apis, ids, -1, time.Minute); err != nil {
			fail(fmt.Errorf("before kill %d: %w%s", k, err, exitedNodes(nodes)))
			return
		}
		if err := apis[leader].waitAgents(ctx, nAgents, time.Minute); err != nil {
			fail(fmt.Errorf("kill %d: before: %w", k, err))
			return
		}
		select { // let it work under this leader
		case <-ctx.Done():
			fail(ctx.Err())
			return
		case <-time.After(time.Second):
		}
		old := nodes[leader]
		dead.Store(int32(leader))
		old.kill()
		killed := time.Now()

		// The probe: the first submit accepted after the kill, through
		// the live nodes, then its dispatch.
		var probe uint64
		var via *api
		body := fmt.Appendf(nil, `{"command":"true","idempotency_key":"probe-%d"}`, k)
		err := poll(ctx, time.Minute, func() (bool, error) {
			for i, a := range apis {
				if i == leader {
					continue
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				id, err := a.submit(rctx, body)
				cancel()
				if err == nil {
					probe, via = id, a
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			fail(fmt.Errorf("kill %d: no submit accepted: %w", k, err))
			return
		}
		accepted = append(accepted, time.Since(killed))
		newLeader, err := findLeader(ctx, apis, ids, leader, time.Minute)
		if err != nil {
			fail(fmt.Errorf("kill %d: %w%s", k, err, exitedNodes(nodes)))
			return
		}
		if err := apis[newLeader].waitAgents(ctx, nAgents, time.Minute); err != nil {
			fail(fmt.Errorf("kill %d: agents: %w", k, err))
			return
		}
		attached = append(attached, time.Since(killed))
		var rec *jobRecord
		if err := poll(ctx, time.Minute, func() (bool, error) {
			recs, err := via.records(ctx, []uint64{probe})
			rec = recs[probe]
			return err == nil && rec != nil && len(rec.Attempts) > 0, nil
		}); err != nil {
			fail(fmt.Errorf("kill %d: probe job %d not dispatched: %w", k, probe, err))
			return
		}
		dispatch = append(dispatch, rec.Attempts[0].DispatchedAt.Sub(killed))
		e.progress("%s: kill %d of %s: submit accepted %s, agents back %s, probe dispatched %s after the kill",
			mode, k, old.id, accepted[k-1].Round(time.Millisecond), attached[k-1].Round(time.Millisecond), dispatch[k-1].Round(time.Millisecond))

		// Start the killed node again and let it rejoin.
		if err := old.start(bin); err != nil {
			fail(err)
			return
		}
		if err := old.api.waitHealthy(ctx, time.Minute); err != nil {
			fail(err)
			return
		}
		if err := poll(ctx, time.Minute, func() (bool, error) {
			var ms []member
			if err := old.api.getJSON(ctx, "/operator/members", &ms); err != nil {
				return false, nil
			}
			for _, m := range ms {
				if m.Role != "leader" && m.Role != "follower" {
					return false, nil
				}
			}
			return len(ms) == clusterSize, nil
		}); err != nil {
			fail(fmt.Errorf("kill %d: %s did not rejoin: %w", k, old.id, err))
			return
		}
		dead.Store(-1)
	}
	p50 := func(ds []time.Duration) float64 { return percentile(slices.Clone(ds), 0.5).Seconds() }
	floor := raftHeartbeatTimeout.Seconds()
	d := p50(dispatch)
	e.add(Row{ID: id9e, Name: name9e, Value: d, Unit: "s p50",
		Detail: fmt.Sprintf("the first job accepted after the kill, its dispatch (controller clock) − the kill: %s; kill → that submit accepted: %s (p50 %.2f s); %s",
			durations(dispatch), durations(accepted), p50(accepted), loadNote()),
		Limit: floor, LimitUnit: "s", LimitName: "raft's heartbeat timeout: the earliest a follower stands for election",
		Target: "p50 ≤ 3 s", Verdict: atMost(d, 3, "s")})
	a := p50(attached)
	worst := slices.Max(attached).Seconds()
	e.add(Row{ID: id9f, Name: name9f, Value: worst, Unit: "s (slowest)",
		Detail: fmt.Sprintf("%d real agents (the binary, %s), each kill: %s (p50 %.2f s); %s", nAgents, mode, durations(attached), a, loadNote()),
		Limit:  floor, LimitUnit: "s", LimitName: "raft's heartbeat timeout: the earliest a follower stands for election",
		Target: "≤ 10 s", Verdict: atMost(worst, 10, "s")})
}

// raftHeartbeatTimeout is raft's heartbeat timeout at the default
// -raft-multiplier 1 (controller/node.go): a follower waits that long
// without hearing from the leader before it stands for election.
const raftHeartbeatTimeout = time.Second
