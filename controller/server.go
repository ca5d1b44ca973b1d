package controller

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/controller/clock"
	"jobsuite/controller/cluster"
	"jobsuite/controller/hub"
	"jobsuite/controller/outchan"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// DefaultMaxAgentSlots is Config.MaxAgentSlots's default.
const DefaultMaxAgentSlots = 1024

// Config configures a controller. Zero durations take the defaults
// documented on each field.
type Config struct {
	HTTPAddr  string      // HTTPS API listener; default 127.0.0.1:8443
	AgentAddr string      // agent listener, QUIC (UDP) and TLS+yamux (TCP) on one port; default :7443
	DataDir   string      // Pebble directory; required
	TLS       certs.Files // CA, controller certificate and key; required
	Logger    hclog.Logger

	LeaseTTL          time.Duration // an attempt or agent silent this long is lost; default 15s
	HeartbeatInterval time.Duration // asked of agents; default LeaseTTL/3
	KillGrace         time.Duration // SIGTERM→SIGKILL grace agents use; default 5s
	HandshakeTimeout  time.Duration // agent hello deadline; default 10s
	BackoffBase       time.Duration // first retry delay; default 1s
	BackoffMax        time.Duration // longest retry delay; default 5m
	// OfflineTimeout is how long a fan-out child whose agent is not
	// connected waits for it (from its turn, the agent's disconnect or
	// the controller's start) before it fails; default 10m.
	OfflineTimeout time.Duration
	MaxBodyBytes   int64         // largest API request body (and job of a batch); default 1 MiB, at most 3 MiB
	BodyTimeout    time.Duration // longest time to receive a request body; default 30s

	// Limits on input; zero means the default. See SECURITY.md.
	MaxCommandBytes int // longest job command plus params; default 64 KiB
	MaxEnv          int // most env entries per job; default 128
	MaxLabels       int // most labels per job; default 32
	// MaxFrameBytes is the largest protocol frame the controller reads
	// from an agent (a longer one ends that stream or session with
	// protocol.ErrFrameTooLarge); default and most protocol.MaxFrameSize,
	// at least MinFrameBytes.
	MaxFrameBytes int
	MaxFollowers  int // WebSocket log followers per job; more get 429; default 100
	// MinFreeBytes is the floor of free space on the data directory's
	// file system: below it new jobs (507), new output and dispatch are
	// refused, below half of it every write waits for space (disk.go).
	// 0 means the default: a twentieth of the file system, at least 16
	// MiB (four memtables) and at most 1 GiB; negative turns it off.
	MinFreeBytes int64
	// MaxOutputBytes caps the output stored per attempt: the agent stops
	// there and ends the log with a marker line. 0 means the default:
	// 1 GiB, or a quarter of the data directory's file system if that is
	// less; negative means no cap.
	MaxOutputBytes int64
	// MaxAgentSlots is the most slots an agent may announce; an agent
	// announcing more is refused at its Hello (it does not reconnect).
	// It bounds what one agent certificate can take; default 1024.
	MaxAgentSlots int
	// MetricsAddr, when set, serves GET /metrics over plain HTTP with no
	// authentication, for scrapers without a client certificate. Off by
	// default: anyone who reaches it learns job counts and agent load.
	MetricsAddr string
	// MetricsAgents bounds the per-agent metric series: the first this
	// many connected agents by name get them; default 100, negative for
	// none.
	MetricsAgents int
	// Version is the release jobsuite_build_info reports.
	Version string
	// Aging lets a queued job gain one priority point per Aging waited, so
	// a flood of high-priority work cannot starve the rest for ever. 0
	// (the default) keeps strict priority.
	Aging time.Duration

	// Retention of finished jobs (record, events and output). A finished
	// job is removed when it is older than RetainFor or when more than
	// RetainJobs finished jobs are newer. Zero means the default; a
	// negative value turns that limit off.
	RetainFor  time.Duration // default 30 days
	RetainJobs int           // default 1,000,000

	// CAKey is the CA's private key file. With it the controller signs
	// agent certificates: join-token enrollment and renewal (enroll.go);
	// without it those routes answer 501. The CA certificate is the one
	// in TLS.CA that matches the key. Whoever holds this key can mint any
	// certificate, operator included: see SECURITY.md.
	CAKey string
	// AgentCertTTL is the lifetime of the agent certificates the
	// controller signs; default 30 days, at most certs.MaxTTL.
	AgentCertTTL time.Duration
	// CertReloadInterval is how often the controller checks whether its
	// certificate or key file changed, and reloads them; default 5s.
	CertReloadInterval time.Duration

	// StatsInterval is how often the overview of GET /stats samples the
	// job and slot counts for its history (an hour of samples at the
	// default, 10s).
	StatsInterval time.Duration

	// Webhook notifications (notify.go, issue 17; SECURITY.md
	// "Webhooks"). Webhooks are the controller-wide targets; a job's
	// own notify URLs come with it.
	Webhooks []Webhook
	// NotifyAllowHTTP permits http:// targets (the body and signature
	// then cross the network in clear).
	NotifyAllowHTTP bool
	// NotifyAllow lists address ranges a target may resolve to although
	// they are not public (loopback, private, link-local).
	NotifyAllow []netip.Prefix
	// NotifyHosts, if not empty, is the allowlist of hosts a target may
	// name ("hooks.example.com", "*.example.com").
	NotifyHosts []string
	// NotifyTLS is the webhook client's TLS configuration; nil: the
	// system's roots (tests trust their receiver's certificate here).
	NotifyTLS *tls.Config
	// NotifyRetryBase and NotifyRetryMax are the retry backoff of a
	// delivery (doubling, with jitter), default 10s and 10m;
	// NotifyMaxTries how many tries it gets, default 8.
	NotifyRetryBase time.Duration
	NotifyRetryMax  time.Duration
	NotifyMaxTries  int

	// NoSync commits without fsync. Tests only: a crash loses data.
	NoSync bool

	// OutputInRaft (cluster mode only; -output-channel=false) sends
	// agents' output to the followers inside the raft rounds, as the
	// first cluster version did, instead of on the output channel beside
	// raft (controller/outchan), which every cluster uses by default.
	// It is kept for measurements (bench row 9d-raft against 9d) and is
	// meant to be the same on every node. It only holds while the
	// cluster never used the channel: a leader that sends output in the
	// rounds cannot fill the gap of an attempt whose output an earlier
	// leader sent on the channel, so the first leader to use the channel
	// records that in the store and every later leader uses it too
	// (Node.termOutput, store.UseOutputChannel). Nodes report how they
	// would send (`operator members`, OUTPUT; the leader logs a
	// difference). Every node serves the channel's follower side and
	// repair whatever its own setting.
	OutputInRaft bool

	// Cluster mode (node.go, issue 14). ClusterAddr, when set, makes the
	// controller a node of a raft cluster: NewNode instead of New.
	ClusterAddr string // host:port of the cluster port (raft and controller-to-controller requests); the host must be an address the others can dial
	// BootstrapExpect is how many controllers a new cluster starts with:
	// when this many fresh controllers that Join names find each other,
	// they form it. 0: only join an existing cluster.
	BootstrapExpect int
	Join            []string // cluster addresses of other controllers to ask
	// RaftMultiplier scales raft's timeouts (heartbeat and election 1 s,
	// leader lease 500 ms, each times it): larger tolerates slower or
	// busier machines at the price of a slower failover; default 1.
	RaftMultiplier int
	// MaxStale bounds a stale read (?stale=1, node_stale.go): a node that
	// has not heard from a leader for longer answers 503; default 10s.
	MaxStale time.Duration
	// Raft's snapshot policy; zero is raft's default. A node takes a
	// snapshot when its log grew by RaftSnapshotThreshold entries since
	// the last (checked every RaftSnapshotInterval, with jitter), and
	// keeps RaftTrailingLogs entries behind it; a follower further
	// behind than that catches up by installing the leader's snapshot.
	RaftSnapshotThreshold uint64        // raft default 8192
	RaftSnapshotInterval  time.Duration // raft default 120s
	RaftTrailingLogs      uint64        // raft default 10240
	// RaftWALSegmentBytes is the size of raft-wal's segment files
	// (default 64 MiB). raft-wal drops a compacted log head only a whole
	// segment at a time, and still serves the entries of a segment it
	// keeps: a follower behind by less than that catches up from the log,
	// whatever RaftTrailingLogs says. Smaller segments: tests.
	RaftWALSegmentBytes int
	// The follower-lag bound (design note 3.2, cluster/lag.go): the
	// leader holds new rounds while a live voter is more than
	// MaxFollowerLag entries or MaxFollowerLagBytes bytes behind its
	// last index, so a failover never first waits for a long backlog.
	// Defaults 2000 and 64 MiB; a negative value turns that bound off.
	MaxFollowerLag      int
	MaxFollowerLagBytes int64
}

