package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/internal/backoff"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// Version is the agent software version sent in Hello.
var Version = "0.1.0-dev"

// Config configures an agent.
type Config struct {
	// Controller is the controller's agent address, host:port, or the
	// addresses of the controllers of a cluster separated by commas
	// ("a:7443,b:7443,c:7443"), dialled in turn (controllers.go).
	// Required.
	Controller string
	TLS        certs.Files // CA, agent certificate and key; required
	// ServerName is the name every controller's certificate must carry;
	// default: the host part of the address dialled (for renewal: of
	// API).
	ServerName string
	Name       string            // must match the certificate's name; default: the certificate's name
	Slots      int               // jobs run at once; default: number of CPUs
	Labels     map[string]string // offered to job selectors
	Transport  transport.Mode    // auto (default), quic or tcp
	WorkDir    string            // directory jobs start in unless they name one; default: the agent's
	Shell      string            // default /bin/sh
	Logger     hclog.Logger

	// StateDir holds each attempt's output spool and result until the
	// controller has stored them. Default: /var/lib/jobsuite/agent-NAME
	// when running as root, else ~/.local/state/jobsuite/agent-NAME.
	StateDir string
	// SpoolMax bounds an attempt's output that the controller has not
	// acknowledged yet; past it the agent stops reading the job's pipes
	// (the job blocks on write) until acknowledgements arrive. Default 64 MiB.
	SpoolMax uint64
	// MaxLogBytes caps an attempt's output; what follows is dropped and a
	// marker line says so. 0 means no cap.
	MaxLogBytes uint64
	// TTY runs jobs on a pseudo-terminal unless they say otherwise
	// ("tty": false) or asked for their stdout and stderr apart
	// ("output": "split"); see Spec.TTY.
	TTY bool
	// DrainTimeout is how long Run lets running jobs finish after its
	// context is done (graceful drain) before it cancels them. 0 cancels
	// them at once.
	DrainTimeout time.Duration
	// Policy restricts what the agent runs: allowed commands, the user
	// jobs run as, a root for their directories, a clean environment.
	// The zero Policy restricts nothing. See Policy.
	Policy Policy
	// MetricsAddr, when set, serves GET /metrics (Prometheus) over plain
	// HTTP without authentication; host:port, port 0 picks one (see
	// Agent.MetricsAddr). Off by default.
	MetricsAddr string

	// API is the controller's HTTPS API address, host:port. When set,
	// the agent renews its certificate there at two thirds of its
	// lifetime, with no restart, and writes the new one over TLS.Cert
	// and TLS.Key; the next connection uses it (enroll.go).
	API string

	// DiskFullTimeout is how long a job's output may wait for the state
	// directory's disk to take it (the job blocks meanwhile) before the
	// attempt fails with "agent disk full: output incomplete". Default 1m.
	DiskFullTimeout time.Duration

	ReconnectMin time.Duration // first reconnect delay; default 500ms
	ReconnectMax time.Duration // longest reconnect delay; default 30s
}

// Agent connects to a controller, pulls jobs and runs them.
type Agent struct {
	cfg     Config
	log     hclog.Logger
	files   certs.Files
	sn      string
	name    string
	baseEnv []string
	policy  *policy
	metrics *metrics
	recs    *recPool // record files for the attempts' meta (state.go)
	runners *runners // goroutines kept from one attempt to the next (runners.go)
	// startedHold is startedHold; tests set it.
	startedHold time.Duration
	// features is what Hello announces; tests take bits away.
	features protocol.Features

	stopOnce sync.Once
	stopNow  chan struct{} // Stop: cancel running jobs now

	certMu sync.Mutex // held while the certificate files are read or replaced (renewal)

	// slotMu orders what the controller learns about free slots: a Credit
	// and the state a Heartbeat (or a session's first Credit) reports are
	// decided and written under it, so that a heartbeat lists an attempt
	// as ended exactly when its Credit went out before it.
	slotMu sync.Mutex

	// ctrls is the list of controller addresses and connectLoop's place
	// in it.
	ctrls *controllers
	// term is the highest leadership term a controller announced
	// (Welcome.Term, Dispatch.Term, Cancel.Term); 0: none. A Dispatch
	// or Cancel of a lower term comes from a deposed leader and is
	// dropped.
	term atomic.Uint64
	// clusterMu orders the writes of clusterFile (clusterstate.go);
	// savedCluster is what the file holds.
	clusterMu    sync.Mutex
	savedCluster clusterState
	// sleep waits d or until ctx is done, and reports whether ctx is
	// still live; tests replace it to see and skip connectLoop's waits.
	sleep func(ctx context.Context, d time.Duration) bool

	// lease is the attempt lease the controller last announced
	// (Welcome.LeaseTTL), defaultLease until one arrives: while the agent
	// holds attempts it retries at least every quarter of it.
	lease atomic.Int64

	mu   sync.Mutex
	jobs map[protocol.AttemptRef]*job
	// precancel remembers cancels for attempts not seen yet: a Cancel can
	// overtake its Dispatch, and the attempt must then not run.
	precancel map[protocol.AttemptRef]time.Time
	sess      *session // current session, nil while disconnected
	draining  bool
	idle      chan struct{} // closed and replaced whenever a job is removed
}

// session is one connection to the controller.
type session struct {
	t    transport.Session
	ctrl *protocol.Writer
	ctx  context.Context
	// creditWithResult: the Welcome agreed to FeatureCreditWithResult,
	// so a slot freed on this session returns with the attempt's
	// Finished (Finished.Credit) instead of a Credit (release).
	creditWithResult bool
	// streamReuse: the Welcome agreed to FeatureStreamReuse, so a job
	// stream whose attempt got its FinishAck waits in idle for the next
	// attempt to report (shipOnce) instead of being closed.
	streamReuse bool
	maxIdle     int // at most this many streams wait in idle

	idleMu sync.Mutex
	idle   []*jobConn
}

// helloFeatures is what the agent announces in Hello.
const helloFeatures = protocol.FeatureRedirect | protocol.FeatureEarlyRelease |
	protocol.FeatureCreditWithResult | protocol.FeatureLeaderWatch | protocol.FeatureStreamReuse

// jobConn is the agent's end of a job stream.
type jobConn struct {
	st transport.Stream
	r  *protocol.Reader
	w  *protocol.Writer
}

// jobStream returns a job stream of the session that waits for an
// attempt, or opens one.
func (s *session) jobStream() (*jobConn, error) {
	s.idleMu.Lock()
	if n := len(s.idle); n > 0 {
		c := s.idle[n-1]
		s.idle[n-1] = nil
		s.idle = s.idle[:n-1]
		s.idleMu.Unlock()
		return c, nil
	}
	s.idleMu.Unlock()
	st, err := s.t.OpenStream(s.ctx)
	if err != nil {
		return nil, err
	}
	// Only small frames come back on a job stream (acks, errors): a
	// small buffer, not 16 KiB per stream.
	return &jobConn{st: st, r: protocol.NewReaderSize(st, 0, 512), w: protocol.NewWriter(st)}, nil
}

