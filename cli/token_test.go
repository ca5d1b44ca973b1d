package cli

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
)

// realController starts a controller with a fresh PKI (operator "alice",
// viewer "vic") and points the JOBSUITE_* variables at it as alice.
func realController(t *testing.T) *testPKI {
	t.Helper()
	p := newTestPKI(t)
	if _, _, err := certs.IssueFiles(p.dir, certs.Request{Role: certs.RoleViewer, Name: "vic"}); err != nil {
		t.Fatal(err)
	}
	srv, err := controller.New(controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data"),
		TLS:    certs.Files{CA: p.ca(), Cert: p.ctlCert, Key: p.ctlKey},
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testLog{t}}), NoSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	clearClientEnv(t)
	t.Setenv(envToken, "")
	t.Setenv(envAddr, srv.HTTPAddr())
	t.Setenv(envCACert, p.ca())
	t.Setenv(envClientCert, p.opCert)
	t.Setenv(envClientKey, p.opKey)
	return p
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// asTokenOnly runs the CLI with token and no client certificate.
func asTokenOnly(t *testing.T, token string, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv(envClientCert, "")
	t.Setenv(envClientKey, "")
	t.Setenv(envToken, token)
	defer func() {
		t.Setenv(envToken, "")
	}()
	return runCLI(t, args...)
}

