package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"jobsuite/certs"
	"jobsuite/controller/cluster"
	"jobsuite/controller/hub"
	"jobsuite/controller/outchan"
	"jobsuite/controller/store"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// Node is a controller in cluster mode (issue 14): one of 3 or 5
// controllers that keep their store in step through raft
// (hashicorp/raft, controller/cluster). Every node applies every
// committed round to its own Pebble store (cluster.FSM); the leader
// alone runs the scheduler.
//
// The leader's work is a whole Server, built for its term of
// leadership: when raft makes this node leader it waits for a barrier
// (every entry of earlier terms applied here), then builds a Server
// over the FSM's store whose committer proposes its rounds to raft
// (cluster.Log): the queue, the leases (every running attempt gets the
// restart grace, as after a restart), the timers, the retention loop
// and the security records are rebuilt from the store. When the node
// loses leadership (or the term's committer fails, for instance
// because a round's outcome became unknown), that Server is stopped
// and dropped whole; nothing of it is reused by the next term. The
// dispatcher sends a Dispatch only after its round committed on a
// quorum, so a deposed leader's Dispatch is always for a committed
// attempt.
//
// The node keeps what outlives a term: the listeners, the PKI, raft and
// the store. The HTTPS API is served on every node: the leader's term
// Server answers, a follower forwards the request to the leader's API
// (node_http.go), so clients may use any node. Agents are served by the
// leader; a follower refuses an agent session naming the leader, and the
// agent dials another controller.
type Node struct {
	cfg  Config
	log  hclog.Logger
	id   string // node ID: the certificate's name
	pool *x509.CertPool
	// fwdCerts: forwarded client certificates, verified once (fromPeer).
	fwdCerts verifiedCerts
	pki      *pki

	fsm   *cluster.FSM
	wal   *wal.WAL
	logs  raft.LogStore
	snaps raft.SnapshotStore
	ident *cluster.Identity
	mux   *cluster.Mux
	trans *raft.NetworkTransport
	rpc   *cluster.RPCServer
	self  cluster.Member
	addrs NodeAddrs // this node's API and agent addresses, as others dial them

	rmu   sync.Mutex
	r     *raft.Raft
	obs   *raft.Observer
	obsCh chan raft.Observation
	// leaderGen is closed and replaced whenever raft reports a new
	// leader (or none): forwarded requests end with it (node_http.go).
	leaderMu  sync.Mutex
	leaderGen chan struct{}

	agentLn *transport.Listener
	httpLn  net.Listener
	http    *http.Server
	fwd     *forwarder
	plain   plainMetrics // Config.MetricsAddr's listener (node_metrics.go)

	term atomic.Pointer[term] // set while this node leads
	// watching are the agents' watch sessions this node serves
	// (node_watch.go).
	watching watches
	stale    staleSecurity // tokens and revocations for stale reads (node_stale.go)
	ledAt    atomic.Int64  // Unix nanoseconds when this node last stopped leading; 0 if never
	wake     chan struct{} // kicks the leadership loop
	fatalMu  sync.Mutex
	fatal    error
	stop     context.CancelFunc // ends Run (a fatal FSM error)

	// leadMu: reconcile holds it to start or end a term, an operator's
	// restore (node_restore.go) across stopping the term and raft.Restore.
	leadMu    sync.Mutex
	restoreMu sync.Mutex // one restore at a time
	// repair fetches output this node missed (output_channel.go). It
	// runs whatever Config.OutputInRaft says: an earlier leader may have
	// sent output on the channel. repairGate, if set, holds it until
	// closed (tests: a node stopped before it repaired).
	repair     *outchan.Repairer
	repairGate chan struct{}
	// follower takes the leaders' output streams, whatever
	// Config.OutputInRaft says.
	follower *outchan.Follower
	// logHub rings the log followers this node serves from its own copy
	// (node_logs.go); logConns asks the leader for its applied index.
	logHub   *hub.Hub
	logConns *cluster.Conns
	// lag is the follower-lag bound of this node's terms (node_lag.go).
	lag *cluster.LagBound
	// applyHook, if set, runs before each batch raft hands the FSM
	// (tests: a slow follower).
	applyHook func(entries int)
	// staleHook, if set, runs in each try of a stale read once it has
	// taken the store (tests: a snapshot installed meanwhile).
	staleHook func()
}

// term is one term of leadership: its Server and what ends it.
type term struct {
	n      uint64 // raft term
	srv    *Server
	gate   *sendGate // also fences the term's reads (Node.ServeHTTP)
	agents chan transport.Session
	cancel context.CancelFunc
	done   chan struct{} // closed when srv.Run returned
}

// ended reports whether the term's Server stopped.
func (t *term) ended() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// NodeAddrs are the addresses clients and agents dial a node at.
type NodeAddrs struct {
	API   string `json:"api"`
	Agent string `json:"agent"`
}

