package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// Version is the agent software version sent in Hello.
var Version = "0.1.0-dev"

// Config configures an agent.
type Config struct {
	Controller string      // controller agent address, host:port; required
	TLS        certs.Files // CA, agent certificate and key; required
	// ServerName is the name the controller's certificate must carry;
	// default: the host part of Controller.
	ServerName string
	Name       string            // must match the certificate's name; default: the certificate's name
	Slots      int               // jobs run at once; default: number of CPUs
	Labels     map[string]string // offered to job selectors
	Transport  transport.Mode    // auto (default), quic or tcp
	WorkDir    string            // directory jobs start in unless they name one; default: the agent's
	Shell      string            // default /bin/sh
	Logger     hclog.Logger

	ReconnectMin time.Duration // first reconnect delay; default 500ms
	ReconnectMax time.Duration // longest reconnect delay; default 30s
}

// Agent connects to a controller, pulls jobs and runs them.
type Agent struct {
	cfg     Config
	log     hclog.Logger
	tls     transportTLS
	name    string
	baseEnv []string

	mu   sync.Mutex
	jobs map[protocol.AttemptRef]*job
	wg   sync.WaitGroup
}

type transportTLS struct {
	files certs.Files
	sn    string
}

// job is one running attempt.
type job struct {
	cancel context.CancelFunc
}