// keepStream puts a job stream whose attempt ended with its FinishAck
// in idle for the next attempt, and reports whether it did: not when
// maxIdle streams wait already (at most one per slot is ever needed at
// once) or the session is over.
func (s *session) keepStream(c *jobConn) bool {
	if s.ctx.Err() != nil {
		return false
	}
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if len(s.idle) >= s.maxIdle {
		return false
	}
	s.idle = append(s.idle, c)
	return true
}

// job is one attempt the agent holds: running, or ended with a result
// the controller has not acknowledged yet.
type job struct {
	ref     protocol.AttemptRef
	d       protocol.Dispatch
	mf      *metaFile
	dir     string // the attempt's directory, in the layout of earlier agents; else ""
	sp      *spool
	cancel  context.CancelFunc
	started chan struct{} // closed once the process started or failed to

	// guarded by Agent.mu
	pid       int
	startedAt time.Time
	result    *protocol.Finished
	released  bool     // the process ended and its slot was granted again
	shipping  *session // the session a shipper serves, if any
	abandoned bool     // the controller refused the attempt
	// owed: the session whose Credit for this slot rides the attempt's
	// Finished (release); nil when a Credit was sent or none is due.
	owed      *session
	syncTimer *time.Timer // syncs the result resultSyncDelay after it was written; stopped when forgotten
}

// DefaultConfig is the agent's defaults, the one place they are
// written: New gives every zero field of a Config its value here, and
// the agent command's flags, config-file keys and help text show them
// (cli/agent.go). DrainTimeout is the exception New does not apply (0
// there means "cancel at once"): its default is the command's. Slots
// (the number of CPUs), StateDir and ServerName have defaults that
// depend on the host or the certificate; New works them out.
func DefaultConfig() Config {
	return Config{
		Transport:       transport.ModeAuto,
		Shell:           "/bin/sh",
		SpoolMax:        64 << 20,
		DiskFullTimeout: defaultDiskWait,
		DrainTimeout:    10 * time.Minute,
		ReconnectMin:    500 * time.Millisecond,
		ReconnectMax:    30 * time.Second,
	}
}

// New checks the configuration and the certificates.
func New(cfg Config) (*Agent, error) {
	d := DefaultConfig()
	if cfg.Controller == "" {
		return nil, fmt.Errorf("%w: the controller address is required (-controller HOST:PORT, or several: HOST:PORT,HOST:PORT)", ErrConfig)
	}
	addrs, err := ParseControllers(cfg.Controller)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := finishWrites(cfg.TLS); err != nil { // a renewal cut short by a crash
		return nil, fmt.Errorf("agent: %w", err)
	}
	_, cert, err := cfg.TLS.Load()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	role, err := certs.RoleOf(cert.Leaf)
	if err != nil || role != certs.RoleAgent {
		return nil, fmt.Errorf("%w: %s is not an agent certificate (role %q); issue one with 'jobsuite tls cert create -role agent'", ErrConfig, cfg.TLS.Cert, role)
	}
	name := cert.Leaf.Subject.CommonName
	if cfg.Name != "" && cfg.Name != name {
		return nil, fmt.Errorf("%w: -name %q does not match the certificate's name %q", ErrConfig, cfg.Name, name)
	}
	if cfg.Slots <= 0 {
		cfg.Slots = runtime.NumCPU()
	}
	if cfg.Transport == "" {
		cfg.Transport = d.Transport
	}
	if cfg.Shell == "" {
		cfg.Shell = d.Shell
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = d.ReconnectMin
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = d.ReconnectMax
	}
	if cfg.SpoolMax == 0 {
		cfg.SpoolMax = d.SpoolMax
	}
	if cfg.DiskFullTimeout <= 0 {
		cfg.DiskFullTimeout = d.DiskFullTimeout
	}
	if err := checkAPI(cfg.API); err != nil {
		return nil, err
	}
	pol, err := newPolicy(cfg.Policy, os.Geteuid())
	if err != nil {
		return nil, err
	}
	if cfg.WorkDir, err = pol.checkWorkDir(cfg.WorkDir); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 && pol.cred == nil {
		cfg.Logger.Warn("the agent runs as root and so will its jobs; set -run-as to run them as an unprivileged user")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = defaultStateDir(name)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: state directory: %v", ErrConfig, err)
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger, name: name, files: cfg.TLS, sn: cfg.ServerName,
		ctrls:     newControllers(addrs),
		sleep:     sleep,
		baseEnv:   os.Environ(),
		policy:    pol,
		stopNow:   make(chan struct{}),
		jobs:      map[protocol.AttemptRef]*job{},
		precancel: map[protocol.AttemptRef]time.Time{},
		idle:      make(chan struct{}),
		recs:      &recPool{dir: cfg.StateDir, keep: 2 * cfg.Slots},
		runners:   newRunners(3 * cfg.Slots), // runJob, the shipper and its reader

		startedHold: startedHold,
		features:    helloFeatures,
	}
	a.lease.Store(int64(defaultLease))
	a.resumeCluster()
	a.metrics = newMetrics(a)
	if err := a.listenMetrics(); err != nil {
		return nil, fmt.Errorf("%w: metrics listener: %v", ErrConfig, err)
	}
	return a, nil
}

func defaultStateDir(name string) string {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/lib/jobsuite", "agent-"+name)
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "jobsuite", "agent-"+name)
	}
	return filepath.Join(os.TempDir(), "jobsuite-agent-"+name)
}

// Name is the agent's name (its certificate's).
func (a *Agent) Name() string { return a.name }

// Stop cancels the running jobs at once (their process groups are
// killed and they are reported as cancelled); Run then returns. Use it
// for a second SIGTERM or SIGINT during a drain.
func (a *Agent) Stop() { a.stopOnce.Do(func() { close(a.stopNow) }) }

// Running returns how many attempts the agent holds.
func (a *Agent) Running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.jobs)
}

