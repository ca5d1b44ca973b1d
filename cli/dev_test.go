package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mcli "github.com/mitchellh/cli"
)

// runCLI runs one jobsuite command line as a user would and returns its
// exit code and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestDevModeAsANewUser runs 'jobsuite dev' in a fresh folder and drives
// it with the CLI from the same folder, with no JOBSUITE_* variables, the
// way the README tells a new user to.
func TestDevModeAsANewUser(t *testing.T) {
	for _, k := range []string{"JOBSUITE_ADDR", "JOBSUITE_CACERT", "JOBSUITE_CLIENT_CERT", "JOBSUITE_CLIENT_KEY"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	t.Chdir(dir)

	var devOut, devErr bytes.Buffer
	m := Meta{UI: &mcli.BasicUi{Writer: &devOut, ErrorWriter: &devErr}, Stdout: &syncWriter{w: &devOut}, Stderr: &syncWriter{w: &devErr}}
	stop := startDev(t, m)
	defer func() { stop() }()

	envFile := filepath.Join(dir, ".jobsuite-dev", "env")
	waitUntil(t, "dev to write its env file and agents to connect", func() bool {
		if _, err := os.Stat(envFile); err != nil {
			return false
		}
		code, out, _ := runCLI(t, "agents")
		return code == 0 && strings.Contains(out, "agent-1") && strings.Contains(out, "agent-2")
	})

	// 1. submit -f prints the job's output in the order it wrote it (one
	// stream, on stdout) and exits with its exit code.
	code, out, errOut := runCLI(t, "submit", "-f", "--", "echo hello; echo oops >&2; exit 3")
	if code != 3 || out != "hello\noops\n" || strings.Contains(errOut, "oops") {
		t.Fatalf("submit -f: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, "list")
	if code != 0 || !strings.Contains(out, "failed") || !strings.Contains(out, " 3 ") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}

	// The dev PKI has the layout 'tls cert create' expects.
	code, _, errOut = runCLI(t, "tls", "cert", "create", "-dir", ".jobsuite-dev", "-role", "agent", "-name", "remote-1")
	if code != 0 {
		t.Fatalf("tls cert create in the dev PKI: %d %s", code, errOut)
	}

	// 3. Restarting dev on the same folder keeps jobs and logs.
	stop()
	stop = startDev(t, m)
	waitUntil(t, "dev to restart", func() bool {
		code, out, _ := runCLI(t, "list")
		return code == 0 && strings.Contains(out, "failed")
	})
	code, out, _ = runCLI(t, "logs", "1")
	if code != 0 || out != "hello\noops\n" {
		t.Fatalf("logs after restart: %d %q", code, out)
	}
}

// startDev runs 'jobsuite dev' on loopback ports until the returned
// function is called; that function waits for it to exit cleanly.
func startDev(t *testing.T, m Meta) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m.Ctx = ctx
	done := make(chan int, 1)
	go func() {
		done <- (&DevCommand{Meta: m}).Run([]string{"-http", "127.0.0.1:0", "-listen", "127.0.0.1:0", "-log-level", "warn"})
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("dev exited %d", code)
				}
			case <-time.After(30 * time.Second):
				t.Error("dev did not stop")
			}
		})
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncWriter serialises writes from the loggers of several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
