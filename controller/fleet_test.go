package controller_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"jobsuite/api"
	"jobsuite/transport"
)

// listIDs is GET path's job IDs, in order.
func (c *cluster) listIDs(path string) []uint64 {
	c.t.Helper()
	var jobs []job
	c.getJSON(path, &jobs)
	ids := []uint64{}
	for _, j := range jobs {
		ids = append(ids, j.JobID)
	}
	return ids
}

// TestJobSearch: GET /jobs?q= finds jobs by name, command, label, agent
// and state, every word at once, ignoring case; ?agent= by the agent an
// attempt ran on. Malformed searches are 400s naming the parameter.
func TestJobSearch(t *testing.T) {
	c := startCluster(t)
	c.startAgent("agent-1", 4, map[string]string{"team": "web"}, transport.ModeQUIC)
	deploy := c.submit(`{"name":"Deploy API","command":"true","labels":{"team":"web"}}`)
	build := c.submit(`{"name":"build","command":"echo make -C /srv/api","params":"test"}`)
	c.waitState(deploy.JobID, "completed")
	c.waitState(build.JobID, "completed")
	// Queued for good: no agent has gpu=yes.
	gpu := c.submit(`{"name":"train","command":"python train.py","labels":{"gpu":"yes"}}`)

	tests := map[string]struct {
		query string
		want  []uint64
	}{
		"name, any case":        {"q=deploy", []uint64{deploy.JobID}},
		"command":               {"q=train.py", []uint64{gpu.JobID}},
		"params":                {"q=test", []uint64{build.JobID}},
		"label":                 {"q=gpu%3Dyes", []uint64{gpu.JobID}},
		"label key":             {"q=team", []uint64{deploy.JobID}},
		"label, either case":    {"q=TEAM%3DWeb", []uint64{deploy.JobID}},
		"agent in q":            {"q=agent-1", []uint64{build.JobID, deploy.JobID}},
		"state":                 {"q=QUEUED", []uint64{gpu.JobID}},
		"every word":            {"q=api+completed", []uint64{build.JobID, deploy.JobID}},
		"every word, one job":   {"q=api+web", []uint64{deploy.JobID}},
		"nothing":               {"q=nothing-like-it", []uint64{}},
		"agent":                 {"agent=agent-1", []uint64{build.JobID, deploy.JobID}},
		"agent and state":       {"agent=agent-1&status=completed&q=make", []uint64{build.JobID}},
		"an agent without jobs": {"agent=agent-2", []uint64{}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := c.listIDs("/jobs?" + tt.query); !slices.Equal(got, tt.want) {
				t.Errorf("GET /jobs?%s: %v, want %v", tt.query, got, tt.want)
			}
		})
	}
	for query, field := range map[string]string{
		"q=" + strings.Repeat("x", 257):                "q",
		"q=" + strings.Repeat("a+", 17):                "q",
		"agent=" + strings.Repeat("x", 65):             "agent",
		"agent=" + "no%2Fslash":                        "agent",
		"agent=a&cursor=nope&q=x":                      "cursor",
		"q=ok&status=bogus":                            "status",
		"q=ok&label=" + strings.Repeat("k", 70) + "=v": "label",
	} {
		code, body := c.do("GET", "/jobs?"+query, "")
		var e struct{ Field string }
		json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || e.Field != field {
			t.Errorf("GET /jobs?%.40s: %d %s; want 400 naming %s", query, code, body, field)
		}
	}
}

