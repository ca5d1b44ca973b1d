package controller_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/transport"
)

// fanoutCluster is a controller with five real agents, web-1..web-3
// labelled role=web, db-1 and db-2 not.
func fanoutCluster(t *testing.T) *cluster {
	c := startClusterWith(t, func(cfg *controller.Config) { cfg.OfflineTimeout = 2 * time.Second })
	for _, n := range []string{"db-1", "web-1", "db-2", "web-2", "web-3"} {
		if _, _, err := certs.IssueFiles(c.dir, certs.Request{Role: certs.RoleAgent, Name: n}); err != nil {
			t.Fatal(err)
		}
		var labels map[string]string
		if strings.HasPrefix(n, "web") {
			labels = map[string]string{"role": "web"}
		}
		c.startAgent(n, 2, labels, transport.ModeQUIC)
	}
	return c
}

func (c *cluster) fanout(body string) api.JobView {
	c.t.Helper()
	code, b := c.do("POST", "/jobs", body)
	if code != 201 {
		c.t.Fatalf("fan-out %s: %d %s", body, code, b)
	}
	var v api.JobView
	if err := json.Unmarshal(b, &v); err != nil {
		c.t.Fatal(err)
	}
	return v
}

func (c *cluster) view(id uint64) api.JobView {
	c.t.Helper()
	var v api.JobView
	c.getJSON(fmt.Sprintf("/jobs/%d", id), &v)
	return v
}

func (c *cluster) waitView(id uint64, states ...string) api.JobView {
	c.t.Helper()
	var v api.JobView
	c.waitFor(fmt.Sprintf("job %d to be %v", id, states), func() bool {
		v = c.view(id)
		return slices.Contains(states, v.Status)
	})
	return v
}

// Fan-out over five real agents, three of them labelled: only those
// three get a child, each runs on its own agent, batch 1 runs them one
// at a time (each child dispatched after the previous one ended, by
// the recorded times), and a job after the parent waits for all of it.
func TestFanoutEndToEnd(t *testing.T) {
	c := fanoutCluster(t)
	p := c.fanout(`{"command": "echo hello from $JOBSUITE_JOB_ID", "fanout": {"labels": {"role": "web"}, "batch": 1}}`)
	if p.Fanout == nil || p.Fanout.Children != 3 || len(p.Children) != 3 {
		t.Fatalf("parent: %+v", p)
	}
	after := c.submit(fmt.Sprintf(`{"command": "true", "after": [%d]}`, p.JobID))
	var hosts []string
	for _, ch := range p.Children {
		hosts = append(hosts, ch.Agent)
	}
	if got := strings.Join(hosts, ","); got != "web-1,web-2,web-3" {
		t.Fatalf("children on %s, want web-1,web-2,web-3", got)
	}
	final := c.waitView(p.JobID, "completed", "failed", "cancelled")
	if final.Status != "completed" || final.Reason != "3 completed" {
		t.Fatalf("parent ended %s %q", final.Status, final.Reason)
	}
	var prevEnd time.Time
	for i, ch := range final.Children {
		v := c.view(ch.JobID)
		if v.Status != "completed" || len(v.Attempts) != 1 || v.Attempts[0].Agent != ch.Agent || v.Parent != p.JobID {
			t.Fatalf("child %d: %s on %+v, parent %d", ch.JobID, v.Status, v.Attempts, v.Parent)
		}
		a := v.Attempts[0]
		if i > 0 && !a.DispatchedAt.After(prevEnd) {
			t.Errorf("child on %s dispatched at %s, before the previous child ended at %s", ch.Agent, a.DispatchedAt, prevEnd)
		}
		if a.StartedAt == nil || a.StartedAt.Before(prevEnd) {
			t.Errorf("child on %s started at %v, before the previous one ended at %s", ch.Agent, a.StartedAt, prevEnd)
		}
		prevEnd = *a.FinishedAt
		if out := c.logs(ch.JobID); out != fmt.Sprintf("hello from %d\n", ch.JobID) {
			t.Errorf("child %d output %q", ch.JobID, out)
		}
	}
	if j := c.waitState(after.JobID, "completed"); j.Status != "completed" {
		t.Errorf("the job after the fan-out: %s", j.Status)
	}
	// GET /jobs?parent= lists the children only, newest first.
	var kids []api.JobView
	c.getJSON(fmt.Sprintf("/jobs?parent=%d", p.JobID), &kids)
	if len(kids) != 3 || kids[0].JobID != p.Children[2].JobID || kids[2].JobID != p.Children[0].JobID {
		t.Errorf("GET /jobs?parent=%d: %d jobs %+v; want the 3 children", p.JobID, len(kids), kids)
	}
	if code, b := c.do("GET", "/jobs?parent=x", ""); code != 400 || !strings.Contains(string(b), `"field": "parent"`) && !strings.Contains(string(b), `"field":"parent"`) {
		t.Errorf("GET /jobs?parent=x: %d %s; want 400 naming parent", code, b)
	}
	// Run again: a fan-out again, over the same selector and batch; a
	// child run again stays on its host.
	code, b := c.do("POST", "/jobs/resubmit", fmt.Sprintf(`{"job_id": %d}`, p.JobID))
	var again api.JobView
	_ = json.Unmarshal(b, &again)
	if code != 201 || again.Fanout == nil || again.Fanout.Children != 3 || again.Fanout.Batch != 1 {
		t.Errorf("resubmit of the parent: %d %s", code, b)
	}
	code, b = c.do("POST", "/jobs/resubmit", fmt.Sprintf(`{"job_id": %d}`, p.Children[1].JobID))
	var child api.JobView
	_ = json.Unmarshal(b, &child)
	if code != 201 || child.Agent != "web-2" {
		t.Errorf("resubmit of a child: %d %s", code, b)
	}
	if v := c.waitView(child.JobID, "completed"); v.Attempts[0].Agent != "web-2" {
		t.Errorf("the child run again ran on %s", v.Attempts[0].Agent)
	}
}

