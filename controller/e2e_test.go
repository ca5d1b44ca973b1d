package controller_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/transport"
)

// cluster is a real controller and real agents on loopback.
type cluster struct {
	t       *testing.T
	dir     string // PKI
	data    string // Pebble
	srv     *controller.Server
	stop    context.CancelFunc
	done    chan error
	agents  map[string]context.CancelFunc
	agentWG sync.WaitGroup
	client  *http.Client
	base    string
	cfg     controller.Config
	// beforeRun, if set, is called with each new Server before it runs.
	beforeRun func(*controller.Server)
}

func testLogger(t *testing.T, name string) hclog.Logger {
	return testLoggerAt(t, name, hclog.Debug)
}

// testLoggerAt is testLogger from level up. A test that submits
// thousands of jobs in batches gives its controller an info logger: each
// job of a batch logs a debug line under the scheduler's mutex, and
// 10,000 of them through t.Log took 25 s on a loaded machine.
func testLoggerAt(t *testing.T, name string, level hclog.Level) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: tWriter{t}})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newPKI(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := certs.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	for _, r := range []certs.Request{
		{Role: certs.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}},
		{Role: certs.RoleOperator, Name: "operator"},
		{Role: certs.RoleViewer, Name: "viewer"},
		{Role: certs.RoleAgent, Name: "agent-1"},
		{Role: certs.RoleAgent, Name: "agent-2"},
		{Role: certs.RoleAgent, Name: "agent-3"},
	} {
		if _, _, err := certs.IssueFiles(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func files(dir, name string) certs.Files {
	return certs.Files{CA: certs.CAFile(dir), Cert: certs.CertFile(dir, name), Key: certs.KeyFile(dir, name)}
}

// startCluster starts a controller on 127.0.0.1:0 with the named agents.
func startCluster(t *testing.T, agents ...string) *cluster {
	t.Helper()
	return startClusterWith(t, nil, agents...)
}

// startClusterWith is startCluster with the controller's configuration
// changed by mod (if not nil) before it starts.
func startClusterWith(t *testing.T, mod func(*controller.Config), agents ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: newPKI(t), data: filepath.Join(t.TempDir(), "data"), agents: map[string]context.CancelFunc{}}
	c.cfg = controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: c.data,
		TLS: files(c.dir, "controller"), LeaseTTL: 3 * time.Second, KillGrace: 500 * time.Millisecond,
		BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&c.cfg)
		c.data = c.cfg.DataDir
	}
	c.startController()
	c.client = c.httpClient("operator")
	for _, a := range agents {
		c.startAgent(a, 4, nil, transport.ModeQUIC)
	}
	t.Cleanup(c.close)
	return c
}

func (c *cluster) startController() {
	c.t.Helper()
	cfg := c.cfg
	if cfg.Logger == nil { // a test may bring its own
		cfg.Logger = testLogger(c.t, "controller")
	}
	srv, err := controller.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.beforeRun != nil {
		c.beforeRun(srv)
	}
	// Keep the same ports across restarts so agents find it again.
	c.cfg.HTTPAddr, c.cfg.AgentAddr = srv.HTTPAddr(), srv.AgentAddr()
	ctx, cancel := context.WithCancel(context.Background())
	c.srv, c.stop, c.done = srv, cancel, make(chan error, 1)
	go func() { c.done <- srv.Run(ctx) }()
	c.base = "https://" + srv.HTTPAddr()
}

// stopController stops the controller and waits for it.
func (c *cluster) stopController() {
	c.t.Helper()
	c.stop()
	if err := <-c.done; err != nil {
		c.t.Errorf("controller Run: %v", err)
	}
}

func (c *cluster) startAgent(name string, slots int, labels map[string]string, mode transport.Mode) {
	c.t.Helper()
	c.startAgentWith(name, slots, labels, mode, nil)
}