// Run connects and serves until ctx is done, reconnecting with
// exponential backoff and jitter whenever the connection is lost;
// running jobs keep running meanwhile and their output waits in the
// spool. When ctx is done the agent drains: it takes no new jobs, keeps
// heartbeating while the running ones finish (up to DrainTimeout), then
// cancels what is left (or everything at once after Stop) and returns
// once their results are delivered or a short grace has passed.
func (a *Agent) Run(ctx context.Context) error {
	defer a.runners.stop()   // the goroutines kept for attempts end with Run
	defer a.serveMetrics()() // until Run returns
	if err := a.recover(); err != nil {
		return err
	}
	jobsCtx, cancelJobs := context.WithCancel(context.Background())
	defer cancelJobs()
	connCtx, stopConn := context.WithCancel(context.Background())
	defer stopConn()
	defer a.startRenewal(connCtx)() // renews the certificate while Run runs
	connDone := make(chan error, 1)
	go func() { connDone <- a.connectLoop(connCtx, jobsCtx) }()

	select {
	case <-ctx.Done():
	case <-a.stopNow:
	case err := <-connDone:
		cancelJobs()
		a.waitJobs(10 * time.Second)
		return err
	}
	a.drain()
	if n := a.Running(); n > 0 && a.cfg.DrainTimeout > 0 {
		a.log.Info("draining: waiting for running jobs to finish", "jobs", n, "timeout", a.cfg.DrainTimeout)
		dctx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainTimeout)
		select {
		case <-a.whenIdle(dctx):
			if dctx.Err() != nil {
				a.log.Warn("drain timeout: cancelling the jobs still running", "jobs", a.Running())
			}
		case <-a.stopNow:
		}
		cancel()
	}
	if a.Running() > 0 {
		a.cancelAll("agent shutting down")
		a.waitJobs(10 * time.Second)
	}
	stopConn()
	select {
	case err := <-connDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	case <-time.After(5 * time.Second):
	}
	return nil
}

// whenIdle returns a channel closed once no attempt is held (or ctx is
// done).
func (a *Agent) whenIdle(ctx context.Context) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		defer close(c)
		for {
			a.mu.Lock()
			n, idle := len(a.jobs), a.idle
			a.mu.Unlock()
			if n == 0 {
				return
			}
			select {
			case <-idle:
			case <-ctx.Done():
				return
			}
		}
	}()
	return c
}

// waitJobs waits until every held attempt is reported, or d passes.
func (a *Agent) waitJobs(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	<-a.whenIdle(ctx)
	if n := a.Running(); n > 0 {
		a.log.Warn("stopping with results not delivered; they stay in the state directory and are reported at the next start", "jobs", n)
	}
}

// drain stops taking jobs and tells the controller.
func (a *Agent) drain() {
	a.mu.Lock()
	a.draining = true
	s := a.sess
	a.mu.Unlock()
	if s != nil {
		// A failed write means the session is gone: the reader sees it
		// and reconnects, and the next session sends Drain at its start.
		_ = s.ctrl.Write(&protocol.Drain{})
	}
}

func (a *Agent) cancelAll(reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, j := range a.jobs {
		a.log.Info("cancelling job", "job", j.ref.JobID, "attempt", j.ref.Attempt, "reason", reason)
		j.cancel()
	}
}

// defaultLease is the lease assumed before a controller has announced
// one: the controller's default.
const defaultLease = 15 * time.Second

// connectLoop keeps a session up until ctx is done.
//
// It dials the controller addresses in turn (controllers.go): on a
// failed try it moves on to the next address at once, and only after a
// whole round over the list failed does it wait, with exponential
// backoff and jitter, from ReconnectMin up to ReconnectMax. Besides:
//   - a session the controller welcomed starts the backoff over when it
//     ends: the controller went away (a restart, a crash, a dropped
//     link, a lost leadership), and the sooner the agent is back the
//     better;
//   - a Redirect naming the leader is followed at once (up to
//     maxRedirects in a row); one naming no leader (an election) waits
//     100-500 ms before the next address;
//   - while the agent holds attempts (running, or with results not yet
//     acknowledged) it tries at least every quarter of the controller's
//     lease (jittered between an eighth and a quarter), however far the
//     backoff has grown, and bounds each dial to that too: their leases
//     run on the controller, and an agent that waits longer than what
//     is left of a lease finds its healthy jobs declared lost. A link
//     that comes back after an outage of up to half the lease (with
//     heartbeats every third of it) leaves the agent time to return.
//     After a restart the controller gives attempts a lease plus that
//     quarter (controller.scheduler.restartGrace).
func (a *Agent) connectLoop(ctx, jobsCtx context.Context) error {
	// Each wait is between half and all of its delay.
	p := backoff.Policy{Base: a.cfg.ReconnectMin, Max: a.cfg.ReconnectMax, Down: 0.5}
	// No leader known: between 100 and 500 ms.
	noLeader := backoff.Policy{Base: 500 * time.Millisecond, Down: 0.8}
	for {
		addr := a.ctrls.next()
		res, err := a.session(ctx, jobsCtx, addr)
		if res.redirect != nil {
			a.metrics.redirect()
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errFatal) {
			a.log.Error("controller refused this agent; not reconnecting", "controller", addr, "error", err)
			return err
		}
		next := a.ctrls.done(res)
		if next.roundFailed && a.term.Load() != 0 {
			// No controller welcomed the agent in a whole round: forget
			// the term, so that a cluster rebuilt from scratch (terms
			// start over) can serve it. Fencing a deposed leader is the
			// controller's own job first (PROTOCOL.md §2.4).
			a.log.Info("no controller welcomed this agent in a whole round; forgetting the leadership term seen", "term", a.term.Load())
			a.term.Store(0)
		}
		a.saveCluster() // members a redirect or welcome taught, the term
		var wait time.Duration
		switch next.kind {
		case pauseNoLeader:
			wait = noLeader.Delay(1, rand.Float64())
		case pauseBackoff:
			wait = p.Delay(next.n, rand.Float64())
		}
		if held := a.Running(); held > 0 && wait > 0 {
			wait = min(wait, p.Jitter(a.holdRetry(), rand.Float64()))
		}
		to := a.ctrls.next()
		switch {
		case res.redirect != nil && next.kind == pauseNone:
			a.log.Info("controller is not the leader; dialing the leader", "controller", addr, "leader", to)
		case res.redirect != nil:
			a.log.Warn("controller is not the leader and knows no leader; trying another", "controller", addr, "error", err, "next", to, "in", wait.Round(time.Millisecond), "jobs", a.Running())
		default:
			a.log.Warn("connection to controller lost; reconnecting", "controller", addr, "error", err, "next", to, "in", wait.Round(time.Millisecond), "jobs", a.Running())
		}
		a.metrics.reconnect()
		if !a.sleep(ctx, wait) {
			return nil
		}
	}
}

// holdRetry is the longest an agent holding attempts waits between two
// reconnect tries, and about the longest one try may take: a quarter of
// the controller's lease, so that a try made after the controller (or
// the link) is back lands well inside the lease.
func (a *Agent) holdRetry() time.Duration {
	return time.Duration(a.lease.Load()) / 4
}