// New checks the configuration and the certificates.
func New(cfg Config) (*Agent, error) {
	if cfg.Controller == "" {
		return nil, fmt.Errorf("%w: the controller address is required (-controller HOST:PORT)", ErrConfig)
	}
	host, _, err := net.SplitHostPort(cfg.Controller)
	if err != nil {
		return nil, fmt.Errorf("%w: controller address %q: %v", ErrConfig, cfg.Controller, err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
		if cfg.ServerName == "" {
			cfg.ServerName = "localhost"
		}
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
		cfg.Transport = transport.ModeAuto
	}
	if cfg.Shell == "" {
		cfg.Shell = "/bin/sh"
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 500 * time.Millisecond
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 30 * time.Second
	}
	return &Agent{
		cfg: cfg, log: cfg.Logger, name: name,
		tls:     transportTLS{files: cfg.TLS, sn: cfg.ServerName},
		baseEnv: os.Environ(),
		jobs:    map[protocol.AttemptRef]*job{},
	}, nil
}

// Name is the agent's name (its certificate's).
func (a *Agent) Name() string { return a.name }

// Run connects and serves until ctx is done, reconnecting with
// exponential backoff and jitter whenever the connection is lost. When
// it returns, no job it started is running.
func (a *Agent) Run(ctx context.Context) error {
	defer a.wg.Wait()
	delay := a.cfg.ReconnectMin
	for {
		start := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errFatal) {
			return err
		}
		if time.Since(start) > 10*time.Second {
			delay = a.cfg.ReconnectMin // it was up for a while: start over
		}
		wait := delay/2 + rand.N(delay/2+1)
		a.log.Warn("connection to controller lost; reconnecting", "error", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay *= 2
		if delay > a.cfg.ReconnectMax {
			delay = a.cfg.ReconnectMax
		}
	}
}

// errFatal marks errors that reconnecting cannot fix.
var errFatal = errors.New("fatal")

// session dials once and serves the connection until it ends.
func (a *Agent) session(ctx context.Context) error {
	// Certificates are reloaded on every connection, so renewed files on
	// disk take effect at the next reconnect.
	pool, cert, err := a.tls.files.Load()
	if err != nil {
		return fmt.Errorf("loading certificates: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	sess, err := transport.Dial(dctx, a.cfg.Controller, certs.ClientTLS(pool, cert, a.tls.sn), a.cfg.Transport, transport.Options{Logger: a.log.Named("transport")})
	cancel()
	if err != nil {
		return fmt.Errorf("dialing %s: %w", a.cfg.Controller, err)
	}
	defer sess.Close("agent session ended")
	log := a.log.With("controller", a.cfg.Controller, "transport", sess.Transport())

	ctrl, err := sess.OpenStream(ctx)
	if err != nil {
		return fmt.Errorf("opening control stream: %w", err)
	}
	w := protocol.NewWriter(ctrl)
	r := protocol.NewReader(ctrl, 0)
	if err := w.Write(&protocol.Hello{
		Version: protocol.Version, Name: a.name, Labels: a.cfg.Labels,
		Slots: uint32(a.cfg.Slots), AgentVersion: Version, Running: a.running(),
	}); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	_ = ctrl.SetReadDeadline(time.Now().Add(15 * time.Second))
	m, err := r.Read()
	if err != nil {
		return fmt.Errorf("waiting for welcome: %w", err)
	}
	_ = ctrl.SetReadDeadline(time.Time{})
	var welcome *protocol.Welcome
	switch m := m.(type) {
	case *protocol.Welcome:
		welcome = m
	case *protocol.Error:
		if m.Code == protocol.CodeForbidden || m.Code == protocol.CodeVersion {
			return fmt.Errorf("%w: controller refused this agent: %s", errFatal, m.Message)
		}
		return fmt.Errorf("controller refused this agent: %s", m.Message)
	default:
		return fmt.Errorf("expected welcome, got message type %d", m.Type())
	}
	if err := protocol.CheckVersion(welcome.Version); err != nil {
		return fmt.Errorf("%w: %v", errFatal, err)
	}
	log.Info("connected", "slots", a.cfg.Slots, "heartbeat", welcome.HeartbeatInterval)

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // a blocked read of the control stream ends with the session
		select {
		case <-sess.Done():
		case <-sctx.Done():
		}
		stop()
		sess.Close("agent stopping")
	}()
	// This version cannot carry a running job across connections: its
	// output would have nowhere to go. Jobs end with their session and
	// the controller retries them.
	defer a.cancelAll()

	if free := a.cfg.Slots - len(a.running()); free > 0 {
		if err := w.Write(&protocol.Credit{Slots: uint32(free)}); err != nil {
			return err
		}
	}
	go a.heartbeat(sctx, w, welcome.HeartbeatInterval)

	for {
		m, err := r.Read()
		if err != nil {
			if sctx.Err() != nil && ctx.Err() == nil {
				return fmt.Errorf("session closed: %w", err)
			}
			return err
		}
		switch m := m.(type) {
		case *protocol.Dispatch:
			a.start(sctx, sess, w, m)
		case *protocol.Cancel:
			a.cancelJob(protocol.AttemptRef{JobID: m.JobID, Attempt: m.Attempt}, m.Reason)
		case *protocol.Error:
			return fmt.Errorf("controller closed the session: %s", m.Message)
		default:
			log.Warn("unexpected message from controller; ignoring it", "type", m.Type())
		}
	}
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
			if err := w.Write(&protocol.Heartbeat{Seq: seq, Running: a.running()}); err != nil {
				return
			}
		}
	}
}

// running lists the attempts in progress, sorted.
func (a *Agent) running() []protocol.AttemptRef {
	a.mu.Lock()
	defer a.mu.Unlock()
	refs := make([]protocol.AttemptRef, 0, len(a.jobs))
	for ref := range a.jobs {
		refs = append(refs, ref)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].JobID < refs[j].JobID })
	return refs
}

func (a *Agent) cancelJob(ref protocol.AttemptRef, reason string) {
	a.mu.Lock()
	j := a.jobs[ref]
	a.mu.Unlock()
	if j == nil {
		return
	}
	a.log.Info("cancelling job", "job", ref.JobID, "attempt", ref.Attempt, "reason", reason)
	j.cancel()
}

func (a *Agent) cancelAll() {
	a.mu.Lock()
	for _, j := range a.jobs {
		j.cancel()
	}
	a.mu.Unlock()
}

