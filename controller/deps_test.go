package controller_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/transport"
)

// Dependencies through the API with a real agent: a chain runs in
// order, a failure cancels what runs after it (with the reason), an
// after_any job runs anyway, a blocked job shows in ?status=blocked and
// can be cancelled, and an unknown ID is refused naming the field.
func TestDependenciesEndToEnd(t *testing.T) {
	c := startCluster(t) // no agent yet: nothing runs until we look
	gate := c.submit(`{"command": "true"}`)
	ok := c.submit(fmt.Sprintf(`{"command": "echo ok", "after": [%d]}`, gate.JobID))
	bad := c.submit(fmt.Sprintf(`{"command": "exit 3", "after": [%d]}`, ok.JobID))
	afterBad := c.submit(fmt.Sprintf(`{"command": "echo never", "after": [%d]}`, bad.JobID))
	anyway := c.submit(fmt.Sprintf(`{"command": "echo anyway", "after": [%d], "after_any": true}`, bad.JobID))
	cancelMe := c.submit(fmt.Sprintf(`{"command": "echo no", "after": [%d]}`, gate.JobID))

	if ok.Status != "blocked" || ok.Reason != fmt.Sprintf("waiting for job %d", gate.JobID) {
		t.Fatalf("job after the gate: %s %q, want blocked, waiting for job %d", ok.Status, ok.Reason, gate.JobID)
	}
	var blocked []api.JobView
	c.getJSON("/jobs?status=blocked", &blocked)
	if len(blocked) != 5 {
		t.Errorf("?status=blocked lists %d jobs, want 5", len(blocked))
	}
	if code, body := c.do("DELETE", fmt.Sprintf("/jobs/%d", cancelMe.JobID), ""); code != 200 {
		t.Fatalf("cancel of a blocked job: %d %s", code, body)
	}

	code, body := c.do("POST", "/jobs", `{"command": "true", "after": [999999]}`)
	var e api.Error
	_ = json.Unmarshal(body, &e)
	if code != 400 || e.Field != "after" || !strings.Contains(e.Error, "999999") {
		t.Errorf("after an unknown job: %d %s, want 400 naming field after and the ID", code, body)
	}
	code, body = c.do("POST", "/jobs/batch", fmt.Sprintf(`[{"command": "true"}, {"command": "true", "after": [%d, 888888]}]`, gate.JobID))
	if code != 400 || !strings.Contains(string(body), "888888") {
		t.Errorf("batch after an unknown job: %d %s, want 400 naming it", code, body)
	}

	c.startAgent("agent-1", 4, nil, transport.ModeQUIC)
	c.waitState(anyway.JobID, "completed")
	if j := c.waitState(afterBad.JobID, "cancelled"); j.Reason != fmt.Sprintf("dependency %d failed", bad.JobID) {
		t.Errorf("job after the failed one: reason %q", j.Reason)
	}
	for id, want := range map[uint64]string{gate.JobID: "completed", ok.JobID: "completed", bad.JobID: "failed", cancelMe.JobID: "cancelled"} {
		if j := c.job(id); j.Status != want {
			t.Errorf("job %d: %s, want %s", id, j.Status, want)
		}
	}
	// The order: each ran after what it waited for.
	first, second := c.job(gate.JobID), c.job(ok.JobID)
	started, _ := time.Parse(time.RFC3339Nano, second.StartedAt)
	finished, _ := time.Parse(time.RFC3339Nano, first.FinishedAt)
	if started.Before(finished) {
		t.Errorf("job %d started at %s, before job %d finished at %s", ok.JobID, second.StartedAt, gate.JobID, first.FinishedAt)
	}
}
