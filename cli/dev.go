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
Usage: jobsuite dev [-dir DIR] [-agents N] [-slots N] [-http ADDR] [-listen ADDR]

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

  Only one 'jobsuite dev' may use DIR at a time; a second one says which
  process holds it. With -agents 0 only the controller runs (until
  Ctrl-C); start agents yourself, e.g. with a join token.

Options:

  -dir DIR          State directory. Default .jobsuite-dev.
  -agents N         Local agents to start. Default 2.
  -slots N          Slots per agent. Default 4.
  -http ADDR        HTTPS API address. Default 127.0.0.1:8443.
  -listen ADDR      Agent address (UDP+TCP). Default 127.0.0.1:7443.
  -log-level LEVEL  trace, debug, info, warn or error. Default info.
  -log-json         Log JSON lines.

Example:

  jobsuite dev &
  jobsuite submit -f -- 'echo hello; echo oops >&2; exit 3'
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
	agentNames, err := devPKI(abs, *nAgents)
	if err != nil {
		return c.errorf("setting up the dev PKI in %s: %v", abs, err)
	}
	srv, err := controller.New(controller.Config{
		HTTPAddr: *httpAddr, AgentAddr: *listen, DataDir: filepath.Join(abs, "data"),
		TLS:     certs.Files{CA: certs.CAFile(abs), Cert: certs.CertFile(abs, "controller"), Key: certs.KeyFile(abs, "controller")},
		CAKey:   certs.KeyFile(abs, "ca"), // enrolls agents: 'jobsuite agent token create' works in dev
		Logger:  log.Named("controller"),
		Version: Version,
	})
	if err != nil {
		return c.errorf("%v", err)
	}
	env := devEnv(abs, srv.HTTPAddr())
	if err := os.WriteFile(filepath.Join(abs, "env"), []byte(env), 0o600); err != nil {
		return c.errorf("writing %s: %v", filepath.Join(abs, "env"), err)
	}

	agentAddr := srv.AgentAddr()
	if host, port, err := net.SplitHostPort(agentAddr); err == nil && (host == "" || host == "::" || host == "0.0.0.0") {
		agentAddr = net.JoinHostPort("127.0.0.1", port)
	}
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
	fmt.Fprintf(c.Stdout, "jobsuite dev: controller at https://%s with %d local agent(s); state in %s\n\n", srv.HTTPAddr(), len(agentNames), abs)
	fmt.Fprintf(c.Stdout, "Run jobsuite from this folder, or set these in another shell (also in %s):\n\n%s\n", filepath.Join(abs, "env"), env)
	if len(agents) > 0 {
		fmt.Fprintf(c.Stdout, "Try: jobsuite submit -f -- 'echo hello; echo oops >&2; exit 3'\n")
	} else {
		fmt.Fprintf(c.Stdout, "No local agents (-agents 0): jobs wait until an agent connects; 'jobsuite agent token create' makes a join token for one.\n")
	}
	fmt.Fprintf(c.Stdout, "Press Ctrl-C to stop (twice to cancel running jobs).\n\n")
	var dashboard sync.WaitGroup
	dashboard.Go(func() { c.printDashboard(ctrlCtx, abs, env) })

	runErr := srv.Run(ctrlCtx)
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
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
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
func devPKI(dir string, agents int) ([]string, error) {
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
// controller as operator.
func devEnv(dir, httpAddr string) string {
	if host, port, err := net.SplitHostPort(httpAddr); err == nil && (host == "" || host == "::" || host == "0.0.0.0") {
		httpAddr = net.JoinHostPort("127.0.0.1", port)
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	return fmt.Sprintf("export JOBSUITE_ADDR=%s\nexport JOBSUITE_CACERT=%s\nexport JOBSUITE_CLIENT_CERT=%s\nexport JOBSUITE_CLIENT_KEY=%s\n",
		q("https://"+httpAddr), q(certs.CAFile(dir)), q(certs.CertFile(dir, "operator")), q(certs.KeyFile(dir, "operator")))
}
