package controller_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/transport"
)

// TestBothTransports runs the same job scenarios over QUIC and over
// TCP+TLS+yamux (an agent with QUIC disabled, as where UDP is blocked).
func TestBothTransports(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			c := startCluster(t)
			c.startAgent("agent-1", 2, nil, mode)
			var agents []api.AgentInfo
			c.getJSON("/agents", &agents)
			if len(agents) != 1 || agents[0].Transport != string(mode) {
				t.Fatalf("agents: %+v", agents)
			}
			ok := c.submit(`{"command":"printf 'a\nb\n'; echo c >&2"}`)
			fail := c.submit(`{"command":"exit 5"}`)
			if j := c.waitState(ok.JobID, "completed"); j.ExitCode == nil || *j.ExitCode != 0 {
				t.Errorf("ok job: %+v", j)
			}
			if j := c.waitState(fail.JobID, "failed"); j.ExitCode == nil || *j.ExitCode != 5 {
				t.Errorf("failing job: %+v", j)
			}
			if got := c.logs(ok.JobID); len(got) != 6 || !strings.Contains(got, "a\nb\n") {
				t.Errorf("logs %q", got)
			}
			gate := filepath.Join(t.TempDir(), "gate")
			run := c.submit(fmt.Sprintf(`{"command":"touch %s.started; sleep 300"}`, gate))
			c.waitFor("job started", func() bool { _, err := os.Stat(gate + ".started"); return err == nil })
			if code, b := c.do("DELETE", fmt.Sprintf("/jobs/%d", run.JobID), ""); code != 202 {
				t.Fatalf("cancel: %d %s", code, b)
			}
			c.waitState(run.JobID, "cancelled")
		})
	}
}

// TestControllerRestartWhileStreaming restarts the controller while a
// job writes output; the agent keeps the job running, reconnects,
// reattaches it and resends what was not acknowledged. The stored log
// must be byte-identical to what the job wrote.
//
// The job writes each numbered line twice with the shell's own echo, to
// its output and to a copy, and pauses 50ms every 20 lines so the log
// grows at a bounded rate. (It used to spawn date and tee for every
// 30-byte line: on a loaded machine it wrote 6 lines a second and did
// not reach 10,000 bytes within the wait.)
func TestControllerRestartWhileStreaming(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			c := startCluster(t)
			c.startAgent("agent-1", 1, nil, mode)
			dir := t.TempDir()
			copyFile, gate := filepath.Join(dir, "copy"), filepath.Join(dir, "gate")
			line := `\"line $i ` + strings.Repeat("x", 60) + `\"`
			j := c.submit(fmt.Sprintf(`{"command":"i=0; while [ ! -e %[1]s ]; do i=$((i+1)); echo %[3]s; echo %[3]s >>%[2]s; if [ $((i %% 20)) = 0 ]; then sleep 0.05; fi; done; echo end; echo end >>%[2]s"}`, gate, copyFile, line))
			c.waitFor("output before the restart", func() bool { return len(c.logs(j.JobID)) > 10000 })

			c.stopController()
			c.startController()
			before := len(c.logs(j.JobID))
			c.waitFor("output after the restart", func() bool { return len(c.logs(j.JobID)) > before+10000 })
			if err := os.WriteFile(gate, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			done := c.waitState(j.JobID, "completed")
			if len(done.Attempts) != 1 {
				t.Errorf("the job was restarted: %d attempts", len(done.Attempts))
			}
			want, err := os.ReadFile(copyFile)
			if err != nil {
				t.Fatal(err)
			}
			got := c.logs(j.JobID)
			if sha256.Sum256([]byte(got)) != sha256.Sum256(want) {
				t.Fatalf("stored log (%d bytes) differs from the job's output (%d bytes)", len(got), len(want))
			}
		})
	}
}