// opAddrs asks a node on the cluster port for its NodeAddrs.
const opAddrs = "addrs"

// Raft's timeouts at RaftMultiplier 1 (its own defaults).
const (
	raftHeartbeat = time.Second
	raftElection  = time.Second
	raftLease     = 500 * time.Millisecond
	// barrierTimeout bounds a new leader's wait for the entries of
	// earlier terms; past it, it hands leadership on.
	barrierTimeout = 10 * time.Second
	// leaderWait is how long a request waits for a leader before 503.
	leaderWait = 5 * time.Second
)

// NewNode opens a cluster node's store and raft state and binds its
// listeners (API, agents, cluster port); Run forms or joins the cluster
// and serves. If NewNode fails, nothing is left open.
func NewNode(cfg Config) (n *Node, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.clusterDefaults(); err != nil {
		return nil, err
	}
	pool, cert, err := cfg.TLS.Load()
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if err := checkControllerCert(cfg, cert); err != nil {
		return nil, err
	}
	if err := refuseSingleStore(cfg.DataDir); err != nil {
		return nil, err
	}
	n = &Node{cfg: cfg, log: cfg.Logger, id: cert.Leaf.Subject.CommonName, pool: pool, wake: make(chan struct{}, 1), leaderGen: make(chan struct{}), lag: newLagBound(cfg), logHub: hub.New()}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	if n.pki, err = newPKI(cfg, cert, n.log.Named("pki")); err != nil {
		return nil, err
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	for _, d := range []string{filepath.Join(raftDir, "wal"), filepath.Join(raftDir, "snapshots")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("controller: %w", err)
		}
	}
	size := diskSize(cfg.DataDir)
	n.repair = n.outputRepairer()
	n.fsm, err = cluster.Open(filepath.Join(cfg.DataDir, "fsm"), cluster.Options{
		Store:    store.Options{Logger: n.log.Named("store"), MemTableSize: defaultMemTable(size)},
		Logger:   n.log.Named("cluster"),
		Fatal:    n.setFatal,
		Applied:  n.outputApplied,
		Restored: n.outputRestored,
	})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	closers = append(closers, n.fsm.Close)
	n.follower = n.outputFollower()
	walDir := filepath.Join(raftDir, "wal")
	n.wal, err = cluster.OpenWAL(walDir, cfg.RaftWALSegmentBytes, n.log.Named("raft"))
	if err != nil {
		return nil, fmt.Errorf("controller: raft log: %w", err)
	}
	closers = append(closers, n.wal.Close)
	if n.logs, err = raft.NewLogCache(128, &cluster.SealedWAL{WAL: n.wal, Log: n.log.Named("raft")}); err != nil {
		return nil, fmt.Errorf("controller: raft log cache: %w", err)
	}
	// Checkpoint directories handed over, not copied (design 5.2); it
	// also reads the snapshots raft.FileSnapshotStore left before.
	n.snaps, err = cluster.NewCheckpointStore(filepath.Join(raftDir, "snapshots"), cluster.CheckpointStoreOptions{Retain: 2, Logger: n.log.Named("snapshots")})
	if err != nil {
		return nil, fmt.Errorf("controller: raft snapshots: %w", err)
	}

	ln, err := net.Listen("tcp", cfg.ClusterAddr)
	if err != nil {
		return nil, fmt.Errorf("controller: cluster listener: %w", err)
	}
	n.ident = &cluster.Identity{
		CA:          pool,
		Certificate: func() (*tls.Certificate, error) { return n.pki.cur.Load(), nil },
		Check:       n.checkPeer,
	}
	n.logConns = n.ident.Kept()
	// The output channel's follower side is served whatever
	// Config.OutputInRaft says, like the repair.
	n.mux = cluster.NewMux(ln, n.ident, n.log.Named("cluster"), cluster.ALPNRaft, cluster.ALPNCluster, cluster.ALPNOutput, cluster.ALPNOutputV1)
	closers = append(closers, n.mux.Close)
	n.self = cluster.Member{ID: n.id, Addr: advertised(cfg.ClusterAddr, ln.Addr(), "")}
	n.trans = raft.NewNetworkTransportWithLogger(cluster.NewStreamLayer(n.mux, n.ident), 3, 10*time.Second, n.raftLogger("transport"))

	resetKey, err := n.fsm.Store().Secret("quic-stateless-reset", 32)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	n.agentLn, err = transport.Listen(cfg.AgentAddr, n.pki.serve(certs.ServerTLS(pool, cert)), transport.Options{
		IdleTimeout:       cfg.LeaseTTL,
		HandshakeTimeout:  cfg.HandshakeTimeout,
		StatelessResetKey: (*[32]byte)(resetKey),
		Logger:            n.log.Named("transport"),
	})
	if err != nil {
		return nil, fmt.Errorf("controller: agent listener: %w", err)
	}
	// The closers must not read n: a failed return sets it to nil
	// before they run.
	agentLn := n.agentLn
	closers = append(closers, func() error { agentLn.Close(); return nil })
	if n.httpLn, err = listenAPI(cfg.HTTPAddr, n.pki, pool, cert); err != nil {
		return nil, err
	}
	closers = append(closers, n.httpLn.Close)
	n.addrs = NodeAddrs{
		API:   advertised(cfg.HTTPAddr, n.httpLn.Addr(), n.self.Addr),
		Agent: advertised(cfg.AgentAddr, addrOf(n.agentLn.Addr()), n.self.Addr),
	}
	n.fwd = newForwarder(n)
	n.http = newHTTPServer(n, n.log)
	if err := n.plain.listen(cfg.MetricsAddr, n.metricsHandler(), n.log.Named("metrics")); err != nil {
		return nil, fmt.Errorf("controller: metrics listener: %w", err)
	}
	plain := &n.plain
	closers = append(closers, func() error {
		if plain.ln != nil {
			return plain.ln.Close()
		}
		return nil
	})

	n.rpc = cluster.NewRPCServer(n.log.Named("cluster"))
	cluster.HandleFormation(n.rpc, n.self, cfg.Join, n.hasState, n.formationNode)
	n.rpc.Handle(opAddrs, func(context.Context, string, json.RawMessage) (any, error) { return n.addrs, nil })
	n.rpc.Handle(opStatus, n.handleStatus)
	for op, h := range outchan.Handlers(n.fsm.Store, n.follower.Fence) {
		n.rpc.Handle(op, h)
	}
	return n, nil
}

