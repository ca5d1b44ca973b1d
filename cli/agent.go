package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"jobsuite/agent"
	"jobsuite/transport"

	"github.com/hashicorp/go-hclog"
)

// AgentCommand runs an agent on a worker host.
type AgentCommand struct{ Meta }

func (c *AgentCommand) Synopsis() string { return "Run an agent that pulls and runs jobs" }

func (c *AgentCommand) Help() string {
	cfg := agent.DefaultConfig()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	agentFlags(fs, &cfg, &agentFlagValues{})
	return withDefaults(fs, agentHelp)
}

// agentHelp is the agent's help; withDefaults fills in the defaults
// (defaults.go).
var agentHelp = strings.TrimSpace(`
Usage: jobsuite agent -controller HOST:PORT[,HOST:PORT...] -ca FILE -cert FILE -key FILE [options]
       jobsuite agent -join TOKEN -ca-pin SHA256 -controller HOST:PORT[,...] [options]

  Runs an agent: it dials the controller over QUIC (falling back to
  TCP+TLS where UDP is blocked) with mutual TLS, pulls jobs up to -slots
  at a time, runs each with /bin/sh -c in its own process group and
  streams its output back. It reconnects by itself when the connection
  drops; running jobs keep running meanwhile and their output waits on
  disk. SIGTERM or SIGINT drains it: no new jobs, running ones finish
  (up to -drain-timeout), then it exits; a second signal cancels them.

  With -join, a new worker enrolls itself: it makes its key, checks that
  the controller's certificate comes from the CA that -ca-pin names,
  and gets its agent certificate in exchange for the join token
  ('jobsuite agent token create' prints the whole command). Later starts
  find the files and skip enrollment. With -api (the default with
  -join), the agent renews its certificate before it expires, without a
  restart.

Options:

  -config FILE       Read settings from a TOML file (see below). Flags given
                     on the command line override it.
  -controller ADDRS  Controller agent address, host:port. Required. For a
                     cluster, every controller's, comma-separated
                     (a:7443,b:7443,c:7443): the agent dials them in turn,
                     moving on at once from one that fails; its backoff
                     grows only after a whole round failed. A controller
                     that is not the leader redirects it to the leader,
                     which it dials at once (at most 3 redirects in a row,
                     then it backs off), and the leader tells it the
                     current controllers, which it dials too. Running jobs
                     move with it to whichever controller takes it.
  -ca FILE           CA certificate. Required, unless -join writes it.
  -cert FILE         Agent certificate (role agent). Required, unless -join writes it.
  -key FILE          Agent key. Required, unless -join writes it.
  -name NAME         Agent name; must match the certificate (default: its name).
                     With -join, the name to ask for: PREFIX-..., where PREFIX
                     is the token's name prefix (default: PREFIX-<random>).
  -join TOKEN        Enroll with this join token if the certificate and key do
                     not exist yet, and write -ca, -cert and -key (default:
                     ca.pem, agent.pem and agent-key.pem in -state-dir, else in
                     /var/lib/jobsuite/agent (root) or ~/.local/state/jobsuite/agent).
                     Ignored once they exist. Needs -ca-pin.
  -ca-pin SHA256     With -join: the SHA-256 of the CA certificate (hex) that the
                     token's creator was shown. The token is sent only to a
                     controller whose certificate chains to that CA.
  -api ADDR          The controller's HTTPS API, host:port. The agent renews its
                     certificate there at 2/3 of its lifetime, with no restart,
                     and -join enrolls there. Default with -join: the host of
                     the first -controller, port 8443; without -join: off (no
                     renewal).
  -slots N           Jobs run at once. Default: number of CPUs.
  -labels K=V,...    Labels that job selectors match, e.g. gpu=true,zone=a.
  -transport MODE    auto (QUIC, else TCP), quic or tcp. Default {transport}.
  -server-name NAME  Name every controller certificate must carry (default: the
                     host of the address dialled).
  -work-dir DIR      Directory jobs start in. Default: the agent's.
  -state-dir DIR     Where output and results wait until the controller has them.
                     Default /var/lib/jobsuite/agent-NAME (root) or
                     ~/.local/state/jobsuite/agent-NAME.
  -spool-max BYTES   Unacknowledged output kept per job before the job's output
                     pipe is paused (never dropped). Default {spool-max:size}.
  -max-log-bytes N   Cap on one attempt's output; the rest is dropped and a marker
                     line says so. Default 0 (no cap; the controller's
                     -max-output-bytes still applies).
  -disk-full-timeout DUR
                     How long a job's output may wait for the state directory's
                     disk to take it (the job blocks meanwhile) before the
                     attempt fails with "agent disk full: output incomplete".
                     Default {disk-full-timeout}.
  -tty               Run jobs on a pseudo-terminal (80x24, TERM=xterm-256color)
                     unless they ask for none ("tty": false) or for split
                     output. Default: only jobs that ask ("tty": true).
  -drain-timeout DUR On SIGTERM, how long running jobs may finish before they are
                     cancelled. A second SIGTERM/SIGINT cancels them at once.
                     Default {drain-timeout}.
  -reconnect-min DUR First wait before reconnecting after the connection drops;
                     it doubles (with jitter) up to -reconnect-max. Default {reconnect-min}.
  -reconnect-max DUR Longest wait between reconnect attempts. Default {reconnect-max}. While
                     the agent holds jobs it tries at least every quarter of
                     the controller's lease (15s: every 3.75s), so its jobs
                     are not declared lost while it backs off.
  -metrics ADDR      Serve Prometheus metrics at http://ADDR/metrics: plain
                     HTTP, no authentication, so bind a private address
                     (127.0.0.1:9191). Default: off.
  -procs N           Threads that may run the agent's own code at once
                     (GOMAXPROCS; the jobs use every CPU whatever it is).
                     Default: the GOMAXPROCS environment variable, else the
                     number of CPUs. 1 costs the least CPU per job, but a
                     spawn then stalls the whole agent until the job's
                     process starts, which on a busy host adds tens of
                     milliseconds to other jobs' starts.
  -log-level LEVEL   trace, debug, info, warn or error. Default {log-level}.
  -log-json          Log JSON lines.

Policy options (what this agent agrees to run; a job they refuse fails
with "refused by agent policy: WHY" and nothing of it runs):

  -allow-command RE  Run only jobs whose whole command (with its params, as
                     the shell gets it) matches this regular expression (Go
                     RE2 syntax), anchored at both ends: 'make test' allows
                     exactly that. May be repeated; a command must match one.
                     The shell still reads the command, so keep ; & | $ < >,
                     backquotes and newlines out of what a pattern allows
                     (prefer [a-z0-9_-]+ to .*). Default: any command.
  -run-as USER       Run jobs as this user (name or uid), with its groups and
                     HOME, USER and LOGNAME. Needs an agent running as root,
                     unless USER is the agent's own user. Default: the
                     agent's user.
  -work-root DIR     Jobs start in DIR or below: a job's dir (relative ones
                     are under DIR) must resolve, symbolic links followed,
                     inside DIR, and DIR is the default -work-dir. Not a
                     sandbox: a job can still cd elsewhere.
  -clean-env         Jobs get only PATH (a safe default), HOME, USER, LOGNAME,
                     the JOBSUITE_* variables and what -allow-env names,
                     instead of the agent's environment.
  -allow-env NAME    With -clean-env: pass NAME from the agent's environment
                     and accept it in a job's env (other job env names are
                     refused). May be repeated, or NAME,NAME.

Configuration file:

  Every flag has a key in the -config file: its name with _ for -.
  Unknown keys and bad values stop the agent with the file, line and
  key at fault. The keys, with their defaults (example values for the
  required ones):

    controller    = "ctl.example.com:7443"            # required; a cluster: ["a:7443", "b:7443", "c:7443"] or "a:7443,b:7443,c:7443"
    ca            = "/etc/jobsuite/pki/ca.pem"        # required
    cert          = "/etc/jobsuite/pki/agent.pem"     # required
    key           = "/etc/jobsuite/pki/agent-key.pem" # required
    name          = ""        # the certificate's name
    join          = ""        # a join token: enroll if the files are missing
    ca_pin        = ""        # with join: SHA-256 of the CA certificate
    api           = ""        # e.g. "ctl.example.com:8443": renew the certificate
    slots         = {slots:toml}         # 0: the number of CPUs
    labels        = {}        # a table, e.g. {gpu = "true", zone = "a"}
    transport     = {transport:toml}    # auto, quic or tcp
    server_name   = ""        # the host of the controller address dialled
    work_dir      = ""        # the agent's working directory
    state_dir     = ""        # see -state-dir
    spool_max     = {spool-max:toml}  # bytes (64 MiB)
    max_log_bytes = {max-log-bytes:toml}         # 0: no cap
    disk_full_timeout = {disk-full-timeout:toml}
    tty           = {tty:toml}     # true: jobs run on a pseudo-terminal unless they say otherwise
    drain_timeout = {drain-timeout:toml}
    reconnect_min = {reconnect-min:toml}
    reconnect_max = {reconnect-max:toml}
    metrics       = ""        # e.g. "127.0.0.1:9191"; empty: off
    procs         = 0         # 0: GOMAXPROCS, else the number of CPUs
    log_level     = {log-level:toml}
    log_json      = {log-json:toml}
    # policy (defaults: no restriction)
    allow_command = []        # e.g. ["make -C /srv/app (build|test)"]
    run_as        = ""        # e.g. "builder"
    work_root     = ""        # e.g. "/srv/work"
    clean_env     = false
    allow_env     = []        # e.g. ["LANG", "TZ"]

Exit codes:

  0 after a drain (SIGTERM, SIGINT); 1 on an error; 3 when the controller
  refuses this agent for good (its certificate was revoked, or its role,
  name or protocol version is refused): restarting does not help, and
  the systemd unit does not restart it (RestartPreventExitStatus=3).

Example:

  jobsuite tls cert create -dir pki -role agent -name worker-1
  jobsuite agent -controller ctl.example.com:7443 -ca pki/ca.pem \
      -cert pki/worker-1.pem -key pki/worker-1-key.pem -slots 4 -labels gpu=true
  jobsuite agent -config /etc/jobsuite/agent.toml -slots 2
  jobsuite agent -join jsj_... -ca-pin 2d76de9c... -controller ctl.example.com:7443
`)

