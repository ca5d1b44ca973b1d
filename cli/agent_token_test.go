package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	mcli "github.com/mitchellh/cli"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
)

// signingController starts a controller that holds the CA key and
// points the JOBSUITE_* variables at it as operator alice.
func signingController(t *testing.T) *testPKI {
	t.Helper()
	p := newTestPKI(t)
	srv, err := controller.New(controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data"),
		TLS:    certs.Files{CA: p.ca(), Cert: p.ctlCert, Key: p.ctlKey},
		CAKey:  certs.KeyFile(p.dir, "ca"),
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
	p.agentAddr = srv.AgentAddr()
	clearClientEnv(t)
	t.Setenv("JOBSUITE_TOKEN", "")
	t.Setenv(envAddr, srv.HTTPAddr())
	t.Setenv(envCACert, p.ca())
	t.Setenv(envClientCert, p.opCert)
	t.Setenv(envClientKey, p.opKey)
	return p
}

// runAgentUntil runs 'jobsuite agent args...' until until reports true,
// then stops it and returns its exit code and stderr.
func runAgentUntil(t *testing.T, args []string, until func() bool) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := Meta{UI: &mcli.BasicUi{Writer: &out, ErrorWriter: &errOut}, Stdout: &syncWriter{w: &out}, Stderr: &syncWriter{w: &errOut}, Ctx: ctx}
	code := make(chan int, 1)
	go func() { code <- (&AgentCommand{Meta: m}).Run(args) }()
	waitUntil(t, "the agent", func() bool {
		select {
		case c := <-code:
			code <- c
			return true // it ended early: report below
		default:
		}
		return until()
	})
	cancel()
	c := <-code
	return c, errOut.String()
}

func TestAgentJoinCommand(t *testing.T) {
	p := signingController(t)
	code, out, errOut := runCLI(t, "agent", "token", "create", "-uses", "2", "-labels", "gpu=yes", "-name-prefix", "cli", "-ttl", "10m")
	if code != 0 {
		t.Fatalf("agent token create: exit %d, %s %s", code, out, errOut)
	}
	t.Logf("agent token create:\n%s", out)
	var join []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "jobsuite" && f[1] == "agent" && f[2] == "-join" {
			join = f[2:]
		}
	}
	ca, err := os.ReadFile(p.ca())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := certs.ParseCertificatesPEM(ca)
	if len(join) != 8 || join[2] != "-ca-pin" || join[3] != certs.Fingerprint(leaf[0]) || join[4] != "-controller" || join[6] != "-api" ||
		!strings.HasPrefix(join[1], joinTokenPrefix) || !strings.Contains(out, "shown only now") {
		t.Fatalf("no usable join command in:\n%s", out)
	}

	dir := filepath.Join(t.TempDir(), "agent")
	args := append(join, "-state-dir", dir, "-slots", "1", "-log-level", "warn")
	connected := func() bool {
		code, out, _ := runCLI(t, "agents", "-json")
		return code == 0 && strings.Contains(out, `"name": "cli-`)
	}
	code, errOut = runAgentUntil(t, args, connected)
	if code != 0 || !strings.Contains(errOut, "Enrolled as agent cli-") {
		t.Fatalf("agent -join: exit %d, stderr %s", code, errOut)
	}
	for _, f := range []string{"ca.pem", "agent.pem", "agent-key.pem", "enrollment.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	// The second start finds the files and does not take another use.
	code, errOut = runAgentUntil(t, args, connected)
	if code != 0 || strings.Contains(errOut, "Enrolled as") {
		t.Fatalf("second start: exit %d, stderr %s", code, errOut)
	}
	code, out, _ = runCLI(t, "agent", "token", "list", "-json")
	var toks []api.JoinTokenView
	if err := json.Unmarshal([]byte(out), &toks); code != 0 || err != nil || len(toks) != 1 || toks[0].UsesLeft != 1 || len(toks[0].Enrolled) != 1 {
		t.Fatalf("agent token list: exit %d, %v: %s", code, err, out)
	}
	if code, out, _ := runCLI(t, "agent", "token", "list"); code != 0 || !strings.Contains(out, "1/2") || !strings.Contains(out, "gpu=yes") {
		t.Fatalf("agent token list: exit %d:\n%s", code, out)
	}
	if code, out, errOut := runCLI(t, "agent", "token", "revoke", toks[0].ID); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("agent token revoke: exit %d, %s %s", code, out, errOut)
	}
	// A used token on a fresh worker: refused, nothing written.
	fresh := filepath.Join(t.TempDir(), "fresh")
	code, _, errOut = runCLI(t, append(append([]string{"agent"}, join...), "-state-dir", fresh)...)
	if code == 0 || !strings.Contains(errOut, "not valid") {
		t.Fatalf("revoked token: exit %d, stderr %s", code, errOut)
	}
	if entries, _ := os.ReadDir(fresh); len(entries) != 0 {
		t.Fatalf("a refused enrollment left files: %v", entries)
	}
}

