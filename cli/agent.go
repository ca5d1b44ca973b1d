package cli

import (
	"fmt"
	"strings"

	"jobsuite/agent"
	"jobsuite/transport"
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
  drops. SIGINT or SIGTERM stops it; running jobs are killed and the
  controller retries them if they have retries left.

Options:

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
  -log-level LEVEL   trace, debug, info, warn or error. Default info.
  -log-json          Log JSON lines.

Example:

  jobsuite tls cert create -dir pki -role agent -name worker-1
  jobsuite agent -controller ctl.example.com:7443 -ca pki/ca.pem \
      -cert pki/worker-1.pem -key pki/worker-1-key.pem -slots 4 -labels gpu=true
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
	lf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.Stderr, "error: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return ExitUsage
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
	ctx, stop := c.signalContext()
	defer stop()
	if err := a.Run(ctx); err != nil {
		return c.errorf("%v", err)
	}
	return ExitOK
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
