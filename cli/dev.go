package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/transport"
)

// DevCommand runs a controller and local agents in one process.
type DevCommand struct{ Meta }

func (c *DevCommand) Synopsis() string {
	return "Run a controller and local agents with a throwaway PKI"
}

func (c *DevCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite dev [-dir DIR] [-agents N] [-slots N] [-controllers N] [-http ADDR] [-listen ADDR]

  Starts a controller and N local agents in one process, for trying
  jobsuite out and for development. On first use it creates a PKI under
  DIR (a CA plus controller, operator and agent certificates — the same
  layout 'jobsuite tls ca create -dir DIR' writes, so 'jobsuite tls cert
  create -dir DIR ...' issues more from it) and keeps jobs in DIR/data.
  Running it again reuses both, so jobs and logs survive restarts.

  It writes the settings the CLI needs to DIR/env as shell export lines.
  A jobsuite command run from the same folder finds DIR/env by itself
  when DIR is .jobsuite-dev and no JOBSUITE_* variable is set.

  It prints the web dashboard's address with a sign-in link: an operator
  API token (kept in DIR/dashboard-token, valid 7 days, made again when
  it expires) in the part after '#', which the browser does not send.
  The browser does not know the dev CA: import DIR/ca.pem as an
  authority, or accept its warning for 127.0.0.1 once.

  With -controllers 3 (or 5) it starts a local cluster instead of one
  controller (README "Running a cluster"): the controllers listen on
  consecutive ports from -http and -listen (8443-8445 and 7443-7445 by
  default), with their cluster ports 100 above the agent ports; each keeps
  its data in DIR/node-N, the agents and the CLI know all of them, and the
  agents follow the leader. They share this one process, which stops
  them together: to watch a failover, run the controllers as processes
  of their own (README "Running a cluster") and stop the leader. A
  single controller's DIR/data is left alone.

  Only one 'jobsuite dev' may use DIR at a time; a second one says which
  process holds it. With -agents 0 only the controller runs (until
  Ctrl-C); start agents yourself, e.g. with a join token.

Options:

  -dir DIR          State directory. Default .jobsuite-dev.
  -agents N         Local agents to start. Default 2.
  -slots N          Slots per agent. Default 4.
  -controllers N    Controllers: 1, or a local cluster of 3 or 5. Default 1.
  -http ADDR        HTTPS API address. Default 127.0.0.1:8443.
  -listen ADDR      Agent address (UDP+TCP). Default 127.0.0.1:7443.
  -log-level LEVEL  trace, debug, info, warn or error. Default info.
  -log-json         Log JSON lines.

Example:

  jobsuite dev &
  jobsuite submit -f -- 'echo hello; echo oops >&2; exit 3'
  jobsuite dev -controllers 3 &
  jobsuite operator members
`)
}

func (c *DevCommand) Run(args []string) int {
	fs := c.flagSet("dev")
	var lf logFlags
	dir := fs.String("dir", ".jobsuite-dev", "")
	nAgents := fs.Int("agents", 2, "")
	slots := fs.Int("slots", 4, "")
	httpAddr := fs.String("http", "127.0.0.1:8443", "")
	listen := fs.String("listen", "127.0.0.1:7443", "")
	nCtl := fs.Int("controllers", 1, "")
	lf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.Stderr, "error: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return ExitUsage
	}
	if *nAgents < 0 || *nAgents > 64 {
		return c.errorf("-agents must be between 0 and 64")
	}
	if *slots < 1 {
		return c.errorf("-slots must be at least 1")
	}
	if *nCtl != 1 && *nCtl != 3 && *nCtl != 5 {
		return c.errorf("-controllers must be 1, 3 or 5 (a cluster needs an odd number to keep a majority)")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return c.errorf("%v", err)
	}
	log, sink, err := lf.logger("dev", c.Stderr)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer sink.Close()
	c.Stderr = sink // our messages stay in order with the log lines
	unlock, err := lockDevDir(abs)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer unlock()
	agentNames, err := devPKI(abs, *nAgents, *nCtl)
	if err != nil {
		return c.errorf("setting up the dev PKI in %s: %v", abs, err)
	}
	ctls, err := devControllers(abs, *nCtl, *httpAddr, *listen, log)
	if err != nil {
		return c.errorf("%v", err)
	}
	var httpAddrs, agentAddrs []string
	for _, ctl := range ctls {
		httpAddrs = append(httpAddrs, ctl.HTTPAddr())
		agentAddrs = append(agentAddrs, loopbackAddr(ctl.AgentAddr()))
	}
	env := devEnv(abs, httpAddrs...)
	if err := os.WriteFile(filepath.Join(abs, "env"), []byte(env), 0o600); err != nil {
		return c.errorf("writing %s: %v", filepath.Join(abs, "env"), err)
	}
	agentAddr := strings.Join(agentAddrs, ",")

	// The first Ctrl-C drains the agents (running jobs finish); the
	// controller stops once they are gone. A second Ctrl-C cancels the
	// running jobs.
	var agents []*agent.Agent
	agentCtx, stopAgents := c.drainContext(log, func() {
		for _, a := range agents {
			a.Stop()
		}
	})
	defer stopAgents()
	ctrlCtx, stopCtrl := context.WithCancel(context.Background())
	defer stopCtrl()
	for _, name := range agentNames {
		a, err := agent.New(agent.Config{
			Controller: agentAddr, Slots: *slots, Transport: transport.ModeAuto,
			TLS:          certs.Files{CA: certs.CAFile(abs), Cert: certs.CertFile(abs, name), Key: certs.KeyFile(abs, name)},
			Labels:       map[string]string{"dev": "true", "agent": name},
			StateDir:     filepath.Join(abs, name),
			DrainTimeout: agent.DefaultConfig().DrainTimeout,
			Logger:       log.Named(name),
		})
		if err != nil {
			return c.errorf("%v", err)
		}
		agents = append(agents, a)
	}
	var wg sync.WaitGroup
	var agentErr error
	var errOnce sync.Once
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(agentCtx); err != nil {
				errOnce.Do(func() { agentErr = err })
				stopAgents()
			}
		}()
	}
	if len(agents) > 0 {
		go func() { wg.Wait(); stopCtrl() }() // the agents drained: stop
	} else {
		go func() { <-agentCtx.Done(); stopCtrl() }() // nothing to drain
	}
	if len(ctls) == 1 {
		fmt.Fprintf(c.Stdout, "jobsuite dev: controller at https://%s with %d local agent(s); state in %s\n\n", httpAddrs[0], len(agentNames), abs)
	} else {
		fmt.Fprintf(c.Stdout, "jobsuite dev: a cluster of %d controllers at https://%s with %d local agent(s); state in %s\n\n", len(ctls), strings.Join(httpAddrs, ", https://"), len(agentNames), abs)
	}
	fmt.Fprintf(c.Stdout, "Run jobsuite from this folder, or set these in another shell (also in %s):\n\n%s\n", filepath.Join(abs, "env"), env)
	if len(agents) > 0 {
		fmt.Fprintf(c.Stdout, "Try: jobsuite submit -f -- 'echo hello; echo oops >&2; exit 3'\n")
	} else {
		fmt.Fprintf(c.Stdout, "No local agents (-agents 0): jobs wait until an agent connects; 'jobsuite agent token create' makes a join token for one.\n")
	}
	fmt.Fprintf(c.Stdout, "Press Ctrl-C to stop (twice to cancel running jobs).\n\n")
	var dashboard sync.WaitGroup
	dashboard.Go(func() { c.printDashboard(ctrlCtx, abs, env) })

	runErr := runControllers(ctrlCtx, ctls)
	stopCtrl()
	dashboard.Wait()
	stopAgents()
	for _, a := range agents {
		a.Stop() // the controller is gone: nothing to drain into
	}
	wg.Wait()
	if runErr == nil {
		runErr = agentErr
	}
	if runErr != nil {
		return c.errorf("%v", runErr)
	}
	return ExitOK
}

// devController is a dev controller: a single one or a cluster node.
type devController interface {
	Run(ctx context.Context) error
	HTTPAddr() string
	AgentAddr() string
}

// devControllers builds the dev controllers: one on httpAddr and listen
// with its data in dir/data, or n cluster nodes on consecutive ports
// from there, with their data in dir/node-I and their cluster ports 100
// above their agent ports.
func devControllers(dir string, n int, httpAddr, listen string, log hclog.Logger) ([]devController, error) {
	base := controller.Config{
		CAKey:   certs.KeyFile(dir, "ca"), // enrolls agents: 'jobsuite agent token create' works in dev
		Version: Version,
	}
	if n == 1 {
		cfg := base
		cfg.HTTPAddr, cfg.AgentAddr, cfg.DataDir = httpAddr, listen, filepath.Join(dir, "data")
		cfg.TLS = certs.Files{CA: certs.CAFile(dir), Cert: certs.CertFile(dir, "controller"), Key: certs.KeyFile(dir, "controller")}
		cfg.Logger = log.Named("controller")
		srv, err := controller.New(cfg)
		if err != nil {
			return nil, err
		}
		return []devController{srv}, nil
	}
	httpHost, httpPort, err := splitPort(httpAddr, "-http")
	if err != nil {
		return nil, err
	}
	agentHost, agentPort, err := splitPort(listen, "-listen")
	if err != nil {
		return nil, err
	}
	clusterHost := agentHost
	if ip := net.ParseIP(clusterHost); clusterHost == "" || (ip != nil && ip.IsUnspecified()) {
		clusterHost = "127.0.0.1"
	}
	var join []string
	for i := range n {
		join = append(join, net.JoinHostPort(clusterHost, strconv.Itoa(agentPort+100+i)))
	}
	var out []devController
	for i := range n {
		name := fmt.Sprintf("controller-%d", i+1)
		cfg := base
		cfg.HTTPAddr = net.JoinHostPort(httpHost, strconv.Itoa(httpPort+i))
		cfg.AgentAddr = net.JoinHostPort(agentHost, strconv.Itoa(agentPort+i))
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("node-%d", i+1))
		cfg.TLS = certs.Files{CA: certs.CAFile(dir), Cert: certs.CertFile(dir, name), Key: certs.KeyFile(dir, name)}
		cfg.Logger = log.Named(name)
		cfg.ClusterAddr, cfg.BootstrapExpect, cfg.Join = join[i], n, join
		nd, err := controller.NewNode(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, nd)
	}
	return out, nil
}

// splitPort splits a host:port flag value with a numeric port.
func splitPort(addr, flag string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %v", flag, addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65000 {
		return "", 0, fmt.Errorf("%s %q: -controllers needs a fixed port number to count up from", flag, addr)
	}
	return host, p, nil
}

// runControllers runs every controller until ctx ends or one of them
// fails, which stops the others; it returns the first error.
func runControllers(ctx context.Context, ctls []devController) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(ctls))
	for _, ctl := range ctls {
		go func() {
			err := ctl.Run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range ctls {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// loopbackAddr turns a wildcard listener address into 127.0.0.1's.
func loopbackAddr(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil && (host == "" || host == "::" || host == "0.0.0.0") {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// lockDevDir makes sure no other 'jobsuite dev' uses dir: it holds an
// exclusive lock on dir/dev.lock (with the holder's PID inside) until
// the returned function is called.
func lockDevDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "dev.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			if pid := strings.TrimSpace(string(holder)); pid != "" {
				who = "process " + pid
			}
			return nil, fmt.Errorf("another 'jobsuite dev' (%s) is running with its state in %s: use that one (its settings are in %s), stop it, or give this one another -dir", who, dir, filepath.Join(dir, "env"))
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// The PID tells a second dev who holds the lock; a disk that cannot
	// take these few bytes will not take the store either: say so now.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return func() {
		_ = f.Truncate(0)
		f.Close() // releases the lock
	}, nil
}

// devTokenTTL is how long the dashboard token of 'jobsuite dev' lasts.
const devTokenTTL = 7 * 24 * time.Hour

// printDashboard prints the dashboard's address and a sign-in link once
// the controller answers: it reuses the operator token in
// dir/dashboard-token while it is valid, and otherwise creates one with
// the dev operator certificate.
func (c *DevCommand) printDashboard(ctx context.Context, dir, env string) {
	settings, err := parseEnvFile([]byte(env))
	if err != nil {
		return
	}
	cf := &clientFlags{addr: settings[envAddr], caCert: settings[envCACert], clientCert: settings[envClientCert], clientKey: settings[envClientKey]}
	client, err := newClient(c.Meta, cf)
	if err != nil {
		return
	}
	defer client.close()
	// Wait for the API (srv.Run has just started).
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		err := client.do(rctx, "GET", "/health", nil, nil)
		cancel()
		if err == nil {
			break
		}
		if i == 50 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	tokenFile := filepath.Join(dir, "dashboard-token")
	token := ""
	if b, err := os.ReadFile(tokenFile); err == nil {
		token = strings.TrimSpace(string(b))
		check := newClientTLS(client.base, client.tls.RootCAs, tls.Certificate{})
		check.useToken(token)
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if check.do(rctx, "GET", "/whoami", nil, nil) != nil {
			token = "" // expired, revoked, or of another dev store
		}
		cancel()
		check.close()
	}
	if token == "" {
		var created api.TokenView
		secs := devTokenTTL.Seconds()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := client.do(rctx, "POST", "/tokens", api.TokenRequest{Role: "operator", Name: "dev-dashboard", TTL: &secs}, &created)
		cancel()
		if err != nil || created.Token == "" {
			fmt.Fprintf(c.Stdout, "Dashboard: %s/ui/ (no sign-in link: %v)\n\n", client.base, err)
			return
		}
		token = created.Token
		if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
			fmt.Fprintf(c.Stderr, "warning: keeping the dashboard token in %s: %v\n", tokenFile, err)
		}
	}
	fmt.Fprintf(c.Stdout, "Dashboard: %s/ui/\n", client.base)
	fmt.Fprintf(c.Stdout, "  Sign in as operator: %s/ui/#token=%s\n", client.base, token)
	fmt.Fprintf(c.Stdout, "  The browser does not know the dev CA: import %s as an authority\n", certs.CAFile(dir))
	fmt.Fprintf(c.Stdout, "  (Chrome: Settings, Privacy and security, Security, Manage certificates, Authorities;\n")
	fmt.Fprintf(c.Stdout, "  Firefox: Settings, Privacy & Security, View Certificates, Authorities), or accept its warning once.\n\n")
}

// devPKI creates whatever of the dev PKI is missing under dir: the CA,
// a controller certificate for loopback, an operator certificate and
// one certificate per agent. It returns the agent names.
func devPKI(dir string, agents, controllers int) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(certs.CAFile(dir)); errors.Is(err, os.ErrNotExist) {
		if err := certs.CreateCA(dir); err != nil {
			return nil, err
		}
	}
	reqs := []certs.Request{
		{Role: certs.RoleController, Name: "controller", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}},
		{Role: certs.RoleOperator, Name: "operator"},
	}
	for i := 1; controllers > 1 && i <= controllers; i++ {
		reqs = append(reqs, certs.Request{Role: certs.RoleController, Name: fmt.Sprintf("controller-%d", i), DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	}
	var names []string
	for i := 1; i <= agents; i++ {
		name := fmt.Sprintf("agent-%d", i)
		names = append(names, name)
		reqs = append(reqs, certs.Request{Role: certs.RoleAgent, Name: name})
	}
	for _, req := range reqs {
		if _, err := os.Stat(certs.CertFile(dir, req.Name)); err == nil {
			continue
		}
		if _, _, err := certs.IssueFiles(dir, req); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// devEnv is the content of DIR/env: what the CLI needs to reach the dev
// controllers (all of them, for a cluster) as operator.
func devEnv(dir string, httpAddrs ...string) string {
	var urls []string
	for _, a := range httpAddrs {
		urls = append(urls, "https://"+loopbackAddr(a))
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	return fmt.Sprintf("export JOBSUITE_ADDR=%s\nexport JOBSUITE_CACERT=%s\nexport JOBSUITE_CLIENT_CERT=%s\nexport JOBSUITE_CLIENT_KEY=%s\n",
		q(strings.Join(urls, ",")), q(certs.CAFile(dir)), q(certs.CertFile(dir, "operator")), q(certs.KeyFile(dir, "operator")))
}