// Refusals name the field; no matching agent is 409.
func TestFanoutValidation(t *testing.T) {
	c := fanoutCluster(t)
	tests := map[string]struct {
		body  string
		code  int
		field string
	}{
		"no selector":    {`{"command": "true", "fanout": {}}`, 400, "fanout"},
		"bad batch":      {`{"command": "true", "fanout": {"all": true, "batch": "abc"}}`, 400, "fanout.batch"},
		"zero batch":     {`{"command": "true", "fanout": {"all": true, "batch": 0}}`, 400, "fanout.batch"},
		"percent > 100":  {`{"command": "true", "fanout": {"all": true, "max_failures": "150%"}}`, 400, "fanout.max_failures"},
		"bad label":      {`{"command": "true", "fanout": {"labels": {"a b": "c"}}}`, 400, "fanout.labels"},
		"job labels":     {`{"command": "true", "labels": {"a": "b"}, "fanout": {"all": true}}`, 400, "labels"},
		"no agent":       {`{"command": "true", "fanout": {"labels": {"role": "db"}}}`, 409, "fanout"},
		"in a batch":     {`[{"command": "true", "fanout": {"all": true}}]`, 400, ""},
		"percent ok 50%": {`{"command": "true", "fanout": {"all": true, "batch": "50%"}}`, 201, ""},
	}
	for name, tc := range tests {
		path := "/jobs"
		if strings.HasPrefix(tc.body, "[") {
			path = "/jobs/batch"
		}
		code, body := c.do("POST", path, tc.body)
		var e api.Error
		_ = json.Unmarshal(body, &e)
		if code != tc.code || (tc.field != "" && e.Field != tc.field) {
			t.Errorf("%s: %d %s, want %d naming field %q", name, code, body, tc.code, tc.field)
		}
		if name == "percent ok 50%" {
			var v api.JobView
			_ = json.Unmarshal(body, &v)
			if v.Fanout == nil || v.Fanout.Batch != 3 {
				t.Errorf("50%% of 5: batch %+v, want 3", v.Fanout)
			}
		}
	}
}

