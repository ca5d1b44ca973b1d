package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"jobsuite/api"
	"jobsuite/certs"
)

// loadCertFile reads the first certificate of a PEM file.
func loadCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate; give the certificate file (NAME.pem), not its key", path)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", path, err)
			}
			return cert, nil
		}
	}
}

// printRevoked describes a revocation's effect.
func printRevoked(w io.Writer, what string, res api.RevokeResult) {
	fmt.Fprintf(w, "Revoked %s (%s)\n", what, res.Revocation.ID)
	for _, a := range res.SessionsClosed {
		fmt.Fprintf(w, "Closed the session of agent %s\n", a)
	}
	if n := len(res.JobsLost); n > 0 {
		ids := make([]string, n)
		for i, id := range res.JobsLost {
			ids[i] = fmt.Sprint(id)
		}
		fmt.Fprintf(w, "Lost the running attempts of %d jobs (retried if they have retries left): %s\n", n, strings.Join(ids, ", "))
	}
}

// AgentsRevokeCommand revokes an agent's certificate:
// "jobsuite agents revoke NAME".
type AgentsRevokeCommand struct{ Meta }

func (c *AgentsRevokeCommand) Synopsis() string {
	return "Revoke an agent's certificate and cut it off"
}
func (c *AgentsRevokeCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agents revoke [options] NAME

  Revokes the certificate of the connected agent NAME
  (POST /agents/NAME/revoke): the controller denies its serial number,
  closes its session at once and refuses it when it reconnects. The jobs
  it was running count as lost: they are retried on other agents if they
  have retries left, or fail. The revocation is kept across controller
  restarts; 'jobsuite certs revoked' lists them and 'jobsuite certs
  unrevoke ID' undoes one.

  A revoked agent needs a new certificate ('jobsuite tls cert create').
  To refuse every certificate with the name, including new ones, use
  -all-certs; that also works when the agent is not connected.

Options:

  -all-certs
    Revoke the name: every agent certificate named NAME is refused.

  -reason=<text>
    Why, for the record (shown in 'jobsuite certs revoked' and the
    audit log).

  -json
    Print the controller's answer as JSON.
` + clientOptionsHelp + `

Example:

  $ jobsuite agents revoke -reason "host decommissioned" worker-1
  Revoked the certificate of agent worker-1 (serial:3f9c0e1d2a4b5c6d7e8f90a1b2c3d4e5)
  Closed the session of agent worker-1
  Lost the running attempts of 1 jobs (retried if they have retries left): 12
`)
}

func (c *AgentsRevokeCommand) Run(args []string) int {
	const name = "agents revoke"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	allCerts := fs.Bool("all-certs", false, "")
	reason := fs.String("reason", "", "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	agent, code, ok := agentArg(c.Meta, fs, name)
	if !ok {
		return code
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	err = client.do(context.Background(), "POST", "/agents/"+agent+"/revoke", api.RevokeAgentRequest{Reason: *reason, AllCerts: *allCerts}, &raw)
	var apiErr *APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound && apiErr.Field == "name":
		fmt.Fprintf(c.Stderr, "error: no connected agent named %s, so its certificate is unknown\n", agent)
		fmt.Fprintf(c.Stderr, "Revoke the name with 'jobsuite agents revoke -all-certs %s', or the certificate file with 'jobsuite certs revoke -cert FILE'.\n", agent)
		return ExitError
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		return c.errorf("%v; does this controller support revocation (is it older than this CLI)?", err)
	case err != nil:
		return c.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var res api.RevokeResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return c.errorf("the controller's answer is not a revocation: %v", err)
	}
	what := "the certificate of agent " + agent
	if *allCerts {
		what = "every certificate of agent " + agent
	}
	printRevoked(c.Stdout, what, res)
	return ExitOK
}

// CertsRevokeCommand revokes any certificate: "jobsuite certs revoke".
type CertsRevokeCommand struct{ Meta }

func (c *CertsRevokeCommand) Synopsis() string { return "Revoke a certificate of any role" }
func (c *CertsRevokeCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite certs revoke [options] (-cert FILE | -serial HEX | -role ROLE -name NAME)

  Revokes a certificate (POST /certs/revoke): API requests with it get
  401, an agent with it is cut off and refused. Name it by its file, by
  its serial number, or revoke every certificate of a role and name
  (operator, viewer or agent). Lost keys of operators and viewers are
  revoked this way; 'jobsuite agents revoke' is the short way for a
  connected agent.

Options:

  -cert=<path>
    The certificate's PEM file; its serial, role and name are read from
    it (the key is not needed).

  -serial=<hex>
    The serial number, as 'openssl x509 -noout -serial -in FILE' prints
    it (colons allowed).

  -role=<role>, -name=<name>
    Revoke every certificate of this role with this name, including ones
    issued later.

  -reason=<text>
    Why, for the record.

  -json
    Print the controller's answer as JSON.
` + clientOptionsHelp + `

Example:

  $ jobsuite certs revoke -cert pki/bob.pem -reason "laptop stolen"
  Revoked certificate "bob" (operator) (serial:5a1d…)
`)
}