func TestTokenCommands(t *testing.T) {
	p := realController(t)
	opCert, opKey := p.opCert, p.opKey

	code, out, errOut := runCLI(t, "token", "create", "-role", "viewer", "-name", "grafana", "-ttl", "2h")
	if code != 0 || !strings.HasPrefix(out, tokenPrefix) || strings.Count(out, "\n") != 1 || !strings.Contains(errOut, `viewer token "grafana"`) {
		t.Fatalf("token create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	viewer := strings.TrimSpace(out)

	// The token alone reads but may not write.
	if code, out, errOut := asTokenOnly(t, viewer, "list"); code != 0 {
		t.Fatalf("list with a viewer token: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := asTokenOnly(t, viewer, "submit", "--", "true"); code != ExitError || !strings.Contains(errOut, "may only read") {
		t.Errorf("submit with a viewer token: exit %d %q", code, errOut)
	}
	// -token wins over the environment and is checked for its form.
	if code, _, errOut := asTokenOnly(t, viewer, "list", "-token", "hunter2"); code != ExitError || !strings.Contains(errOut, tokenPrefix) {
		t.Errorf("-token hunter2: exit %d %q", code, errOut)
	}
	// Tokens are for operators to see.
	if code, _, errOut := asTokenOnly(t, viewer, "token", "list"); code != ExitError || !strings.Contains(errOut, "may only read") {
		t.Errorf("token list with a viewer token: exit %d %q", code, errOut)
	}
	t.Setenv(envClientCert, opCert)
	t.Setenv(envClientKey, opKey)

	code, out, _ = runCLI(t, "token", "list")
	if code != 0 || !strings.Contains(out, "grafana") || !strings.Contains(out, "viewer") || strings.Contains(out, viewer) {
		t.Fatalf("token list: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "token", "list", "-json")
	var list []api.TokenView
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 || list[0].Token != "" {
		t.Fatalf("token list -json: exit %d, %v\n%s", code, err, out)
	}
	id := list[0].ID

	if code, out, errOut := runCLI(t, "token", "revoke", id); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("token revoke: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := asTokenOnly(t, viewer, "list"); code != ExitError || !strings.Contains(errOut, "not valid") {
		t.Errorf("list with a revoked token: exit %d %q", code, errOut)
	}
	t.Setenv(envClientCert, opCert)
	t.Setenv(envClientKey, opKey)
	if code, _, errOut := runCLI(t, "token", "revoke", id); code != ExitError || !strings.Contains(errOut, "no API token") {
		t.Errorf("second revoke: exit %d %q", code, errOut)
	}

	usage := map[string][]string{
		"no role":          {"token", "create"},
		"agent role":       {"token", "create", "-role", "agent"},
		"ttl over a year":  {"token", "create", "-role", "viewer", "-ttl", "9000h"},
		"secret as the id": {"token", "revoke", viewer},
		"no id":            {"token", "revoke"},
	}
	for name, args := range usage {
		if code, _, errOut := runCLI(t, args...); code != ExitUsage {
			t.Errorf("%s: exit %d, want %d; %q", name, code, ExitUsage, errOut)
		}
	}
}

func TestRevokeCommands(t *testing.T) {
	p := realController(t)
	vicCert, vicKey := certs.CertFile(p.dir, "vic"), certs.KeyFile(p.dir, "vic")
	asVic := func(args ...string) (int, string, string) {
		t.Setenv(envClientCert, vicCert)
		t.Setenv(envClientKey, vicKey)
		defer func() {
			t.Setenv(envClientCert, p.opCert)
			t.Setenv(envClientKey, p.opKey)
		}()
		return runCLI(t, args...)
	}
	if code, _, errOut := asVic("list"); code != 0 {
		t.Fatalf("vic before revocation: exit %d %q", code, errOut)
	}

	code, out, errOut := runCLI(t, "certs", "revoke", "-cert", vicCert, "-reason", "left the team")
	if code != 0 || !strings.Contains(out, `Revoked certificate "vic" (viewer) (serial:`) {
		t.Fatalf("certs revoke -cert: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := asVic("list"); code != ExitError || !strings.Contains(errOut, "revoked") || !strings.Contains(errOut, "left the team") {
		t.Errorf("vic after revocation: exit %d %q", code, errOut)
	}

	// An agent that is not connected: only its name can be revoked.
	code, _, errOut = runCLI(t, "agents", "revoke", "worker-1")
	if code != ExitError || !strings.Contains(errOut, "-all-certs worker-1") {
		t.Errorf("agents revoke of an unconnected agent: exit %d %q", code, errOut)
	}
	code, out, errOut = runCLI(t, "agents", "revoke", "-all-certs", "-reason", "retired", "worker-1")
	if code != 0 || !strings.Contains(out, "every certificate of agent worker-1 (name:agent:worker-1)") {
		t.Errorf("agents revoke -all-certs: exit %d %q %q", code, out, errOut)
	}

	code, out, _ = runCLI(t, "certs", "revoked")
	if code != 0 || !strings.Contains(out, "serial:") || !strings.Contains(out, "name:agent:worker-1") || !strings.Contains(out, "operator alice") || !strings.Contains(out, "retired") {
		t.Fatalf("certs revoked: exit %d\n%s", code, out)
	}
	serialID := out[strings.Index(out, "serial:"):]
	serialID = serialID[:strings.IndexAny(serialID, " \t")]
	if code, out, errOut := runCLI(t, "certs", "unrevoke", serialID); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("certs unrevoke: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := asVic("list"); code != 0 {
		t.Errorf("vic after unrevoke: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "certs", "unrevoke", serialID); code != ExitError || !strings.Contains(errOut, "no revocation") {
		t.Errorf("second unrevoke: exit %d %q", code, errOut)
	}
	// By serial, with openssl's colon-free upper-case form.
	leaf, err := loadCertFile(vicCert)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "certs", "revoke", "-serial", strings.ToUpper(leaf.SerialNumber.Text(16))); code != 0 {
		t.Fatalf("certs revoke -serial: exit %d %q", code, errOut)
	}
	if code, _, _ := asVic("list"); code != ExitError {
		t.Errorf("vic after revocation by serial: exit %d", code)
	}

	usage := map[string][]string{
		"nothing named":       {"certs", "revoke"},
		"cert and serial":     {"certs", "revoke", "-cert", vicCert, "-serial", "1f"},
		"serial and name":     {"certs", "revoke", "-serial", "1f", "-role", "viewer", "-name", "x"},
		"bad agent name":      {"agents", "revoke", "a/b"},
		"two agents":          {"agents", "revoke", "a", "b"},
		"not a revocation id": {"certs", "unrevoke", "1f"},
	}
	for name, args := range usage {
		if code, _, errOut := runCLI(t, args...); code != ExitUsage {
			t.Errorf("%s: exit %d, want %d; %q", name, code, ExitUsage, errOut)
		}
	}
	if code, _, errOut := runCLI(t, "certs", "revoke", "-cert", p.opKey); code != ExitError || !strings.Contains(errOut, "no PEM certificate") {
		t.Errorf("certs revoke -cert KEY: exit %d %q", code, errOut)
	}
}

// TestNewClientWithToken: a token needs the CA but no certificate.
func TestNewClientWithToken(t *testing.T) {
	p := newTestPKI(t)
	clearClientEnv(t)
	t.Setenv(envToken, "")
	addr := net.JoinHostPort("127.0.0.1", "1")
	tests := map[string]struct {
		flags clientFlags
		env   string
		err   string
	}{
		"token alone":            {flags: clientFlags{addr: addr, caCert: p.ca(), token: tokenPrefix + "x"}},
		"token from env":         {flags: clientFlags{addr: addr, caCert: p.ca()}, env: tokenPrefix + "x"},
		"token and cert":         {flags: clientFlags{addr: addr, caCert: p.ca(), clientCert: p.opCert, clientKey: p.opKey, token: tokenPrefix + "x"}},
		"token without CA":       {flags: clientFlags{addr: addr, token: tokenPrefix + "x"}, err: "JOBSUITE_CACERT"},
		"not a token":            {flags: clientFlags{addr: addr, caCert: p.ca(), token: "secret"}, err: tokenPrefix},
		"neither cert nor token": {flags: clientFlags{addr: addr, caCert: p.ca()}, err: "JOBSUITE_TOKEN"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv(envToken, tt.env)
			c, err := newClient(Meta{}, &tt.flags)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			if c.token == "" {
				t.Error("the client does not send the token")
			}
		})
	}
}