func (c *AgentCommand) Run(args []string) int {
	fs := c.flagSet("agent")
	cfg := agent.DefaultConfig()
	var v agentFlagValues
	agentFlags(fs, &cfg, &v)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.Stderr, "error: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return ExitUsage
	}
	if v.configPath != "" {
		if err := loadConfigFile(fs, v.configPath, agentConfig); err != nil {
			return c.errorf("%v", err)
		}
	}
	return c.run(cfg, &v)
}

// agentFlagValues holds the agent's flags that are not fields of its
// Config.
type agentFlagValues struct {
	lf                        logFlags
	procs                     int
	labels, mode, join, caPin string
	configPath                string
	allowCommands, allowEnv   listFlag
}

// agentFlags registers the agent's flags on fs, each bound to its field
// of cfg with the field's value — DefaultConfig's — as its default, and
// the others on v.
func agentFlags(fs *flag.FlagSet, cfg *agent.Config, v *agentFlagValues) {
	fs.StringVar(&cfg.Controller, "controller", "", "")
	fs.StringVar(&cfg.TLS.CA, "ca", "", "")
	fs.StringVar(&cfg.TLS.Cert, "cert", "", "")
	fs.StringVar(&cfg.TLS.Key, "key", "", "")
	fs.StringVar(&cfg.Name, "name", "", "")
	fs.StringVar(&v.join, "join", "", "")
	fs.StringVar(&v.caPin, "ca-pin", "", "")
	fs.StringVar(&cfg.API, "api", "", "")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "")
	fs.StringVar(&v.labels, "labels", "", "")
	fs.StringVar(&v.mode, "transport", string(cfg.Transport), "")
	fs.StringVar(&cfg.ServerName, "server-name", "", "")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "")
	fs.Uint64Var(&cfg.SpoolMax, "spool-max", cfg.SpoolMax, "")
	fs.Uint64Var(&cfg.MaxLogBytes, "max-log-bytes", cfg.MaxLogBytes, "")
	fs.DurationVar(&cfg.DiskFullTimeout, "disk-full-timeout", cfg.DiskFullTimeout, "")
	fs.BoolVar(&cfg.TTY, "tty", cfg.TTY, "")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "")
	fs.DurationVar(&cfg.ReconnectMin, "reconnect-min", cfg.ReconnectMin, "")
	fs.DurationVar(&cfg.ReconnectMax, "reconnect-max", cfg.ReconnectMax, "")
	fs.StringVar(&cfg.MetricsAddr, "metrics", cfg.MetricsAddr, "")
	fs.IntVar(&v.procs, "procs", 0, "")
	fs.Var(&v.allowCommands, "allow-command", "")
	fs.StringVar(&cfg.Policy.RunAs, "run-as", "", "")
	fs.StringVar(&cfg.Policy.WorkRoot, "work-root", "", "")
	fs.BoolVar(&cfg.Policy.CleanEnv, "clean-env", false, "")
	fs.Var(&v.allowEnv, "allow-env", "")
	v.lf.register(fs)
	fs.StringVar(&v.configPath, "config", "", "")
}