// dialTimeout bounds one dial: the transport's handshake timeout, or
// for an agent that holds attempts a quarter of the lease (at least 2s).
func (a *Agent) dialTimeout() time.Duration {
	if a.Running() == 0 {
		return transport.DefaultHandshakeTimeout
	}
	return min(max(a.holdRetry(), 2*time.Second), transport.DefaultHandshakeTimeout)
}

// idleTimeouts returns the session's idle timeout and keep-alive
// period: a quarter of the controller's lease (at least 2 s), with a
// keep-alive every third of that. A controller that dies without a word
// (kill -9, a lost host; with QUIC, nothing answers for it) is noticed
// after the idle timeout, so an agent moves on to a new leader of a
// cluster, or starts redialling a restarted controller, within a
// quarter lease rather than at QUIC's default 15 s. The controller's
// own idle timeout is its lease; the shorter one holds for the session.
func (a *Agent) idleTimeouts() (idle, keepAlive time.Duration) {
	idle = max(time.Duration(a.lease.Load())/4, 2*time.Second)
	return idle, idle / 3
}

// dial opens a session with the controller at addr. Certificates are
// reloaded on every connection, so renewed files on disk take effect at
// the next reconnect.
func (a *Agent) dial(ctx context.Context, addr string) (transport.Session, error) {
	a.certMu.Lock()
	pool, cert, err := a.files.Load()
	a.certMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("loading certificates: %w", err)
	}
	sn := a.serverName(addr)
	hs := a.dialTimeout()
	dctx, cancel := context.WithTimeout(ctx, hs+hs/2)
	defer cancel()
	idle, keepAlive := a.idleTimeouts()
	t, err := transport.Dial(dctx, addr, certs.ClientTLS(pool, cert, sn), a.cfg.Transport,
		transport.Options{Logger: a.log.Named("transport"), HandshakeTimeout: hs, IdleTimeout: idle, KeepAlive: keepAlive})
	if err != nil {
		if errors.Is(err, transport.ErrHandshake) {
			return nil, fmt.Errorf("dialing %s: %w (check -ca and that the controller certificate names %q)", addr, err, sn)
		}
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return t, nil
}

// errFatal marks errors that reconnecting cannot fix.
var errFatal = ErrRejected

// session dials addr once and serves the connection until it ends. The
// result says whether the controller welcomed the agent before the
// session ended, and where it redirected it, if it did.
func (a *Agent) session(ctx, jobsCtx context.Context, addr string) (res tryResult, err error) {
	res.addr = addr
	t, err := a.dial(ctx, addr)
	if err != nil {
		return res, err
	}
	defer t.Close("agent session ended")
	log := a.log.With("controller", addr, "transport", t.Transport())

	ctrlStream, err := t.OpenStream(ctx)
	if err != nil {
		return res, fmt.Errorf("opening control stream: %w", err)
	}
	w := protocol.NewWriter(ctrlStream)
	r := protocol.NewReader(ctrlStream, 0)
	if err := w.Write(&protocol.Hello{
		Version: protocol.Version, Name: a.name, Labels: a.cfg.Labels,
		Slots: uint32(a.cfg.Slots), AgentVersion: Version, Running: a.held(),
		Features: a.features,
	}); err != nil {
		return res, fmt.Errorf("sending hello: %w", err)
	}
	_ = ctrlStream.SetReadDeadline(time.Now().Add(15 * time.Second))
	m, err := r.Read()
	if err != nil {
		return res, fmt.Errorf("waiting for welcome: %w", err)
	}
	_ = ctrlStream.SetReadDeadline(time.Time{})
	var welcome *protocol.Welcome
	switch m := m.(type) {
	case *protocol.Welcome:
		welcome = m
	case *protocol.Redirect:
		res.redirect = m
		return res, fmt.Errorf("%s is not the leader (leader %q)", addr, m.Leader)
	case *protocol.Error:
		if m.Code == protocol.CodeForbidden || m.Code == protocol.CodeVersion {
			return res, fmt.Errorf("%w: %s", errFatal, m.Message)
		}
		return res, fmt.Errorf("controller refused this agent: %s", m.Message)
	default:
		return res, fmt.Errorf("expected welcome, got %s", m.Type())
	}
	if err := protocol.CheckVersion(welcome.Version); err != nil {
		return res, fmt.Errorf("%w: %v", errFatal, err)
	}
	if seen := a.term.Load(); welcome.Term != 0 && welcome.Term < seen {
		// A deposed leader that does not know it yet: what it sends is
		// void. Try the others.
		return res, fmt.Errorf("%s welcomed this agent as leader of term %d, but term %d has begun: it is a deposed leader", addr, welcome.Term, seen)
	}
	a.seeTerm(welcome.Term)
	if len(welcome.Members) > 0 {
		a.ctrls.learn(welcome.Members, true)
	}
	if welcome.LeaseTTL > 0 {
		a.lease.Store(int64(welcome.LeaseTTL))
	}
	res.welcomed = true
	a.saveCluster() // the members and term of this welcome outlive a restart

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // a blocked read of the control stream ends with the session
		select {
		case <-t.Done():
		case <-sctx.Done():
		}
		stop()
		t.Close("agent stopping")
	}()
	s := &session{t: t, ctrl: w, ctx: sctx,
		creditWithResult: welcome.Features.Has(protocol.FeatureCreditWithResult),
		streamReuse:      welcome.Features.Has(protocol.FeatureStreamReuse),
		maxIdle:          a.cfg.Slots,
	}
	// The first Credit covers every slot no attempt occupies; releases
	// from here on send their own (slotMu keeps the two apart).
	a.slotMu.Lock()
	a.mu.Lock()
	a.sess = s
	draining := a.draining
	free := a.cfg.Slots
	for _, j := range a.jobs {
		if !j.released {
			free--
		}
		a.shipLocked(j, s)
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.sess == s {
			a.sess = nil
		}
		a.mu.Unlock()
	}()
	var err0 error
	if draining {
		err0 = w.Write(&protocol.Drain{})
	} else if free > 0 {
		err0 = w.Write(&protocol.Credit{Slots: uint32(free)})
	}
	a.slotMu.Unlock()
	if err0 != nil {
		return res, err0
	}
	log.Info("connected", "slots", a.cfg.Slots, "held", a.Running(), "heartbeat", welcome.HeartbeatInterval, "term", welcome.Term)
	go a.heartbeat(sctx, w, welcome.HeartbeatInterval)
	var moved atomic.Pointer[protocol.Redirect] // a watched controller named a new leader
	if welcome.Features.Has(protocol.FeatureLeaderWatch) {
		go a.watchLeader(sctx, addr, welcome.Term, func(rd *protocol.Redirect) {
			moved.Store(rd)
			log.Info("another controller reports a new leader; leaving this one", "leader", rd.Leader)
			t.Close("the cluster has a new leader")
		})
	}

	for {
		m, err := r.Read()
		if err != nil {
			if rd := moved.Load(); rd != nil {
				res.redirect = rd
				return res, fmt.Errorf("%s is no longer the leader (leader %q)", addr, rd.Leader)
			}
			if sctx.Err() != nil && ctx.Err() == nil {
				return res, fmt.Errorf("session closed: %w", err)
			}
			return res, err
		}
		switch m := m.(type) {
		case *protocol.Dispatch:
			if err := a.fenced(log, m.Term, "Dispatch", m.JobID, m.Attempt); err != nil {
				return res, err
			}
			if err := a.start(jobsCtx, s, m); err != nil {
				log.Error("cannot start job", "job", m.JobID, "error", err)
			}
		case *protocol.Cancel:
			if err := a.fenced(log, m.Term, "Cancel", m.JobID, m.Attempt); err != nil {
				return res, err
			}
			a.cancelJob(protocol.AttemptRef{JobID: m.JobID, Attempt: m.Attempt}, m.Reason)
		case *protocol.StatusRequest:
			_ = w.Write(a.status(m)) // a broken stream ends this loop's next read
		case *protocol.Redirect:
			res.redirect = m
			return res, fmt.Errorf("%s is no longer the leader (leader %q)", addr, m.Leader)
		case *protocol.Error:
			return res, fmt.Errorf("controller closed the session: %s", m.Message)
		default:
			log.Warn("unexpected message from controller; ignoring it", "type", m.Type())
		}
	}
}

