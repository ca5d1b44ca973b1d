package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/transport"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: tWriter{t}})
}

// scrapeAgent reads the agent's /metrics into series → value.
func scrapeAgent(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %q %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("malformed metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAgentMetrics runs a job through a real controller and reads the
// agent's own /metrics before, during and after.
func TestAgentMetrics(t *testing.T) {
	dir := t.TempDir()
	if err := certs.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	for _, r := range []certs.Request{
		{Role: certs.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}},
		{Role: certs.RoleOperator, Name: "operator"},
		{Role: certs.RoleAgent, Name: "agent-1"},
	} {
		if _, _, err := certs.IssueFiles(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	files := func(name string) certs.Files {
		return certs.Files{CA: certs.CAFile(dir), Cert: certs.CertFile(dir, name), Key: certs.KeyFile(dir, name)}
	}
	srv, err := controller.New(controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data"),
		TLS: files("controller"), Logger: testLogger(t, "controller"), NoSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopServer := context.WithCancel(context.Background())
	serverDone := make(chan error, 1)
	go func() { serverDone <- srv.Run(sctx) }()
	defer func() { stopServer(); <-serverDone }()

	off, err := agent.New(agent.Config{Controller: srv.AgentAddr(), TLS: files("agent-1"), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if off.MetricsAddr() != "" {
		t.Fatalf("MetricsAddr = %q without Config.MetricsAddr", off.MetricsAddr())
	}

	a, err := agent.New(agent.Config{
		Controller: srv.AgentAddr(), TLS: files("agent-1"), Slots: 2, Transport: transport.ModeTCP,
		StateDir: t.TempDir(), Logger: testLogger(t, "agent-1"), MetricsAddr: "127.0.0.1:0",
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := a.MetricsAddr()
	if addr == "" {
		t.Fatal("MetricsAddr is empty with Config.MetricsAddr set")
	}
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(actx) }()
	defer func() { stopAgent(); <-agentDone }()

	waitFor(t, "the agent to connect", func() bool { return scrapeAgent(t, addr)["jobsuite_agent_connected"] == 1 })
	m := scrapeAgent(t, addr)
	for series, want := range map[string]float64{
		`jobsuite_agent_slots`:                                 2,
		`jobsuite_agent_jobs_running`:                          0,
		`jobsuite_agent_jobs_started_total`:                    0,
		`jobsuite_agent_jobs_finished_total{outcome="failed"}`: 0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("before the job: %s = %v (present %v), want %v", series, got, ok, want)
		}
	}

	// Submit a job that prints 5 bytes and wait until it completed.
	pool, cert, err := files("operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1")}}
	base := "https://" + srv.HTTPAddr()
	resp, err := client.Post(base+"/jobs", "application/json", strings.NewReader(`{"command":"printf hello"}`))
	if err != nil {
		t.Fatal(err)
	}
	var job struct {
		ID     uint64 `json:"job_id"`
		Status string `json:"status"`
	}
	err = json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %d %v", resp.StatusCode, err)
	}
	waitFor(t, "the job to complete", func() bool {
		resp, err := client.Get(fmt.Sprintf("%s/jobs/%d", base, job.ID))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&job); err != nil {
			t.Fatal(err)
		}
		return job.Status == "completed"
	})
	// The agent forgets the attempt once the controller acknowledged it.
	waitFor(t, "the agent to hold no attempt", func() bool { return scrapeAgent(t, addr)["jobsuite_agent_attempts_held"] == 0 })
	m = scrapeAgent(t, addr)
	for series, want := range map[string]float64{
		`jobsuite_agent_jobs_started_total`:                       1,
		`jobsuite_agent_jobs_finished_total{outcome="completed"}`: 1,
		`jobsuite_agent_jobs_finished_total{outcome="failed"}`:    0,
		`jobsuite_agent_output_bytes_total`:                       5,
		`jobsuite_agent_jobs_running`:                             0,
		`jobsuite_agent_spool_unacked_bytes`:                      0,
		`jobsuite_agent_connected`:                                1,
		`jobsuite_agent_reconnects_total`:                         0,
		`jobsuite_agent_redirects_total`:                          0,
		`jobsuite_agent_fenced_messages_total`:                    0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("after the job: %s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for _, series := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if m[series] <= 0 {
			t.Errorf("%s = %v, want > 0", series, m[series])
		}
	}

	// Without its controller the agent is disconnected and keeps trying.
	stopServer()
	if err := <-serverDone; err != nil {
		t.Errorf("controller Run: %v", err)
	}
	serverDone <- nil // for the deferred wait
	waitFor(t, "the agent to notice the controller is gone", func() bool {
		m := scrapeAgent(t, addr)
		return m["jobsuite_agent_connected"] == 0 && m["jobsuite_agent_reconnects_total"] >= 1
	})

	// Run's return closes the listener.
	stopAgent()
	if err := <-agentDone; err != nil {
		t.Errorf("agent Run: %v", err)
	}
	agentDone <- nil
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("the metrics listener still answers after Run returned")
	}
}
