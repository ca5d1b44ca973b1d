package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller"
)

// ControllerCommand runs the controller service.
type ControllerCommand struct{ Meta }

func (c *ControllerCommand) Synopsis() string {
	return "Run the controller (API, queue, agent listener)"
}

func (c *ControllerCommand) Help() string {
	cfg := controller.DefaultConfig()
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	controllerFlags(fs, &cfg, &logFlags{})
	return withDefaults(fs, controllerHelp)
}

// controllerHelp is the controller's help; withDefaults fills in the
// defaults (defaults.go).
var controllerHelp = strings.TrimSpace(`
Usage: jobsuite controller -data-dir DIR -ca FILE -cert FILE -key FILE [options]

  Runs the controller: the HTTPS API for operators (mutual TLS), the
  durable job queue in Pebble under -data-dir, and the agent listener
  (QUIC on UDP and TLS+yamux on TCP, same port). SIGINT or SIGTERM stops
  it cleanly; every acknowledged job survives a restart, even kill -9.
  SIGHUP reloads the controller's certificate and key (it also notices
  when the files change): new connections get the new certificate, open
  agent sessions and API connections go on.

Options:

  -config FILE       Read settings from a TOML file (see below). Flags given
                     on the command line override it.
  -data-dir DIR      Pebble data directory (created if missing). Required.
  -ca FILE           CA certificate that signs agents and operators. Required.
  -cert FILE         Controller certificate (role controller). Required.
  -key FILE          Controller key. Required.
  -ca-key FILE       The CA's private key. With it the controller signs agent
                     certificates: join-token enrollment ('jobsuite agent token
                     create', 'jobsuite agent -join') and automatic renewal.
                     Without it those answer 501. Whoever can read this file
                     can mint any certificate, operator included (SECURITY.md).
  -agent-cert-ttl DUR
                     Lifetime of the agent certificates it signs; agents renew
                     them at 2/3 of it. Default {agent-cert-ttl:days}.
  -http ADDR         HTTPS API address. Default {http}.
  -listen ADDR       Agent address (UDP+TCP). Default {listen}.
  -lease-ttl DUR     An agent or attempt silent this long is lost. Default {lease-ttl}.
  -kill-grace DUR    Grace between SIGTERM and SIGKILL when stopping jobs. Default {kill-grace}.
  -aging DUR         A queued job gains one priority point per DUR waited, so
                     high-priority floods cannot starve the rest. Default {aging}
                     (strict priority).
  -offline-timeout DUR
                     A fan-out child whose agent is not connected fails when the
                     agent has not connected within DUR. Default {offline-timeout}.
  -retain-for DUR    Finished jobs (and their logs) older than this are removed.
                     Default {retain-for:days}; 0 keeps them for ever.
  -retain-jobs N     At most N finished jobs are kept; older ones are removed.
                     Default {retain-jobs}; 0 keeps them all.
  -metrics ADDR      Also serve GET /metrics (Prometheus) over plain HTTP on
                     ADDR, for scrapers without a client certificate. No TLS,
                     no authentication: anyone who reaches ADDR reads job
                     counts and agent load, so bind a private address
                     (127.0.0.1:9190). Default: off; /metrics on the HTTPS API
                     (viewer certificate) is always there.
  -metrics-agents N  Per-agent metric series (jobsuite_connected_agent_*) for
                     the first N connected agents by name; the rest are
                     counted in jobsuite_connected_agents_unexported. Bounds
                     the series a large fleet adds. Default {metrics-agents}; 0: none.
  -log-level LEVEL   trace, debug, info, warn or error. Default {log-level}.
  -log-json          Log JSON lines.

Limits (over-limit input gets a clear error; nothing else is disturbed):

  -max-body-bytes N     Largest API request body, and largest job of a batch
                        (413 beyond). At most 3145728. Default {max-body-bytes:size}.
  -max-command-bytes N  Longest job command plus params (400 beyond).
                        Default {max-command-bytes:size}.
  -max-env N            Most env entries per job (400 beyond). Default {max-env}.
  -max-labels N         Most labels per job (400 beyond). Default {max-labels}.
  -max-frame-bytes N    Largest protocol frame read from an agent; a longer one
                        ends that stream (or, on the control stream, the
                        session). Between 524288 and 4194304. Default {max-frame-bytes}.
  -max-followers N      WebSocket log followers per job; more get 429.
                        Default {max-followers}.
  -max-agent-slots N    Most slots an agent may announce; an agent announcing
                        more is refused (and does not reconnect). Bounds what
                        one agent certificate can take. Default {max-agent-slots}.
  -max-output-bytes N   Most output stored per attempt: the agent cuts the
                        output there and ends it with a marker line saying so.
                        Default: 1 GiB, or a quarter of the data directory's
                        file system if that is less. 0: no cap.
  -min-free-bytes N     Floor of free space on the data directory's file
                        system. Below it new jobs get 507, new output waits on
                        the agents and nothing new is dispatched; below half of
                        it every write waits. Both lift by themselves when
                        space is freed; reads go on throughout. Default: a
                        twentieth of the file system, 16 MiB to 1 GiB. 0: off
                        (a full disk then stops the controller).

Cluster mode (3 or 5 controllers on raft; README "Running a cluster"):

  -cluster-addr ADDR    Run as a node of a highly available cluster, with
                        its raft and controller-to-controller traffic on
                        this TCP address (mutual TLS 1.3; only controller
                        certificates of this CA get in). Give the address
                        the other controllers dial, not a wildcard. Every
                        node serves the API (a follower forwards to the
                        leader); agents are served by the leader.
                        Default: off (a single controller).
  -bootstrap-expect N   Form a new cluster of N controllers (1, 3, 5 or 7)
                        once N fresh controllers that -join names find
                        each other. Not needed to restart a node, nor to
                        add one to a running cluster.
  -join ADDR,...        Cluster addresses of other controllers: the ones to
                        form the cluster with, or any member of a running
                        cluster to join it.
  -raft-multiplier N    Scale raft's timeouts (heartbeat and election 1 s,
                        leader lease 500 ms) by N: a larger N tolerates
                        slow or busy machines, at the price of a slower
                        failover. Default {raft-multiplier}.
  -output-channel       Send agents' output from the leader to the other
                        controllers on a channel of its own beside raft
                        (a LogAck then means "synced on a quorum"). On by
                        default; -output-channel=false sends output in
                        the raft rounds instead, as the first cluster
                        version did: slower, kept for measurements. Set
                        it the same on every controller of the cluster
                        ('operator members' shows it, OUTPUT).
  -max-stale DUR        A stale read (?stale=1: GET /jobs, /jobs/ID and
                        /jobs/ID/logs answered from this node's own store,
                        not the leader's) is refused (503) once this node
                        has not heard from a leader for longer. Default
                        {max-stale}.
  -raft-snapshot-threshold N, -raft-snapshot-interval DUR, -raft-trailing-logs N
                        Raft's snapshot policy: a node snapshots its store
                        when its log grew by N entries since the last
                        snapshot (checked every DUR, with jitter) and keeps
                        the last -raft-trailing-logs entries; a follower
                        further behind catches up from a snapshot. Default
                        (0): raft's own, 8192 entries, 120s, 10240 entries.
  -raft-wal-segment-bytes N
                        Size of the raft log's segment files. The log's head
                        is dropped a whole segment at a time, and the entries
                        of a kept segment are still served, so a follower
                        behind by less than a segment catches up from the
                        log whatever -raft-trailing-logs says. Default (0):
                        raft-wal's, 64 MiB.
  -max-follower-lag N, -max-follower-lag-bytes N
                        The follower-lag bound: the leader holds new writes
                        while a live voter (heard from in the last 2 s, and
                        applying) is more than N entries, or N bytes of
                        entries, behind its log, so that a failover never
                        first waits for a long backlog; writes slow to what
                        the slowest live voter keeps up with. A dead or
                        stuck voter is not waited for. -1 turns that bound
                        off. Defaults {max-follower-lag} and
                        {max-follower-lag-bytes} (64 MiB).

Webhook notifications (README "Webhooks", SECURITY.md "Webhooks"):

  -webhook 'URL [events=E,...] secret-file=FILE|secret-env=VAR [name=N]'
                        A controller-wide webhook (repeatable; in the config
                        file a [[webhook]] table, below). Events: started,
                        finished (every end), or a final state (completed,
                        failed, timeout, cancelled); default finished. Its
                        deliveries are signed with the secret (at least 16
                        bytes), read at start and never logged.
  -notify-allow-http    Permit http:// targets (body and signature in clear).
  -notify-hosts HOST,...
                        Allowlist of the hosts a target may name (a job's
                        notify URLs and the webhooks): hooks.example.com, or
                        *.example.com for any name under it. Default: any.
  -notify-allow CIDR,...
                        Address ranges a target may resolve to although they
                        are not public (loopback, private, link-local: refused
                        by default, checked on the address dialled).
  -notify-ca FILE       Extra CA certificates (PEM) trusted for receivers.
  -notify-retry-base DUR, -notify-retry-max DUR, -notify-max-tries N
                        A failed delivery is retried after base, doubling up
                        to max (±20% jitter), at most N tries in all.
                        Defaults {notify-retry-base}, {notify-retry-max}, {notify-max-tries}.

Configuration file:

  Every flag has a key in the -config file: its name with _ for -.
  Unknown keys and bad values stop the controller with the file, line
  and key at fault. The keys, with their defaults (example values for
  the required ones):

    data_dir   = "/var/lib/jobsuite/controller"          # required
    ca         = "/etc/jobsuite/pki/ca.pem"              # required
    cert       = "/etc/jobsuite/pki/controller.pem"      # required
    key        = "/etc/jobsuite/pki/controller-key.pem"  # required
    ca_key     = {ca-key:toml}        # e.g. "/etc/jobsuite/pki/ca-key.pem": enrollment
    agent_cert_ttl = {agent-cert-ttl:toml}
    http       = {http:toml}
    listen     = {listen:toml}
    lease_ttl  = {lease-ttl:toml}
    kill_grace = {kill-grace:toml}
    aging      = {aging:toml}
    offline_timeout = {offline-timeout:toml}
    retain_for = {retain-for:toml}
    retain_jobs = {retain-jobs:toml}
    metrics    = {metrics:toml}        # e.g. "127.0.0.1:9190"; empty: off
    metrics_agents = {metrics-agents:toml}
    log_level  = {log-level:toml}
    log_json   = {log-json:toml}
    cluster_addr = {cluster-addr:toml}   # e.g. "10.0.0.1:7444"; empty: a single controller
    bootstrap_expect = {bootstrap-expect:toml}
    join       = ""                      # e.g. "10.0.0.1:7444,10.0.0.2:7444,10.0.0.3:7444"
    raft_multiplier = {raft-multiplier:toml}
    output_channel = {output-channel:toml}
    max_stale  = {max-stale:toml}
    raft_snapshot_threshold = {raft-snapshot-threshold:toml}
    raft_snapshot_interval  = {raft-snapshot-interval:toml}
    raft_trailing_logs      = {raft-trailing-logs:toml}
    raft_wal_segment_bytes  = {raft-wal-segment-bytes:toml}
    max_follower_lag        = {max-follower-lag:toml}
    max_follower_lag_bytes  = {max-follower-lag-bytes:toml}
    notify_allow_http = {notify-allow-http:toml}
    notify_hosts = ""                    # e.g. "hooks.example.com,*.corp.example"
    notify_allow = ""                    # e.g. "10.1.2.0/24"
    notify_ca    = ""                    # e.g. "/etc/jobsuite/hooks-ca.pem"
    notify_retry_base = {notify-retry-base:toml}
    notify_retry_max  = {notify-retry-max:toml}
    notify_max_tries  = {notify-max-tries:toml}
    # webhook = ...: one table per webhook, after the keys above:
    #   [[webhook]]
    #   url = "https://hooks.example.com/jobs"
    #   events = ["started", "failed"]
    #   secret_file = "/etc/jobsuite/hook.secret"   # or secret_env = "HOOK_SECRET"
    max_body_bytes    = {max-body-bytes:toml}
    max_command_bytes = {max-command-bytes:toml}
    max_env           = {max-env:toml}
    max_labels        = {max-labels:toml}
    max_frame_bytes   = {max-frame-bytes:toml}
    max_followers     = {max-followers:toml}
    max_agent_slots   = {max-agent-slots:toml}
    # max_output_bytes = 1073741824   # default: 1 GiB, at most 1/4 of the disk; 0: no cap
    # min_free_bytes   = 1073741824   # default: 1/20 of the disk, 16 MiB–1 GiB; 0: off

Example:

  jobsuite tls ca create -dir pki
  jobsuite tls cert create -dir pki -role controller -name controller -dns ctl.example.com
  jobsuite controller -data-dir /var/lib/jobsuite -ca pki/ca.pem \
      -cert pki/controller.pem -key pki/controller-key.pem -http :8443
  jobsuite controller -config /etc/jobsuite/controller.toml -log-level debug
`)