// startAgentWith is startAgent with the agent's configuration changed by
// mod (if not nil) before it starts.
func (c *cluster) startAgentWith(name string, slots int, labels map[string]string, mode transport.Mode, mod func(*agent.Config)) {
	c.t.Helper()
	cfg := agent.Config{
		Controller: c.srv.AgentAddr(), TLS: files(c.dir, name), Slots: slots, Labels: labels,
		Transport: mode, Logger: testLogger(c.t, name), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		StateDir: c.t.TempDir(),
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.agents[name] = cancel
	c.agentWG.Add(1)
	go func() {
		defer c.agentWG.Done()
		if err := a.Run(ctx); err != nil {
			c.t.Errorf("agent %s: %v", name, err)
		}
	}()
	c.waitFor("agent "+name+" connected", func() bool {
		var agents []api.AgentInfo
		c.getJSON("/agents", &agents)
		for _, ag := range agents {
			if ag.Name == name {
				return true
			}
		}
		return false
	})
}

func (c *cluster) close() {
	for _, cancel := range c.agents {
		cancel()
	}
	c.agentWG.Wait()
	c.stop()
	<-c.done
}

func (c *cluster) httpClient(name string) *http.Client {
	c.t.Helper()
	pool, cert, err := files(c.dir, name).Load()
	if err != nil {
		c.t.Fatal(err)
	}
	return &http.Client{Timeout: waitLimit, Transport: &http.Transport{
		TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"),
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (c *cluster) do(method, path, body string) (int, []byte) {
	c.t.Helper()
	return doWith(c.t, c.client, method, c.base+path, body)
}

func doWith(t *testing.T, cl *http.Client, method, url, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (c *cluster) getJSON(path string, out any) {
	c.t.Helper()
	code, body := c.do("GET", path, "")
	if code != 200 {
		c.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		c.t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

type job struct {
	JobID      uint64  `json:"job_id"`
	Status     string  `json:"status"`
	Command    string  `json:"command"`
	Priority   any     `json:"priority"`
	ExitCode   *int    `json:"exit_code"`
	Reason     string  `json:"reason"`
	CreatedAt  string  `json:"created_at"`
	StartedAt  string  `json:"started_at"`
	FinishedAt string  `json:"finished_at"`
	Duration   float64 `json:"duration"`
	Attempts   []struct {
		Number  int    `json:"number"`
		Agent   string `json:"agent"`
		Outcome string `json:"outcome"`
	} `json:"attempts"`
	Result *struct {
		Outcome  string  `json:"outcome"`
		ExitCode *int    `json:"exit_code"`
		Signal   string  `json:"signal"`
		Duration float64 `json:"duration"`
		MaxRSS   uint64  `json:"max_rss"`
	} `json:"result"`
	CancelRequested bool `json:"cancel_requested"`
}

func (c *cluster) submit(body string) job {
	c.t.Helper()
	code, b := c.do("POST", "/jobs", body)
	if code != 201 {
		c.t.Fatalf("submit %s: %d %s", body, code, b)
	}
	var j job
	if err := json.Unmarshal(b, &j); err != nil {
		c.t.Fatal(err)
	}
	return j
}

func (c *cluster) job(id uint64) job {
	c.t.Helper()
	var j job
	c.getJSON(fmt.Sprintf("/jobs/%d", id), &j)
	return j
}

// waitLimit bounds each wait of these tests for something a controller,
// an agent or a job does: waitFor's polling, an agent's refusal, one
// HTTP request, a browser page's state. It is a deadline, not a delay:
// every wait returns as soon as its event happens, so a passing test
// never waits it out, and a broken one still fails (and -timeout bounds
// the package). It is sized for CI's shared 2-core machine under load:
// at 12–24 runnable threads a job that needs 3 s of CPU alone (32 MiB
// through the race-instrumented agent and controller, 1,000 real jobs)
// takes well over 30 s, which is where these waits used to end.
const waitLimit = 2 * time.Minute

// waitFor polls cond until it holds or waitLimit passes.
func (c *cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *cluster) waitState(id uint64, states ...string) job {
	c.t.Helper()
	var j job
	c.waitFor(fmt.Sprintf("job %d to be %v", id, states), func() bool {
		j = c.job(id)
		for _, s := range states {
			if j.Status == s {
				return true
			}
		}
		return false
	})
	return j
}

func (c *cluster) logs(id uint64) string {
	c.t.Helper()
	code, b := c.do("GET", fmt.Sprintf("/jobs/%d/logs", id), "")
	if code != 200 {
		c.t.Fatalf("logs: %d %s", code, b)
	}
	return string(b)
}

// readWSText reads ws's messages until the server closes it normally and
// returns them joined; any other end fails the test.
func readWSText(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	var got strings.Builder
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("websocket ended with %v", err)
			}
			return got.String()
		}
		got.Write(msg)
	}
}

func (c *cluster) dialWS(name, path string) (*websocket.Conn, error) {
	pool, cert, err := files(c.dir, name).Load()
	if err != nil {
		return nil, err
	}
	d := websocket.Dialer{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"), HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.Dial("wss://"+c.srv.HTTPAddr()+path, nil)
	return conn, err
}

const originalBody = `{"name":"x","command":"sleep 1; echo hi","params":"","priority":"high","timeout":30,"retries":0,"logs":true}`

func TestOriginalBodyEndToEnd(t *testing.T) {
	c := startCluster(t, "agent-1", "agent-2")
	// The original clients POST to /jobs/ and do not follow redirects.
	code, b := c.do("POST", "/jobs/", originalBody)
	if code != http.StatusCreated {
		t.Fatalf("POST /jobs/: %d %s", code, b)
	}
	var created map[string]any
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"job_id", "status", "command", "priority"} {
		if _, ok := created[k]; !ok {
			t.Errorf("201 body lacks %q: %s", k, b)
		}
	}
	if created["priority"] != "high" || created["command"] != "sleep 1; echo hi" || created["status"] != "queued" {
		t.Errorf("201 body: %s", b)
	}
	id := uint64(created["job_id"].(float64))

	ws, err := c.dialWS("operator", fmt.Sprintf("/ws/jobs/%d/logs", id))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if got := readWSText(t, ws); got != "hi\n" {
		t.Errorf("websocket streamed %q, want %q", got, "hi\n")
	}

	j := c.waitState(id, "completed")
	if j.ExitCode == nil || *j.ExitCode != 0 || j.Result == nil || j.Result.Outcome != "completed" {
		t.Errorf("result: %+v", j)
	}
	if j.StartedAt == "" || j.FinishedAt == "" || j.Duration < 1 || j.Result.Duration < 1 {
		t.Errorf("timing fields: %+v", j)
	}
	if got := c.logs(id); got != "hi\n" {
		t.Errorf("logs = %q", got)
	}
	for _, p := range []string{fmt.Sprintf("/jobs/%d/", id), fmt.Sprintf("/jobs/%d/logs/", id), "/jobs/", "/agents/"} {
		if code, b := c.do("GET", p, ""); code != 200 {
			t.Errorf("GET %s: %d %s", p, code, b)
		}
	}
}

func TestExitCodesAndStreams(t *testing.T) {
	c := startCluster(t, "agent-1")
	// streams reads a job's log from the json WebSocket, per stream.
	streams := func(id uint64) (map[string]string, api.LogMessage) {
		t.Helper()
		ws, err := c.dialWS("viewer", fmt.Sprintf("/ws/jobs/%d/logs?format=json", id))
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		got := map[string]string{}
		var end api.LogMessage
		for {
			var m api.LogMessage
			if err := ws.ReadJSON(&m); err != nil {
				break
			}
			switch m.Type {
			case "end":
				end = m
			case "output":
				got[m.Stream] += string(m.Data)
				if m.Time.IsZero() {
					t.Errorf("output message without a time: %+v", m)
				}
			default:
				t.Errorf("message %q without attempts=1", m.Type)
			}
		}
		return got, end
	}
	for name, tc := range map[string]struct {
		output string
		want   map[string]string
	}{
		// One pipe: the write order, all of it stdout.
		"ordered": {``, map[string]string{"stdout": "hello\noops\n"}},
		// Two pipes: stdout and stderr keep their identity on the json
		// WebSocket; the log holds both in some order.
		"split": {`,"output":"split"`, map[string]string{"stdout": "hello\n", "stderr": "oops\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			j := c.submit(`{"command":"echo hello; echo oops >&2; exit 3"` + tc.output + `}`)
			done := c.waitState(j.JobID, "failed")
			if done.ExitCode == nil || *done.ExitCode != 3 {
				t.Fatalf("exit code: %+v", done)
			}
			if got := c.logs(j.JobID); got != "hello\noops\n" && (name == "ordered" || got != "oops\nhello\n") {
				t.Errorf("logs = %q", got)
			}
			got, end := streams(j.JobID)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("streams = %q, want %q", got, tc.want)
			}
			if end.Status != "failed" || end.ExitCode == nil || *end.ExitCode != 3 {
				t.Errorf("end message = %+v", end)
			}
		})
	}

	sig := c.submit(`{"command":"kill -9 $$"}`)
	done := c.waitState(sig.JobID, "failed")
	if done.Result == nil || done.Result.Signal != "SIGKILL" || done.ExitCode == nil || *done.ExitCode != 137 {
		t.Errorf("killed job: %+v", done)
	}
}

// TestPriorityOrder queues jobs while no agent is connected, then lets a
// one-slot agent drain them: high before mid before low, FIFO within.
func TestPriorityOrder(t *testing.T) {
	c := startCluster(t)
	out := filepath.Join(t.TempDir(), "order")
	var ids []uint64
	for _, p := range []string{"low", "mid", "high", "low", "90", "high", "mid", "0"} {
		j := c.submit(fmt.Sprintf(`{"name":"%s","command":"echo %s-%d >> %s","priority":%s}`,
			p, p, len(ids), out, priorityJSON(p)))
		ids = append(ids, j.JobID)
	}
	var queued job
	c.getJSON(fmt.Sprintf("/jobs/%d", ids[0]), &queued)
	if queued.Status != "queued" || !strings.Contains(queued.Reason, "agent") {
		t.Errorf("queued job without agents: %+v", queued)
	}
	c.startAgent("agent-1", 1, nil, transport.ModeTCP)
	for _, id := range ids {
		c.waitState(id, "completed")
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "90-4\nhigh-2\nhigh-5\nmid-1\nmid-6\nlow-0\nlow-3\n0-7\n"
	if string(b) != want {
		t.Errorf("run order:\n%s\nwant:\n%s", b, want)
	}
}

func priorityJSON(p string) string {
	if p[0] >= '0' && p[0] <= '9' {
		return p
	}
	return `"` + p + `"`
}

// TestLiveLogs proves output arrives while the job still runs: the job
// waits for a file the test creates only after it saw the first line.
func TestLiveLogs(t *testing.T) {
	c := startCluster(t, "agent-1")
	gate := filepath.Join(t.TempDir(), "gate")
	j := c.submit(fmt.Sprintf(`{"command":"echo first; while [ ! -e %s ]; do sleep 0.05; done; echo second"}`, gate))
	ws, err := c.dialWS("operator", fmt.Sprintf("/ws/jobs/%d/logs", j.JobID))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != "first\n" {
		t.Fatalf("first message %q", msg)
	}
	// Output can arrive before the start is durable: wait for running.
	c.waitState(j.JobID, "running")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, msg, err = ws.ReadMessage()
	if err != nil || string(msg) != "second\n" {
		t.Fatalf("second message %q, %v", msg, err)
	}
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the job ended: %v", err)
	}
	// A follower can start from an offset.
	ws2, err := c.dialWS("operator", fmt.Sprintf("/ws/jobs/%d/logs?offset=6", j.JobID))
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	_, msg, err = ws2.ReadMessage()
	if err != nil || string(msg) != "second\n" {
		t.Fatalf("from offset 6: %q, %v", msg, err)
	}
}

func TestRestartKeepsJobsAndLogs(t *testing.T) {
	c := startCluster(t, "agent-1")
	done := c.submit(`{"command":"printf 'line1\nline2\n'"}`)
	c.waitState(done.JobID, "completed")
	c.stopController()
	c.agents["agent-1"]() // agent stops too; jobs queued meanwhile wait for it
	c.agentWG.Wait()
	delete(c.agents, "agent-1")

	c.startController()
	queued := c.submit(`{"command":"echo after"}`)
	j := c.job(done.JobID)
	if j.Status != "completed" || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Errorf("after restart: %+v", j)
	}
	if got := c.logs(done.JobID); got != "line1\nline2\n" {
		t.Errorf("logs after restart = %q", got)
	}
	c.stopController()
	c.startController() // the queued job survives a second restart
	if st := c.job(queued.JobID).Status; st != "queued" {
		t.Fatalf("queued job is %s after restart", st)
	}
	c.startAgent("agent-1", 2, nil, transport.ModeAuto)
	c.waitState(queued.JobID, "completed")
	if got := c.logs(queued.JobID); got != "after\n" {
		t.Errorf("logs = %q", got)
	}
}

func TestTLSRefusesStrangers(t *testing.T) {
	c := startCluster(t)
	other := newPKI(t) // a different CA
	// Without a certificate the handshake completes (a client may show an
	// API token instead), and the request is refused with 401.
	noCert := func() *tls.Config {
		pool, _, err := files(c.dir, "operator").Load()
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	}()
	bare := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: noCert}}
	if code, b := doWith(t, bare, "GET", c.base+"/jobs", ""); code != http.StatusUnauthorized || !strings.Contains(string(b), "no client certificate and no API token") {
		t.Errorf("no client certificate: %d %s, want 401", code, b)
	}
	tests := map[string]*tls.Config{
		"certificate from another CA": func() *tls.Config {
			pool, _, err := files(c.dir, "operator").Load()
			if err != nil {
				t.Fatal(err)
			}
			_, cert, err := files(other, "operator").Load()
			if err != nil {
				t.Fatal(err)
			}
			return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
		}(),
	}
	for name, conf := range tests {
		t.Run(name, func(t *testing.T) {
			cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
			resp, err := cl.Get(c.base + "/jobs")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("request succeeded with status %d; want a TLS failure", resp.StatusCode)
			}
		})
	}
	// Roles: an agent certificate may not use the API; a viewer may read only.
	agentClient := c.httpClient("agent-1")
	if code, b := doWith(t, agentClient, "GET", c.base+"/jobs", ""); code != http.StatusForbidden || !strings.Contains(string(b), "role agent") {
		t.Errorf("agent cert on API: %d %s", code, b)
	}
	viewer := c.httpClient("viewer")
	if code, _ := doWith(t, viewer, "GET", c.base+"/jobs", ""); code != 200 {
		t.Errorf("viewer GET /jobs: %d", code)
	}
	if code, b := doWith(t, viewer, "POST", c.base+"/jobs", `{"command":"true"}`); code != http.StatusForbidden {
		t.Errorf("viewer POST /jobs: %d %s", code, b)
	}
}

