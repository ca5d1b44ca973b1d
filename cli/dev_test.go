package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mcli "github.com/mitchellh/cli"

	"jobsuite/api"
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
func startDev(t *testing.T, m Meta, args ...string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m.Ctx = ctx
	done := make(chan int, 1)
	go func() {
		done <- (&DevCommand{Meta: m}).Run(append([]string{"-http", "127.0.0.1:0", "-listen", "127.0.0.1:0", "-log-level", "warn"}, args...))
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
			case <-time.After(waitLimit):
				t.Error("dev did not stop")
			}
		})
	}
}

// waitLimit bounds each wait of these tests for a controller, an agent
// or a job: a deadline, not a delay (every wait ends as soon as its
// event happens), sized for CI's shared 2-core machine under load, where
// a controller's start or a real job takes many times what it does on a
// quiet one (as in controller's tests).
const waitLimit = 2 * time.Minute

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
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

// TestDevWithoutAgents: 'jobsuite dev -agents 0' keeps its controller
// running; a second dev in the same folder says another holds it; dev
// prints the dashboard's address with a sign-in token that works and is
// reused by the next start.
func TestDevWithoutAgents(t *testing.T) {
	for _, k := range []string{envAddr, envCACert, envClientCert, envClientKey} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	var devOut, devErr lockedBuffer
	m := Meta{UI: &mcli.BasicUi{Writer: &devOut, ErrorWriter: &devErr}, Stdout: &devOut, Stderr: &devErr}
	stop := startDev(t, m, "-agents", "0")
	defer func() { stop() }()
	tokenRE := regexp.MustCompile(`Sign in as operator: (https://127\.0\.0\.1:\d+)/ui/#token=(jst_\S+)`)
	waitUntil(t, "the dashboard's address", func() bool { return tokenRE.MatchString(devOut.String()) })
	code, out, errOut := runCLI(t, "agents")
	if code != 0 || !strings.Contains(out, "No agents connected") {
		t.Fatalf("agents with -agents 0: exit %d, %q %q", code, out, errOut)
	}
	if !strings.Contains(devOut.String(), "No local agents (-agents 0)") || !strings.Contains(devOut.String(), "import "+filepath.Join(dir, ".jobsuite-dev", "ca.pem")+" as an authority") {
		t.Errorf("dev's banner:\n%s", devOut.String())
	}

	// The token signs in.
	mt := tokenRE.FindStringSubmatch(devOut.String())
	t.Setenv(envToken, mt[2])
	code, out, errOut = runCLI(t, "agents", "-addr", mt[1], "-ca-cert", filepath.Join(dir, ".jobsuite-dev", "ca.pem"))
	if code != 0 {
		t.Errorf("the dashboard token does not work: %d %q %q", code, out, errOut)
	}
	t.Setenv(envToken, "")

	// A second dev in the same folder.
	var out2, err2 lockedBuffer
	code = (&DevCommand{Meta: Meta{UI: &mcli.BasicUi{Writer: &out2, ErrorWriter: &err2}, Stdout: &out2, Stderr: &err2}}).Run(
		[]string{"-http", "127.0.0.1:0", "-listen", "127.0.0.1:0"})
	want := fmt.Sprintf("another 'jobsuite dev' (process %d) is running with its state in %s", os.Getpid(), filepath.Join(dir, ".jobsuite-dev"))
	if code != ExitError || !strings.Contains(err2.String(), want) {
		t.Errorf("a second dev: exit %d, %q; want %q", code, err2.String(), want)
	}

	// The next start reuses the token.
	stop()
	devOut = lockedBuffer{}
	stop = startDev(t, m, "-agents", "0")
	waitUntil(t, "the dashboard's address again", func() bool { return tokenRE.MatchString(devOut.String()) })
	if again := tokenRE.FindStringSubmatch(devOut.String()); again[2] != mt[2] {
		t.Errorf("a restart made a new token %s; want %s again", again[2], mt[2])
	}
}