// serverName is the name the certificate of the controller at addr
// must carry: Config.ServerName, else the host of addr.
func (a *Agent) serverName(addr string) string {
	if a.sn != "" {
		return a.sn
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "localhost"
	}
	return host
}

// seeTerm raises the highest leadership term seen to t, and reports
// whether it did.
func (a *Agent) seeTerm(t uint64) bool {
	for {
		seen := a.term.Load()
		if t <= seen {
			return false
		}
		if a.term.CompareAndSwap(seen, t) {
			return true
		}
	}
}

// fenced checks the term of a Dispatch or Cancel: one of a term lower
// than a term already seen comes from a deposed leader, and is dropped
// with an error that ends the session. Term 0 is not fenced.
func (a *Agent) fenced(log hclog.Logger, term uint64, what string, job uint64, attempt uint32) error {
	if term == 0 {
		return nil
	}
	if seen := a.term.Load(); term < seen {
		log.Warn("dropping a message of a deposed leader", "message", what, "job", job, "attempt", attempt, "term", term, "current_term", seen)
		a.metrics.fenced()
		return fmt.Errorf("dropped a %s of term %d: term %d has begun, this controller is a deposed leader", what, term, seen)
	}
	if a.seeTerm(term) {
		a.saveCluster()
	}
	return nil
}

