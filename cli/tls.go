package cli

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	mcli "github.com/mitchellh/cli"

	"jobsuite/certs"
)

// TLSCommand is the parent of the certificate commands: "jobsuite tls".
type TLSCommand struct{ Meta }

func (c *TLSCommand) Synopsis() string { return "Create the CA and certificates for mutual TLS" }
func (c *TLSCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite tls <subcommand> [options]

  Creates the private PKI jobsuite uses for mutual TLS: one CA, and a
  certificate per controller, agent and operator. Every certificate carries
  a role (controller, agent, operator, viewer) that decides what its holder
  may do.

Example:

  Set up a PKI directory with a controller, an agent and an operator:

      $ jobsuite tls ca create -dir ./pki
      $ jobsuite tls cert create -dir ./pki -role controller -name ctl1 -dns ctl1.example.com
      $ jobsuite tls cert create -dir ./pki -role agent -name worker-1
      $ jobsuite tls cert create -dir ./pki -role operator -name alice
`)
}
func (c *TLSCommand) Run(args []string) int { return mcli.RunResultHelp }

// TLSCACommand is the parent of the CA commands: "jobsuite tls ca".
type TLSCACommand struct{ Meta }

func (c *TLSCACommand) Synopsis() string { return "Manage the jobsuite certificate authority" }
func (c *TLSCACommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite tls ca <subcommand> [options]

  Manages the certificate authority that signs every jobsuite certificate.

Example:

      $ jobsuite tls ca create -dir ./pki
`)
}
func (c *TLSCACommand) Run(args []string) int { return mcli.RunResultHelp }

// TLSCertCommand is the parent of the certificate commands: "jobsuite tls cert".
type TLSCertCommand struct{ Meta }

func (c *TLSCertCommand) Synopsis() string { return "Issue certificates signed by the jobsuite CA" }
func (c *TLSCertCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite tls cert <subcommand> [options]

  Issues certificates, each carrying a role, signed by the jobsuite CA.

Example:

      $ jobsuite tls cert create -dir ./pki -role agent -name worker-1
`)
}
func (c *TLSCertCommand) Run(args []string) int { return mcli.RunResultHelp }

// TLSCACreateCommand creates a CA: "jobsuite tls ca create".
type TLSCACreateCommand struct{ Meta }

func (c *TLSCACreateCommand) Synopsis() string { return "Create a new certificate authority" }
func (c *TLSCACreateCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite tls ca create [options]

  Creates a certificate authority valid for 10 years: the certificate
  <dir>/ca.pem, which every controller, agent and CLI needs, and the key
  <dir>/ca-key.pem (mode 0600), which only 'jobsuite tls cert create'
  needs. Keep the key secret: it can issue any certificate. The directory
  is created with mode 0700 if it does not exist. Existing files are never
  overwritten.

Options:

  -dir=<path>
    The PKI directory to write to. Default: the current directory.

Example:

  $ jobsuite tls ca create -dir ./pki
`)
}