// freeRun finds n consecutive loopback ports free on TCP (and on UDP
// too with udp set), starting from a random one, and the n ports 100
// above them free on TCP when cluster is set.
func freeRun(t *testing.T, n int, udp, cluster bool) int {
	t.Helper()
	free := func(port int) bool {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		ln.Close()
		if udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return false
			}
			pc.Close()
		}
		return true
	}
	for range 200 {
		base := 20000 + rand.IntN(20000)
		ok := true
		for i := 0; ok && i < n; i++ {
			ok = free(base+i) && (!cluster || free(base+100+i))
		}
		if ok {
			return base
		}
	}
	t.Fatal("no run of free ports")
	return 0
}

// TestDevCluster: 'jobsuite dev -controllers 3' starts a local cluster
// that the CLI, from the same folder, finds all of: its members list a
// leader, and a job runs.
func TestDevCluster(t *testing.T) {
	for _, k := range []string{envAddr, envCACert, envClientCert, envClientKey} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	httpPort := freeRun(t, 3, false, false)
	agentPort := freeRun(t, 3, true, true)
	var devOut, devErr lockedBuffer
	m := Meta{UI: &mcli.BasicUi{Writer: &devOut, ErrorWriter: &devErr}, Stdout: &devOut, Stderr: &devErr}
	stop := startDev(t, m, "-controllers", "3", "-http", fmt.Sprint("127.0.0.1:", httpPort), "-listen", fmt.Sprint("127.0.0.1:", agentPort))
	defer func() { stop() }()

	envFile := filepath.Join(dir, ".jobsuite-dev", "env")
	waitUntil(t, "dev's env file and a leader with both agents", func() bool {
		if _, err := os.Stat(envFile); err != nil {
			return false
		}
		code, out, _ := runCLI(t, "agents")
		return code == 0 && strings.Contains(out, "agent-1") && strings.Contains(out, "agent-2")
	})
	env, _ := os.ReadFile(envFile)
	for i := range 3 {
		if !strings.Contains(string(env), fmt.Sprintf("https://127.0.0.1:%d", httpPort+i)) {
			t.Fatalf("env file does not name controller %d:\n%s", i+1, env)
		}
	}
	code, out, errOut := runCLI(t, "operator", "members")
	if code != 0 || strings.Count(out, "leader") != 1 || strings.Count(out, "follower") != 2 {
		t.Fatalf("operator members: exit %d\n%s%s", code, out, errOut)
	}
	// Each agent watches a follower for a change of leader.
	waitUntil(t, "both agents watching a follower", func() bool {
		code, out, _ := runCLI(t, "operator", "members", "-json")
		var ms []api.Member
		if code != 0 || json.Unmarshal([]byte(out), &ms) != nil {
			return false
		}
		watches := 0
		for _, m := range ms {
			if m.Role == "leader" && m.WatchSessions > 0 {
				return false
			}
			watches += m.WatchSessions
		}
		return watches == 2
	})
	code, out, errOut = runCLI(t, "submit", "-f", "--", "echo from the cluster")
	if code != 0 || out != "from the cluster\n" {
		t.Fatalf("submit -f: exit %d, %q %q", code, out, errOut)
	}
	// Hand leadership on: the old leader's agents are redirected, and
	// the next job runs under the new leader.
	code, out, errOut = runCLI(t, "operator", "transfer-leadership")
	var from, to string
	if code != 0 {
		t.Fatalf("operator transfer-leadership: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := fmt.Sscanf(out, "Leadership handed from %s to %s", &from, &to); err != nil || from == "" || strings.TrimSuffix(to, ".") == from {
		t.Fatalf("operator transfer-leadership: %q (%v)", out, err)
	}
	code, out, errOut = runCLI(t, "submit", "-f", "--", "echo after the transfer")
	if code != 0 || out != "after the transfer\n" {
		t.Fatalf("submit -f after the transfer: exit %d, %q %q", code, out, errOut)
	}
	if !strings.Contains(devOut.String(), "a cluster of 3 controllers") {
		t.Errorf("dev's banner:\n%s", devOut.String())
	}
}
