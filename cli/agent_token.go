package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
)

// joinTokenPrefix starts every join token (controller.JoinTokenPrefix).
const joinTokenPrefix = "jsj_"

// AgentTokenCreateCommand creates a join token: "jobsuite agent token create".
type AgentTokenCreateCommand struct{ Meta }

func (c *AgentTokenCreateCommand) Synopsis() string {
	return "Create a join token that lets new agents enroll"
}

func (c *AgentTokenCreateCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agent token create [options]

  Creates a join token (POST /agent-tokens) and prints it with the CA pin
  (the SHA-256 of the controller's CA certificate) and the command that
  enrolls a new worker:

    jobsuite agent -join TOKEN -ca-pin PIN -controller HOST:7443 -api HOST:8443

  The agent makes its own key (it never leaves the worker), checks that
  the controller's certificate chains to the pinned CA before it sends
  the token, and gets an agent certificate from the controller; nothing
  is copied by hand. The token is shown only this once (the controller
  keeps its SHA-256), expires, and enrolls at most -uses agents.

  The controller must hold the CA key (jobsuite controller -ca-key);
  otherwise it answers 501. Only an operator certificate may create join
  tokens, not an API token.

Options:

  -ttl=<duration>
    How long the token can be used, such as 30m or 24h; at most 168h
    (7 days). Default: 30m.

  -uses=<n>
    How many agents it may enroll, 1 to 1000. Default: 1.

  -labels=<k=v,...>
    Labels the agents it enrolls take (their own -labels add to and
    override them), e.g. gpu=true,zone=a.

  -name-prefix=<prefix>
    Enrolled agents are named PREFIX-<random>, or PREFIX-<anything> they
    ask for with -name. Default: agent.

  -json
    Print the token and its details as JSON.
` + clientOptionsHelp + `

Example:

  $ jobsuite agent token create -uses 5 -labels gpu=true -name-prefix gpu
  Join token 3f9a1c0b2d4e5f60: 5 uses, until 2025-07-01 12:30 UTC, agents named gpu-…
  ...
`)
}

func (c *AgentTokenCreateCommand) Run(args []string) int {
	const name = "agent token create"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	ttl := fs.Duration("ttl", 30*time.Minute, "")
	uses := fs.Int("uses", 1, "")
	labels := fs.String("labels", "", "")
	prefix := fs.String("name-prefix", "", "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(c.Meta, name, "unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *ttl < time.Second || *ttl > 7*24*time.Hour:
		return usageError(c.Meta, name, "-ttl must be between 1s and 168h (7 days), got %s", *ttl)
	case *uses < 1 || *uses > 1000:
		return usageError(c.Meta, name, "-uses must be between 1 and 1000, got %d", *uses)
	}
	l, err := parseLabels(*labels)
	if err != nil {
		return usageError(c.Meta, name, "-labels: %v", err)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	secs := ttl.Seconds()
	req := api.JoinTokenRequest{TTL: &secs, Uses: uses, NamePrefix: *prefix} // name_prefix "": the controller's default
	if len(l) > 0 {
		req.Labels = l
	}
	var raw json.RawMessage
	err = client.do(context.Background(), "POST", "/agent-tokens", req, &raw)
	var apiErr *APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotImplemented:
		return c.errorf("%v", err)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		return c.errorf("%v; does this controller support join tokens (is it older than this CLI)?", err)
	case err != nil:
		return c.errorf("%v", err)
	}
	var t api.JoinTokenView
	if err := json.Unmarshal(raw, &t); err != nil || !strings.HasPrefix(t.Token, joinTokenPrefix) || t.CAPin == "" {
		return c.errorf("the controller's answer holds no join token: %s", raw)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	host, apiPort := apiHostPort(client.base)
	ctl := net.JoinHostPort(host, strconv.Itoa(t.AgentPort))
	api := net.JoinHostPort(host, apiPort)
	useText := "1 use"
	if t.Uses != 1 {
		useText = fmt.Sprintf("%d uses", t.Uses)
	}
	fmt.Fprintf(c.Stdout, "Join token %s: %s, until %s, agents named %s-…, labels %s.\n\n",
		t.ID, useText, t.ExpiresAt.UTC().Format("2006-01-02 15:04 MST"), t.NamePrefix, labelsText(t.Labels))
	fmt.Fprintf(c.Stdout, "  %s\n\n", t.Token)
	fmt.Fprintf(c.Stdout, "It is shown only now. The CA pin (SHA-256 of the controller's CA certificate):\n\n  %s\n\n", t.CAPin)
	fmt.Fprintf(c.Stdout, "On the new worker, run:\n\n  jobsuite agent -join %s -ca-pin %s -controller %s -api %s\n\n", t.Token, t.CAPin, ctl, api)
	fmt.Fprintf(c.Stdout, "(%s is how this CLI reached the controller; give the name or address the worker\nreaches it by, which its certificate must carry.)\n", host)
	return ExitOK
}

// apiHostPort is the host and port of the API's base URL.
func apiHostPort(base *url.URL) (host, port string) {
	host, port = base.Hostname(), base.Port()
	if port == "" {
		port = "443"
	}
	return host, port
}

// AgentTokenListCommand lists join tokens: "jobsuite agent token list".
type AgentTokenListCommand struct{ Meta }

func (c *AgentTokenListCommand) Synopsis() string { return "List the join tokens (without secrets)" }
func (c *AgentTokenListCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agent token list [options]

  Lists the join tokens (GET /agent-tokens), oldest first: id, uses left,
  expiry, the name prefix and labels they give, and the agents they
  enrolled. Secrets are never shown again. Expired tokens stay listed for
  a day.

Options:

  -json
    Print the tokens as JSON, as the controller's API returns them.
` + clientOptionsHelp + `

Example:

  $ jobsuite agent token list
  ID                USES-LEFT  EXPIRES  NAMES   LABELS    ENROLLED
  3f9a1c0b2d4e5f60  3/5        in 25m   gpu-…   gpu=true  gpu-1a2b3c4d,gpu-5e6f7a8b
`)
}