// run runs the agent configured by the flags.
func (c *AgentCommand) run(cfg agent.Config, v *agentFlagValues) int {
	lf, labels, mode, join, caPin, allowCommands, allowEnv := &v.lf, v.labels, v.mode, v.join, v.caPin, v.allowCommands, v.allowEnv
	cfg.Policy.AllowCommands = allowCommands
	for _, v := range allowEnv {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				cfg.Policy.AllowEnv = append(cfg.Policy.AllowEnv, name)
			}
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
	if v.procs < 0 {
		return c.errorf("-procs must be at least 1 (0: the default)")
	}
	if join != "" {
		if code := c.joinDefaults(&cfg, caPin); code != ExitOK {
			return code
		}
	}
	if cfg.TLS.CA == "" || cfg.TLS.Cert == "" || cfg.TLS.Key == "" {
		return c.errorf("-ca, -cert and -key are required (create them with 'jobsuite tls cert create -role agent', or enroll with -join)")
	}
	log, sink, err := lf.logger("agent", c.Stderr)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer sink.Close()
	c.Stderr = sink // our messages stay in order with the log lines
	cfg.Logger = log
	if join != "" {
		if code := c.enroll(&cfg, join, caPin, log); code != ExitOK {
			return code
		}
	}
	if e, err := agent.ReadEnrollment(cfg.TLS); err == nil && len(e.Labels) > 0 {
		cfg.Labels = mergeLabels(e.Labels, cfg.Labels) // the token's labels, under the agent's own
	}
	log.Debug("threads for the agent's own code", "procs", agent.SetProcs(v.procs))
	a, err := agent.New(cfg)
	if err != nil {
		return c.errorf("%v", err)
	}
	ctx, stop := c.drainContext(log, a.Stop)
	defer stop()
	if err := a.Run(ctx); err != nil {
		code := c.errorf("%v", err)
		if errors.Is(err, agent.ErrRejected) {
			// Distinct, so the unit's RestartPreventExitStatus keeps
			// systemd from restarting it in a loop.
			return ExitRefused
		}
		return code
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

// listFlag is a repeatable flag: each use adds one value as it is
// (-allow-command A -allow-command B). Its config file key takes an
// array of strings, or one string.
type listFlag []string

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, " ")
}

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