// TestStats: GET /stats counts the stored jobs per state and sums up the
// agents, and its history ends with the present.
func TestStats(t *testing.T) {
	c := startCluster(t, "agent-1")
	done := c.submit(`{"command":"true"}`)
	c.waitState(done.JobID, "completed")
	failed := c.submit(`{"command":"exit 3"}`)
	c.waitState(failed.JobID, "failed")
	c.submit(`{"command":"true","labels":{"nowhere":"x"}}`)
	c.submit(`{"command":"true","labels":{"nowhere":"x"},"priority":"high"}`)

	var st api.StatsView
	c.getJSON("/stats", &st)
	for state, want := range map[string]int{"queued": 2, "completed": 1, "failed": 1, "running": 0, "cancelled": 0, "waiting": 0, "dispatched": 0, "timeout": 0} {
		if got, ok := st.Jobs[state]; !ok || got != want {
			t.Errorf("jobs[%s] = %d (present %v), want %d", state, got, ok, want)
		}
	}
	if st.Total != 4 || st.QueueDepth["mid"] != 1 || st.QueueDepth["high"] != 1 || st.QueueDepth["low"] != 0 {
		t.Errorf("total %d, queue depth %v; want 4, mid 1, high 1", st.Total, st.QueueDepth)
	}
	if st.Agents != (api.AgentStats{Connected: 1, Slots: 4, SlotsFree: 4}) {
		t.Errorf("agents %+v; want one with 4 free slots", st.Agents)
	}
	if len(st.History) < 2 || st.Interval <= 0 {
		t.Fatalf("history of %d samples every %vs; want at least the start and now", len(st.History), st.Interval)
	}
	now := st.History[len(st.History)-1]
	if now.Queued != 2 || now.Submitted != 4 || now.Completed != 1 || now.Failed != 1 || now.Slots != 4 {
		t.Errorf("the last sample %+v; want 2 queued, 4 submitted, 1 completed, 1 failed, 4 slots", now)
	}
	for i := 1; i < len(st.History); i++ {
		if st.History[i].Time.Before(st.History[i-1].Time) {
			t.Errorf("sample %d at %s is before sample %d at %s", i, st.History[i].Time, i-1, st.History[i-1].Time)
		}
	}
	code, body := doWith(t, c.httpClient("viewer"), "GET", c.base+"/stats", "")
	if code != http.StatusOK {
		t.Errorf("GET /stats as viewer: %d %s", code, body)
	}
	var counts api.StatsView
	c.getJSON("/stats?history=0", &counts)
	if counts.Total != 4 || len(counts.History) != 0 {
		t.Errorf("GET /stats?history=0: total %d, %d samples; want 4 and none", counts.Total, len(counts.History))
	}
	if code, body := c.do("GET", "/stats?history=maybe", ""); code != http.StatusBadRequest {
		t.Errorf("GET /stats?history=maybe: %d %s; want 400", code, body)
	}
}

// TestAgentPageRoutes: GET /agents/:name, POST /agents/:name/undrain
// (audited, and jobs flow again), and their errors.
func TestAgentPageRoutes(t *testing.T) {
	c := startCluster(t, "agent-1")
	var a api.AgentInfo
	c.getJSON("/agents/agent-1", &a)
	if a.Name != "agent-1" || a.Slots != 4 || a.Draining || a.DrainedBy != "" {
		t.Errorf("GET /agents/agent-1: %+v", a)
	}
	if code, body := c.do("POST", "/agents/agent-1/drain", ""); code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, body)
	}
	c.getJSON("/agents/agent-1", &a)
	if !a.Draining || a.DrainedBy != "operator" {
		t.Errorf("after drain: draining %v by %q; want by operator", a.Draining, a.DrainedBy)
	}
	held := c.submit(`{"command":"echo held"}`)
	if j := c.job(held.JobID); j.Status != "queued" {
		t.Fatalf("a job submitted to a drained fleet is %s, want queued", j.Status)
	}
	code, body := c.do("POST", "/agents/agent-1/undrain", "")
	if code != http.StatusOK {
		t.Fatalf("undrain: %d %s", code, body)
	}
	var undrained api.AgentInfo
	if err := json.Unmarshal(body, &undrained); err != nil || undrained.Name != "agent-1" || undrained.Draining || undrained.DrainedBy != "" {
		t.Errorf("undrain answered %s (%v); want the agent, not draining", body, err)
	}
	c.waitState(held.JobID, "completed")

	var entries []struct{ Action, Target, Who string }
	c.getJSON("/audit", &entries)
	var actions []string
	for _, e := range entries {
		if e.Target == "agent agent-1" {
			actions = append(actions, e.Action+" by "+e.Who)
		}
	}
	if !slices.Equal(actions, []string{"undrain by operator", "drain by operator"}) {
		t.Errorf("audit entries for agent-1: %q; want the undrain and the drain, newest first", actions)
	}

	for path, want := range map[string]int{
		"GET /agents/agent-9":          http.StatusNotFound,
		"POST /agents/agent-9/undrain": http.StatusNotFound,
		"GET /agents/no%20space":       http.StatusBadRequest,
		"POST /agents/a%20b/undrain":   http.StatusBadRequest,
	} {
		method, p, _ := strings.Cut(path, " ")
		if code, body := c.do(method, p, ""); code != want {
			t.Errorf("%s: %d %s; want %d", path, code, body, want)
		}
	}
	if code, body := doWith(t, c.httpClient("viewer"), "POST", c.base+"/agents/agent-1/undrain", ""); code != http.StatusForbidden {
		t.Errorf("undrain as viewer: %d %s; want 403", code, body)
	}
}

