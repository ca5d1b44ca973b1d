package cli

import (
	"fmt"
	"strings"
	"time"

	"jobsuite/controller"
)

// ControllerCommand runs the controller service.
type ControllerCommand struct{ Meta }

func (c *ControllerCommand) Synopsis() string {
	return "Run the controller (API, queue, agent listener)"
}

func (c *ControllerCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite controller -data-dir DIR -ca FILE -cert FILE -key FILE [options]

  Runs the controller: the HTTPS API for operators (mutual TLS), the
  durable job queue in Pebble under -data-dir, and the agent listener
  (QUIC on UDP and TLS+yamux on TCP, same port). SIGINT or SIGTERM stops
  it cleanly; every acknowledged job survives a restart, even kill -9.

Options:

  -config FILE       Read settings from a TOML file (see below). Flags given
                     on the command line override it.
  -data-dir DIR      Pebble data directory (created if missing). Required.
  -ca FILE           CA certificate that signs agents and operators. Required.
  -cert FILE         Controller certificate (role controller). Required.
  -key FILE          Controller key. Required.
  -http ADDR         HTTPS API address. Default 127.0.0.1:8443.
  -listen ADDR       Agent address (UDP+TCP). Default :7443.
  -lease-ttl DUR     An agent or attempt silent this long is lost. Default 15s.
  -kill-grace DUR    Grace between SIGTERM and SIGKILL when stopping jobs. Default 5s.
  -aging DUR         A queued job gains one priority point per DUR waited, so
                     high-priority floods cannot starve the rest. Default 0
                     (strict priority).
  -retain-for DUR    Finished jobs (and their logs) older than this are removed.
                     Default 720h (30 days); 0 keeps them for ever.
  -retain-jobs N     At most N finished jobs are kept; older ones are removed.
                     Default 1000000; 0 keeps them all.
  -log-level LEVEL   trace, debug, info, warn or error. Default info.
  -log-json          Log JSON lines.

Configuration file:

  Every flag has a key in the -config file: its name with _ for -.
  Unknown keys and bad values stop the controller with the file, line
  and key at fault. The keys, with their defaults (example values for
  the required ones):

    data_dir   = "/var/lib/jobsuite/controller"          # required
    ca         = "/etc/jobsuite/pki/ca.pem"              # required
    cert       = "/etc/jobsuite/pki/controller.pem"      # required
    key        = "/etc/jobsuite/pki/controller-key.pem"  # required
    http       = "127.0.0.1:8443"
    listen     = ":7443"
    lease_ttl  = "15s"
    kill_grace = "5s"
    aging      = "0s"
    retain_for = "720h"
    retain_jobs = 1000000
    log_level  = "info"
    log_json   = false

Example:

  jobsuite tls ca create -dir pki
  jobsuite tls cert create -dir pki -role controller -name controller -dns ctl.example.com
  jobsuite controller -data-dir /var/lib/jobsuite -ca pki/ca.pem \
      -cert pki/controller.pem -key pki/controller-key.pem -http :8443
  jobsuite controller -config /etc/jobsuite/controller.toml -log-level debug
`)
}

func (c *ControllerCommand) Run(args []string) int {
	fs := c.flagSet("controller")
	var cfg controller.Config
	var lf logFlags
	fs.StringVar(&cfg.DataDir, "data-dir", "", "")
	fs.StringVar(&cfg.TLS.CA, "ca", "", "")
	fs.StringVar(&cfg.TLS.Cert, "cert", "", "")
	fs.StringVar(&cfg.TLS.Key, "key", "", "")
	fs.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8443", "")
	fs.StringVar(&cfg.AgentAddr, "listen", ":7443", "")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "")
	fs.DurationVar(&cfg.KillGrace, "kill-grace", 0, "")
	fs.DurationVar(&cfg.Aging, "aging", 0, "")
	fs.DurationVar(&cfg.RetainFor, "retain-for", 30*24*time.Hour, "")
	fs.IntVar(&cfg.RetainJobs, "retain-jobs", 1_000_000, "")
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
		if err := loadConfigFile(fs, configPath, controllerConfig); err != nil {
			return c.errorf("%v", err)
		}
	}
	log, err := lf.logger("controller", c.Stderr)
	if err != nil {
		return c.errorf("%v", err)
	}
	cfg.Logger = log
	if cfg.RetainFor == 0 { // 0 on the command line: keep for ever
		cfg.RetainFor = -1
	}
	if cfg.RetainJobs == 0 {
		cfg.RetainJobs = -1
	}
	srv, err := controller.New(cfg)
	if err != nil {
		return c.errorf("%v", err)
	}
	ctx, stop := c.signalContext()
	defer stop()
	if err := srv.Run(ctx); err != nil {
		return c.errorf("%v", err)
	}
	return ExitOK
}
