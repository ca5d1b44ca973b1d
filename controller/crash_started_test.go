package controller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/controller/store"
	"jobsuite/transport"
)

// A job's "started" transition is not synced on its own: it rides the
// next round (sched.Committer.AddLazy). TestCrashStartedNotSynced kills
// a real controller process with kill -9 right after it recorded a start
// in memory (it logged the start) and before anything else
// happened, checks the store it left holding the attempt as dispatched,
// restarts it, and requires that nothing was lost: the agent's next job
// stream sends Started again, so the attempt ends completed, the only
// one, with its PID and start time and one "started" event.
//
// The job prints only at its end: output starts a round of its own, and
// the start would ride it before the kill.
func TestCrashStartedNotSynced(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds the binary; skipped with -short")
	}
	work := t.TempDir()
	p, client := startCrashController(t, work)

	agentLog, err := os.Create(filepath.Join(work, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer agentLog.Close()
	a, err := agent.New(agent.Config{
		Controller: p.agentAddr, TLS: files(p.pki, "agent-1"), Slots: 2, Transport: transport.ModeQUIC,
		StateDir: filepath.Join(work, "agent-1"), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 250 * time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "agent-1", Level: hclog.Info, Output: agentLog}),
	})
	if err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgent := context.WithCancel(context.Background())
	var agentWG sync.WaitGroup
	agentWG.Add(1)
	go func() {
		defer agentWG.Done()
		if err := a.Run(agentCtx); err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	defer func() { stopAgent(); agentWG.Wait() }()

	// Until two kills found a start in memory only, or maxTries: on a
	// loaded machine the poll may see the gauge after the start's round.
	const maxTries = 12
	notDurable, tries := 0, 0
	for i := 0; notDurable < 2 && i < maxTries; i++ {
		tries++
		want := fmt.Sprintf("done-%d\n", i)
		code, body, err := client.do("POST", "/jobs", fmt.Sprintf(`{"command":"sleep 1.5; echo done-%d"}`, i))
		if err != nil || code != 201 {
			t.Fatalf("submit %d: %d %s %v", i, code, body, err)
		}
		var v api.JobView
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		// As soon as the controller logs the start (its scheduler logs
		// each transition as it makes it, before the start is queued):
		// the test reads the log file in a loop without pause and needs
		// nothing of the controller, so the kill lands within the
		// start's wait for a round even on a loaded machine.
		line := fmt.Sprintf("job started: job=%d ", v.JobID)
		if !waitLogLine(p.logFile(p.starts), line, waitLimit) {
			t.Fatalf("job %d: no %q in the controller's log after %v", v.JobID, line, waitLimit)
		}
		p.kill()

		st, err := store.Open(p.data, store.Options{Logger: hclog.NewNullLogger()})
		if err != nil {
			t.Fatal(err)
		}
		j, err := st.Get(v.JobID)
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		switch j.State {
		case store.Dispatched:
			notDurable++
		case store.Running:
			// The start rode a round before the kill (another command
			// came, or the wait for one ended): nothing to prove here.
		default:
			t.Fatalf("job %d: the store holds it %s after the kill", v.JobID, j.State)
		}
		t.Logf("try %d: job %d is %s in the store at the kill", i, v.JobID, j.State)

		p.start(client)
		var got api.JobView
		poll(t, fmt.Sprintf("job %d to finish", v.JobID), 60*time.Second, func() (bool, string) {
			if err := client.get(fmt.Sprintf("/jobs/%d", v.JobID), &got); err != nil {
				return false, err.Error()
			}
			return store.State(got.Status).Terminal(), string(got.Status)
		})
		if got.Status != "completed" || len(got.Attempts) != 1 {
			t.Fatalf("job %d: %s with %d attempts (%+v), want completed in one", v.JobID, got.Status, len(got.Attempts), got.Attempts)
		}
		at := got.Attempts[0]
		if at.Outcome != "completed" || at.PID == 0 || at.StartedAt == nil || at.StartedAt.IsZero() {
			t.Errorf("job %d: attempt %+v: want completed with its PID and start time", v.JobID, at)
		}
		var evs []api.Event
		if err := client.get(fmt.Sprintf("/jobs/%d/events", v.JobID), &evs); err != nil {
			t.Fatal(err)
		}
		started := 0
		for _, e := range evs {
			if e.Type == "started" {
				started++
			}
		}
		if started != 1 {
			t.Errorf("job %d: %d started events, want 1: %+v", v.JobID, started, evs)
		}
		if code, logs, err := client.do("GET", fmt.Sprintf("/jobs/%d/logs", v.JobID), ""); err != nil || code != 200 || string(logs) != want {
			t.Errorf("job %d: logs %d %q %v, want %q", v.JobID, code, logs, err, want)
		}
	}
	if notDurable == 0 {
		t.Fatalf("in %d tries the kill never came before the start was durable: nothing was proved", tries)
	}
	t.Logf("%d of %d kills came while the start was in memory only", notDurable, tries)
}

// waitLogLine reads the file at path until a line holds substr, without
// pausing between reads; false after timeout.
func waitLogLine(path, substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	var seen []byte
	buf := make([]byte, 64<<10)
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for time.Now().Before(deadline) {
		n, _ := f.Read(buf)
		if n == 0 {
			runtime.Gosched()
			continue
		}
		seen = append(seen, buf[:n]...)
		if bytes.Contains(seen, []byte(substr)) {
			return true
		}
		if i := bytes.LastIndexByte(seen, '\n'); i >= 0 {
			seen = seen[i+1:] // keep only a partial last line
		}
	}
	return false
}
