package controller_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"jobsuite/api"
)

// The outage test kills the controller (kill -9) while jobs run, keeps
// it down, and starts it again, over and over: no attempt may be lost.
// Agents back off between reconnect tries (up to -reconnect-max, 30s by
// default); while they hold attempts they must still be back within the
// lease, and a controller that starts again gives the attempts it finds
// running one lease and a quarter to be reclaimed.
//
// Everything runs as real processes: the controller, one agent on QUIC
// and one on TCP, both with the default reconnect backoff, and real jobs
// that print a numbered line every 20ms until the test opens their gate.
// The production lease is 15s and the outages the issue saw were 25s
// and 40s; here everything is ten times shorter — a 1.5s lease (a
// heartbeat every 0.5s), outages of 2.5s and 4s — 20 of each, on two
// controllers side by side.
const (
	outageLease = 1500 * time.Millisecond
	outageReps  = 20
)

func TestControllerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("outage test: runs real controllers and agents through 40 restarts, about a minute; skipped with -short")
	}
	bin := buildJobsuite(t, t.TempDir())
	for name, outage := range map[string]time.Duration{
		"25of15": outageLease * 25 / 15,
		"40of15": outageLease * 40 / 15,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // two controllers of their own: half the wall time
			controllerOutage(t, bin, outage)
		})
	}
}

func controllerOutage(t *testing.T, bin string, outage time.Duration) {
	work := t.TempDir()
	p := &controllerProc{t: t, bin: bin, dir: work, pki: newPKI(t), data: filepath.Join(work, "data"),
		extra: []string{"-lease-ttl", outageLease.String()}}
	p.httpAddr, p.agentAddr = freeAddrs(t)
	client := newAPIClient(t, p.pki, "operator", "https://"+p.httpAddr)
	p.start(client)
	defer func() {
		select {
		case <-p.exited:
		default:
			p.kill()
		}
		if t.Failed() {
			t.Log(p.tail(p.starts, 40))
			for _, l := range p.grepLogs(40, "lost", "did not renew", "[ERROR]") {
				t.Log(l)
			}
		}
	}()

	agents := map[string]string{"agent-1": "quic", "agent-2": "tcp"}
	for name, mode := range agents {
		startAgentProc(t, bin, p, name, mode)
	}

	// Two jobs per agent, pinned by label, each printing until its gate.
	type outageJob struct {
		id          uint64
		agent       string
		gate, count string
	}
	var jobs []outageJob
	for name, mode := range agents {
		for i := range 2 {
			gate := filepath.Join(work, fmt.Sprintf("%s-%d.gate", name, i))
			count := gate + ".count"
			body := fmt.Sprintf(`{"command":%q,"labels":{"transport":%q}}`, fmt.Sprintf(
				`i=0; while [ ! -e %s ]; do i=$((i+1)); echo "line $i"; sleep 0.02; done; echo $i > %s`, gate, count), mode)
			code, b, err := client.do("POST", "/jobs", body)
			if err != nil || code != 201 {
				t.Fatalf("submit: %d %s %v", code, b, err)
			}
			var j struct {
				ID uint64 `json:"job_id"`
			}
			if err := json.Unmarshal(b, &j); err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, outageJob{id: j.ID, agent: name, gate: gate, count: count})
		}
	}
	want := map[string][]uint64{}
	for _, j := range jobs {
		want[j.agent] = append(want[j.agent], j.id)
	}

	// attached reports whether every agent is connected and holds its
	// jobs, and every job runs its first attempt.
	attached := func() (bool, string) {
		code, b, err := client.do("GET", "/agents", "")
		if err != nil || code != 200 {
			return false, fmt.Sprintf("GET /agents: %d %v", code, err)
		}
		var list []api.AgentInfo
		if err := json.Unmarshal(b, &list); err != nil {
			t.Fatal(err)
		}
		held := map[string][]uint64{}
		for _, a := range list {
			held[a.Name] = a.Jobs
		}
		for name, ids := range want {
			if got := held[name]; !slices.Equal(got, ids) {
				return false, fmt.Sprintf("agent %s holds %v, want %v", name, got, ids)
			}
		}
		return true, ""
	}
	checkRunning := func(when string) {
		t.Helper()
		for _, j := range jobs {
			v := getJobView(t, client, j.id)
			if v.Status != "running" || len(v.Attempts) != 1 {
				t.Fatalf("%s: job %d on %s is %s with %d attempts (%s); want running, 1 attempt", when, j.id, j.agent, v.Status, len(v.Attempts), v.Reason)
			}
		}
	}
	poll(t, "the jobs to start", 20*time.Second, func() (bool, string) {
		for _, j := range jobs {
			if v := getJobView(t, client, j.id); v.Status != "running" {
				return false, fmt.Sprintf("job %d is %s", j.id, v.Status)
			}
		}
		return attached()
	})
	checkRunning("before any restart")

	for rep := 1; rep <= outageReps; rep++ {
		p.kill()
		time.Sleep(outage) // keeping the controller down is the point
		p.start(client)
		poll(t, fmt.Sprintf("restart %d: every agent back with its jobs", rep), 20*time.Second, attached)
		checkRunning(fmt.Sprintf("after restart %d (down %s)", rep, outage))
	}

	for _, j := range jobs {
		if err := os.WriteFile(j.gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range jobs {
		var v jobView
		poll(t, fmt.Sprintf("job %d to finish", j.id), waitLimit, func() (bool, string) {
			v = getJobView(t, client, j.id)
			return v.Status != "running", v.Status
		})
		if v.Status != "completed" || len(v.Attempts) != 1 {
			t.Fatalf("job %d: %s with %d attempts (%s); want completed in one", j.id, v.Status, len(v.Attempts), v.Reason)
		}
		b, err := os.ReadFile(j.count)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		var wantLog strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&wantLog, "line %d\n", i)
		}
		code, logs, err := client.do("GET", fmt.Sprintf("/jobs/%d/logs", j.id), "")
		if err != nil || code != 200 {
			t.Fatalf("logs of job %d: %d %v", j.id, code, err)
		}
		if string(logs) != wantLog.String() {
			t.Fatalf("job %d: stored log of %d bytes is not the %d lines it printed (%d bytes)", j.id, len(logs), n, wantLog.Len())
		}
	}
}