func (c *ControllerCommand) Run(args []string) int {
	fs := c.flagSet("controller")
	cfg := controller.DefaultConfig()
	var lf logFlags
	minFree, maxOutput, configPath, nf := controllerFlags(fs, &cfg, &lf)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.Stderr, "error: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return ExitUsage
	}
	if *configPath != "" {
		if err := loadConfigFile(fs, *configPath, controllerConfig); err != nil {
			return c.errorf("%v", err)
		}
	}
	if err := nf.apply(&cfg, os.Getenv); err != nil {
		return c.errorf("%v", err)
	}
	return c.run(cfg, lf, *minFree, *maxOutput)
}

// controllerFlags registers the controller's flags on fs, each bound to
// its field of cfg with the field's value — DefaultConfig's — as its
// default, and the logging flags on lf. -min-free-bytes and
// -max-output-bytes default to -1, the default that follows the disk.
func controllerFlags(fs *flag.FlagSet, cfg *controller.Config, lf *logFlags) (minFree, maxOutput *int64, configPath *string, nf *notifyFlags) {
	fs.StringVar(&cfg.DataDir, "data-dir", "", "")
	fs.StringVar(&cfg.TLS.CA, "ca", "", "")
	fs.StringVar(&cfg.TLS.Cert, "cert", "", "")
	fs.StringVar(&cfg.TLS.Key, "key", "", "")
	fs.StringVar(&cfg.CAKey, "ca-key", "", "")
	fs.DurationVar(&cfg.AgentCertTTL, "agent-cert-ttl", cfg.AgentCertTTL, "")
	fs.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "")
	fs.StringVar(&cfg.AgentAddr, "listen", cfg.AgentAddr, "")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "")
	fs.DurationVar(&cfg.KillGrace, "kill-grace", cfg.KillGrace, "")
	fs.DurationVar(&cfg.Aging, "aging", cfg.Aging, "")
	fs.DurationVar(&cfg.OfflineTimeout, "offline-timeout", cfg.OfflineTimeout, "")
	fs.DurationVar(&cfg.RetainFor, "retain-for", cfg.RetainFor, "")
	fs.IntVar(&cfg.RetainJobs, "retain-jobs", cfg.RetainJobs, "")
	fs.StringVar(&cfg.MetricsAddr, "metrics", cfg.MetricsAddr, "")
	fs.IntVar(&cfg.MetricsAgents, "metrics-agents", cfg.MetricsAgents, "")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "")
	fs.IntVar(&cfg.MaxCommandBytes, "max-command-bytes", cfg.MaxCommandBytes, "")
	fs.IntVar(&cfg.MaxEnv, "max-env", cfg.MaxEnv, "")
	fs.IntVar(&cfg.MaxLabels, "max-labels", cfg.MaxLabels, "")
	fs.IntVar(&cfg.MaxFrameBytes, "max-frame-bytes", cfg.MaxFrameBytes, "")
	fs.IntVar(&cfg.MaxFollowers, "max-followers", cfg.MaxFollowers, "")
	fs.IntVar(&cfg.MaxAgentSlots, "max-agent-slots", cfg.MaxAgentSlots, "")
	fs.StringVar(&cfg.ClusterAddr, "cluster-addr", cfg.ClusterAddr, "")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", cfg.BootstrapExpect, "")
	fs.Func("join", "", func(v string) error {
		cfg.Join = nil
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Join = append(cfg.Join, a)
			}
		}
		return nil
	})
	fs.IntVar(&cfg.RaftMultiplier, "raft-multiplier", cfg.RaftMultiplier, "")
	fs.Var(notFlag{&cfg.OutputInRaft}, "output-channel", "")
	fs.DurationVar(&cfg.MaxStale, "max-stale", cfg.MaxStale, "")
	fs.Uint64Var(&cfg.RaftSnapshotThreshold, "raft-snapshot-threshold", cfg.RaftSnapshotThreshold, "")
	fs.DurationVar(&cfg.RaftSnapshotInterval, "raft-snapshot-interval", cfg.RaftSnapshotInterval, "")
	fs.Uint64Var(&cfg.RaftTrailingLogs, "raft-trailing-logs", cfg.RaftTrailingLogs, "")
	fs.IntVar(&cfg.RaftWALSegmentBytes, "raft-wal-segment-bytes", cfg.RaftWALSegmentBytes, "")
	fs.IntVar(&cfg.MaxFollowerLag, "max-follower-lag", cfg.MaxFollowerLag, "")
	fs.Int64Var(&cfg.MaxFollowerLagBytes, "max-follower-lag-bytes", cfg.MaxFollowerLagBytes, "")
	// -1: the default, which follows the disk's size; 0: off.
	minFree = fs.Int64("min-free-bytes", -1, "")
	maxOutput = fs.Int64("max-output-bytes", -1, "")
	nf = &notifyFlags{}
	nf.register(fs, cfg)
	lf.register(fs)
	configPath = fs.String("config", "", "")
	return minFree, maxOutput, configPath, nf
}