// TestDrain drains an agent (its context ends, as on SIGTERM) while jobs
// run: they finish and are recorded as completed, no new job lands on it,
// and Run returns.
func TestDrain(t *testing.T) {
	c := startCluster(t)
	a, err := agent.New(agent.Config{
		Controller: c.srv.AgentAddr(), TLS: files(c.dir, "agent-1"), Slots: 3,
		Transport: transport.ModeTCP, Logger: testLogger(t, "agent-1"), StateDir: t.TempDir(),
		DrainTimeout: time.Minute, ReconnectMin: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	defer func() { cancel(); a.Stop() }()

	dir := t.TempDir()
	var ids []uint64
	for i := range 2 {
		g := filepath.Join(dir, fmt.Sprint(i))
		ids = append(ids, c.submit(fmt.Sprintf(`{"command":"touch %s.started; while [ ! -e %s ]; do sleep 0.02; done; echo done-%d"}`, g, g, i)).JobID)
	}
	for i := range 2 {
		g := filepath.Join(dir, fmt.Sprint(i))
		c.waitFor("job running", func() bool { _, err := os.Stat(g + ".started"); return err == nil })
	}
	cancel() // SIGTERM
	c.waitFor("controller sees the drain", func() bool {
		var agents []api.AgentInfo
		c.getJSON("/agents", &agents)
		return len(agents) == 1 && agents[0].Draining
	})
	late := c.submit(`{"command":"echo late"}`)
	for i := range 2 {
		os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), nil, 0o600)
	}
	for i, id := range ids {
		j := c.waitState(id, "completed")
		if got := c.logs(id); got != fmt.Sprintf("done-%d\n", i) {
			t.Errorf("job %d output %q (%+v)", id, got, j)
		}
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the drained agent did not exit")
	}
	if j := c.job(late.JobID); j.Status != "queued" || len(j.Attempts) != 0 {
		t.Errorf("a job landed on the draining agent: %+v", j)
	}
}

