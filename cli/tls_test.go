package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	mcli "github.com/mitchellh/cli"

	"jobsuite/certs"
)

// tlsTestMeta returns a Meta writing to the returned buffers.
func tlsTestMeta() (Meta, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	ui := &mcli.BasicUi{Reader: strings.NewReader(""), Writer: &out, ErrorWriter: &errb}
	return Meta{UI: ui, Stdout: &out, Stderr: &errb}, &out, &errb
}

// tlsRunCLI runs args through mitchellh/cli with the tls commands merged
// in, as commands() will once the lead wires them.
func tlsRunCLI(args ...string) (code int, stdout, stderr string) {
	m, out, errb := tlsTestMeta()
	cmds := commands(m)
	for k, v := range tlsCommands(m) {
		cmds[k] = v
	}
	c := &mcli.CLI{Name: "jobsuite", Args: args, Commands: cmds, HelpWriter: out, ErrorWriter: errb}
	code, err := c.Run()
	if err != nil {
		errb.WriteString(err.Error())
		code = ExitError
	}
	return code, out.String(), errb.String()
}

func TestTLSCACreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	m, out, errb := tlsTestMeta()
	if code := (&TLSCACreateCommand{Meta: m}).Run([]string{"-dir", dir}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	for _, p := range []string{certs.CAFile(dir), certs.KeyFile(dir, "ca")} {
		if !strings.Contains(out.String(), p) {
			t.Errorf("output %q does not name %s", out, p)
		}
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if _, err := certs.LoadCA(dir); err != nil {
		t.Fatal(err)
	}

	m, _, errb = tlsTestMeta()
	if code := (&TLSCACreateCommand{Meta: m}).Run([]string{"-dir", dir}); code != ExitError {
		t.Errorf("second create: exit %d, want %d", code, ExitError)
	}
	if !strings.Contains(errb.String(), "already exists") || !strings.Contains(errb.String(), certs.CAFile(dir)) {
		t.Errorf("second create: stderr %q, want it to name the existing file", errb)
	}
}

func TestTLSCACreateDefaultDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	m, _, errb := tlsTestMeta()
	if code := (&TLSCACreateCommand{Meta: m}).Run(nil); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err != nil {
		t.Error(err)
	}
}

func TestTLSCertCreate(t *testing.T) {
	dir := t.TempDir()
	m, _, _ := tlsTestMeta()
	if code := (&TLSCACreateCommand{Meta: m}).Run([]string{"-dir", dir}); code != ExitOK {
		t.Fatal("ca create failed")
	}
	tests := map[string]struct {
		args    []string
		role    certs.Role
		wantDNS []string
		wantIPs []string
	}{
		"controller with SANs": {
			args:    []string{"-role", "controller", "-name", "ctl1", "-dns", "a.example,b.example", "-dns", "c.example", "-ip", "10.0.0.5,2001:db8::1", "-ip", "192.0.2.1"},
			role:    certs.RoleController,
			wantDNS: []string{"a.example", "b.example", "c.example", "ctl1", "localhost"},
			wantIPs: []string{"10.0.0.5", "2001:db8::1", "192.0.2.1", "127.0.0.1", "::1"},
		},
		"agent":    {args: []string{"-role", "agent", "-name", "worker-1", "-ttl", "2h"}, role: certs.RoleAgent},
		"operator": {args: []string{"-role", "operator", "-name", "alice"}, role: certs.RoleOperator},
		"viewer":   {args: []string{"-name", "bob", "-role", "VIEWER"}, role: certs.RoleViewer},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, out, errb := tlsTestMeta()
			code := (&TLSCertCreateCommand{Meta: m}).Run(append([]string{"-dir", dir}, tt.args...))
			if code != ExitOK {
				t.Fatalf("exit %d, stderr %q", code, errb)
			}
			certName := tt.args[slices.Index(tt.args, "-name")+1]
			certPath, keyPath := certs.CertFile(dir, certName), certs.KeyFile(dir, certName)
			for _, p := range []string{certPath, keyPath} {
				if !strings.Contains(out.String(), p) {
					t.Errorf("output %q does not name %s", out, p)
				}
			}
			fi, err := os.Stat(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key mode %o, want 600", fi.Mode().Perm())
			}
			pair, err := certs.LoadKeyPair(certPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			if role, err := certs.RoleOf(pair.Leaf); err != nil || role != tt.role {
				t.Errorf("role %q, %v; want %q", role, err, tt.role)
			}
			if tt.wantDNS != nil && !slices.Equal(pair.Leaf.DNSNames, tt.wantDNS) {
				t.Errorf("DNS SANs %q, want %q", pair.Leaf.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range pair.Leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if tt.wantIPs != nil && !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IP SANs %q, want %q", ips, tt.wantIPs)
			}
		})
	}
}