// run runs the controller configured by the flags.
func (c *ControllerCommand) run(cfg controller.Config, lf logFlags, minFree, maxOutput int64) int {
	log, sink, err := lf.logger("controller", c.Stderr)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer sink.Close()
	c.Stderr = sink // our messages stay in order with the log lines
	cfg.Logger = log
	if cfg.RetainFor == 0 { // 0 on the command line: keep for ever
		cfg.RetainFor = -1
	}
	if cfg.RetainJobs == 0 {
		cfg.RetainJobs = -1
	}
	for _, f := range []struct {
		name string
		v    int64
		dst  *int64
	}{{"min-free-bytes", minFree, &cfg.MinFreeBytes}, {"max-output-bytes", maxOutput, &cfg.MaxOutputBytes}} {
		switch {
		case f.v == -1: // not given: the default
		case f.v == 0:
			*f.dst = -1 // off
		case f.v < 0:
			return c.errorf("-%s %d: give a number of bytes, or 0 for none", f.name, f.v)
		default:
			*f.dst = f.v
		}
	}
	if cfg.MetricsAgents == 0 { // 0 on the command line: no per-agent series
		cfg.MetricsAgents = -1
	}
	cfg.Version = Version
	var srv controllerRunner
	if cfg.ClusterAddr != "" {
		srv, err = controller.NewNode(cfg)
	} else {
		srv, err = controller.New(cfg)
	}
	if err != nil {
		return c.errorf("%v", err)
	}
	ctx, stop := c.signalContext()
	defer stop()
	defer reloadOnHangup(ctx, srv, log)()
	if err := srv.Run(ctx); err != nil {
		return c.errorf("%v", err)
	}
	return ExitOK
}

// controllerRunner is a single controller (controller.Server) or a
// cluster node (controller.Node).
type controllerRunner interface {
	Run(ctx context.Context) error
	ReloadCertificate() error
}

// reloadOnHangup reloads the controller's certificate at every SIGHUP
// until ctx is done or the returned function is called.
func reloadOnHangup(ctx context.Context, srv controllerRunner, log hclog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: reloading the controller certificate")
				if err := srv.ReloadCertificate(); err != nil {
					log.Error("certificate not reloaded", "error", err)
				}
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(hup); close(done) }
}

// notFlag is a boolean flag that sets the negation of its field: the
// flag says what is on by default (-output-channel), the field what is
// not (Config.OutputInRaft), so a Config's zero value is the default.
type notFlag struct{ p *bool }

func (f notFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*f.p = !v
	return nil
}

func (f notFlag) String() string {
	if f.p == nil {
		return "true"
	}
	return strconv.FormatBool(!*f.p)
}

func (f notFlag) Get() any         { return f.p == nil || !*f.p }
func (f notFlag) IsBoolFlag() bool { return true }