// DefaultConfig is the controller's defaults, the one place they are
// written: setDefaults gives every zero field of a Config its value
// here, and the CLI's flags, config-file keys and help text show them
// (cli/controller.go). It leaves out the fields with no default
// (DataDir, TLS, Logger, CAKey, MetricsAddr, Version), the one derived
// from another (HeartbeatInterval, LeaseTTL/3) and the ones that follow
// the data directory's file system (MinFreeBytes, MaxOutputBytes: see
// their fields); Aging's default is 0.
func DefaultConfig() Config {
	c := Config{
		HTTPAddr:           "127.0.0.1:8443",
		AgentAddr:          ":7443",
		LeaseTTL:           15 * time.Second,
		KillGrace:          5 * time.Second,
		HandshakeTimeout:   10 * time.Second,
		BackoffBase:        time.Second,
		BackoffMax:         5 * time.Minute,
		OfflineTimeout:     sched.DefaultOfflineTimeout,
		MaxBodyBytes:       1 << 20,
		BodyTimeout:        30 * time.Second,
		MaxCommandBytes:    defaultMaxCommand,
		MaxEnv:             defaultMaxEnv,
		MaxLabels:          defaultMaxLabels,
		MaxFrameBytes:      protocol.MaxFrameSize,
		MaxFollowers:       defaultMaxFollowers,
		MaxAgentSlots:      DefaultMaxAgentSlots,
		MetricsAgents:      defaultMetricsAgents,
		RetainFor:          30 * 24 * time.Hour,
		RetainJobs:         1_000_000,
		AgentCertTTL:       DefaultAgentCertTTL,
		CertReloadInterval: DefaultCertReloadInterval,
		StatsInterval:      defaultStatsInterval,
		RaftMultiplier:     1,
		MaxStale:           10 * time.Second,
		NotifyRetryBase:    10 * time.Second,
		NotifyRetryMax:     10 * time.Minute,
		NotifyMaxTries:     8,
	}
	// The follower-lag bound (cluster mode).
	c.MaxFollowerLag, c.MaxFollowerLagBytes = cluster.DefaultMaxLagEntries, cluster.DefaultMaxLagBytes
	return c
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return fmt.Errorf("%w: a data directory is required (-data-dir)", ErrConfig)
	}
	if c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "" {
		return fmt.Errorf("%w: -ca, -cert and -key are required (create them with 'jobsuite tls')", ErrConfig)
	}
	d := DefaultConfig()
	if c.HTTPAddr == "" {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.AgentAddr == "" {
		c.AgentAddr = d.AgentAddr
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	def := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&c.LeaseTTL, d.LeaseTTL)
	def(&c.HeartbeatInterval, c.LeaseTTL/3)
	def(&c.KillGrace, d.KillGrace)
	def(&c.HandshakeTimeout, d.HandshakeTimeout)
	def(&c.BodyTimeout, d.BodyTimeout)
	def(&c.BackoffBase, d.BackoffBase)
	def(&c.BackoffMax, d.BackoffMax)
	def(&c.OfflineTimeout, d.OfflineTimeout)
	def(&c.StatsInterval, d.StatsInterval)
	def(&c.AgentCertTTL, d.AgentCertTTL)
	def(&c.CertReloadInterval, d.CertReloadInterval)
	def(&c.MaxStale, d.MaxStale)
	def(&c.NotifyRetryBase, d.NotifyRetryBase)
	def(&c.NotifyRetryMax, d.NotifyRetryMax)
	if c.RetainFor == 0 {
		c.RetainFor = d.RetainFor
	}
	if c.RetainJobs == 0 {
		c.RetainJobs = d.RetainJobs
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxBodyBytes > maxBodyLimit {
		return fmt.Errorf("%w: the body limit %d is over %d bytes: a job must fit in one protocol frame to its agent", ErrConfig, c.MaxBodyBytes, maxBodyLimit)
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&c.MaxCommandBytes, d.MaxCommandBytes)
	defInt(&c.MaxEnv, d.MaxEnv)
	defInt(&c.MaxLabels, d.MaxLabels)
	defInt(&c.MaxFrameBytes, d.MaxFrameBytes)
	defInt(&c.MaxFollowers, d.MaxFollowers)
	defInt(&c.MaxAgentSlots, d.MaxAgentSlots)
	if c.MetricsAgents == 0 {
		c.MetricsAgents = d.MetricsAgents
	}
	defInt(&c.RaftMultiplier, d.RaftMultiplier)
	if c.MaxFollowerLag == 0 {
		c.MaxFollowerLag = d.MaxFollowerLag
	}
	if c.MaxFollowerLagBytes == 0 {
		c.MaxFollowerLagBytes = d.MaxFollowerLagBytes
	}
	defInt(&c.NotifyMaxTries, d.NotifyMaxTries)
	if err := c.checkWebhooks(); err != nil {
		return err
	}
	if c.MaxFrameBytes < MinFrameBytes || c.MaxFrameBytes > protocol.MaxFrameSize {
		return fmt.Errorf("%w: the frame limit must be between %d (a log chunk must fit) and %d bytes, got %d", ErrConfig, MinFrameBytes, protocol.MaxFrameSize, c.MaxFrameBytes)
	}
	if c.HeartbeatInterval >= c.LeaseTTL {
		return fmt.Errorf("%w: heartbeat interval %s must be shorter than the lease TTL %s", ErrConfig, c.HeartbeatInterval, c.LeaseTTL)
	}
	return nil
}

// Server is a running controller: the store, the scheduler, the agent
// listener and the HTTPS API.
type Server struct {
	cfg   Config
	log   hclog.Logger
	id    string
	st    *store.Store
	c     *sched.Committer
	hub   *hub.Hub
	sched *sched.Scheduler
	clock clock.Clock // the scheduler's and the retention loop's time

	disk      *diskGuard     // free space of the data directory (disk.go)
	certIDs   certIdentities // the API's client certificates, parsed once (auth.go)
	maxOutput uint64         // stored output per attempt (Config.MaxOutputBytes as resolved); 0: no cap
	metrics   *metrics       // Prometheus registry, GET /metrics and the -metrics listener
	sec       *security      // revocations, API tokens and the audit log (auth.go, audit.go)
	pki       *pki           // own certificate (reloadable) and the CA key for enrollment (enroll.go)
	history   history        // samples of the counts for GET /stats (stats.go)
	notify    *notifier      // webhook targets and the delivery worker (notify.go)
	// snapshotMu: one GET /operator/snapshot at a time (snapshot.go).
	snapshotMu sync.Mutex
	// rounds, if set, hears of every round the committer applied
	// (RecordRounds, for tests; set before Run).
	rounds func(cmds []store.Command, results []store.Result)

	// replica is set on the Server a cluster follower builds to serve a
	// job's log from its own copy (node_logs.go); nil otherwise.
	replica *replicaLogs

	ownStore bool            // Run closes st when it ends (not a cluster node's term)
	cluster  clusterView     // the node a term Server runs for; nil for a single controller
	gate     func() bool     // agentConn.gate: the term's send gate; nil for a single controller
	term     uint64          // the raft term a term Server leads; 0 for a single controller
	members  func() []string // the controllers' agent addresses, for Welcome; nil for a single controller
	handler  http.Handler    // the API's routes
	out      *outputChannel  // the term's output channel; nil with Config.OutputInRaft: output rides the committer
	// A single controller's listeners; a cluster node's term server
	// has none (agentLn, httpLn and http nil): the node serves the API
	// with handler and hands it agent sessions on agents.
	agentLn *transport.Listener
	agents  <-chan transport.Session
	httpLn  net.Listener
	http    *http.Server
}

// New opens the store, rebuilds the queue and binds both listeners; Run
// serves them. If New fails, nothing is left open.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.ClusterAddr != "" {
		return nil, fmt.Errorf("%w: -cluster-addr runs a cluster node: use NewNode", ErrConfig)
	}
	pool, cert, err := cfg.TLS.Load()
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if err := checkControllerCert(cfg, cert); err != nil {
		return nil, err
	}
	p, err := newPKI(cfg, cert, cfg.Logger.Named("pki"))
	if err != nil {
		return nil, err
	}
	size := diskSize(cfg.DataDir)
	st, err := store.Open(cfg.DataDir, store.Options{Logger: cfg.Logger.Named("store"), NoSync: cfg.NoSync, MemTableSize: defaultMemTable(size)})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	s, err := newServer(cfg, &serverDeps{st: st, pki: p, pool: pool, cert: cert, ownStore: true})
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := s.listen(pool, cert); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// checkControllerCert refuses a certificate without the controller role.
func checkControllerCert(cfg Config, cert tls.Certificate) error {
	if role, err := certs.RoleOf(cert.Leaf); err != nil || role != certs.RoleController {
		return fmt.Errorf("%w: %s is not a controller certificate (role %q); issue one with 'jobsuite tls cert create -role controller'", ErrConfig, cfg.TLS.Cert, role)
	}
	return nil
}