func TestAgentJoinUsage(t *testing.T) {
	clearClientEnv(t)
	tests := map[string]struct {
		args []string
		msg  string
	}{
		"no pin":           {[]string{"agent", "-join", "jsj_x", "-controller", "127.0.0.1:1"}, "-join needs -ca-pin"},
		"bad pin":          {[]string{"agent", "-join", "jsj_x", "-ca-pin", "zz", "-controller", "127.0.0.1:1"}, "64 hex digits"},
		"no controller":    {[]string{"agent", "-join", "jsj_x", "-ca-pin", strings.Repeat("ab", 32)}, "-join needs -controller"},
		"bad uses":         {[]string{"agent", "token", "create", "-uses", "0"}, "-uses must be between 1 and 1000"},
		"bad ttl":          {[]string{"agent", "token", "create", "-ttl", "200h"}, "-ttl must be between"},
		"bad labels":       {[]string{"agent", "token", "create", "-labels", "x"}, "-labels"},
		"revoke bad id":    {[]string{"agent", "token", "revoke", "XYZ"}, "not a join token id"},
		"revoke no id":     {[]string{"agent", "token", "revoke"}, "want one join token id"},
		"create extra arg": {[]string{"agent", "token", "create", "x"}, "unexpected argument"},
		"negative procs":   {[]string{"agent", "-procs", "-1", "-controller", "127.0.0.1:1"}, "-procs must be at least 1"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tt.args...)
			if code == 0 || !strings.Contains(errOut, tt.msg) {
				t.Fatalf("exit %d, stderr %q; want an error mentioning %q", code, errOut, tt.msg)
			}
		})
	}
}

// TestAgentRevokedExitCode: an agent whose certificate is revoked exits
// by itself with ExitRefused, which the systemd unit does not restart
// (RestartPreventExitStatus), and says why.
func TestAgentRevokedExitCode(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join(scriptsDir, "jobsuite-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	p := signingController(t) // moves to a temporary directory
	cert, key, err := certs.IssueFiles(p.dir, certs.Request{Role: certs.RoleAgent, Name: "worker-9"})
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, "certs", "revoke", "-role", "agent", "-name", "worker-9", "-reason", "stolen"); code != 0 {
		t.Fatalf("certs revoke: exit %d, %s %s", code, out, errOut)
	}
	var out, errOut lockedBuffer
	m := Meta{UI: &mcli.BasicUi{Writer: &out, ErrorWriter: &errOut}, Stdout: &out, Stderr: &errOut}
	code := (&AgentCommand{Meta: m}).Run([]string{"-controller", p.agentAddr, "-ca", p.ca(), "-cert", cert, "-key", key,
		"-transport", "tcp", "-state-dir", t.TempDir(), "-log-level", "error"})
	if code != ExitRefused || !strings.Contains(errOut.String(), "revoked") {
		t.Errorf("a revoked agent: exit %d, stderr %q; want %d and why", code, errOut.String(), ExitRefused)
	}
	if want := fmt.Sprintf("\nRestartPreventExitStatus=%d\n", ExitRefused); !strings.Contains(string(unit), want) {
		t.Errorf("scripts/jobsuite-agent.service lacks %q", strings.TrimSpace(want))
	}
}
