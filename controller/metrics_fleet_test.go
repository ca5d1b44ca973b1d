package controller_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestMetricsRequestsAndAgents: jobsuite_build_info, the API's request
// counters by route pattern (never by path) and status code, and the
// per-agent series, capped at MetricsAgents.
func TestMetricsRequestsAndAgents(t *testing.T) {
	c := startCluster(t, "agent-1", "agent-2")
	c.stopController()
	c.cfg.Version, c.cfg.MetricsAgents = "9.8.7", 1
	c.startController()
	c.waitFor("both agents back", func() bool {
		var agents []struct{ Name string }
		c.getJSON("/agents", &agents)
		return len(agents) == 2
	})
	j := c.submit(`{"command":"echo hi"}`)
	c.waitState(j.JobID, "completed")
	if code, _ := c.do("GET", "/jobs/424242", ""); code != http.StatusNotFound {
		t.Fatalf("GET /jobs/424242: %d", code)
	}
	ws, err := c.dialWS("operator", fmt.Sprintf("/ws/jobs/%d/logs", j.JobID))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			break // the job ended: the controller closes the stream
		}
	}
	ws.Close()
	if code, body := c.do("POST", "/agents/agent-1/drain", ""); code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, body)
	}

	var m map[string]float64
	c.waitFor("the WebSocket to be counted", func() bool {
		m = c.scrape()
		return m[`jobsuite_http_requests_total{code="101",method="GET",route="/ws/jobs/:id/logs"}`] == 1
	})
	checkMetrics(t, m, map[string]want{
		fmt.Sprintf(`jobsuite_build_info{goversion=%q,revision="unknown",version="9.8.7"}`, runtime.Version()): {"==", 1},
		`jobsuite_http_requests_total{code="201",method="POST",route="/jobs"}`:                                 {"==", 1},
		`jobsuite_http_requests_total{code="404",method="GET",route="/jobs/:id"}`:                              {"==", 1},
		`jobsuite_http_requests_total{code="200",method="POST",route="/agents/:name/drain"}`:                   {"==", 1},
		`jobsuite_http_request_duration_seconds_count{code="404",method="GET",route="/jobs/:id"}`:              {"==", 1},
		`jobsuite_connected_agent_slots{agent="agent-1"}`:                                                      {"==", 4},
		`jobsuite_connected_agent_running{agent="agent-1"}`:                                                    {"==", 0},
		`jobsuite_connected_agent_draining{agent="agent-1"}`:                                                   {"==", 1},
		`jobsuite_connected_agent_last_heartbeat_timestamp_seconds{agent="agent-1"}`:                           {">", 1.7e9},
		`jobsuite_connected_agent_info{agent="agent-1",transport="quic",version="0.1.0-dev"}`:                  {"==", 1},
		`jobsuite_connected_agents_unexported`:                                                                 {"==", 1},
	})
	for series := range m {
		switch {
		case strings.Contains(series, `agent="agent-2"`):
			t.Errorf("%s: agent-2 is beyond MetricsAgents=1", series)
		case strings.Contains(series, `route="/ws/jobs/:id/logs"`) && strings.HasPrefix(series, "jobsuite_http_request_duration"):
			t.Errorf("%s: the WebSocket's life is not a request's latency", series)
		case strings.Contains(series, "route=") && strings.ContainsAny(strings.Split(series, `route="`)[1][:2], "0123456789"):
			t.Errorf("%s: a route label holds a path, not a pattern", series)
		}
		if strings.Contains(series, `/jobs/424242`) || strings.Contains(series, fmt.Sprintf(`/jobs/%d"`, j.JobID)) {
			t.Errorf("%s: a route label holds a job ID", series)
		}
	}
}

// TestMetricsPromtool lints the controller's /metrics, with every series
// present (agents, requests, a finished job), with Prometheus's own
// checker. CI installs it (Debian's prometheus package); without it the
// test is skipped.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (apt-get install prometheus); skipping the metrics lint")
	}
	c := startCluster(t, "agent-1")
	j := c.submit(`{"command":"echo hi"}`)
	c.waitState(j.JobID, "completed")
	c.do("GET", "/jobs/999999", "")
	code, body := c.do("GET", "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if !bytes.Contains(body, []byte("jobsuite_http_requests_total")) || !bytes.Contains(body, []byte("jobsuite_connected_agent_slots")) {
		t.Error("the scrape lacks the request or per-agent series: the lint saw too little")
	}
}