// TestDrainSecondSignalCancels: Stop during a drain cancels the running
// jobs, which are reported as cancelled before Run returns.
func TestDrainSecondSignalCancels(t *testing.T) {
	c := startCluster(t)
	a, err := agent.New(agent.Config{
		Controller: c.srv.AgentAddr(), TLS: files(c.dir, "agent-1"), Slots: 1,
		Transport: transport.ModeQUIC, Logger: testLogger(t, "agent-1"), StateDir: t.TempDir(),
		DrainTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	gate := filepath.Join(t.TempDir(), "g")
	j := c.submit(fmt.Sprintf(`{"command":"touch %s; sleep 300"}`, gate))
	c.waitFor("job running", func() bool { _, err := os.Stat(gate); return err == nil })
	cancel()
	c.waitFor("drain", func() bool {
		var agents []api.AgentInfo
		c.getJSON("/agents", &agents)
		return len(agents) == 1 && agents[0].Draining
	})
	a.Stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if got := c.job(j.JobID); got.Status != "cancelled" {
		t.Errorf("job after a hard stop: %+v", got)
	}
}

// TestLiveStatus asks the running job's agent for its state.
func TestLiveStatus(t *testing.T) {
	c := startCluster(t, "agent-1")
	gate := filepath.Join(t.TempDir(), "gate")
	j := c.submit(fmt.Sprintf(`{"command":"echo first; echo working on it; while [ ! -e %s ]; do sleep 0.02; done"}`, gate))
	var live struct {
		Status string        `json:"status"`
		Live   *api.LiveView `json:"live"`
	}
	c.waitFor("live state", func() bool {
		c.getJSON(fmt.Sprintf("/jobs/%d?live=1", j.JobID), &live)
		return live.Live != nil && !live.Live.Stale && live.Live.LastLine == "working on it"
	})
	l := live.Live
	if l.PID == 0 || l.Agent != "agent-1" || l.Attempt != 1 || l.OutputBytes != uint64(len("first\nworking on it\n")) || l.Processes < 1 || l.RSS == 0 {
		t.Errorf("live state: %+v", l)
	}
	os.WriteFile(gate, nil, 0o600)
	c.waitState(j.JobID, "completed")
	c.getJSON(fmt.Sprintf("/jobs/%d?live=1", j.JobID), &live)
	if live.Live == nil || !live.Live.Stale || live.Live.Error == "" {
		t.Errorf("live state of a finished job: %+v", live.Live)
	}
	if code, _ := c.do("GET", fmt.Sprintf("/jobs/%d?live=1&wait=forever", j.JobID), ""); code != 400 {
		t.Errorf("bad wait: %d", code)
	}
}

// TestLiveStatusStale: an agent that does not answer makes the live part
// stale after the wait, instead of hanging the request.
func TestLiveStatusStale(t *testing.T) {
	c := startCluster(t)
	f := connectFake(t, c, "agent-1", 1, transport.ModeTCP)
	j := c.submit(`{"command":"sleep 100"}`)
	f.credit(1)
	d := f.dispatch()
	if d.JobID != j.JobID {
		t.Fatalf("dispatched %d", d.JobID)
	}
	start := time.Now()
	var got struct {
		Live *api.LiveView `json:"live"`
	}
	c.getJSON(fmt.Sprintf("/jobs/%d?live=1&wait=200ms", j.JobID), &got)
	if got.Live == nil || !got.Live.Stale || !strings.Contains(got.Live.Error, "did not answer") {
		t.Errorf("live of a silent agent: %+v", got.Live)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("the request hung")
	}
}

// TestManyFollowers: many WebSocket followers of one job, from several
// offsets, all get the exact output; one that reads nothing does not
// hold up the job or the others.
func TestManyFollowers(t *testing.T) {
	c := startCluster(t, "agent-1")
	gate := filepath.Join(t.TempDir(), "gate")
	j := c.submit(fmt.Sprintf(`{"command":"i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo \"line $i\"; done; while [ ! -e %s ]; do sleep 0.02; done; echo end"}`, gate))
	stuck, err := c.dialWS("operator", fmt.Sprintf("/ws/jobs/%d/logs", j.JobID))
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close() // never read

	var want strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	want.WriteString("end\n")
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		offset := uint64(i * 997)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, err := c.dialWS("viewer", fmt.Sprintf("/ws/jobs/%d/logs?format=json&offset=%d", j.JobID, offset))
			if err != nil {
				errs <- err
				return
			}
			defer ws.Close()
			var got []byte
			for {
				var m api.LogMessage
				if err := ws.ReadJSON(&m); err != nil {
					break
				}
				if m.Type == "output" {
					if m.Offset != offset+uint64(len(got)) {
						errs <- fmt.Errorf("follower at %d: message at offset %d after %d bytes", offset, m.Offset, len(got))
						return
					}
					got = append(got, m.Data...)
				}
			}
			if string(got) != want.String()[offset:] {
				errs <- fmt.Errorf("follower at %d got %d bytes, want %d", offset, len(got), len(want.String())-int(offset))
			}
		}()
	}
	c.waitFor("all output before the gate", func() bool { return len(c.logs(j.JobID)) == want.Len()-4 })
	os.WriteFile(gate, nil, 0o600)
	c.waitState(j.JobID, "completed")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestBigOutput streams a large output through the spool and the store
// and checks it arrives whole (the 1 GiB run with memory figures is in
// the benchmarks). The output is random bytes in base64 (exactly size
// bytes, no newline): od, used before, took 2 s of CPU to make it
// (base64: 0.1 s), and on a loaded machine the job itself ran for 28 s
// of what was then a 30 s wait.
func TestBigOutput(t *testing.T) {
	c := startCluster(t, "agent-1")
	const size = 32 << 20
	j := c.submit(fmt.Sprintf(`{"command":"head -c %d /dev/urandom | base64 -w 0 | head -c %d"}`, size/4*3, size))
	done := c.waitState(j.JobID, "completed")
	if done.ExitCode == nil || *done.ExitCode != 0 {
		t.Fatalf("job: %+v", done)
	}
	got := c.logs(j.JobID)
	if len(got) != size {
		t.Fatalf("stored %d bytes, want %d", len(got), size)
	}
	var view struct {
		LogBytes uint64 `json:"log_bytes"`
	}
	c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &view)
	if view.LogBytes != size {
		t.Errorf("log_bytes %d", view.LogBytes)
	}
}