func (a *Agent) heartbeat(ctx context.Context, w *protocol.Writer, every time.Duration) {
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			seq++
			a.slotMu.Lock()
			held, ended := a.heldEnded()
			err := w.Write(&protocol.Heartbeat{Seq: seq, Running: held, Ended: ended})
			a.slotMu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// held lists the attempts the agent holds (running or not yet
// reported), sorted.
func (a *Agent) held() []protocol.AttemptRef {
	held, _ := a.heldEnded()
	return held
}

// heldEnded lists the attempts the agent holds and, of those, the ones
// whose slot it granted again (the process ended), each sorted.
func (a *Agent) heldEnded() (held, ended []protocol.AttemptRef) {
	a.mu.Lock()
	defer a.mu.Unlock()
	held = make([]protocol.AttemptRef, 0, len(a.jobs))
	for ref, j := range a.jobs {
		if j.abandoned {
			continue
		}
		held = append(held, ref)
		// An attempt whose slot rides its Finished on this session is
		// listed as running: the heartbeat is not ordered with the
		// Finished on its job stream, and the controller counts the slot
		// free once it has the result (PROTOCOL.md §2.1).
		if j.released && (j.owed == nil || j.owed != a.sess) {
			ended = append(ended, ref)
		}
	}
	byID := func(r []protocol.AttemptRef) {
		sort.Slice(r, func(i, j int) bool { return r[i].JobID < r[j].JobID })
	}
	byID(held)
	byID(ended)
	return held, ended
}

func (a *Agent) cancelJob(ref protocol.AttemptRef, reason string) {
	a.mu.Lock()
	j := a.jobs[ref]
	if j == nil {
		now := time.Now()
		for r, at := range a.precancel { // keep the set small
			if now.Sub(at) > time.Minute {
				delete(a.precancel, r)
			}
		}
		a.precancel[ref] = now
	}
	a.mu.Unlock()
	if j == nil {
		return
	}
	a.log.Info("cancelling job", "job", ref.JobID, "attempt", ref.Attempt, "reason", reason)
	j.cancel()
}

// spoolPath is where the attempt's output is spooled, if it writes any.
func (a *Agent) spoolPath(ref protocol.AttemptRef) string {
	return filepath.Join(a.cfg.StateDir, strconv.FormatUint(ref.JobID, 10)+"-"+strconv.FormatUint(uint64(ref.Attempt), 10)+spoolExt)
}

// newSpool makes the spool of a new attempt. Its output is capped at the
// lower of the agent's -max-log-bytes and the controller's cap
// (Dispatch.MaxOutput); the marker line says which.
func (a *Agent) newSpool(ref protocol.AttemptRef, d *protocol.Dispatch) *spool {
	sp := newSpool(a.spoolPath(ref), a.cfg.SpoolMax, a.cfg.MaxLogBytes)
	if d.MaxOutput > 0 && (sp.limit == 0 || d.MaxOutput < sp.limit) {
		sp.limit, sp.limitBy = d.MaxOutput, "the most the controller stores, its max_output_bytes"
	}
	if a.cfg.DiskFullTimeout > 0 {
		sp.diskWait = a.cfg.DiskFullTimeout
	}
	sp.events = &spoolLog{a: a, ref: ref}
	return sp
}

// spoolLog reports an attempt's spool write errors in the agent's log
// and metrics. A disk that is just full enough pauses and resumes a
// job's output many times a second (each acknowledgement frees a
// little): the log says so at most every spoolLogEvery per attempt,
// with the count of pauses since; every failed write is counted in the
// metrics.
type spoolLog struct {
	a   *Agent
	ref protocol.AttemptRef

	mu      sync.Mutex
	logged  time.Time // of the last line
	pauses  int       // pauses since
	pausing bool      // the last pause was logged: log its end
}

const spoolLogEvery = 10 * time.Second

func (l *spoolLog) writeFailed(err error, first bool) {
	l.a.metrics.spoolWriteError()
	if !first {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pauses++
	if now := time.Now(); now.Sub(l.logged) >= spoolLogEvery {
		l.a.log.Error("cannot write the job's output to the state directory; the job's output (and the job) waits for space",
			"job", l.ref.JobID, "attempt", l.ref.Attempt, "dir", l.a.cfg.StateDir, "gives_up_in", l.a.diskFullTimeout(),
			"pauses", l.pauses, "error", err)
		l.logged, l.pauses, l.pausing = now, 0, true
	}
}

func (l *spoolLog) writeRecovered() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pausing {
		l.a.log.Info("the job's output is written again", "job", l.ref.JobID, "attempt", l.ref.Attempt)
		l.pausing = false
	}
}

func (a *Agent) diskFullTimeout() time.Duration {
	if a.cfg.DiskFullTimeout > 0 {
		return a.cfg.DiskFullTimeout
	}
	return defaultDiskWait
}

// start runs one dispatched attempt in the background.
func (a *Agent) start(jobsCtx context.Context, s *session, d *protocol.Dispatch) error {
	ref := protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt}
	a.mu.Lock()
	if _, dup := a.jobs[ref]; dup {
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	// Nothing is written before the process starts: an agent that dies
	// before that has run nothing, and the lease recovers the attempt.
	sp := a.newSpool(ref, d)
	jctx, cancel := context.WithCancel(jobsCtx)
	j := &job{ref: ref, d: *d, mf: &metaFile{pool: a.recs}, sp: sp, cancel: cancel, started: make(chan struct{})}
	a.mu.Lock()
	if _, ok := a.precancel[ref]; ok {
		delete(a.precancel, ref)
		cancel() // Run starts nothing and reports it cancelled
	}
	a.jobs[ref] = j
	a.shipLocked(j, s)
	a.mu.Unlock()
	a.runners.goRun(func() { a.runJob(jctx, jobsCtx, j) })
	return nil
}

// runJob runs the attempt's process, spooling its output.
func (a *Agent) runJob(ctx, jobsCtx context.Context, j *job) {
	d := &j.d
	log := a.log.With("job", d.JobID, "attempt", d.Attempt)
	vars := []string{
		"JOBSUITE_JOB_ID=" + strconv.FormatUint(d.JobID, 10),
		"JOBSUITE_ATTEMPT=" + strconv.FormatUint(uint64(d.Attempt), 10),
		"JOBSUITE_JOB_NAME=" + d.Name,
		"JOBSUITE_AGENT=" + a.name,
	}
	startedOnce := sync.OnceFunc(func() { close(j.started) })
	var brokenOnce sync.Once
	// The policy is checked before anything runs: a refused attempt
	// starts no process and is reported failed, with no Started.
	l, err := a.policy.prepare(d.Command, d.Dir, a.cfg.WorkDir, a.baseEnv, vars, d.Env)
	var res Result
	if err != nil {
		log.Warn("job refused by the agent policy; nothing runs", "command", d.Command, "reason", err)
		res = Result{Outcome: OutcomeFailed, ExitCode: -1, Err: err}
	} else {
		tty, split := a.outputMode(d)
		env := l.env
		if tty && !hasEnv(d.Env, "TERM") {
			env = setEnv(env, "TERM", ttyTerm)
		}
		// One line per job at info level, at its end; the start only at
		// debug: a log line costs a formatted write per job.
		log.Debug("job starting", "command", d.Command, "tty", tty, "split_output", split)
		res = Run(ctx, Spec{
			Command: d.Command, Shell: a.cfg.Shell, Env: env, Dir: l.dir, Credential: l.cred,
			Timeout: d.Timeout, KillGrace: d.KillGrace, Capture: d.CaptureLogs, Split: split, TTY: tty,
		}, func(p Process) {
			a.mu.Lock()
			j.pid, j.startedAt = p.PID, p.StartedAt
			a.mu.Unlock()
			startedOnce() // Started goes out while the PID is recorded
			a.metrics.jobStarted()
			// Before any output is read, so a spool file never exists
			// without its meta file.
			m := &meta{Dispatch: *d, PID: p.PID, StartTick: p.StartTick}
			if p.StartTickMax != p.StartTick {
				m.StartTickMax = p.StartTickMax
			}
			if err := j.mf.write(m); err != nil {
				log.Error("cannot record the process on disk", "error", err)
			}
		}, func(stream uint8, data []byte) {
			// Blocks while the spool is full, and while the disk refuses
			// its writes; returns early only when the agent stops for good,
			// or when the disk refused for too long: then the job is
			// stopped, and fails below.
			a.metrics.output(len(data))
			if err := j.sp.write(jobsCtx, stream, data); errors.Is(err, errSpoolBroken) {
				brokenOnce.Do(func() {
					log.Error("giving up on the job's output: stopping the job; it fails with its output incomplete", "error", err)
					j.cancel()
				})
			}
		})
	}
	startedOnce()
	if err := j.sp.brokenErr(); err != nil {
		// Never "completed" with a hole in the log.
		res.Outcome, res.Err = OutcomeFailed, err
	}
	end, _, _ := j.sp.state() // the process and its pipes are done: end is final
	f := &protocol.Finished{
		Outcome: protocol.Outcome(res.Outcome), ExitCode: int32(res.ExitCode), Signal: res.Signal,
		Duration: res.Duration, UserCPU: res.UserCPU, SystemCPU: res.SystemCPU,
		MaxRSS: res.MaxRSS, LogBytes: end,
	}
	if res.Err != nil {
		f.Error = res.Err.Error()
	}
	// The result is written (not synced) before anything is reported:
	// from here on an agent crash keeps it. It is synced resultSyncDelay
	// later unless the FinishAck came first (doc.go: "When the result is
	// durable").
	if err := j.mf.write(&meta{Dispatch: *d, PID: res.PID, Result: f}); err != nil {
		log.Error("cannot record the result on disk", "error", err)
	}
	a.metrics.jobFinished(res.Outcome)
	// The sync is set before the spool closes, so before the attempt can
	// be forgotten, which stops it: the FinishAck usually comes first,
	// and then no sync runs, nor a goroutine to find it moot.
	t := time.AfterFunc(resultSyncDelay, func() {
		if err := j.mf.sync(); err != nil {
			log.Error("cannot sync the result to disk", "error", err)
		}
	})
	a.mu.Lock()
	j.result = f // before the spool closes: a shipper that sees it closed reads the result
	j.syncTimer = t
	a.mu.Unlock()
	a.release(j)
	j.sp.close()
	// Logged once the slot is granted again and the shipper can send the
	// result: a log write that waits on a busy disk delays neither.
	log.Info("job finished", "command", d.Command, "outcome", res.Outcome, "exit_code", res.ExitCode, "duration", res.Duration)
}

// outputMode decides how an attempt's output is captured: on a
// pseudo-terminal when the dispatch asks for one, or by the agent's
// default (Config.TTY) unless it asks for no terminal or for split
// output; else on one pipe, or two with split output (PROTOCOL.md,
// Dispatch). Values it does not know count as the default (TTY) and as
// ordered (Output).
func (a *Agent) outputMode(d *protocol.Dispatch) (tty, split bool) {
	switch d.TTY {
	case protocol.TTYOn:
		tty = true
	case protocol.TTYOff:
	default:
		tty = a.cfg.TTY && d.Output != protocol.OutputSplit
	}
	return tty, !tty && d.Output == protocol.OutputSplit
}

// hasEnv reports whether env (KEY=VALUE entries) sets key.
func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// resultSyncDelay is how long a result may wait for its FinishAck before
// the agent syncs it to disk; a FinishAck in time makes the sync moot
// (doc.go: "When the result is durable").
const resultSyncDelay = 50 * time.Millisecond

// release grants the slot of an attempt whose process has ended: the
// attempt is still held (its result waits for the FinishAck) but runs
// nothing, so the controller may send the next job at once. On a
// session that agreed to FeatureCreditWithResult the grant rides the
// attempt's Finished (shipOnce) instead of a Credit of its own — one
// frame less on the wire per job — unless the controller has refused
// the attempt already (no Finished will be read).
func (a *Agent) release(j *job) {
	a.slotMu.Lock()
	defer a.slotMu.Unlock()
	a.mu.Lock()
	if j.released {
		a.mu.Unlock()
		return
	}
	j.released = true
	s, draining := a.sess, a.draining
	if s != nil && !draining && s.creditWithResult && !j.abandoned {
		j.owed = s
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	if s != nil && !draining {
		// A lost credit is not lost for good: a failed write ends the
		// session, and the next heartbeat resynchronises the credits.
		_ = s.ctrl.Write(&protocol.Credit{Slots: 1})
	}
}

// shipLocked starts a shipper for j on session s unless one runs. The
// caller holds a.mu.
func (a *Agent) shipLocked(j *job, s *session) {
	if j.shipping == s || j.abandoned {
		return
	}
	j.shipping = s
	a.runners.goRun(func() { a.ship(j, s) })
}

// ship reports one attempt on session s: it opens the attempt's stream,
// sends Started, the output from the last acknowledged offset, and the
// result; once the controller acknowledges the result, the attempt is
// forgotten and its slot offered again. If the stream fails while the
// session lives on, it opens a new one after a pause; when the session
// ends, the next session starts a new shipper where this one stopped.
func (a *Agent) ship(j *job, s *session) {
	log := a.log.With("job", j.ref.JobID, "attempt", j.ref.Attempt)
	defer func() {
		a.mu.Lock()
		if j.shipping == s {
			j.shipping = nil
		}
		a.mu.Unlock()
	}()
	delay := 100 * time.Millisecond
	for {
		switch msg, done := a.shipOnce(j, s, log); {
		case done:
			a.forget(j)
			return
		case msg != "":
			a.abandon(j, msg, log)
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
		log.Debug("reopening the job stream")
	}
}

// shipOnce reports the attempt on one stream. done says the controller
// stored the result; refused carries the controller's reason when it
// refuses the attempt. Neither means the stream failed.
//
// Frames that are ready together go out in one write (one QUIC packet
// or TLS record, not one per frame): JobOpen waits for the process to
// start and leaves with Started, and for up to startedHold after the
// start the shipper holds them back for the first output or the end of
// the process, so that a short job is reported in a single write —
// JobOpen, Started, its output and Finished. The controller then also
// records its start and its end in one commit. The times reported are
// the process's own (Started.StartedAt), whatever the hold.
func (a *Agent) shipOnce(j *job, s *session, log hclog.Logger) (refused string, done bool) {
	c, err := s.jobStream()
	if err != nil {
		return "", false
	}
	st, w := c.st, c.w
	// On a session that agreed to FeatureStreamReuse, a stream whose
	// attempt got its FinishAck is kept for the next attempt: nothing
	// more is sent on it, and it is neither closed nor aborted (either
	// would cost QUIC a few packets each way). Any other end aborts it.
	var reusable atomic.Bool
	kept := false
	defer func() {
		if !kept {
			st.Abort()
		}
	}()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// A write blocked on the stream's flow control does not see ctx.
	// When the stream is over for this side (the controller ended it
	// with an Error — it then reads on only briefly — or it broke, or
	// the session ended), abort it so such a write returns and the
	// shipper can open a new stream; otherwise it waits while the
	// session lives.
	stopAbort := context.AfterFunc(ctx, st.Abort)
	defer stopAbort()
	finAck := make(chan struct{})
	refusedCh := make(chan string, 1)
	a.runners.goRun(func() {
		defer cancel()
		for {
			m, err := c.r.Read()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *protocol.LogAck:
				j.sp.ack(m.Offset)
			case *protocol.FinishAck:
				// The attempt is over and the stream is whole: it may carry
				// the next attempt unless the session is ending already.
				if s.streamReuse && stopAbort() {
					reusable.Store(true)
				}
				close(finAck)
				return
			case *protocol.Error:
				// Only a stale attempt is refused for good; other errors
				// (the controller cannot store output, a protocol slip)
				// end this stream and the shipper tries again.
				if m.Code == protocol.CodeStaleAttempt {
					refusedCh <- m.Message
				} else {
					log.Warn("controller ended the job stream", "code", m.Code, "error", m.Message)
				}
				return
			}
		}
	})
	// outcome reads what the controller said once the stream is over,
	// and keeps the stream for the next attempt if it may.
	outcome := func() (string, bool) {
		<-ctx.Done()
		select {
		case <-finAck:
			kept = reusable.Load() && s.keepStream(c)
			return "", true
		case msg := <-refusedCh:
			return msg, false
		default:
			return "", false
		}
	}

	select {
	case <-j.started:
	case <-ctx.Done():
		return outcome()
	}
	_, acked, _ := j.sp.state()
	pending := []protocol.Message{&protocol.JobOpen{JobID: j.ref.JobID, Attempt: j.ref.Attempt, Offset: acked}}
	a.mu.Lock()
	pid, at := j.pid, j.startedAt
	a.mu.Unlock()
	var holdUntil time.Time
	if pid > 0 {
		pending = append(pending, &protocol.Started{PID: uint32(pid), StartedAt: at})
		holdUntil = at.Add(a.startedHold)
	}
	flush := func(more ...protocol.Message) error {
		pending = append(pending, more...)
		err := w.WriteAll(pending...)
		clear(pending) // no reference to a chunk's buffer
		pending = pending[:0]
		return err
	}
	off := acked
	var buf []byte // allocated by next at the first output: most jobs of many write none
	for {
		if !j.sp.ready(off) {
			// Nothing to add for now: hold what is pending while the
			// process has just started, else send it before waiting.
			if hold := time.Until(holdUntil); hold > 0 && len(pending) > 0 {
				if !j.sp.wait(ctx, off, hold) {
					cancel()
					return outcome()
				}
				continue
			}
			if len(pending) > 0 {
				if err := flush(); err != nil {
					cancel()
					return outcome()
				}
			}
		}
		stream, data, at, err := j.sp.next(ctx, off, buf)
		if errors.Is(err, errSpoolDone) {
			break
		}
		if err == nil {
			buf = data[:cap(data)]
			// Sent at once: the next chunk reuses buf.
			err = flush(&protocol.LogChunk{Stream: protocol.Stream(stream), Offset: at, Data: data})
		}
		if err != nil {
			cancel()
			return outcome()
		}
		off = at + uint64(len(data))
	}
	a.mu.Lock()
	f := j.result
	if j.owed == s {
		// The slot returns with the result. Sent again on a reopened
		// stream of the same session, it still says so: the controller
		// counts the result it accepts, once.
		fc := *f
		fc.Credit = true
		f = &fc
	}
	a.mu.Unlock()
	if err := flush(f); err != nil {
		cancel()
		return outcome()
	}
	if !s.streamReuse {
		_ = st.Close() // the Finished is the last frame of the stream
	}
	return outcome()
}

// startedHold is how long after a process started its Started may wait
// for the first output or the end of the process, to leave in the same
// write (shipOnce).
const startedHold = 5 * time.Millisecond

// abandon drops an attempt the controller no longer accepts (it was
// lost and retried elsewhere, or cancelled): the process is killed and
// nothing more is reported.
func (a *Agent) abandon(j *job, why string, log hclog.Logger) {
	log.Warn("controller refused the attempt; stopping it", "reason", why)
	a.slotMu.Lock()
	a.mu.Lock()
	j.abandoned = true
	// A refused result returned no slot: grant it now if the session its
	// Finished was to return it on is still the current one (a later
	// session's first Credit counted it).
	s := j.owed
	grant := s != nil && s == a.sess && !a.draining
	j.owed = nil
	a.mu.Unlock()
	if grant {
		// A control-stream write, not a disk one: a failed write ends
		// the session, the session's reader reports it, and the next
		// session's heartbeats resynchronise the credits.
		_ = s.ctrl.Write(&protocol.Credit{Slots: 1})
	}
	a.slotMu.Unlock()
	j.cancel()
	go func() {
		<-j.sp.waitClosed()
		a.forget(j)
	}()
}

// forget drops an attempt and its files. Its slot was granted again
// when its process ended (release).
func (a *Agent) forget(j *job) {
	a.release(j) // a no-op: every attempt is released before it is forgotten
	j.sp.remove()
	j.mf.remove() // last: a spool file never outlives its meta file
	if j.dir != "" {
		_ = os.RemoveAll(j.dir)
	}
	a.mu.Lock()
	if j.syncTimer != nil {
		j.syncTimer.Stop() // the result is stored: nothing to sync
	}
	if a.jobs[j.ref] == j {
		delete(a.jobs, j.ref)
	}
	close(a.idle)
	a.idle = make(chan struct{})
	a.mu.Unlock()
}

// recover loads the attempts a previous run of the agent left in the
// state directory: their output and results are reported at the first
// connection. An attempt whose process was still running when the agent
// died is killed (its process group) and reported as failed.
func (a *Agent) recover() error {
	entries, err := scanState(a.cfg.StateDir, a.recs)
	if err != nil {
		return fmt.Errorf("agent: reading state directory: %w", err)
	}
	for _, e := range entries {
		ref, m := e.ref, e.m
		mf := &metaFile{pool: a.recs, f: e.rec}
		if m == nil {
			a.log.Warn("discarding unreadable attempt state", "error", e.err)
			mf.remove()
			if e.dir != "" {
				_ = os.RemoveAll(e.dir)
			}
			continue
		}
		if _, dup := a.jobs[ref]; dup { // cannot happen but in a corrupt directory
			a.log.Warn("discarding a second record of an attempt", "job", ref.JobID, "attempt", ref.Attempt)
			mf.remove()
			continue
		}
		if m.Result == nil {
			if p := (Process{PID: m.PID, StartTick: m.StartTick, StartTickMax: m.StartTickMax}); m.PID > 0 && p.Is(startTick(m.PID)) {
				killGroup(m.PID)
			}
			m.Result = &protocol.Finished{Outcome: protocol.OutcomeFailed, ExitCode: -1,
				Error: "the agent stopped while the job ran; its processes were killed"}
		}
		sp, err := openSpool(e.spool, a.cfg.SpoolMax, a.cfg.MaxLogBytes)
		if err != nil {
			return err
		}
		sp.close()
		end, _, _ := sp.state()
		m.Result.LogBytes = end
		j := &job{ref: ref, d: m.Dispatch, mf: mf, dir: e.dir, sp: sp, cancel: func() {},
			started: make(chan struct{}), result: m.Result, pid: m.PID, released: true}
		close(j.started)
		a.jobs[ref] = j
		a.log.Info("found an unreported attempt from a previous run; it will be reported", "job", ref.JobID, "attempt", ref.Attempt)
	}
	return nil
}

// startTick returns the start time of pid in clock ticks since boot, or
// 0; with the PID it identifies a process across PID reuse.
func startTick(pid int) uint64 {
	st, err := readProcStat(pid)
	if err != nil {
		return 0
	}
	return st.startTick
}

// status answers a StatusRequest from the process table.
func (a *Agent) status(req *protocol.StatusRequest) *protocol.StatusReply {
	rep := &protocol.StatusReply{Seq: req.Seq, JobID: req.JobID, Attempt: req.Attempt}
	a.mu.Lock()
	j := a.jobs[protocol.AttemptRef{JobID: req.JobID, Attempt: req.Attempt}]
	var pid int
	var at time.Time
	if j != nil {
		pid, at = j.pid, j.startedAt
	}
	a.mu.Unlock()
	if j == nil {
		return rep
	}
	rep.Found = true
	rep.PID = uint32(pid)
	if !at.IsZero() {
		rep.Elapsed = time.Since(at)
	}
	end, _, _ := j.sp.state()
	rep.OutputBytes = end
	rep.LastLine = strings.ToValidUTF8(j.sp.lastOutputLine(), "\uFFFD")
	if pid > 0 {
		u := groupUsage(pid)
		rep.UserCPU, rep.SystemCPU, rep.RSS, rep.Processes = u.user, u.system, u.rss, uint32(u.procs)
	}
	return rep
}