// max_failures stops the rollout: no further child starts, the rest
// are cancelled with the reason, and the parent fails.
func TestFanoutMaxFailuresEndToEnd(t *testing.T) {
	c := fanoutCluster(t)
	p := c.fanout(`{"command": "exit 3", "fanout": {"all": true, "batch": 1, "max_failures": 1}}`)
	final := c.waitView(p.JobID, "completed", "failed", "cancelled")
	if final.Status != "failed" || !final.Fanout.Stopped {
		t.Fatalf("parent ended %s %q", final.Status, final.Reason)
	}
	for i, ch := range final.Children {
		want, reason := "cancelled", "rollout stopped: 1 failures reached max_failures 1"
		if i == 0 {
			want, reason = "failed", ""
		}
		if ch.Status != want || (reason != "" && ch.Reason != reason) {
			t.Errorf("child on %s: %s %q, want %s %q", ch.Agent, ch.Status, ch.Reason, want, reason)
		}
		if i > 0 && len(c.view(ch.JobID).Attempts) != 0 {
			t.Errorf("child on %s ran after the rollout stopped", ch.Agent)
		}
	}
	if final.Children[0].ExitCode == nil || *final.Children[0].ExitCode != 3 {
		t.Errorf("first child's exit code %v, want 3", final.Children[0].ExitCode)
	}
}

// Cancel of the parent kills every running child.
func TestFanoutCancelEndToEnd(t *testing.T) {
	c := fanoutCluster(t)
	p := c.fanout(`{"command": "sleep 60", "fanout": {"labels": {"role": "web"}}}`)
	for _, ch := range p.Children {
		c.waitState(ch.JobID, "running")
	}
	if code, body := c.do("DELETE", fmt.Sprintf("/jobs/%d", p.JobID), ""); code != 202 {
		t.Fatalf("cancel of the parent: %d %s", code, body)
	}
	final := c.waitView(p.JobID, "completed", "failed", "cancelled")
	if final.Status != "cancelled" {
		t.Fatalf("parent ended %s %q", final.Status, final.Reason)
	}
	for _, ch := range final.Children {
		v := c.view(ch.JobID)
		if v.Status != "cancelled" || v.Result == nil || v.Result.Outcome != "cancelled" {
			t.Errorf("child on %s: %s %+v, want cancelled (killed)", ch.Agent, v.Status, v.Result)
		}
	}
}

// A child of a known agent that is not connected waits, saying so, and
// fails when the agent has not come back within the offline timeout;
// without include_disconnected it is not chosen.
func TestFanoutDisconnectedAgent(t *testing.T) {
	c := fanoutCluster(t)
	c.agents["web-2"]()
	c.waitFor("web-2 gone", func() bool {
		var agents []api.AgentInfo
		c.getJSON("/agents", &agents)
		return !slices.ContainsFunc(agents, func(a api.AgentInfo) bool { return a.Name == "web-2" })
	})
	p := c.fanout(`{"command": "true", "fanout": {"labels": {"role": "web"}}}`)
	if len(p.Children) != 2 {
		t.Errorf("without include_disconnected: %d children, want 2", len(p.Children))
	}
	p = c.fanout(`{"command": "true", "fanout": {"labels": {"role": "web"}, "include_disconnected": true}}`)
	if len(p.Children) != 3 || p.Children[1].Agent != "web-2" {
		t.Fatalf("with include_disconnected: %+v", p.Children)
	}
	if r := c.view(p.Children[1].JobID).Reason; !strings.Contains(r, "agent web-2 is not connected") {
		t.Errorf("waiting child's reason %q", r)
	}
	final := c.waitView(p.JobID, "completed", "failed", "cancelled")
	if final.Status != "failed" || final.Children[1].Status != "failed" || final.Children[1].Reason != "agent web-2 did not connect within 2s" {
		t.Errorf("parent %s; child %+v", final.Status, final.Children[1])
	}
}
