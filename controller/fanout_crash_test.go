package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/transport"
)

// TestCrashFanout kill -9s a real controller twice in the middle of a
// rolling fan-out (six agents, two at a time) and restarts it on the
// same data: the rollout resumes where it was and ends completed, and
// every child ran exactly once (each appends a line to a file of its
// own; agents reclaim the attempts they run across the restart).
func TestCrashFanout(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds the binary; skipped with -short")
	}
	work := t.TempDir()
	p, client := startCrashController(t, work)
	runs := filepath.Join(work, "runs")
	if err := os.Mkdir(runs, 0o755); err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgents := context.WithCancel(context.Background())
	var agentWG sync.WaitGroup
	defer func() { stopAgents(); agentWG.Wait() }()
	for i := 1; i <= 6; i++ {
		name := fmt.Sprintf("host-%d", i)
		if _, _, err := certs.IssueFiles(p.pki, certs.Request{Role: certs.RoleAgent, Name: name}); err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(agent.Config{
			Controller: p.agentAddr, TLS: files(p.pki, name), Slots: 2, Transport: transport.ModeQUIC,
			Labels: map[string]string{"pool": "crash"}, StateDir: filepath.Join(work, name),
			ReconnectMin: 50 * time.Millisecond, ReconnectMax: 250 * time.Millisecond,
			Logger: testLogger(t, name),
		})
		if err != nil {
			t.Fatal(err)
		}
		agentWG.Add(1)
		go func() {
			defer agentWG.Done()
			if err := a.Run(agentCtx); err != nil {
				t.Errorf("agent %s: %v", name, err)
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("six agents", func() bool {
		var agents []api.AgentInfo
		return client.get("/agents", &agents) == nil && len(agents) == 6
	})
	body := fmt.Sprintf(`{"command": "echo run >> %s/$JOBSUITE_JOB_ID; sleep 0.7", "retries": 1, "fanout": {"labels": {"pool": "crash"}, "batch": 2}}`, runs)
	code, b, err := client.do("POST", "/jobs", body)
	if err != nil || code != 201 {
		t.Fatalf("fan-out: %d %s %v", code, b, err)
	}
	var parent api.JobView
	if err := json.Unmarshal(b, &parent); err != nil {
		t.Fatal(err)
	}
	ended := func() int {
		var v api.JobView
		if client.get(fmt.Sprintf("/jobs/%d", parent.JobID), &v) != nil || v.Fanout == nil {
			return -1
		}
		return v.Fanout.Completed + v.Fanout.Failed + v.Fanout.Timeout + v.Fanout.Cancelled
	}
	for _, after := range []int{1, 3} {
		waitFor(fmt.Sprintf("%d children ended", after), func() bool { return ended() >= after })
		p.kill()
		p.start(client)
	}
	var final api.JobView
	waitFor("the fan-out to end", func() bool {
		return client.get(fmt.Sprintf("/jobs/%d", parent.JobID), &final) == nil && final.FinishedAt != nil
	})
	if final.Status != "completed" || final.Reason != "6 completed" {
		t.Errorf("parent ended %s %q", final.Status, final.Reason)
	}
	// Batch 2: never more than two children ran at once.
	type span struct{ start, end time.Time }
	var spans []span
	for _, ch := range final.Children {
		data, err := os.ReadFile(filepath.Join(runs, fmt.Sprint(ch.JobID)))
		if err != nil || strings.Count(string(data), "run\n") != 1 {
			t.Errorf("child %d on %s ran %d times (%v)", ch.JobID, ch.Agent, strings.Count(string(data), "run\n"), err)
		}
		var v api.JobView
		if err := client.get(fmt.Sprintf("/jobs/%d", ch.JobID), &v); err != nil {
			t.Fatal(err)
		}
		for _, a := range v.Attempts {
			if a.Agent != ch.Agent {
				t.Errorf("child %d pinned to %s ran on %s", ch.JobID, ch.Agent, a.Agent)
			}
			if a.StartedAt != nil && a.FinishedAt != nil {
				spans = append(spans, span{*a.StartedAt, *a.FinishedAt})
			}
		}
	}
	for _, s := range spans {
		n := 0
		for _, o := range spans {
			if !o.start.After(s.start) && o.end.After(s.start) {
				n++
			}
		}
		if n > 2 {
			t.Errorf("%d children ran at once at %s (batch 2)", n, s.start)
		}
	}
	t.Logf("%d controller starts", p.starts)
}