func (c *TLSCACreateCommand) Run(args []string) int {
	fs := c.flagSet("tls ca create")
	dir := fs.String("dir", ".", "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return tlsUsageError(c.Meta, "tls ca create", "unexpected argument %q", fs.Arg(0))
	}
	if err := certs.CreateCA(*dir); err != nil {
		return c.errorf("%v", err)
	}
	certPath, keyPath := certs.CAFile(*dir), certs.KeyFile(*dir, "ca")
	fmt.Fprintf(c.Stdout, "Wrote CA certificate: %s\n", certPath)
	fmt.Fprintf(c.Stdout, "Wrote CA key:         %s (keep it secret: it can issue any certificate)\n", keyPath)
	if ca, err := certs.LoadCA(*dir); err == nil {
		fmt.Fprintf(c.Stdout, "CA fingerprint (SHA-256): %s\n", certs.Fingerprint(ca.Cert))
		fmt.Fprintf(c.Stdout, "Valid until: %s\n", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(c.Stdout, "\nNext, issue the controller's certificate:\n\n  jobsuite tls cert create -dir %s -role controller -name <host>\n", *dir)
	return ExitOK
}

// TLSCertCreateCommand issues a certificate: "jobsuite tls cert create".
type TLSCertCreateCommand struct{ Meta }

func (c *TLSCertCreateCommand) Synopsis() string { return "Issue a certificate with a role" }
func (c *TLSCertCreateCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite tls cert create -role <role> -name <name> [options]

  Issues a certificate and a new ECDSA P-256 key, signed by the CA in the
  PKI directory, and writes them to <dir>/<name>.pem and
  <dir>/<name>-key.pem (mode 0600). Existing files are never overwritten.

  The role decides what the holder may do:

    controller  serves agents and the API. Valid as a server for the
                -dns and -ip names, "localhost", 127.0.0.1, ::1 and the
                name itself when it is a hostname or an IP address.
    agent       a worker that pulls and runs jobs.
    operator    submits, cancels and watches jobs.
    viewer      watches jobs, logs and agents, read-only.

Options:

  -dir=<path>
    The PKI directory holding ca.pem and ca-key.pem, and where the
    certificate is written. Default: the current directory.

  -role=<role>
    Required. One of controller, agent, operator, viewer.

  -name=<name>
    Required. The certificate's name (its CommonName) and file name:
    1 to 64 letters, digits, '.', '_' or '-'.

  -dns=<name>[,<name>...]
    DNS names the certificate is valid for. May be repeated.

  -ip=<address>[,<address>...]
    IP addresses the certificate is valid for. May be repeated.

  -ttl=<duration>
    How long the certificate is valid, as a Go duration such as 720h.
    Default: 8760h (1 year). Maximum: 19800h (825 days).

Example:

  $ jobsuite tls cert create -dir ./pki -role controller -name ctl1 \
      -dns ctl1.example.com,jobs.example.com -ip 10.0.0.5
  $ jobsuite tls cert create -dir ./pki -role agent -name worker-1 -ttl 2160h
`)
}

func (c *TLSCertCreateCommand) Run(args []string) int {
	const name = "tls cert create"
	var dns, ips tlsListFlag
	fs := c.flagSet(name)
	dir := fs.String("dir", ".", "")
	roleFlag := fs.String("role", "", "")
	certName := fs.String("name", "", "")
	ttl := fs.Duration("ttl", 0, "")
	fs.Var(&dns, "dns", "")
	fs.Var(&ips, "ip", "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return tlsUsageError(c.Meta, name, "unexpected argument %q", fs.Arg(0))
	}
	if *roleFlag == "" {
		return tlsUsageError(c.Meta, name, "-role is required: one of controller, agent, operator, viewer")
	}
	role, err := certs.ParseRole(*roleFlag)
	if err != nil {
		return tlsUsageError(c.Meta, name, "-role: %v", err)
	}
	if *certName == "" {
		return tlsUsageError(c.Meta, name, "-name is required")
	}
	req := certs.Request{Role: role, Name: *certName, DNS: dns, TTL: *ttl}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return tlsUsageError(c.Meta, name, "-ip: %q is not an IP address", s)
		}
		req.IPs = append(req.IPs, ip)
	}

	certPath, keyPath, err := certs.IssueFiles(*dir, req)
	switch {
	case errors.Is(err, certs.ErrInvalidName), errors.Is(err, certs.ErrInvalidRole), errors.Is(err, certs.ErrInvalidTTL):
		return tlsUsageError(c.Meta, name, "%v", err)
	case err != nil:
		return c.errorf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "Wrote certificate: %s\n", certPath)
	fmt.Fprintf(c.Stdout, "Wrote key:         %s (keep it secret)\n", keyPath)
	if pair, err := certs.LoadKeyPair(certPath, keyPath); err == nil {
		leaf := pair.Leaf
		fmt.Fprintf(c.Stdout, "Role %s, name %q, valid until %s\n", role, leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
		if sans := tlsSANs(leaf.DNSNames, leaf.IPAddresses); sans != "" {
			fmt.Fprintf(c.Stdout, "Valid for: %s\n", sans)
		}
	}
	return ExitOK
}

// tlsListFlag is a repeatable flag whose values may also be
// comma-separated: -dns a,b -dns c gives [a b c].
type tlsListFlag []string

func (l *tlsListFlag) String() string { return strings.Join(*l, ",") }
func (l *tlsListFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// tlsUsageError reports a wrong use of the command cmd and returns
// ExitUsage.
func tlsUsageError(m Meta, cmd, format string, args ...any) int {
	fmt.Fprintf(m.Stderr, "error: "+format+"\n", args...)
	fmt.Fprintf(m.Stderr, "Run 'jobsuite %s -h' for usage.\n", cmd)
	return ExitUsage
}

func tlsSANs(dns []string, ips []net.IP) string {
	s := append([]string(nil), dns...)
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	return strings.Join(s, ", ")
}

// tlsCommands returns the "jobsuite tls" command tree, to be merged into
// commands().
func tlsCommands(m Meta) map[string]mcli.CommandFactory {
	return map[string]mcli.CommandFactory{
		"tls":             func() (mcli.Command, error) { return &TLSCommand{Meta: m}, nil },
		"tls ca":          func() (mcli.Command, error) { return &TLSCACommand{Meta: m}, nil },
		"tls ca create":   func() (mcli.Command, error) { return &TLSCACreateCommand{Meta: m}, nil },
		"tls cert":        func() (mcli.Command, error) { return &TLSCertCommand{Meta: m}, nil },
		"tls cert create": func() (mcli.Command, error) { return &TLSCertCreateCommand{Meta: m}, nil },
	}
}