// serverDeps is what a Server is built on. A single controller owns
// all of it; a cluster node (node.go) builds a Server each time it
// becomes leader, over the FSM's store and the raft log, and keeps the
// listeners and the PKI across terms.
type serverDeps struct {
	st       *store.Store
	ownStore bool      // Run closes st when it ends
	log      sched.Log // nil: the committer writes st directly
	pki      *pki
	pool     *x509.CertPool
	cert     tls.Certificate
	// agents, if set, hands the server the agent sessions to serve
	// (the node's listener) instead of its own listener.
	agents <-chan transport.Session
	// cluster is the node, and gate its send gate, for a term Server.
	cluster clusterView
	gate    func() bool
	term    uint64
	members func() []string
	// output, if set, makes a term Server send its agents' output on the
	// output channel (output_channel.go), calling peers with outputCall.
	output     *outchan.LeaderOptions
	outputCall outchan.Caller
	// clock, if set, is the Server's time (tests); clock.Real otherwise.
	clock clock.Clock
}

// newServer builds a Server on d and rebuilds the queue from the store:
// every running attempt gets the restart grace, counted from Run.
func newServer(cfg Config, d *serverDeps) (*Server, error) {
	idb := make([]byte, 8)
	_, _ = rand.Read(idb)
	s := &Server{cfg: cfg, log: cfg.Logger, id: hex.EncodeToString(idb), hub: hub.New(), clock: clock.Real{},
		st: d.st, pki: d.pki, ownStore: d.ownStore, agents: d.agents, cluster: d.cluster, gate: d.gate, term: d.term, members: d.members}
	if d.clock != nil {
		s.clock = d.clock
	}

	// The disk's size sets the defaults that keep a small one from
	// filling up (disk.go).
	size := diskSize(cfg.DataDir)
	floor, maxOutput := positive(cfg.MinFreeBytes, defaultMinFree(size)), positive(cfg.MaxOutputBytes, defaultMaxOutput(size))
	s.disk = newDiskGuard(cfg.DataDir, floor, s.log.Named("disk"))
	s.log.Info("disk limits", "dir", cfg.DataDir, "size", size, "min_free_bytes", floor, "max_output_bytes", maxOutput)
	s.c = sched.NewCommitter(s.st, sched.CommitOptions{Writable: s.disk.writable, Applied: s.applied, Log: d.log})
	s.maxOutput = maxOutput
	s.notify = newNotifier(cfg, s.clock.Now, s.log.Named("webhook"))
	s.notify.outbox = s.newOutbox(s.notify)
	s.sched = sched.New(s.log.Named("scheduler"), s.st, s.c, sched.Options{
		LeaseTTL: cfg.LeaseTTL, HeartbeatInterval: cfg.HeartbeatInterval, KillGrace: cfg.KillGrace,
		BackoffBase: cfg.BackoffBase, BackoffMax: cfg.BackoffMax, Aging: cfg.Aging, MaxOutput: maxOutput,
		OfflineTimeout: cfg.OfflineTimeout,
		Disk:           s.disk, Clock: s.clock, Notify: s.notify,
		OutputChannel: d.output != nil,
	})
	// The metrics first: load counts the jobs it reads into them.
	s.metrics = newMetrics(s.log.Named("metrics"), s.sched, s.hub, s.st, metricsOptions{version: cfg.Version, maxAgents: max(cfg.MetricsAgents, 0), disk: s.disk, cluster: d.cluster, outbox: s.outboxStats})
	if err := s.sched.Load(); err != nil {
		return nil, fmt.Errorf("controller: loading queue: %w", err)
	}
	if d.output != nil {
		if err := s.newOutputChannel(*d.output, d.outputCall); err != nil {
			return nil, fmt.Errorf("controller: output channel: %w", err)
		}
	}
	var err error
	if s.sec, err = loadSecurity(s.st, s.c, s.log.Named("auth"), cfg.RetainFor); err != nil {
		return nil, fmt.Errorf("controller: loading revocations and API tokens: %w", err)
	}
	s.handler = s.routes()
	return s, nil
}