// clusterDefaults checks and completes the cluster settings.
func (c *Config) clusterDefaults() error {
	if c.ClusterAddr == "" {
		return fmt.Errorf("%w: a cluster node needs -cluster-addr", ErrConfig)
	}
	host, _, err := net.SplitHostPort(c.ClusterAddr)
	if err != nil {
		return fmt.Errorf("%w: -cluster-addr %q: %v", ErrConfig, c.ClusterAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("%w: -cluster-addr %q: give the address the other controllers dial (an IP or a host name), not a wildcard", ErrConfig, c.ClusterAddr)
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect%2 == 0 && c.BootstrapExpect > 0 || c.BootstrapExpect > 7 {
		return fmt.Errorf("%w: -bootstrap-expect %d: a cluster starts with 1, 3, 5 or 7 controllers (an even number survives no more failures than the odd one below it, and 2 stops when either stops)", ErrConfig, c.BootstrapExpect)
	}
	if c.BootstrapExpect > 1 && len(c.Join) == 0 {
		return fmt.Errorf("%w: -bootstrap-expect %d needs -join naming the other controllers' cluster addresses", ErrConfig, c.BootstrapExpect)
	}
	if c.RaftMultiplier <= 0 {
		c.RaftMultiplier = 1
	}
	if c.NoSync {
		return fmt.Errorf("%w: a cluster node cannot run without fsync: the raft log is its write-ahead log", ErrConfig)
	}
	return nil
}

// refuseSingleStore refuses a data directory that holds a single
// controller's store: a cluster node keeps its store under fsm/ and its
// raft state under raft/, and the single controller's jobs are in no
// raft log. The way over is a snapshot restored into the running
// cluster (node_restore.go); the error names the steps.
func refuseSingleStore(dir string) error {
	m, _ := filepath.Glob(filepath.Join(dir, "OPTIONS-*"))
	if len(m) > 0 {
		return fmt.Errorf("%w: %s holds a single controller's store; a cluster node needs a data directory of its own. "+
			"To move a single controller's jobs into a cluster: save a snapshot of it while it runs ('jobsuite operator snapshot save FILE'), "+
			"start the cluster's controllers on new, empty data directories, then restore the snapshot into the running cluster "+
			"('jobsuite operator snapshot restore -force FILE' with JOBSUITE_ADDR naming the cluster); README, \"Running a cluster\"", ErrConfig, dir)
	}
	return nil
}

// advertised is the address others dial for a listener configured as
// conf and bound at bound: a wildcard host becomes the cluster address's
// host (or the bound one when there is none).
func advertised(conf string, bound net.Addr, cluster string) string {
	host, _, err := net.SplitHostPort(conf)
	_, port, perr := net.SplitHostPort(bound.String())
	if err != nil || perr != nil {
		return bound.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ch, _, err := net.SplitHostPort(cluster); err == nil {
			host = ch
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// addrOf turns a listener's address string into a net.Addr.
type addrOf string

func (a addrOf) Network() string { return "udp" }
func (a addrOf) String() string  { return string(a) }

// advertisedAgent is the node's agent address as it gives it to
// agents (Welcome.Members, Redirect).
func (n *Node) advertisedAgent() string { return n.addrs.Agent }

// HTTPAddr is the address the API listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// AgentAddr is the address agents dial.
func (n *Node) AgentAddr() string { return n.agentLn.Addr() }

// ClusterAddr is the node's cluster address.
func (n *Node) ClusterAddr() string { return n.self.Addr }

// ReloadCertificate reloads the node's certificate and key from their
// files (SIGHUP): new API, agent and cluster connections get the new one.
func (n *Node) ReloadCertificate() error {
	if _, err := n.pki.reload(); err != nil {
		return fmt.Errorf("controller: reload certificate: %w; keeping the current one", err)
	}
	return nil
}

// ID is the node's ID (its certificate's name).
func (n *Node) ID() string { return n.id }

// Leading reports whether this node leads and serves (its term's
// Server runs).
func (n *Node) Leading() bool {
	t := n.term.Load()
	return t != nil && !t.ended()
}

// raftLogger is raft's logger (its info lines are the elections and
// membership changes an operator wants to see).
func (n *Node) raftLogger(name string) hclog.Logger { return n.log.Named("raft").Named(name) }

// setFatal stops the node: its FSM cannot apply an entry the others
// apply (cluster.Options.Fatal). Restarting replays it.
func (n *Node) setFatal(err error) {
	n.fatalMu.Lock()
	if n.fatal == nil {
		n.fatal = err
	}
	stop := n.stop
	n.fatalMu.Unlock()
	n.log.Error("cannot apply the replicated log; stopping (a restart replays it)", "error", err)
	if stop != nil {
		stop()
	}
}

// checkPeer refuses a revoked controller certificate on the cluster
// port, from the replicated revocations.
func (n *Node) checkPeer(leaf *x509.Certificate) error {
	revs, err := n.fsm.Store().Revocations()
	if err != nil {
		return fmt.Errorf("reading revocations: %w", err)
	}
	sec := &security{revoked: make(map[string]store.Revocation, len(revs))}
	for _, r := range revs {
		sec.revoked[r.ID()] = r
	}
	if r, ok := sec.deniedCert(leaf); ok {
		return errors.New(revokedMessage(leaf, r))
	}
	return nil
}

// raftNode returns raft once it runs, else nil.
func (n *Node) raftNode() *raft.Raft {
	n.rmu.Lock()
	defer n.rmu.Unlock()
	return n.r
}

// formationNode is raftNode for the formation handlers.
func (n *Node) formationNode() cluster.Node {
	if r := n.raftNode(); r != nil {
		return r
	}
	return nil
}

// hasState reports whether raft runs or has state on disk.
func (n *Node) hasState() bool {
	if n.raftNode() != nil {
		return true
	}
	ok, err := raft.HasExistingState(n.logs, n.wal, n.snaps)
	return err == nil && ok
}

// raftConfig is raft's configuration for this node.
func (n *Node) raftConfig() *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.id)
	c.Logger = n.raftLogger("node")
	m := time.Duration(n.cfg.RaftMultiplier)
	c.HeartbeatTimeout = raftHeartbeat * m
	c.ElectionTimeout = raftElection * m
	c.LeaderLeaseTimeout = raftLease * m
	if n.cfg.RaftSnapshotThreshold > 0 {
		c.SnapshotThreshold = n.cfg.RaftSnapshotThreshold
	}
	if n.cfg.RaftSnapshotInterval > 0 {
		c.SnapshotInterval = n.cfg.RaftSnapshotInterval
	}
	if n.cfg.RaftTrailingLogs > 0 {
		c.TrailingLogs = n.cfg.RaftTrailingLogs
	}
	return c
}

// startRaft starts raft, bootstrapping servers first if there are any.
func (n *Node) startRaft(servers []cluster.Member) error {
	n.rmu.Lock()
	defer n.rmu.Unlock()
	if n.r != nil {
		return nil
	}
	conf := n.raftConfig()
	if len(servers) > 0 {
		var c raft.Configuration
		for _, m := range servers {
			c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.Addr)})
		}
		if err := raft.BootstrapCluster(conf, n.logs, n.wal, n.snaps, n.trans, c); err != nil {
			return err
		}
		n.log.Info("bootstrapped a new cluster", "servers", len(servers))
	}
	// Design 5.4: restore the newest snapshot at start only when the
	// store is behind it; otherwise raft replays just the log's tail.
	restore, newest, err := n.fsm.RestoreOnStart(n.snaps)
	if err != nil {
		return err
	}
	conf.NoSnapshotRestoreOnStart = !restore
	if newest != nil {
		applied, _ := n.fsm.Applied()
		if restore {
			n.log.Warn("the store is behind the newest snapshot: restoring it", "applied_index", applied, "snapshot_index", newest.Index)
		} else {
			n.log.Info("the store holds the newest snapshot: replaying the log after it", "applied_index", applied, "snapshot_index", newest.Index)
		}
	}
	var fsm raft.FSM = n.fsm
	if n.applyHook != nil {
		fsm = hookedFSM{n.fsm, n.applyHook}
	}
	r, err := raft.NewRaft(conf, fsm, n.logs, n.wal, n.snaps, n.trans)
	if err != nil {
		return err
	}
	n.r = r
	ch := make(chan raft.Observation, 8)
	n.obsCh = ch
	n.obs = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(n.obs)
	go func() {
		for range ch {
			n.leaderChanged()
		}
	}()
	return nil
}

