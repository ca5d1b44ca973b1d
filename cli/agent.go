package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"jobsuite/agent"
	"jobsuite/transport"

	"github.com/hashicorp/go-hclog"
)

// AgentCommand runs an agent on a worker host.
type AgentCommand struct{ Meta }

func (c *AgentCommand) Synopsis() string { return "Run an agent that pulls and runs jobs" }

func (c *AgentCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agent -controller HOST:PORT -ca FILE -cert FILE -key FILE [options]

  Runs an agent: it dials the controller over QUIC (falling back to
  TCP+TLS where UDP is blocked) with mutual TLS, pulls jobs up to -slots
  at a time, runs each with /bin/sh -c in its own process group and
  streams its output back. It reconnects by itself when the connection
  drops; running jobs keep running meanwhile and their output waits on
  disk. SIGTERM or SIGINT drains it: no new jobs, running ones finish
  (up to -drain-timeout), then it exits; a second signal cancels them.

Options:

  -config FILE       Read settings from a TOML file (see below). Flags given
                     on the command line override it.
  -controller ADDR   Controller agent address, host:port. Required.
  -ca FILE           CA certificate. Required.
  -cert FILE         Agent certificate (role agent). Required.
  -key FILE          Agent key. Required.
  -name NAME         Agent name; must match the certificate (default: its name).
  -slots N           Jobs run at once. Default: number of CPUs.
  -labels K=V,...    Labels that job selectors match, e.g. gpu=true,zone=a.
  -transport MODE    auto (QUIC, else TCP), quic or tcp. Default auto.
  -server-name NAME  Name the controller certificate must carry (default: host of -controller).
  -work-dir DIR      Directory jobs start in. Default: the agent's.
  -state-dir DIR     Where output and results wait until the controller has them.
                     Default /var/lib/jobsuite/agent-NAME (root) or
                     ~/.local/state/jobsuite/agent-NAME.
  -spool-max BYTES   Unacknowledged output kept per job before the job's output
                     pipe is paused (never dropped). Default 67108864 (64 MiB).
  -max-log-bytes N   Cap on one attempt's output; the rest is dropped and a marker
                     line says so. Default 0 (no cap).
  -drain-timeout DUR On SIGTERM, how long running jobs may finish before they are
                     cancelled. A second SIGTERM/SIGINT cancels them at once.
                     Default 10m.
  -log-level LEVEL   trace, debug, info, warn or error. Default info.
  -log-json          Log JSON lines.

Configuration file:

  Every flag has a key in the -config file: its name with _ for -.
  Unknown keys and bad values stop the agent with the file, line and
  key at fault. The keys, with their defaults (example values for the
  required ones):

    controller    = "ctl.example.com:7443"            # required
    ca            = "/etc/jobsuite/pki/ca.pem"        # required
    cert          = "/etc/jobsuite/pki/agent.pem"     # required
    key           = "/etc/jobsuite/pki/agent-key.pem" # required
    name          = ""        # the certificate's name
    slots         = 0         # 0: the number of CPUs
    labels        = {}        # a table, e.g. {gpu = "true", zone = "a"}
    transport     = "auto"    # auto, quic or tcp
    server_name   = ""        # the host of controller
    work_dir      = ""        # the agent's working directory
    state_dir     = ""        # see -state-dir
    spool_max     = 67108864  # bytes (64 MiB)
    max_log_bytes = 0         # 0: no cap
    drain_timeout = "10m"
    log_level     = "info"
    log_json      = false

Example:

  jobsuite tls cert create -dir pki -role agent -name worker-1
  jobsuite agent -controller ctl.example.com:7443 -ca pki/ca.pem \
      -cert pki/worker-1.pem -key pki/worker-1-key.pem -slots 4 -labels gpu=true
  jobsuite agent -config /etc/jobsuite/agent.toml -slots 2
`)
}

func (c *AgentCommand) Run(args []string) int {
	fs := c.flagSet("agent")
	var cfg agent.Config
	var lf logFlags
	var labels, mode string
	fs.StringVar(&cfg.Controller, "controller", "", "")
	fs.StringVar(&cfg.TLS.CA, "ca", "", "")
	fs.StringVar(&cfg.TLS.Cert, "cert", "", "")
	fs.StringVar(&cfg.TLS.Key, "key", "", "")
	fs.StringVar(&cfg.Name, "name", "", "")
	fs.IntVar(&cfg.Slots, "slots", 0, "")
	fs.StringVar(&labels, "labels", "", "")
	fs.StringVar(&mode, "transport", "auto", "")
	fs.StringVar(&cfg.ServerName, "server-name", "", "")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "")
	fs.Uint64Var(&cfg.SpoolMax, "spool-max", 64<<20, "")
	fs.Uint64Var(&cfg.MaxLogBytes, "max-log-bytes", 0, "")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Minute, "")
	lf.register(fs)
	var configPath string
	fs.StringVar(&configPath, "config", "", "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.Stderr, "error: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return ExitUsage
	}
	if configPath != "" {
		if err := loadConfigFile(fs, configPath, agentConfig); err != nil {
			return c.errorf("%v", err)
		}
	}
	var err error
	if cfg.Labels, err = parseLabels(labels); err != nil {
		return c.errorf("-labels: %v", err)
	}
	if cfg.Transport, err = transport.ParseMode(mode); err != nil {
		return c.errorf("-transport: %v", err)
	}
	if cfg.Slots < 0 {
		return c.errorf("-slots must be at least 1")
	}
	if cfg.TLS.CA == "" || cfg.TLS.Cert == "" || cfg.TLS.Key == "" {
		return c.errorf("-ca, -cert and -key are required (create them with 'jobsuite tls cert create -role agent')")
	}
	log, err := lf.logger("agent", c.Stderr)
	if err != nil {
		return c.errorf("%v", err)
	}
	cfg.Logger = log
	a, err := agent.New(cfg)
	if err != nil {
		return c.errorf("%v", err)
	}
	ctx, stop := c.drainContext(log, a.Stop)
	defer stop()
	if err := a.Run(ctx); err != nil {
		return c.errorf("%v", err)
	}
	return ExitOK
}

// drainContext is done at the first SIGTERM or SIGINT (or when c.Ctx
// is done): the agent drains. A second signal calls hard, which cancels
// the running jobs.
func (m Meta) drainContext(log hclog.Logger, hard func()) (context.Context, context.CancelFunc) {
	parent := m.Ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-sigs:
				n++
				if n == 1 {
					log.Info("draining: no new jobs; running jobs may finish. Send SIGTERM or SIGINT again to cancel them.")
					cancel()
					continue
				}
				log.Warn("cancelling running jobs")
				hard()
				return
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
	}
}

// parseLabels parses k=v,k2=v2.
func parseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}