// listen binds a single controller's listeners: agents, the API and
// the plain metrics address.
func (s *Server) listen(pool *x509.CertPool, cert tls.Certificate) error {
	cfg := s.cfg
	// A stable key lets a restarted controller reset its previous run's
	// QUIC sessions, so agents reconnect at once (transport.Options).
	resetKey, err := s.st.Secret("quic-stateless-reset", 32)
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	s.agentLn, err = transport.Listen(cfg.AgentAddr, s.pki.serve(certs.ServerTLS(pool, cert)), transport.Options{
		IdleTimeout:       cfg.LeaseTTL,
		HandshakeTimeout:  cfg.HandshakeTimeout,
		StatelessResetKey: (*[32]byte)(resetKey),
		Logger:            s.log.Named("transport"),
	})
	if err != nil {
		return fmt.Errorf("controller: agent listener: %w", err)
	}
	s.httpLn, err = listenAPI(cfg.HTTPAddr, s.pki, pool, cert)
	if err != nil {
		s.agentLn.Close()
		return err
	}
	if err := s.metrics.listen(cfg.MetricsAddr, s.log.Named("metrics")); err != nil {
		s.httpLn.Close()
		s.agentLn.Close()
		return fmt.Errorf("controller: metrics listener: %w", err)
	}
	s.http = newHTTPServer(s.handler, s.log)
	return nil
}