// leaderChanged ends the requests forwarded to the former leader.
func (n *Node) leaderChanged() {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	close(n.leaderGen)
	n.leaderGen = make(chan struct{})
}

// leaderEpoch returns a channel closed when the leader changes next.
func (n *Node) leaderEpoch() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderGen
}

// Run forms or joins the cluster, serves until ctx ends or the node
// fails, then shuts down: the term's Server (if leading), the
// listeners, raft and the store.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.fatalMu.Lock()
	n.stop = cancel
	n.fatalMu.Unlock()
	n.log.Info("controller ready (cluster mode)", "node", n.id, "api", "https://"+n.HTTPAddr(), "agents", n.AgentAddr(), "cluster", n.self.Addr, "data", n.cfg.DataDir)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = n.mux.Serve() }()
	go func() { defer wg.Done(); _ = n.rpc.Serve(n.mux.Listener(cluster.ALPNCluster)) }()
	wg.Add(3)
	go func() { defer wg.Done(); _ = n.follower.Serve(n.mux.Listener(cluster.ALPNOutput)) }()
	go func() { defer wg.Done(); _ = n.follower.Serve(n.mux.Listener(cluster.ALPNOutputV1)) }()
	go func() { defer wg.Done(); n.runRepair(ctx) }()
	httpErr := make(chan error, 1)
	go func() {
		if err := n.http.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
			cancel()
		}
	}()
	wg.Add(3)
	go func() { defer wg.Done(); n.acceptAgents(ctx) }()
	go func() { defer wg.Done(); n.pki.watch(ctx) }()
	go func() { defer wg.Done(); n.plain.serve(ctx, n.log.Named("metrics")) }()

	err := n.join(ctx)
	if err == nil {
		wg.Add(1)
		go func() { defer wg.Done(); n.learnMembers(ctx) }()
		n.lead(ctx)
	}
	n.log.Info("controller stopping")
	if t := n.term.Load(); t != nil {
		n.endTerm(t, "controller shutting down")
	}
	if r := n.raftNode(); r != nil && r.State() == raft.Leader {
		// A clean stop hands leadership on, so the others need not wait
		// for an election timeout (a rolling restart's failovers).
		if terr := r.LeadershipTransfer().Error(); terr != nil {
			n.log.Warn("could not hand leadership on before stopping", "error", terr)
		}
	}
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = n.http.Shutdown(shutCtx)
	shutCancel()
	_ = n.http.Close()
	n.agentLn.Close()
	if r := n.raftNode(); r != nil {
		if serr := r.Shutdown().Error(); serr != nil && err == nil {
			err = fmt.Errorf("controller: raft shutdown: %w", serr)
		}
		r.DeregisterObserver(n.obs)
		close(n.obsCh) // ends the observer's goroutine
	}
	_ = n.trans.Close()
	_ = n.mux.Close()
	n.logConns.Close()
	cancel() // a failed join returns with ctx still live
	wg.Wait()
	if cerr := n.wal.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if cerr := n.fsm.Close(); cerr != nil && err == nil {
		err = cerr
	}
	n.fatalMu.Lock()
	if n.fatal != nil && err == nil {
		err = fmt.Errorf("controller: %w", n.fatal)
	}
	n.fatalMu.Unlock()
	select {
	case herr := <-httpErr:
		if err == nil {
			err = fmt.Errorf("controller: API server: %w", herr)
		}
	default:
	}
	n.log.Info("controller stopped")
	return err
}

