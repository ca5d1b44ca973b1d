package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/certs"
	"jobsuite/cli"
	"jobsuite/controller"
	"jobsuite/transport"
)

// childEnv names the environment variable that turns the benchmark
// binary (or the bench test binary) into a child process: a controller
// or a real agent, alone in its process so its CPU time and memory can
// be read from /proc. Its value is the JSON childConfig.
const childEnv = "JOBSUITE_BENCH_CHILD"

// childConfig configures a child process.
type childConfig struct {
	Mode     string // "controller", "agent" or "output-peer"
	PKI      string // PKI directory
	Data     string // controller data directory, or agent state directory
	Log      string // log file (appended)
	LogLevel string
	Profile  string // CPU profile file; empty: none

	// controller
	LeaseTTL time.Duration
	// cluster node (controller.NewNode) when ClusterAddr is set; Name
	// is then its certificate's name, which is its node ID
	ClusterAddr string
	Join        []string
	Expect      int // -bootstrap-expect
	// RaftMultiplier is -raft-multiplier (0: the default, 1)
	RaftMultiplier int
	// OutputInRaft is -output-channel=false: output in the raft rounds
	// instead of on the output channel (controller/outchan)
	OutputInRaft bool

	// output-peer (rows 9h, 9p: raftalone.go): "raft",
	// "raft-trivial" or "channel", and raft's MaxAppendEntries (0:
	// raft's default); Name is the node's certificate name
	Variant   string
	MaxAppend int

	// agent
	Name       string
	Controller string
	Slots      int
	Transport  string
}

// childInfo is the first line a child prints on stdout.
type childInfo struct {
	HTTP  string        `json:"http,omitempty"`
	Agent string        `json:"agent,omitempty"`
	New   time.Duration `json:"new_ns,omitempty"` // controller.New: store open and queue load
	// Cluster is an output-peer's cluster port.
	Cluster string `json:"cluster,omitempty"`
}

// Child runs this process as a benchmark child when the environment
// asks for one, and returns its exit code and true; otherwise it
// returns false at once. Call it first thing in main (and in the
// TestMain of tests that run the harness). A child stops when its
// standard input reaches EOF: the parent closes it to stop the child.
func Child() (int, bool) {
	raw, ok := os.LookupEnv(childEnv)
	if !ok {
		return 0, false
	}
	os.Unsetenv(childEnv) // jobs started by an agent child must not inherit it
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: bad %s: %v\n", childEnv, err)
		return 2, true
	}
	if err := runChild(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench child %s: %v\n", cfg.Mode, err)
		return 1, true
	}
	return 0, true
}