// listenAPI binds the HTTPS API's listener. It offers HTTP/2 and
// HTTP/1.1 by ALPN (apiProtocols): clients that send many requests (the
// CLI, net/http clients) multiplex them on one connection, and a client
// that asks for no protocol gets HTTP/1.1. The log WebSocket is served
// over HTTP/1.1 only (gorilla's Upgrader takes an HTTP/1.1 Upgrade, not
// RFC 8441's CONNECT over HTTP/2): WebSocket dialers ask for http/1.1
// alone (gorilla's; the CLI's), and browsers open a connection of its
// own with http/1.1 for a WebSocket whenever the HTTP/2 server does not
// send SETTINGS_ENABLE_CONNECT_PROTOCOL — which Go's does not
// (TestAPIOffersHTTP2 checks its SETTINGS).
func listenAPI(addr string, p *pki, pool *x509.CertPool, cert tls.Certificate) (net.Listener, error) {
	httpTLS := p.serve(certs.ServerTLS(pool, cert, apiProtocols(os.Getenv("GODEBUG"))...))
	// A client may come without a certificate and show an API token
	// instead (auth answers 401 when it has neither); a certificate that
	// is given must still verify against the CA in the handshake.
	httpTLS.ClientAuth = tls.VerifyClientCertIfGiven
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("controller: API listener: %w", err)
	}
	return tls.NewListener(ln, httpTLS), nil
}