func (c *AgentTokenListCommand) Run(args []string) int {
	var toks []api.JoinTokenView
	if code, done := getList(c.Meta, "agent token list", c.Help(), "/agent-tokens", "join tokens", args, &toks); done {
		return code
	}
	if len(toks) == 0 {
		fmt.Fprintln(c.Stdout, "No join tokens. Create one with 'jobsuite agent token create'.")
		return ExitOK
	}
	now := timeNow()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSES-LEFT\tEXPIRES\tNAMES\tLABELS\tENROLLED")
	for _, t := range toks {
		exp := "in " + shortDuration(t.ExpiresAt.Sub(now))
		if t.Expired {
			exp = "expired " + ago(t.ExpiresAt, now)
		}
		enrolled := "-"
		if len(t.Enrolled) > 0 {
			enrolled = strings.Join(t.Enrolled, ",")
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s-…\t%s\t%s\n", t.ID, t.UsesLeft, t.Uses, exp, t.NamePrefix, labelsText(t.Labels), cell(enrolled, 60))
	}
	tw.Flush()
	return ExitOK
}

// AgentTokenRevokeCommand deletes a join token: "jobsuite agent token revoke ID".
type AgentTokenRevokeCommand struct{ Meta }

func (c *AgentTokenRevokeCommand) Synopsis() string { return "Revoke a join token" }
func (c *AgentTokenRevokeCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agent token revoke [options] ID

  Deletes the join token ID (DELETE /agent-tokens/ID): it enrolls no
  agent from now on. Agents it already enrolled keep their certificates;
  revoke those with 'jobsuite agents revoke -all-certs NAME'.
` + clientOptionsHelp + `

Example:

  $ jobsuite agent token revoke 3f9a1c0b2d4e5f60
  Join token 3f9a1c0b2d4e5f60 revoked (3 of 5 uses were left).
`)
}

func (c *AgentTokenRevokeCommand) Run(args []string) int {
	const name = "agent token revoke"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(c.Meta, name, "want one join token id ('jobsuite agent token list'), got %d arguments", fs.NArg())
	}
	id := strings.TrimSpace(fs.Arg(0))
	if id == "" || strings.Trim(id, "0123456789abcdef") != "" {
		return usageError(c.Meta, name, "%q is not a join token id: ids are hex, as 'jobsuite agent token list' shows them", id)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var t api.JoinTokenView
	if err := client.do(context.Background(), "DELETE", "/agent-tokens/"+id, nil, &t); err != nil {
		return c.errorf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "Join token %s revoked (%d of %d uses were left).\n", t.ID, t.UsesLeft, t.Uses)
	return ExitOK
}

// joinDefaults fills in what 'jobsuite agent -join' leaves out: the
// certificate files (in -state-dir, else agent.DefaultEnrollDir) and the
// API address (the host of -controller, port 8443).
func (c *AgentCommand) joinDefaults(cfg *agent.Config, caPin string) int {
	if caPin == "" {
		return c.errorf("-join needs -ca-pin: the SHA-256 of the CA certificate that 'jobsuite agent token create' printed with the token")
	}
	if _, err := certs.ParsePin(caPin); err != nil {
		return c.errorf("-ca-pin: %v", err)
	}
	if cfg.Controller == "" {
		return c.errorf("-join needs -controller HOST:PORT, the controller's agent address")
	}
	dir := cfg.StateDir
	if dir == "" {
		dir = agent.DefaultEnrollDir()
	}
	for _, f := range []struct {
		path *string
		name string
	}{{&cfg.TLS.CA, "ca.pem"}, {&cfg.TLS.Cert, "agent.pem"}, {&cfg.TLS.Key, "agent-key.pem"}} {
		if *f.path == "" {
			*f.path = filepath.Join(dir, f.name)
		}
	}
	if cfg.API == "" {
		addrs, err := agent.ParseControllers(cfg.Controller)
		if err != nil {
			return c.errorf("-controller: %v", err)
		}
		host, _, _ := net.SplitHostPort(addrs[0])
		cfg.API = net.JoinHostPort(host, "8443")
	}
	return ExitOK
}

// enroll enrolls the agent with the join token unless its certificate
// files exist.
func (c *AgentCommand) enroll(cfg *agent.Config, token, caPin string, log hclog.Logger) int {
	done, err := agent.Enrolled(cfg.TLS)
	if err != nil {
		return c.errorf("%v", err)
	}
	if done {
		log.Info("already enrolled; ignoring -join", "cert", cfg.TLS.Cert)
		return ExitOK
	}
	sn := cfg.ServerName
	if sn == "" {
		sn, _, _ = net.SplitHostPort(cfg.API) // "" for https://...: Enroll takes the API's host
	}
	ctx, stop := c.signalContext()
	defer stop()
	e, err := agent.Enroll(ctx, agent.EnrollConfig{
		API: cfg.API, Token: token, CAPin: caPin, ServerName: sn, Name: cfg.Name, Files: cfg.TLS, Logger: log.Named("enroll"),
	})
	if err != nil {
		return c.errorf("%v", err)
	}
	fmt.Fprintf(c.Stderr, "Enrolled as agent %s; certificate %s valid until %s.\n", e.Name, cfg.TLS.Cert, e.NotAfter.Format("2006-01-02 15:04 MST"))
	return ExitOK
}

// mergeLabels returns base with over's entries added or replacing.
func mergeLabels(base, over map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}
