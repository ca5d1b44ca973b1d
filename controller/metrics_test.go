package controller_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// parseMetrics reads the Prometheus text format into series → value,
// the series written as in the text: name{label="value",...}.
func parseMetrics(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("malformed metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// scrape gets the controller's /metrics over the API as operator.
func (c *cluster) scrape() map[string]float64 {
	c.t.Helper()
	code, body := c.do("GET", "/metrics", "")
	if code != http.StatusOK {
		c.t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return parseMetrics(c.t, body)
}

// want checks series by comparison: "==", ">=" or ">".
type want struct {
	op string
	v  float64
}

func checkMetrics(t *testing.T, got map[string]float64, wants map[string]want) {
	t.Helper()
	for series, w := range wants {
		v, ok := got[series]
		if !ok {
			t.Errorf("%s is missing", series)
			continue
		}
		var good bool
		switch w.op {
		case "==":
			good = v == w.v
		case ">=":
			good = v >= w.v
		case ">":
			good = v > w.v
		default:
			t.Fatalf("bad op %q", w.op)
		}
		if !good {
			t.Errorf("%s = %v, want %s %v", series, v, w.op, w.v)
		}
	}
}

func TestMetricsAfterAJob(t *testing.T) {
	c := startCluster(t, "agent-1")
	j := c.submit(`{"command":"echo hello metrics","retries":0}`)
	c.waitState(j.JobID, "completed")
	f := c.submit(`{"command":"exit 3","retries":1,"backoff":{"base":0.01,"max":0.01}}`)
	c.waitState(f.JobID, "failed")

	code, body := c.do("GET", "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	m := parseMetrics(t, body)
	checkMetrics(t, m, map[string]want{
		`jobsuite_submissions_total`:                     {">=", 2},
		`jobsuite_completions_total{result="completed"}`: {">=", 1},
		`jobsuite_completions_total{result="failed"}`:    {">=", 1},
		`jobsuite_completions_total{result="timeout"}`:   {"==", 0},
		`jobsuite_completions_total{result="cancelled"}`: {"==", 0},
		`jobsuite_retries_total`:                         {"==", 1},
		`jobsuite_lost_attempts_total`:                   {"==", 0},
		`jobsuite_jobs{state="queued"}`:                  {"==", 0},
		`jobsuite_jobs{state="waiting"}`:                 {"==", 0},
		`jobsuite_jobs{state="dispatched"}`:              {"==", 0},
		`jobsuite_jobs{state="running"}`:                 {"==", 0},
		`jobsuite_queue_depth{priority="mid"}`:           {"==", 0},
		`jobsuite_dispatch_latency_seconds_count`:        {"==", 3}, // one job, and two attempts of the other
		`jobsuite_attempt_duration_seconds_count`:        {"==", 3},
		`jobsuite_agents_connected`:                      {"==", 1},
		`jobsuite_agent_slots_used`:                      {"==", 0},
		`jobsuite_agent_slots_free`:                      {"==", 4},
		`jobsuite_log_bytes_total`:                       {">=", float64(len("hello metrics\n"))},
		`jobsuite_websocket_followers`:                   {"==", 0},
		`jobsuite_store_disk_usage_bytes`:                {">", 0},
		`jobsuite_store_compactions_total`:               {">=", 0},
		`jobsuite_store_write_stalls_total`:              {">=", 0},
		`jobsuite_store_memtable_bytes`:                  {">", 0},
		`go_goroutines`:                                  {">", 0},
		`process_resident_memory_bytes`:                  {">", 0},
	})
	for _, name := range []string{"jobsuite_jobs", "jobsuite_dispatch_latency_seconds", "jobsuite_submissions_total"} {
		if !bytes.Contains(body, []byte("# HELP "+name+" ")) || !bytes.Contains(body, []byte("# TYPE "+name+" ")) {
			t.Errorf("%s has no HELP or TYPE line", name)
		}
	}

	// A viewer may scrape; an agent certificate may not.
	if code, b := doWith(t, c.httpClient("viewer"), "GET", c.base+"/metrics", ""); code != http.StatusOK || !bytes.Contains(b, []byte("jobsuite_agents_connected 1")) {
		t.Errorf("viewer GET /metrics: %d %.200s", code, b)
	}
	if code, b := doWith(t, c.httpClient("agent-1"), "GET", c.base+"/metrics", ""); code != http.StatusForbidden {
		t.Errorf("agent GET /metrics: %d %s, want 403", code, b)
	}
}

// TestMetricsQueueAndPlainListener checks the queue gauges, that job
// counts are rebuilt from the store after a restart, and the optional
// plain-HTTP listener.
func TestMetricsQueueAndPlainListener(t *testing.T) {
	c := startCluster(t) // no agents: jobs stay queued
	if c.srv.MetricsAddr() != "" {
		t.Fatalf("MetricsAddr = %q without Config.MetricsAddr", c.srv.MetricsAddr())
	}
	for _, p := range []string{`"high"`, `"high"`, `60`, `"low"`} {
		c.submit(`{"command":"true","priority":` + p + `}`)
	}
	queued := map[string]want{
		`jobsuite_jobs{state="queued"}`:          {"==", 4},
		`jobsuite_queue_depth{priority="high"}`:  {"==", 2},
		`jobsuite_queue_depth{priority="other"}`: {"==", 1},
		`jobsuite_queue_depth{priority="low"}`:   {"==", 1},
		`jobsuite_queue_depth{priority="mid"}`:   {"==", 0},
		`jobsuite_agents_connected`:              {"==", 0},
		`jobsuite_agent_slots_free`:              {"==", 0},
	}
	m := c.scrape()
	checkMetrics(t, m, queued)
	checkMetrics(t, m, map[string]want{`jobsuite_submissions_total`: {"==", 4}})

	c.stopController()
	c.cfg.MetricsAddr = "127.0.0.1:0"
	c.startController()
	addr := c.srv.MetricsAddr()
	if addr == "" {
		t.Fatal("MetricsAddr is empty with Config.MetricsAddr set")
	}
	plain := func() map[string]float64 {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("plain GET /metrics: %d %q %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		return parseMetrics(t, b)
	}
	m = plain()
	checkMetrics(t, m, queued) // rebuilt from the store at start
	checkMetrics(t, m, map[string]want{`jobsuite_submissions_total`: {"==", 0}})

	// Cancelling a queued job moves it from the queue to the completions.
	var jobs []job
	c.getJSON("/jobs?status=queued", &jobs)
	if len(jobs) != 4 {
		t.Fatalf("%d queued jobs, want 4", len(jobs))
	}
	if code, b := c.do("DELETE", fmt.Sprintf("/jobs/%d", jobs[0].JobID), ""); code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, b)
	}
	checkMetrics(t, plain(), map[string]want{
		`jobsuite_jobs{state="queued"}`:                  {"==", 3},
		`jobsuite_completions_total{result="cancelled"}`: {"==", 1},
	})

	// The plain listener serves /metrics and nothing else.
	for _, tc := range []struct{ method, path string }{{"GET", "/jobs"}, {"POST", "/metrics"}} {
		req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain %s %s: %d, want an error", tc.method, tc.path, resp.StatusCode)
		}
	}
}