// startAgentProc runs a real agent process with the default reconnect
// backoff; it is stopped (SIGTERM, then SIGKILL) when the test ends.
func startAgentProc(t *testing.T, bin string, p *controllerProc, name, mode string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(p.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "-controller", p.agentAddr,
		"-ca", filepath.Join(p.pki, "ca.pem"), "-cert", filepath.Join(p.pki, name+".pem"), "-key", filepath.Join(p.pki, name+"-key.pem"),
		"-slots", "2", "-labels", "transport="+mode, "-transport", mode,
		"-state-dir", filepath.Join(p.dir, name+"-state"), "-drain-timeout", "0s", "-log-level", "info")
	runAgentProc(t, cmd, logf, name)
}

// runAgentProc starts an agent process whose output goes to logf; when
// the test ends it is stopped (SIGINT, then SIGKILL after 10 s) and, if
// the test failed, the end of its log is shown.
func runAgentProc(t *testing.T, cmd *exec.Cmd, logf *os.File, name string) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			for _, l := range tailLines(logf.Name(), 40) {
				t.Logf("%s.log: %s", name, l)
			}
		}
	})
}

// tailLines returns the last n lines of the file at path.
func tailLines(path string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[max(len(lines)-n, 0):]
}

// jobView is the part of GET /jobs/:id the outage test reads.
type jobView struct {
	Status   string `json:"status"`
	Reason   string `json:"reason"`
	Attempts []struct {
		Number  int    `json:"number"`
		Outcome string `json:"outcome"`
	} `json:"attempts"`
}

func getJobView(t *testing.T, client *apiClient, id uint64) jobView {
	t.Helper()
	code, b, err := client.do("GET", fmt.Sprintf("/jobs/%d", id), "")
	if err != nil || code != 200 {
		t.Fatalf("GET /jobs/%d: %d %s %v", id, code, b, err)
	}
	var v jobView
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}