// join brings the node into its cluster: it resumes from its raft
// state, or forms a new cluster (-bootstrap-expect), or joins a
// running one through its leader (-join).
func (n *Node) join(ctx context.Context) error {
	if !n.hasState() {
		if n.cfg.BootstrapExpect == 0 && len(n.cfg.Join) == 0 {
			return fmt.Errorf("%w: this node has no cluster state: give -bootstrap-expect N to form a cluster, or -join to join one", ErrConfig)
		}
		f := &cluster.Formation{
			Self: n.self, Expect: n.cfg.BootstrapExpect, Join: n.cfg.Join,
			HasState:  n.hasState,
			Hello:     n.ident.HelloVia(),
			Bootstrap: n.startRaft,
			AskJoin:   n.ident.AskJoinVia(n.self),
			Log:       n.log.Named("cluster"),
		}
		if err := f.Run(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	if err := n.startRaft(nil); err != nil {
		return fmt.Errorf("controller: starting raft: %w", err)
	}
	return nil
}

// lead follows raft's leadership until ctx ends: a term Server runs
// exactly while this node is leader of the term it was built in.
// Signals only wake the loop; it decides from raft's state and term,
// so a lost or merged signal does no harm, and a 1 s tick backs them up.
func (n *Node) lead(ctx context.Context) {
	r := n.raftNode()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n.reconcile(ctx, r)
		select {
		case <-ctx.Done():
			return
		case <-r.LeaderCh():
		case <-n.wake:
		case <-tick.C:
		}
	}
}

// reconcile starts or ends the term Server to match raft.
func (n *Node) reconcile(ctx context.Context, r *raft.Raft) {
	n.leadMu.Lock()
	defer n.leadMu.Unlock()
	leader := r.State() == raft.Leader
	cur := r.CurrentTerm()
	if t := n.term.Load(); t != nil {
		switch {
		case t.ended():
			n.endTerm(t, "")
		case !leader:
			n.endTerm(t, "this controller is no longer the leader", n.farewell)
		case t.n != cur:
			n.endTerm(t, "leadership changed terms", n.farewell)
		default:
			return
		}
	}
	if leader && ctx.Err() == nil {
		n.establish(ctx, r, cur)
	}
}

// TransferLeadership hands this node's leadership to another voter
// (raft's leadership transfer), as a clean stop does: the others need
// not wait for an election timeout. It fails on a node that does not
// lead.
func (n *Node) TransferLeadership() error {
	r := n.raftNode()
	if r == nil || r.State() != raft.Leader {
		return fmt.Errorf("controller: %s does not lead the cluster", n.id)
	}
	return r.LeadershipTransfer().Error()
}

// farewell points term t's agents at the new leader, or at the
// members while none is known, before the term's Server stops
// (Server.sayFarewell; at most a second or two).
func (n *Node) farewell(ctx context.Context, t *term) {
	if t.ended() {
		return
	}
	m := &protocol.Redirect{Members: n.agentMembers()}
	// The new leader is often not known yet when raft steps down: wait
	// for it a little (the API and new agents are already turned away).
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if a, err := n.leaderAddrs(lctx, true); err == nil && a.Agent != n.addrs.Agent {
		m.Leader = a.Agent
	}
	t.srv.sayFarewell(m)
}

// establish starts leading term t: a barrier, so that every entry of
// earlier terms is applied here, then a Server rebuilt from the store.
func (n *Node) establish(ctx context.Context, r *raft.Raft, t uint64) {
	start := time.Now()
	if err := r.Barrier(barrierTimeout).Error(); err != nil {
		if r.State() == raft.Leader && r.CurrentTerm() == t {
			n.log.Error("new leader could not apply the log; handing leadership on", "term", t, "error", err)
			_ = r.LeadershipTransfer().Error()
		}
		return
	}
	if r.State() != raft.Leader || r.CurrentTerm() != t {
		return
	}
	agents := make(chan transport.Session)
	gate := &sendGate{r: r, t: t, window: raftLease * time.Duration(n.cfg.RaftMultiplier)}
	cfg := n.cfg
	cfg.MetricsAddr = "" // the node serves it for all its terms (node_metrics.go)
	tctx, cancel := context.WithCancel(ctx)
	n.lag.Reset() // nobody is waited for until it reports in this term
	log := cluster.NewLog(r).Bounded(tctx, n.lag)
	deps := &serverDeps{st: n.fsm.Store(), log: log, pki: n.pki, agents: agents, cluster: n, gate: gate.ok,
		term: t, members: n.agentMembers}
	channel, err := n.termOutput(r)
	if err != nil {
		cancel()
		if r.State() == raft.Leader && r.CurrentTerm() == t {
			n.log.Error("new leader could not record how it sends output; handing leadership on", "term", t, "error", err)
			_ = r.LeadershipTransfer().Error()
		}
		return
	}
	if channel {
		o := n.outputOptions(t)
		deps.output, deps.outputCall = &o, n.outputCall
	}
	srv, err := newServer(cfg, deps)
	if err != nil {
		cancel()
		n.log.Error("new leader could not load the queue; handing leadership on", "term", t, "error", err)
		_ = r.LeadershipTransfer().Error()
		return
	}
	n.registerRepairMetrics(srv.metrics.reg)
	tm := &term{n: t, srv: srv, gate: gate, agents: agents, cancel: cancel, done: make(chan struct{})}
	lagDone := make(chan struct{})
	go func() { defer close(lagDone); n.watchLag(tctx, r) }()
	go func() {
		defer close(tm.done)
		if err := srv.Run(tctx); err != nil && tctx.Err() == nil {
			n.log.Warn("leader's term ended", "term", t, "error", err)
		}
		cancel() // the lag watch ends with the term's Server
		<-lagDone
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}()
	n.term.Store(tm)
	n.log.Info("leading", "term", t, "ready_after", time.Since(start).Round(time.Millisecond))
}

// termOutput says whether this node, leading, sends agents' output on
// the output channel (controller/outchan) or in the raft rounds. The
// channel is the default; Config.OutputInRaft asks for the rounds, but
// once any leader of the cluster has used the channel the store says so
// (store.UseOutputChannel) and every later leader uses it too: a leader
// sending in the rounds has no gap fill, so it would take an inherited
// attempt's stream short of what an earlier leader acknowledged on the
// channel. A leader about to use the channel for the first time commits
// the mark before it takes any output (the barrier ran: the store is
// up to date). So the setting is the cluster's, fixed by whichever
// leader first uses the channel; a node set otherwise says so.
func (n *Node) termOutput(r *raft.Raft) (channel bool, err error) {
	marked, err := n.fsm.Store().OutputChannel()
	if err != nil {
		return false, err
	}
	switch {
	case n.cfg.OutputInRaft && !marked:
		return false, nil
	case n.cfg.OutputInRaft:
		n.log.Warn("-output-channel=false is ignored: an earlier leader of this cluster sent output on the output channel, and only the channel's gap fill finds the output it acknowledged; a cluster sends output in the raft rounds only if it never used the channel")
	case !marked:
		p, err := cluster.NewLog(r).Propose([]store.Command{&store.UseOutputChannel{}}, nil)
		if err != nil {
			return false, err
		}
		res, err := p.Wait()
		if err == nil && len(res) == 1 {
			err = res[0].Err
		}
		if err != nil {
			return false, fmt.Errorf("committing the output channel's mark: %w", err)
		}
	}
	return true, nil
}

// sendGate fences a deposed leader (design note section 7): a Dispatch
// or Cancel leaves only after its round committed, but a leader paused
// between the commit and the write (SIGSTOP, a long GC, a frozen VM)
// could otherwise send it after another controller took over. So the
// agent session's writer asks ok just before it writes one: the node
// must still be leader of the term, and a quorum must have confirmed
// that within the window (the leader lease, 500 ms at multiplier 1),
// or confirm it now (raft's VerifyLeader, one heartbeat round trip,
// shared by the writers that wait). The window is safe because a
// follower that has heard from its leader refuses to vote for another
// candidate until its heartbeat timeout (1 s at multiplier 1, twice the
// window) passes without a word from it.
type sendGate struct {
	r      *raft.Raft
	t      uint64
	window time.Duration

	mu         sync.Mutex
	verifiedAt time.Time // the start of the last VerifyLeader that succeeded
}

// ok reports whether the node may still act as leader of term g.t.
func (g *sendGate) ok() bool {
	if g.r.State() != raft.Leader || g.r.CurrentTerm() != g.t {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.verifiedAt) < g.window {
		return true
	}
	start := time.Now()
	if err := g.r.VerifyLeader().Error(); err != nil || g.r.CurrentTerm() != g.t {
		return false
	}
	g.verifiedAt = start
	return true
}

// learnMembers asks each member for its addresses (agentMembers lists
// only those it knows) every 2 s until it knows them all, then every
// 30 s (a member added later, or one that was down).
func (n *Node) learnMembers(ctx context.Context) {
	for {
		every := 30 * time.Second
		if r := n.raftNode(); r != nil {
			if f := r.GetConfiguration(); f.Error() == nil {
				for _, srv := range f.Configuration().Servers {
					if string(srv.ID) == n.id {
						continue
					}
					if _, err := n.fwd.addrsOf(ctx, string(srv.ID), string(srv.Address)); err != nil {
						every = 2 * time.Second
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// endTerm stops term t's Server and waits for it. Before stopping it,
// once the term no longer serves the API or takes agents, it calls
// each of before (a farewell to the agents).
func (n *Node) endTerm(t *term, why string, before ...func(context.Context, *term)) {
	n.ledAt.Store(time.Now().UnixNano())
	n.term.CompareAndSwap(t, nil)
	for _, f := range before {
		f(context.Background(), t)
	}
	t.cancel()
	<-t.done
	if why != "" {
		n.log.Info("stopped leading", "term", t.n, "reason", why)
	}
}

// acceptAgents hands each agent session to the term's Server while
// this node leads, and turns it away naming the leader otherwise.
func (n *Node) acceptAgents(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		sess, err := n.agentLn.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				n.log.Error("agent listener failed", "error", err)
			}
			return
		}
		if t := n.term.Load(); t != nil {
			select {
			case t.agents <- sess:
				continue
			case <-t.done:
			}
		}
		wg.Go(func() { n.holdAgent(ctx, sess) })
	}
}

// agentHoldWait is how long an agent that reached the leader between
// two of its terms — a new leader's barrier, an operator's restore —
// is held for the next term's Server, instead of being turned away to
// back off. The agent waits 15 s for its Welcome.
const agentHoldWait = 5 * time.Second

// holdAgent hands sess to the term's Server once there is one, if this
// node is raft's leader and one comes up within agentHoldWait; else it
// turns the agent away (redirectAgent).
func (n *Node) holdAgent(ctx context.Context, sess transport.Session) {
	deadline := time.Now().Add(agentHoldWait)
	for {
		if t := n.term.Load(); t != nil && !t.ended() {
			select {
			case t.agents <- sess:
				return
			case <-t.done:
			case <-ctx.Done():
				sess.Close("controller stopping")
				return
			}
		}
		r := n.raftNode()
		if r == nil || r.State() != raft.Leader || time.Now().After(deadline) {
			n.redirectAgent(ctx, sess)
			return
		}
		select {
		case <-ctx.Done():
			sess.Close("controller stopping")
			return
		case <-sess.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// redirectAgent turns away an agent that reached a follower: an agent
// that announced FeatureRedirect gets a Redirect naming the leader and
// the members, an older one an Error saying so (PROTOCOL.md §2.4); the
// agent dials another controller. With no leader known, it first waits
// for one, up to leaderWait. A watch session is served instead
// (serveWatch).
func (n *Node) redirectAgent(ctx context.Context, sess transport.Session) {
	defer sess.Close("not the leader")
	hctx, cancel := context.WithTimeout(ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	ctrl, err := sess.AcceptStream(hctx)
	if err != nil {
		return
	}
	_ = ctrl.SetReadDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	_ = ctrl.SetWriteDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	r := protocol.NewReaderSize(ctrl, n.cfg.MaxFrameBytes, controlReadBuffer)
	w := protocol.NewWriter(ctrl)
	m, err := r.Read()
	if err != nil {
		return
	}
	if wl, ok := m.(*protocol.WatchLeader); ok {
		n.serveWatch(ctx, sess, ctrl, w, wl) // node_watch.go
		_ = ctrl.Close()
		discardUntilEOF(ctrl, 2*time.Second)
		return
	}
	// During an election the agent waits here for the new leader (up to
	// leaderWait, well within the 15 s it waits for an answer), instead
	// of going round its addresses, each knowing no leader, and into its
	// backoff: it hears of the leader the moment this node does.
	leader := ""
	msg := "this controller is not the leader and no leader is known yet; try another controller"
	if a, err := n.leaderAddrs(ctx, true); err == nil {
		leader = a.Agent
		msg = "this controller is not the leader; the leader's agent address is " + leader
	}
	var reply protocol.Message = &protocol.Error{Code: protocol.CodeShutdown, Message: msg}
	if h, ok := m.(*protocol.Hello); ok && h.Features&protocol.FeatureRedirect != 0 {
		reply = &protocol.Redirect{Leader: leader, Members: n.agentMembers()}
	}
	_ = w.Write(reply)
	_ = ctrl.Close()
	discardUntilEOF(ctrl, 2*time.Second) // the reply arrives before the session closes
}

// agentMembers returns the agent addresses of the cluster's members
// that this node knows (asked once per member over the cluster port,
// then remembered), itself included.
func (n *Node) agentMembers() []string {
	out := []string{n.addrs.Agent}
	r := n.raftNode()
	if r == nil {
		return out
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return out
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == n.id {
			continue
		}
		if a, ok := n.fwd.known(string(srv.ID), string(srv.Address)); ok {
			out = append(out, a.Agent)
		}
	}
	return out
}

// leaderAddrs returns the current leader's addresses, waiting up to
// leaderWait for one if wait is set. errNoLeader: none known (yet).
func (n *Node) leaderAddrs(ctx context.Context, wait bool) (NodeAddrs, error) {
	var deadline <-chan time.Time
	if wait {
		t := time.NewTimer(leaderWait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		if r := n.raftNode(); r != nil {
			addr, id := r.LeaderWithID()
			switch {
			case addr == "":
			case string(id) == n.id:
				if n.Leading() {
					return n.addrs, nil
				}
			default:
				return n.fwd.addrsOf(ctx, string(id), string(addr))
			}
		}
		if !wait {
			return NodeAddrs{}, errNoLeader
		}
		select {
		case <-ctx.Done():
			return NodeAddrs{}, ctx.Err()
		case <-deadline:
			return NodeAddrs{}, errNoLeader
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errNoLeader: the cluster has no leader this node knows of.
var errNoLeader = errors.New("the cluster has no leader right now (an election is under way, or too few controllers are up)")