func (c *CertsRevokeCommand) Run(args []string) int {
	const name = "certs revoke"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	certFile := fs.String("cert", "", "")
	serial := fs.String("serial", "", "")
	role := fs.String("role", "", "")
	certName := fs.String("name", "", "")
	reason := fs.String("reason", "", "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(c.Meta, name, "unexpected argument %q", fs.Arg(0))
	}
	req := api.RevokeCertRequest{Reason: *reason}
	var what string
	switch {
	case *certFile != "" && (*serial != "" || *role != "" || *certName != ""):
		return usageError(c.Meta, name, "give -cert alone, not with -serial, -role or -name")
	case *certFile != "":
		pair, err := loadCertFile(*certFile)
		if err != nil {
			return c.errorf("%v", err)
		}
		req.Serial, req.Name = pair.SerialNumber.Text(16), pair.Subject.CommonName
		req.NotAfter = pair.NotAfter.UTC()
		r, err := certs.RoleOf(pair)
		if err == nil {
			req.Role = string(r)
		}
		what = fmt.Sprintf("certificate %q (%s)", pair.Subject.CommonName, r)
	case *serial != "" && (*role != "" || *certName != ""):
		return usageError(c.Meta, name, "give -serial, or -role and -name, not both")
	case *serial != "":
		req.Serial = *serial
		what = "certificate " + *serial
	case *role != "" && *certName != "":
		req.Role, req.Name = *role, *certName
		what = fmt.Sprintf("every %s certificate named %q", *role, *certName)
	default:
		return usageError(c.Meta, name, "name the certificate: -cert FILE, -serial HEX, or -role ROLE with -name NAME")
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	if err := client.do(context.Background(), "POST", "/certs/revoke", req, &raw); err != nil {
		return c.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var res api.RevokeResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return c.errorf("the controller's answer is not a revocation: %v", err)
	}
	printRevoked(c.Stdout, what, res)
	return ExitOK
}

// CertsRevokedCommand lists revocations: "jobsuite certs revoked".
type CertsRevokedCommand struct{ Meta }

func (c *CertsRevokedCommand) Synopsis() string { return "List the revoked certificates" }
func (c *CertsRevokedCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite certs revoked [options]

  Lists the revocations (GET /revocations), oldest first: what is
  revoked (serial:HEX for one certificate, name:ROLE:NAME for every
  certificate of a role and name), by whom, when and why.

Options:

  -json
    Print the revocations as JSON, as the controller's API returns them.
` + clientOptionsHelp + `

Example:

  $ jobsuite certs revoked
  ID                                       NAME      BY                                   WHEN      REASON
  serial:3f9c0e1d2a4b5c6d7e8f90a1b2c3d4e5  worker-1  operator alice (certificate 3fa2…)   2d ago    host decommissioned
  name:operator:bob                        bob       operator alice (certificate 3fa2…)   5h ago    left the team
`)
}

func (c *CertsRevokedCommand) Run(args []string) int {
	var revs []api.RevocationView
	if code, done := getList(c.Meta, "certs revoked", c.Help(), "/revocations", "revocations", args, &revs); done {
		return code
	}
	if len(revs) == 0 {
		fmt.Fprintln(c.Stdout, "No revoked certificates.")
		return ExitOK
	}
	now := timeNow()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tBY\tWHEN\tREASON")
	for _, r := range revs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, cell(r.Name, 64), r.By, ago(r.At, now), cell(r.Reason, 60))
	}
	tw.Flush()
	return ExitOK
}

// CertsUnrevokeCommand removes revocations: "jobsuite certs unrevoke ID...".
type CertsUnrevokeCommand struct{ Meta }

func (c *CertsUnrevokeCommand) Synopsis() string { return "Accept revoked certificates again" }
func (c *CertsUnrevokeCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite certs unrevoke [options] ID...

  Removes each revocation ID (DELETE /revocations/ID) as 'jobsuite certs
  revoked' lists it: the certificates it covered are accepted again.
  Every ID is tried; the exit status is 1 if any of them failed.
` + clientOptionsHelp + `

Example:

  $ jobsuite certs unrevoke name:agent:worker-1
  Revocation name:agent:worker-1 removed
`)
}

func (c *CertsUnrevokeCommand) Run(args []string) int {
	const name = "certs unrevoke"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(c.Meta, name, "want at least one revocation id ('jobsuite certs revoked' lists them)")
	}
	for _, id := range fs.Args() {
		if !strings.HasPrefix(id, "serial:") && !strings.HasPrefix(id, "name:") {
			return usageError(c.Meta, name, "revocation id %q: ids are serial:HEX or name:ROLE:NAME ('jobsuite certs revoked' lists them)", id)
		}
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	code := ExitOK
	for _, id := range fs.Args() {
		err := client.do(context.Background(), "DELETE", "/revocations/"+url.PathEscape(id), nil, nil)
		var apiErr *APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound && apiErr.Field == "id":
			code = c.errorf("no revocation %s ('jobsuite certs revoked' lists them)", id)
		case err != nil:
			code = c.errorf("revocation %s: %v", id, err)
		default:
			fmt.Fprintf(c.Stdout, "Revocation %s removed\n", id)
		}
	}
	return code
}