// apiProtocols are the protocols the API offers by ALPN, given the
// process's GODEBUG: h2 and http/1.1, or http/1.1 alone if GODEBUG
// turns on net/http's HTTP/2 extended CONNECT (http2xconnect=1, read as
// net/http reads it). With it, the server sends
// SETTINGS_ENABLE_CONNECT_PROTOCOL, a browser that negotiated h2 then
// opens the log WebSocket as an HTTP/2 CONNECT with :protocol
// websocket, and the log route, which takes HTTP/1.1 upgrades only,
// could not answer it: the page's log would never connect.
func apiProtocols(godebug string) []string {
	if strings.Contains(godebug, "http2xconnect=1") {
		return []string{"http/1.1"}
	}
	return []string{"h2", "http/1.1"}
}

// newHTTPServer is the API's http.Server around h.
func newHTTPServer(h http.Handler, log hclog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Debug}),
	}
}

// HTTPAddr is the address the API listens on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// AgentAddr is the address agents dial.
func (s *Server) AgentAddr() string { return s.agentLn.Addr() }

// Run serves until ctx is done or the store fails, then shuts down:
// listeners close, agent sessions end, queued writes are flushed and
// the store is closed.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.httpLn != nil {
		s.log.Info("controller ready", "api", "https://"+s.HTTPAddr(), "agents", s.AgentAddr(), "data", s.cfg.DataDir)
	}

	// Before the expiry loop starts: the restart grace counts from now.
	s.sched.StartServing(s.clock.Now())
	var wg sync.WaitGroup
	stopCommit := make(chan struct{})
	commitErr := make(chan error, 1)
	go func() {
		err := s.c.Run(stopCommit)
		commitErr <- err
		if err != nil {
			s.log.Error("store write failed; stopping", "error", err)
			cancel()
		}
	}()
	httpErr := make(chan error, 1)
	wg.Add(5)
	go func() { defer wg.Done(); s.retentionLoop(ctx) }()
	go func() { defer wg.Done(); s.sched.DispatchLoop(ctx) }()
	go func() { defer wg.Done(); s.sched.ExpiryLoop(ctx) }()
	go func() { defer wg.Done(); s.sched.DelayLoop(ctx) }()
	go func() { defer wg.Done(); s.acceptAgents(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.disk.watch(ctx, s.sched.KickDispatch) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.statsLoop(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.runNotify(ctx) }() // webhook deliveries (notify.go)
	if s.out != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.runOutputChannel(ctx) }()
	}
	if s.http != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.metrics.serve(ctx, s.log.Named("metrics")) }()
		wg.Add(1)
		go func() { defer wg.Done(); s.pki.watch(ctx) }() // reloads the certificate when its files change
		go func() {
			if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				httpErr <- err
				cancel()
			}
		}()
	}
	s.sched.KickDispatch()

	<-ctx.Done()
	s.log.Info("controller stopping")
	if s.http != nil {
		shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.http.Shutdown(shutCtx)
		shutCancel()
		_ = s.http.Close()
		s.agentLn.Close()
	}
	s.sched.CloseAgents("controller shutting down")
	wg.Wait()
	close(stopCommit)
	err := <-commitErr
	if s.ownStore {
		if cerr := s.st.Close(); err == nil {
			err = cerr
		}
	}
	select {
	case herr := <-httpErr:
		if err == nil {
			err = fmt.Errorf("controller: API server: %w", herr)
		}
	default:
	}
	s.log.Info("controller stopped")
	return err
}