// start runs one dispatched attempt in the background.
func (a *Agent) start(ctx context.Context, sess transport.Session, ctrl *protocol.Writer, d *protocol.Dispatch) {
	ref := protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt}
	jctx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	if _, dup := a.jobs[ref]; dup {
		a.mu.Unlock()
		cancel()
		return
	}
	a.jobs[ref] = &job{cancel: cancel}
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer cancel()
		a.runJob(jctx, sess, d)
		a.mu.Lock()
		delete(a.jobs, ref)
		a.mu.Unlock()
		if ctx.Err() == nil {
			_ = ctrl.Write(&protocol.Credit{Slots: 1})
		}
	}()
}

// runJob runs the attempt and reports it on a stream of its own.
func (a *Agent) runJob(ctx context.Context, sess transport.Session, d *protocol.Dispatch) {
	log := a.log.With("job", d.JobID, "attempt", d.Attempt)
	st, err := sess.OpenStream(ctx)
	if err != nil {
		log.Warn("cannot open job stream; not running the job", "error", err)
		return
	}
	defer st.Abort()
	w := protocol.NewWriter(st)
	if err := w.Write(&protocol.JobOpen{JobID: d.JobID, Attempt: d.Attempt}); err != nil {
		log.Warn("cannot open job stream; not running the job", "error", err)
		return
	}
	acked := make(chan struct{})
	go func() { // the controller answers FinishAck, or Error if it refuses the attempt
		defer close(acked)
		r := protocol.NewReader(st, 0)
		for {
			m, err := r.Read()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *protocol.FinishAck:
				return
			case *protocol.Error:
				log.Warn("controller refused the job stream; stopping the job", "error", m.Message)
				a.cancelJob(protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt}, m.Message)
				return
			}
		}
	}()

	env := append(append([]string(nil), a.baseEnv...),
		"JOBSUITE_JOB_ID="+strconv.FormatUint(d.JobID, 10),
		"JOBSUITE_ATTEMPT="+strconv.FormatUint(uint64(d.Attempt), 10),
		"JOBSUITE_JOB_NAME="+d.Name,
		"JOBSUITE_AGENT="+a.name,
	)
	env = append(env, d.Env...)
	dir := d.Dir
	if dir == "" {
		dir = a.cfg.WorkDir
	}
	log.Info("job starting", "command", d.Command)
	var offset uint64
	var sendErr error
	res := Run(ctx, Spec{
		Command: d.Command, Shell: a.cfg.Shell, Env: env, Dir: dir,
		Timeout: d.Timeout, KillGrace: d.KillGrace, Capture: d.CaptureLogs,
	}, func(pid int) {
		if err := w.Write(&protocol.Started{PID: uint32(pid), StartedAt: time.Now()}); err != nil && sendErr == nil {
			sendErr = err
		}
	}, func(stream uint8, data []byte) {
		if sendErr != nil {
			return // keep draining the pipes; the session is gone
		}
		if err := w.Write(&protocol.LogChunk{Stream: protocol.Stream(stream), Offset: offset, Data: data}); err != nil {
			sendErr = err
			return
		}
		offset += uint64(len(data))
	})
	f := &protocol.Finished{
		Outcome: protocol.Outcome(res.Outcome), ExitCode: int32(res.ExitCode), Signal: res.Signal,
		Duration: res.Duration, UserCPU: res.UserCPU, SystemCPU: res.SystemCPU,
		MaxRSS: res.MaxRSS, LogBytes: offset,
	}
	if res.Err != nil {
		f.Error = res.Err.Error()
	}
	log.Info("job finished", "outcome", res.Outcome, "exit_code", res.ExitCode, "duration", res.Duration)
	if sendErr != nil {
		log.Warn("job result not delivered: connection lost", "error", sendErr)
		return
	}
	if err := w.Write(f); err != nil {
		log.Warn("job result not delivered", "error", err)
		return
	}
	_ = st.Close()
	select {
	case <-acked:
	case <-time.After(30 * time.Second):
		log.Warn("controller did not acknowledge the result in 30s")
	}
}