func TestBadInput(t *testing.T) {
	c := startCluster(t)
	tests := map[string]struct {
		method, path, body string
		code               int
		field              string
	}{
		"malformed json":      {"POST", "/jobs", `{"command":`, 400, ""},
		"empty body":          {"POST", "/jobs", ``, 400, ""},
		"not an object":       {"POST", "/jobs", `[1,2]`, 400, ""},
		"missing command":     {"POST", "/jobs", `{"name":"x"}`, 400, "command"},
		"blank command":       {"POST", "/jobs", `{"command":"   "}`, 400, "command"},
		"bad priority name":   {"POST", "/jobs", `{"command":"true","priority":"urgent"}`, 400, "priority"},
		"priority too high":   {"POST", "/jobs", `{"command":"true","priority":101}`, 400, "priority"},
		"priority fraction":   {"POST", "/jobs", `{"command":"true","priority":1.5}`, 400, "priority"},
		"timeout as string":   {"POST", "/jobs", `{"command":"true","timeout":"30"}`, 400, "timeout"},
		"negative timeout":    {"POST", "/jobs", `{"command":"true","timeout":-1}`, 400, "timeout"},
		"retries as string":   {"POST", "/jobs", `{"command":"true","retries":"2"}`, 400, "retries"},
		"negative retries":    {"POST", "/jobs", `{"command":"true","retries":-2}`, 400, "retries"},
		"logs not bool":       {"POST", "/jobs", `{"command":"true","logs":"yes"}`, 400, "logs"},
		"unknown field":       {"POST", "/jobs", `{"command":"true","priorty":"high"}`, 400, "priorty"},
		"bad label key":       {"POST", "/jobs", `{"command":"true","labels":{"":"x"}}`, 400, "labels"},
		"bad env name":        {"POST", "/jobs", `{"command":"true","env":{"A-B":"x"}}`, 400, "env"},
		"params wrong type":   {"POST", "/jobs", `{"command":"true","params":5}`, 400, "params"},
		"bad output":          {"POST", "/jobs", `{"command":"true","output":"both"}`, 400, "output"},
		"output not a string": {"POST", "/jobs", `{"command":"true","output":1}`, 400, "output"},
		"tty not bool":        {"POST", "/jobs", `{"command":"true","tty":"yes"}`, 400, "tty"},
		"tty with split":      {"POST", "/jobs", `{"command":"true","tty":true,"output":"split"}`, 400, "tty"},
		"ws markers as text":  {"GET", "/ws/jobs/999/logs?attempts=1", "", 400, "attempts"},
		"two values":          {"POST", "/jobs", `{"command":"true"}{"command":"true"}`, 400, ""},
		"oversized body":      {"POST", "/jobs", `{"command":"` + strings.Repeat("x", 2<<20) + `"}`, 413, ""},
		"unknown job":         {"GET", "/jobs/999", "", 404, ""},
		"unknown job logs":    {"GET", "/jobs/999/logs", "", 404, ""},
		"unknown job cancel":  {"DELETE", "/jobs/999", "", 404, ""},
		"unknown job events":  {"GET", "/jobs/999/events", "", 404, ""},
		"unknown job ws":      {"GET", "/ws/jobs/999/logs", "", 404, ""},
		"non-numeric id":      {"GET", "/jobs/abc", "", 400, "id"},
		"zero id":             {"GET", "/jobs/0", "", 400, "id"},
		"bad status filter":   {"GET", "/jobs?status=done", "", 400, "status"},
		"bad limit":           {"GET", "/jobs?limit=-1", "", 400, "limit"},
		"bad offset":          {"GET", "/jobs/1/logs?offset=x", "", 400, "offset"},
		"unknown path":        {"GET", "/nope", "", 404, ""},
		"method not allowed":  {"PUT", "/jobs", "", 405, ""},
		"trailing slash 404s": {"GET", "/jobs/999/", "", 404, ""},
		// A NUL byte in any string that reaches the process: exec cannot
		// pass it, so the job could never run.
		"NUL in command":         {"POST", "/jobs", `{"command":"echo a\u0000b"}`, 400, "command"},
		"NUL in name":            {"POST", "/jobs", `{"command":"true","name":"a\u0000b"}`, 400, "name"},
		"NUL in params":          {"POST", "/jobs", `{"command":"echo","params":"a\u0000b"}`, 400, "params"},
		"NUL in a params list":   {"POST", "/jobs", `{"command":"echo","params":["a","b\u0000"]}`, 400, "params"},
		"NUL in idempotency_key": {"POST", "/jobs", `{"command":"true","idempotency_key":"k\u0000"}`, 400, "idempotency_key"},
		"NUL in an env value":    {"POST", "/jobs", `{"command":"true","env":{"A":"x\u0000"}}`, 400, "env"},
		"NUL in dir":             {"POST", "/jobs", `{"command":"true","dir":"/tmp\u0000"}`, 400, "dir"},
		"NUL in a batch job":     {"POST", "/jobs/batch", `[{"command":"true","name":"\u0000"}]`, 400, "jobs[0].name"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, b := c.do(tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.code)
			}
			var e struct {
				Error string `json:"error"`
				Field string `json:"field"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Fatalf("error body is not {\"error\": ...}: %s", b)
			}
			if tc.field != "" && e.Field != tc.field {
				t.Errorf("field = %q, want %q (%s)", e.Field, tc.field, e.Error)
			}
			if tc.field != "" && !strings.Contains(e.Error, tc.field) {
				t.Errorf("error %q does not name field %q", e.Error, tc.field)
			}
		})
	}
	// Nothing above created a job.
	var jobs []job
	c.getJSON("/jobs", &jobs)
	if len(jobs) != 0 {
		t.Errorf("bad requests created %d jobs", len(jobs))
	}
}

func TestCancel(t *testing.T) {
	c := startCluster(t)
	// Queued: cancelled at once.
	q := c.submit(`{"command":"true"}`)
	code, b := c.do("DELETE", fmt.Sprintf("/jobs/%d", q.JobID), "")
	if code != 200 || !bytes.Contains(b, []byte(`"cancelled"`)) {
		t.Fatalf("cancel queued: %d %s", code, b)
	}
	if code, _ := c.do("DELETE", fmt.Sprintf("/jobs/%d/", q.JobID), ""); code != 200 {
		t.Errorf("second cancel: %d, want 200 (idempotent)", code)
	}

	c.startAgent("agent-1", 2, nil, transport.ModeQUIC)
	pidFile := filepath.Join(t.TempDir(), "pid")
	run := c.submit(fmt.Sprintf(`{"command":"sleep 300 & echo $! > %s; wait"}`, pidFile))
	c.waitFor("pid file", func() bool { b, _ := os.ReadFile(pidFile); return len(b) > 0 })
	code, b = c.do("DELETE", fmt.Sprintf("/jobs/%d", run.JobID), "")
	if code != http.StatusAccepted {
		t.Fatalf("cancel running: %d %s", code, b)
	}
	c.waitState(run.JobID, "cancelled")
	var pid int
	pb, _ := os.ReadFile(pidFile)
	fmt.Sscan(string(pb), &pid)
	c.waitFor("grandchild gone", func() bool { return processGone(pid) })

	// Finished jobs answer 409 with their state.
	ok := c.submit(`{"command":"true"}`)
	c.waitState(ok.JobID, "completed")
	code, b = c.do("DELETE", fmt.Sprintf("/jobs/%d", ok.JobID), "")
	if code != http.StatusConflict || !bytes.Contains(b, []byte(`"status": "completed"`)) {
		t.Errorf("cancel finished: %d %s", code, b)
	}

	// Not cancellable while running.
	gate := filepath.Join(t.TempDir(), "gate")
	nc := c.submit(fmt.Sprintf(`{"command":"touch %s.started; while [ ! -e %s ]; do sleep 0.05; done","cancellable":false}`, gate, gate))
	c.waitFor("job started", func() bool { _, err := os.Stat(gate + ".started"); return err == nil })
	if code, b := c.do("DELETE", fmt.Sprintf("/jobs/%d", nc.JobID), ""); code != http.StatusConflict {
		t.Errorf("cancel non-cancellable: %d %s", code, b)
	}
	os.WriteFile(gate, nil, 0o600)
	c.waitState(nc.JobID, "completed")
}

// processGone reports whether pid no longer runs (a zombie counts).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func TestRetries(t *testing.T) {
	c := startCluster(t, "agent-1")
	counter := filepath.Join(t.TempDir(), "n")
	// Fails on the first two attempts, succeeds on the third.
	j := c.submit(fmt.Sprintf(`{"command":"echo x >> %s; [ $(wc -l < %s) -ge 3 ]","retries":2}`, counter, counter))
	done := c.waitState(j.JobID, "completed", "failed")
	if done.Status != "completed" || len(done.Attempts) != 3 {
		t.Fatalf("retried job: %+v", done)
	}
	for i, a := range done.Attempts[:2] {
		if a.Outcome != "failed" {
			t.Errorf("attempt %d outcome %q", i+1, a.Outcome)
		}
	}
	// Out of retries: failed for good.
	f := c.submit(`{"command":"exit 7","retries":1}`)
	done = c.waitState(f.JobID, "failed")
	if len(done.Attempts) != 2 || done.ExitCode == nil || *done.ExitCode != 7 {
		t.Errorf("failing job: %+v", done)
	}
	var events []map[string]any
	c.getJSON(fmt.Sprintf("/jobs/%d/events", f.JobID), &events)
	var types []string
	for _, e := range events {
		types = append(types, e["type"].(string))
	}
	want := "submitted dispatched started retry requeued dispatched started finished"
	if strings.Join(types, " ") != want {
		t.Errorf("events %v, want %s", types, want)
	}
}

func TestLabelsTargetAgents(t *testing.T) {
	c := startCluster(t, "agent-1")
	j := c.submit(`{"command":"echo $JOBSUITE_AGENT","labels":{"gpu":"true"}}`)
	var queued job
	c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &queued)
	if queued.Status != "queued" || !strings.Contains(queued.Reason, "no connected agent matches") {
		t.Fatalf("unmatched job: %+v", queued)
	}
	c.startAgent("agent-2", 1, map[string]string{"gpu": "true"}, transport.ModeTCP)
	c.waitState(j.JobID, "completed")
	if got := c.logs(j.JobID); got != "agent-2\n" {
		t.Errorf("ran on %q, want agent-2", got)
	}
}

// TestTimeout: the agent kills the whole process group at the timeout;
// no child or grandchild survives.
func TestTimeout(t *testing.T) {
	c := startCluster(t, "agent-1")
	pids := filepath.Join(t.TempDir(), "pids")
	j := c.submit(fmt.Sprintf(`{"command":"sleep 300 & echo $! >> %[1]s; sh -c 'sleep 300 & echo $! >> %[1]s; wait' & echo $! >> %[1]s; echo $$ >> %[1]s; wait","timeout":1}`, pids))
	done := c.waitState(j.JobID, "timeout")
	if done.Result == nil || done.Result.Outcome != "timeout" {
		t.Errorf("timed out job: %+v", done)
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	if len(fields) != 4 {
		t.Fatalf("pids file %q", b)
	}
	for _, f := range fields {
		var pid int
		fmt.Sscan(f, &pid)
		c.waitFor(fmt.Sprintf("process %d gone", pid), func() bool { return processGone(pid) })
	}
}

// TestRetryBackoffGrows: each retry waits longer than the one before
// (base 50ms doubling, ±20% jitter: at least 40, 80, 160 ms).
func TestRetryBackoffGrows(t *testing.T) {
	c := startCluster(t, "agent-1")
	j := c.submit(`{"command":"exit 1","retries":3}`)
	done := c.waitState(j.JobID, "failed")
	if len(done.Attempts) != 4 {
		t.Fatalf("%d attempts, want 4", len(done.Attempts))
	}
	var events []struct {
		Type string    `json:"type"`
		Time time.Time `json:"time"`
	}
	c.getJSON(fmt.Sprintf("/jobs/%d/events", j.JobID), &events)
	var retry time.Time
	var waits []time.Duration
	for _, e := range events {
		switch e.Type {
		case "retry":
			retry = e.Time
		case "requeued":
			waits = append(waits, e.Time.Sub(retry))
		}
	}
	if len(waits) != 3 {
		t.Fatalf("waits %v from events %+v", waits, events)
	}
	for i, min := range []time.Duration{40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond} {
		if waits[i] < min {
			t.Errorf("retry %d waited %s, want at least %s (waits %v)", i+1, waits[i], min, waits)
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	c := startCluster(t)
	a := c.submit(`{"command":"true","idempotency_key":"k1"}`)
	code, b := c.do("POST", "/jobs", `{"command":"true","idempotency_key":"k1"}`)
	if code != 200 {
		t.Fatalf("repeat: %d %s", code, b)
	}
	var again job
	json.Unmarshal(b, &again)
	if again.JobID != a.JobID {
		t.Errorf("repeat created job %d, want %d", again.JobID, a.JobID)
	}
}