// applied hears of each batch the committer applied, in the order it
// applied them, with the results the store decided: it tells the hub of
// the output chunks (outputApplied) and hands the round to the
// recorder, if a test set one (RecordRounds).
func (s *Server) applied(cmds []store.Command, results []store.Result) {
	s.outputApplied(cmds)
	if s.rounds != nil {
		s.rounds(cmds, results)
	}
}

// outputApplied tells the hub of the output chunks in a batch the
// committer applied, in the order it applied them, and of the cuts of
// jobs' logs (store.TruncateLog, output channel): the hub's tail
// matches the store, and followers woken now find the chunks there.
func (s *Server) outputApplied(cmds []store.Command) {
	for _, c := range cmds {
		switch c := c.(type) {
		case *store.Output:
			s.hub.Appended(c.Job, c.Chunk, c.Chunk.Data)
			s.hub.Ring(c.Job)
		case *store.TruncateLog:
			s.outputTruncated(c.Job, c.At)
		}
	}
}

func (s *Server) acceptAgents(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		sess, err := s.acceptAgent(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("agent listener failed", "error", err)
			}
			return
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.serveAgent(ctx, sess) }()
	}
}

// acceptAgent returns the next agent session: from the listener, or
// handed over by the cluster node.
func (s *Server) acceptAgent(ctx context.Context) (transport.Session, error) {
	if s.agentLn != nil {
		return s.agentLn.Accept(ctx)
	}
	select {
	case sess := <-s.agents:
		return sess, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// positive is v as a byte count: def for 0, none (0) for a negative v.
func positive(v int64, def uint64) uint64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return uint64(v)
}