// TestResubmit: POST /jobs/resubmit queues a copy of a job, audited.
func TestResubmit(t *testing.T) {
	c := startCluster(t, "agent-1")
	orig := c.submit(`{"name":"again","command":"echo $GREETING","env":{"GREETING":"hi"},"priority":"high","retries":2,"idempotency_key":"k1","labels":{"agent":"any"}}`)
	if code, body := c.do("POST", "/agents/agent-1/drain", ""); code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, body)
	}
	code, body := c.do("POST", "/jobs/resubmit", fmt.Sprintf(`{"job_id":%d}`, orig.JobID))
	if code != http.StatusCreated {
		t.Fatalf("resubmit: %d %s", code, body)
	}
	var copyJob struct {
		JobID          uint64            `json:"job_id"`
		Name           string            `json:"name"`
		Command        string            `json:"command"`
		Priority       any               `json:"priority"`
		MaxRetries     int               `json:"max_retries"`
		Env            map[string]string `json:"env"`
		Labels         map[string]string `json:"labels"`
		IdempotencyKey string            `json:"idempotency_key"`
		Status         string            `json:"status"`
	}
	if err := json.Unmarshal(body, &copyJob); err != nil {
		t.Fatal(err)
	}
	if copyJob.JobID == orig.JobID || copyJob.Name != "again" || copyJob.Command != "echo $GREETING" || copyJob.Priority != "high" ||
		copyJob.MaxRetries != 2 || copyJob.Env["GREETING"] != "hi" || copyJob.Labels["agent"] != "any" || copyJob.IdempotencyKey != "" || copyJob.Status != "queued" {
		t.Errorf("the copy: %s", body)
	}
	var entries []struct{ Action, Target, Detail string }
	c.getJSON("/audit", &entries)
	if len(entries) == 0 || entries[0].Action != "resubmit" || entries[0].Target != fmt.Sprintf("job %d", copyJob.JobID) ||
		entries[0].Detail != fmt.Sprintf("a copy of job %d", orig.JobID) {
		t.Errorf("audit log %+v; want the resubmit newest", entries)
	}
	for body, want := range map[string]int{
		`{"job_id":999}`:          http.StatusNotFound,
		`{"job_id":0}`:            http.StatusBadRequest,
		`{"id":1}`:                http.StatusBadRequest,
		`{}`:                      http.StatusBadRequest,
		`nope`:                    http.StatusBadRequest,
		strings.Repeat(" ", 5000): http.StatusRequestEntityTooLarge,
	} {
		if code, b := c.do("POST", "/jobs/resubmit", body); code != want {
			t.Errorf("resubmit %.20q: %d %s; want %d", body, code, b, want)
		}
	}
	if code, b := doWith(t, c.httpClient("viewer"), "POST", c.base+"/jobs/resubmit", `{"job_id":1}`); code != http.StatusForbidden {
		t.Errorf("resubmit as viewer: %d %s; want 403", code, b)
	}
}

// TestWhoAmI: the identity a request was admitted with.
func TestWhoAmI(t *testing.T) {
	c := startCluster(t)
	for name, want := range map[string]api.WhoAmI{
		"operator": {Name: "operator", Role: "operator", Via: "certificate"},
		"viewer":   {Name: "viewer", Role: "viewer", Via: "certificate"},
	} {
		code, body := doWith(t, c.httpClient(name), "GET", c.base+"/whoami", "")
		var got api.WhoAmI
		if err := json.Unmarshal(body, &got); code != http.StatusOK || err != nil || got != want {
			t.Errorf("GET /whoami as %s: %d %s; want %+v", name, code, body, want)
		}
	}
	tok := createToken(t, c, "viewer")
	req, err := http.NewRequest("GET", c.base+"/whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.httpClient("operator").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got api.WhoAmI
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got != (api.WhoAmI{Name: "ui-viewer", Role: "viewer", Via: "token"}) {
		t.Errorf("GET /whoami with a viewer token: %+v, %v", got, err)
	}
}

// TestOutputWhileRunning: a running job's log_bytes counts the output
// stored so far, in GET /jobs/:id and in the list.
func TestOutputWhileRunning(t *testing.T) {
	c := startCluster(t, "agent-1")
	gate := filepath.Join(t.TempDir(), "gate")
	j := c.submit(jobJSON(t, map[string]any{"command": fmt.Sprintf("printf '0123456789'; while [ ! -e %s ]; do sleep 0.05; done", gate)}))
	var got struct {
		Status   string `json:"status"`
		LogBytes uint64 `json:"log_bytes"`
	}
	// The output is stored as it arrives; the started transition rides
	// the committer's next round, so for a moment a job can show its
	// output while still dispatched. Wait for both.
	c.waitFor("the output to be stored and the job running", func() bool {
		c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &got)
		return got.LogBytes == 10 && got.Status == "running"
	})
	var list []struct {
		JobID    uint64 `json:"job_id"`
		LogBytes uint64 `json:"log_bytes"`
	}
	c.getJSON("/jobs", &list)
	if len(list) != 1 || list[0].LogBytes != 10 {
		t.Errorf("GET /jobs: %+v; want the job with 10 bytes", list)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c.waitState(j.JobID, "completed")
	c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &got)
	if got.LogBytes != 10 {
		t.Errorf("log_bytes %d once finished, want 10", got.LogBytes)
	}
}
