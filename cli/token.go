package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
)

// tokenPrefix starts every API token (controller.TokenPrefix).
const tokenPrefix = "jst_"

// TokenCreateCommand creates an API token: "jobsuite token create".
type TokenCreateCommand struct{ Meta }

func (c *TokenCreateCommand) Synopsis() string { return "Create an API token for scripts and browsers" }
func (c *TokenCreateCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite token create [options] -role viewer|operator

  Creates an API token (POST /tokens): a bearer secret that scripts and
  browsers send instead of a client certificate, as
  'Authorization: Bearer <token>' (the CLI: JOBSUITE_TOKEN). The token is
  printed on standard output, alone, and only this once: the controller
  keeps only its SHA-256. Anyone holding it acts with its role until it
  expires or is revoked ('jobsuite token revoke ID').

  Only an operator certificate may create tokens, not a token.

Options:

  -role=<viewer|operator>
    What the token may do: viewer reads, operator does everything.
    Required.

  -name=<name>
    A name for humans and the audit log, such as the script or person
    using it. Default: token.

  -ttl=<duration>
    How long the token is valid, such as 8h or 720h; at most 8760h (a
    year). Default: 24h.

  -json
    Print the token and its details as JSON.
` + clientOptionsHelp + `

Example:

  $ export JOBSUITE_TOKEN=$(jobsuite token create -role viewer -name grafana -ttl 720h)
  Created viewer token "grafana" (id 1f2e3d4c5b6a7988), valid until 2025-07-01 12:00 UTC.
`)
}

func (c *TokenCreateCommand) Run(args []string) int {
	const name = "token create"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	role := fs.String("role", "", "")
	tokName := fs.String("name", "", "")
	ttl := fs.Duration("ttl", 24*time.Hour, "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(c.Meta, name, "unexpected argument %q", fs.Arg(0))
	}
	r, err := certs.ParseRole(*role)
	switch {
	case *role == "":
		return usageError(c.Meta, name, "-role is required: viewer (read only) or operator")
	case err != nil || (r != certs.RoleViewer && r != certs.RoleOperator):
		return usageError(c.Meta, name, "-role must be viewer or operator, got %q", *role)
	case *ttl < time.Second || *ttl > 365*24*time.Hour:
		return usageError(c.Meta, name, "-ttl must be between 1s and 8760h (a year), got %s", *ttl)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	secs := ttl.Seconds()
	req := api.TokenRequest{Role: string(r), Name: *tokName, TTL: &secs} // name "": the controller's default
	var raw json.RawMessage
	if err := client.do(context.Background(), "POST", "/tokens", req, &raw); err != nil {
		return c.errorf("%v", err)
	}
	var t api.TokenView
	if err := json.Unmarshal(raw, &t); err != nil || !strings.HasPrefix(t.Token, tokenPrefix) {
		return c.errorf("the controller's answer holds no token: %s", raw)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	fmt.Fprintln(c.Stdout, t.Token)
	fmt.Fprintf(c.Stderr, "Created %s token %q (id %s), valid until %s. It is shown only now.\n",
		t.Role, t.Name, t.ID, t.ExpiresAt.UTC().Format("2006-01-02 15:04 MST"))
	return ExitOK
}

// TokenListCommand lists API tokens: "jobsuite token list".
type TokenListCommand struct{ Meta }

func (c *TokenListCommand) Synopsis() string { return "List the API tokens (without secrets)" }
func (c *TokenListCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite token list [options]

  Lists the API tokens (GET /tokens), oldest first: id, name, role, who
  created it and when it expires. Secrets are never shown again; expired
  tokens stay listed until they are revoked.

Options:

  -json
    Print the tokens as JSON, as the controller's API returns them.
` + clientOptionsHelp + `

Example:

  $ jobsuite token list
  ID                NAME     ROLE      CREATED-BY                                  EXPIRES
  1f2e3d4c5b6a7988  grafana  viewer    operator alice (certificate 3fa2…)          in 29d
  a9b8c7d6e5f40312  ci       operator  operator alice (certificate 3fa2…)          expired
`)
}

func (c *TokenListCommand) Run(args []string) int {
	var toks []api.TokenView
	if code, done := getList(c.Meta, "token list", c.Help(), "/tokens", "tokens", args, &toks); done {
		return code
	}
	if len(toks) == 0 {
		fmt.Fprintln(c.Stdout, "No API tokens. Create one with 'jobsuite token create -role viewer'.")
		return ExitOK
	}
	now := timeNow()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED-BY\tEXPIRES")
	for _, t := range toks {
		expires := "expired"
		if !t.Expired {
			expires = ago(t.ExpiresAt, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.CreatedBy, expires)
	}
	tw.Flush()
	return ExitOK
}

// TokenRevokeCommand revokes API tokens: "jobsuite token revoke ID...".
type TokenRevokeCommand struct{ Meta }

func (c *TokenRevokeCommand) Synopsis() string { return "Revoke API tokens" }
func (c *TokenRevokeCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite token revoke [options] ID...

  Revokes each API token ID (DELETE /tokens/ID): requests with it are
  refused from now on. 'jobsuite token list' shows the ids. Every ID is
  tried; the exit status is 1 if any of them failed.
` + clientOptionsHelp + `

Example:

  $ jobsuite token revoke 1f2e3d4c5b6a7988
  Token 1f2e3d4c5b6a7988 ("grafana", viewer) revoked
`)
}

func (c *TokenRevokeCommand) Run(args []string) int {
	const name = "token revoke"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(c.Meta, name, "want at least one token id ('jobsuite token list' shows them)")
	}
	for _, id := range fs.Args() {
		if strings.HasPrefix(id, tokenPrefix) {
			return usageError(c.Meta, name, "that is a token's secret, not its id; 'jobsuite token list' shows the ids")
		}
		if id == "" || strings.Trim(id, "0123456789abcdef") != "" {
			return usageError(c.Meta, name, "token id %q: ids are lowercase hex ('jobsuite token list' shows them)", id)
		}
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	code := ExitOK
	for _, id := range fs.Args() {
		var t api.TokenView
		err := client.do(context.Background(), "DELETE", "/tokens/"+url.PathEscape(id), nil, &t)
		var apiErr *APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound && apiErr.Field == "id":
			code = c.errorf("no API token with id %s ('jobsuite token list' shows them)", id)
		case err != nil:
			code = c.errorf("token %s: %v", id, err)
		default:
			fmt.Fprintf(c.Stdout, "Token %s (%q, %s) revoked\n", id, t.Name, t.Role)
		}
	}
	return code
}