func runChild(cfg childConfig) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the parent closes stdin to stop us
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	logf, err := os.OpenFile(cfg.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	logger, sink, err := cli.NewLogger(cfg.Mode, cfg.LogLevel, false, logf) // as the real commands log
	if err != nil {
		return err
	}
	defer sink.Close()
	if cfg.Profile != "" {
		// SIGUSR1 writes a heap profile beside the CPU profile.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		go func() {
			for range usr1 {
				runtime.GC()
				if f, err := os.Create(strings.TrimSuffix(cfg.Profile, ".pprof") + "-heap.pprof"); err == nil {
					_ = pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
		}()
		pf, err := os.Create(cfg.Profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		// SIGUSR2 ends the CPU profile and starts the next phase's:
		// <profile>-<phase>.pprof, the phase named in <profile>.next,
		// which is removed once the new profile runs (proc.profilePhase).
		var mu sync.Mutex
		usr2 := make(chan os.Signal, 1)
		signal.Notify(usr2, syscall.SIGUSR2)
		defer signal.Stop(usr2)
		go func() {
			next := cfg.Profile + ".next"
			for range usr2 {
				phase, err := os.ReadFile(next)
				if err != nil {
					continue
				}
				mu.Lock()
				pprof.StopCPUProfile()
				pf.Close()
				if f, err := os.Create(strings.TrimSuffix(cfg.Profile, ".pprof") + "-" + strings.TrimSpace(string(phase)) + ".pprof"); err == nil {
					pf = f
					_ = pprof.StartCPUProfile(pf)
				}
				mu.Unlock()
				_ = os.Remove(next)
			}
		}()
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	out := json.NewEncoder(os.Stdout)
	switch cfg.Mode {
	case "controller":
		if cfg.ClusterAddr != "" {
			return runNode(ctx, cfg, logger, out)
		}
		start := time.Now()
		srv, err := controller.New(controller.Config{
			HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: cfg.Data,
			TLS:    certs.Files{CA: certs.CAFile(cfg.PKI), Cert: certs.CertFile(cfg.PKI, "controller"), Key: certs.KeyFile(cfg.PKI, "controller")},
			Logger: logger, LeaseTTL: cfg.LeaseTTL,
		})
		if err != nil {
			return err
		}
		took := time.Since(start)
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		if err := out.Encode(childInfo{HTTP: srv.HTTPAddr(), Agent: srv.AgentAddr(), New: took}); err != nil {
			return err
		}
		return <-done
	case "agent":
		mode, err := transport.ParseMode(cfg.Transport)
		if err != nil {
			return err
		}
		a, err := agent.New(agent.Config{
			Controller: cfg.Controller, ServerName: "127.0.0.1",
			TLS:   certs.Files{CA: certs.CAFile(cfg.PKI), Cert: certs.CertFile(cfg.PKI, cfg.Name), Key: certs.KeyFile(cfg.PKI, cfg.Name)},
			Slots: cfg.Slots, Transport: mode, Logger: logger, StateDir: cfg.Data,
			WorkDir: cfg.Data, ReconnectMin: 50 * time.Millisecond, ReconnectMax: time.Second,
		})
		if err != nil {
			return err
		}
		if err := out.Encode(childInfo{}); err != nil {
			return err
		}
		return a.Run(ctx)
	case "output-peer":
		return runOutputPeer(ctx, cfg, logger, out)
	}
	return fmt.Errorf("unknown mode %q", cfg.Mode)
}

// runNode runs a cluster node (controller.NewNode) as the cluster
// benchmarks' controller child.
func runNode(ctx context.Context, cfg childConfig, logger hclog.Logger, out *json.Encoder) error {
	start := time.Now()
	n, err := controller.NewNode(controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: cfg.Data,
		TLS:    certs.Files{CA: certs.CAFile(cfg.PKI), Cert: certs.CertFile(cfg.PKI, cfg.Name), Key: certs.KeyFile(cfg.PKI, cfg.Name)},
		Logger: logger, LeaseTTL: cfg.LeaseTTL,
		ClusterAddr: cfg.ClusterAddr, Join: cfg.Join, BootstrapExpect: cfg.Expect, RaftMultiplier: cfg.RaftMultiplier, OutputInRaft: cfg.OutputInRaft,
	})
	if err != nil {
		return err
	}
	took := time.Since(start)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	if err := out.Encode(childInfo{HTTP: n.HTTPAddr(), Agent: n.AgentAddr(), New: took}); err != nil {
		return err
	}
	return <-done
}

// proc is a running child process, parent side.
type proc struct {
	cfg   childConfig
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	err   error // of Wait, once done is closed
	info  childInfo
	start time.Time // when it was started
	ready time.Time // when its first line arrived
}

// startChild starts a child and waits (up to wait) for its first line.
func startChild(ctx context.Context, cfg childConfig, wait time.Duration) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(cfg.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &proc{cfg: cfg, cmd: cmd, stdin: stdin, done: make(chan struct{}), start: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s child: %w", cfg.Mode, err)
	}
	lines := make(chan []byte, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadBytes('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, br)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case line := <-lines:
		p.ready = time.Now()
		if err := json.Unmarshal(line, &p.info); err != nil {
			p.kill()
			return nil, fmt.Errorf("%s child did not start (see %s): %q", cfg.Mode, cfg.Log, line)
		}
		return p, nil
	case <-t.C:
		p.kill()
		return nil, fmt.Errorf("%s child not ready within %s (see %s)", cfg.Mode, wait, cfg.Log)
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop asks the child to stop (closes its stdin) and waits for it, up
// to a minute, then kills it. It is idempotent.
func (p *proc) stop() error {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.kill()
		return errors.New("child did not stop within a minute; killed")
	}
	return p.err
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) cpu() time.Duration {
	d, _ := procCPU(p.pid())
	return d
}

// waitQuiet waits until the child used less than a tenth of a core over
// half a second (its background work, such as Pebble compacting what was
// just written, is done), or until within has passed; it returns how
// long it waited and whether it became quiet.
func (p *proc) waitQuiet(ctx context.Context, within time.Duration) (time.Duration, bool) {
	const window = 500 * time.Millisecond
	start := time.Now()
	for time.Since(start) < within {
		c0 := p.cpu()
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-time.After(window):
		}
		if p.cpu()-c0 < window/10 {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}

// profilePhase asks a child started with a profile to end its CPU
// profile and write the rest of its run to <profile>-<phase>.pprof, and
// waits until it has (at most a second), so that a row's work can be
// profiled alone.
func (p *proc) profilePhase(phase string) {
	if p.cfg.Profile == "" {
		return
	}
	next := p.cfg.Profile + ".next"
	if err := os.WriteFile(next, []byte(phase), 0o600); err != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGUSR2)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(next); errors.Is(err, os.ErrNotExist) {
			return
		}
	}
}

// heapProfile asks a child started with a profile to write its heap
// profile, and gives it a moment to.
func (p *proc) heapProfile() {
	if p.cfg.Profile == "" {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGUSR1)
	time.Sleep(time.Second)
}

func (p *proc) written() uint64 { return procWritten(p.pid()) }

func (p *proc) mem() (rss, peak uint64) {
	rss, peak, _ = procMem(p.pid())
	return rss, peak
}