func TestTLSCertCreateErrors(t *testing.T) {
	dir := t.TempDir()
	m, _, _ := tlsTestMeta()
	if code := (&TLSCACreateCommand{Meta: m}).Run([]string{"-dir", dir}); code != ExitOK {
		t.Fatal("ca create failed")
	}
	if code := (&TLSCertCreateCommand{Meta: m}).Run([]string{"-dir", dir, "-role", "agent", "-name", "taken"}); code != ExitOK {
		t.Fatal("cert create failed")
	}
	noCA := t.TempDir()
	tests := map[string]struct {
		args []string
		code int
		want string // in stderr
	}{
		"bad role":         {[]string{"-dir", dir, "-role", "admin", "-name", "x"}, ExitUsage, "valid roles are controller, agent, operator, viewer"},
		"missing role":     {[]string{"-dir", dir, "-name", "x"}, ExitUsage, "-role is required"},
		"missing name":     {[]string{"-dir", dir, "-role", "agent"}, ExitUsage, "-name is required"},
		"bad name":         {[]string{"-dir", dir, "-role", "agent", "-name", "a/b"}, ExitUsage, "invalid name"},
		"bad ip":           {[]string{"-dir", dir, "-role", "agent", "-name", "x", "-ip", "1.2.3"}, ExitUsage, `"1.2.3" is not an IP address`},
		"bad dns":          {[]string{"-dir", dir, "-role", "controller", "-name", "x", "-dns", "a b"}, ExitUsage, "not a valid hostname"},
		"bad ttl":          {[]string{"-dir", dir, "-role", "agent", "-name", "x", "-ttl", "forever"}, ExitUsage, "invalid value"},
		"ttl too long":     {[]string{"-dir", dir, "-role", "agent", "-name", "x", "-ttl", "20000h"}, ExitUsage, "invalid ttl"},
		"unknown flag":     {[]string{"-dir", dir, "-colour"}, ExitUsage, "flag provided but not defined"},
		"extra argument":   {[]string{"-dir", dir, "-role", "agent", "-name", "x", "extra"}, ExitUsage, `unexpected argument "extra"`},
		"existing name":    {[]string{"-dir", dir, "-role", "agent", "-name", "taken"}, ExitError, "already exists"},
		"no CA":            {[]string{"-dir", noCA, "-role", "agent", "-name", "x"}, ExitError, "tls ca create -dir " + noCA},
		"reserved CA name": {[]string{"-dir", dir, "-role", "agent", "-name", "ca"}, ExitUsage, "reserved"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, _, errb := tlsTestMeta()
			code := (&TLSCertCreateCommand{Meta: m}).Run(tt.args)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errb)
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr %q does not contain %q", errb, tt.want)
			}
		})
	}
	if _, err := os.Stat(certs.CertFile(dir, "x")); err == nil {
		t.Error("a failed command wrote x.pem")
	}
}

func TestTLSHelp(t *testing.T) {
	tests := map[string]mcli.Command{
		"ca create":   &TLSCACreateCommand{},
		"cert create": &TLSCertCreateCommand{},
	}
	for name, cmd := range tests {
		t.Run(name, func(t *testing.T) {
			m, out, _ := tlsTestMeta()
			switch c := cmd.(type) {
			case *TLSCACreateCommand:
				c.Meta = m
			case *TLSCertCreateCommand:
				c.Meta = m
			}
			if code := cmd.Run([]string{"-h"}); code != ExitOK {
				t.Fatalf("-h exit %d, want 0", code)
			}
			for _, want := range []string{"Usage: jobsuite tls " + name, "Options:", "-dir", "Example:"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("help does not contain %q:\n%s", want, out)
				}
			}
			if cmd.Synopsis() == "" {
				t.Error("empty synopsis")
			}
		})
	}

	parents := map[string]mcli.Command{
		"tls":      &TLSCommand{},
		"tls ca":   &TLSCACommand{},
		"tls cert": &TLSCertCommand{},
	}
	for name, cmd := range parents {
		t.Run(name, func(t *testing.T) {
			if code := cmd.Run(nil); code != mcli.RunResultHelp {
				t.Errorf("Run = %d, want RunResultHelp", code)
			}
			if !strings.Contains(cmd.Help(), "Usage: jobsuite "+name) || cmd.Synopsis() == "" {
				t.Errorf("help %q, synopsis %q", cmd.Help(), cmd.Synopsis())
			}
		})
	}
}

// TestTLSThroughCLI runs the commands the way main will, once tlsCommands
// is merged into commands().
func TestTLSThroughCLI(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := tlsRunCLI("tls", "ca", "create", "-dir", dir); code != ExitOK {
		t.Fatalf("tls ca create: exit %d: %s", code, stderr)
	}
	tests := map[string]struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		"tls lists subcommands":       {[]string{"tls"}, 1, "ca create"},
		"tls cert lists subcommands":  {[]string{"tls", "cert"}, 1, "Issue a certificate with a role"},
		"cert create -h":              {[]string{"tls", "cert", "create", "-h"}, 0, "-role=<role>"},
		"ca create":                   {[]string{"tls", "ca", "create", "-dir", filepath.Join(dir, "other")}, 0, "Wrote CA certificate"},
		"cert create":                 {[]string{"tls", "cert", "create", "-dir", dir, "-role", "operator", "-name", "op"}, 0, "Wrote certificate: " + certs.CertFile(dir, "op")},
		"cert create with a bad role": {[]string{"tls", "cert", "create", "-dir", dir, "-role", "root", "-name", "r"}, 2, "invalid role"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := tlsRunCLI(tt.args...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("exit %d (want %d), output does not contain %q:\n%s%s", code, tt.code, tt.want, stdout, stderr)
			}
		})
	}
}
