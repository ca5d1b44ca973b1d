package controller_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/transport"
)

// interleaved alternates stdout and stderr; in the default (ordered)
// mode its log is exactly interleavedWant.
const (
	interleaved     = `echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf tail`
	interleavedWant = "out1\nerr1\nout2\nerr2\ntail"
)

// TestOrderedOutput runs the interleaving job 200 times through a real
// agent on each transport, several at a time: the stored log is the
// write order every time, and the json WebSocket gives it as one stream.
func TestOrderedOutput(t *testing.T) {
	c := startCluster(t)
	const runs = 200
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		c.startAgent("agent-"+strconv.Itoa(len(c.agents)+1), 4, map[string]string{"transport": string(mode)}, mode)
	}
	var items []api.BatchItem
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		objs := make([]string, runs)
		for i := range objs {
			objs[i] = fmt.Sprintf(`{"command":%q,"labels":{"transport":%q}}`, interleaved, mode)
		}
		code, got, b := c.submitBatch(jsonArray(objs))
		if code != http.StatusCreated || len(got) != runs {
			t.Fatalf("batch: %d %s", code, b)
		}
		items = append(items, got...)
	}
	for i, it := range items {
		j := c.waitState(it.JobID, "completed", "failed")
		if j.Status != "completed" {
			t.Fatalf("job %d: %+v", it.JobID, j)
		}
		if got := c.logs(it.JobID); got != interleavedWant {
			t.Fatalf("job %d (run %d of %s): log %q, want %q", it.JobID, i%runs+1, []string{"QUIC", "TCP"}[i/runs], got, interleavedWant)
		}
	}
	// One of them on the json WebSocket: one stream, stdout.
	msgs := readWS(t, c, fmt.Sprintf("/ws/jobs/%d/logs?format=json", items[len(items)-1].JobID))
	var out bytes.Buffer
	for _, m := range msgs {
		if m.Type == "output" {
			if m.Stream != "stdout" {
				t.Errorf("ordered output on stream %q", m.Stream)
			}
			out.Write(m.Data)
		}
	}
	if out.String() != interleavedWant {
		t.Errorf("WebSocket output %q, want %q", out.Bytes(), interleavedWant)
	}
}

// startTTYAgent starts a QUIC agent with Config.TTY (-tty): its jobs run
// on a terminal unless they say otherwise.
func (c *cluster) startTTYAgent(name string, labels map[string]string) {
	c.t.Helper()
	a, err := agent.New(agent.Config{
		Controller: c.srv.AgentAddr(), TLS: files(c.dir, name), Slots: 2, Labels: labels, TTY: true,
		Transport: transport.ModeQUIC, Logger: testLogger(c.t, name), StateDir: c.t.TempDir(),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.agents[name] = cancel
	c.agentWG.Add(1)
	go func() {
		defer c.agentWG.Done()
		if err := a.Run(ctx); err != nil {
			c.t.Errorf("agent %s: %v", name, err)
		}
	}()
	c.waitFor("agent "+name+" connected", func() bool { return c.agentConnected(name) })
}

// readWS reads a log WebSocket in format=json to its end.
func readWS(t *testing.T, c *cluster, path string) []api.LogMessage {
	t.Helper()
	ws, err := c.dialWS("viewer", path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer ws.Close()
	var msgs []api.LogMessage
	for {
		var m api.LogMessage
		if err := ws.ReadJSON(&m); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("%s: ended with %v", path, err)
			}
			return msgs
		}
		msgs = append(msgs, m)
	}
}

// TestTTY runs jobs on a pseudo-terminal through a real agent: the job
// sees a terminal, its colours arrive byte for byte, TERM is set unless
// the job sets it; a terminal job that forks children and times out
// leaves no process behind; the agent's -tty makes it the default,
// which a job can decline.
func TestTTY(t *testing.T) {
	c := startCluster(t, "agent-1")
	const color = `test -t 1 && echo tty; test -t 2 && echo stderr-tty >&2; printf '\033[1;31mred\033[0m\n'; echo "$TERM"`
	j := c.submit(fmt.Sprintf(`{"command":%q,"tty":true}`, color))
	if done := c.waitState(j.JobID, "completed", "failed"); done.Status != "completed" {
		t.Fatalf("tty job: %+v", done)
	}
	if got, want := c.logs(j.JobID), "tty\nstderr-tty\n\x1b[1;31mred\x1b[0m\nxterm-256color\n"; got != want {
		t.Errorf("tty job log %q, want %q", got, want)
	}
	var v api.JobView
	c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &v)
	if v.TTY == nil || !*v.TTY || v.Output != "ordered" {
		t.Errorf("job view: tty %v, output %q", v.TTY, v.Output)
	}
	j = c.submit(fmt.Sprintf(`{"command":%q,"tty":true,"env":{"TERM":"vt100"}}`, `echo "$TERM"`))
	c.waitState(j.JobID, "completed")
	if got := c.logs(j.JobID); got != "vt100\n" {
		t.Errorf("TERM from the job's env: %q", got)
	}
	j = c.submit(fmt.Sprintf(`{"command":%q}`, `test -t 1 || echo no-tty`))
	c.waitState(j.JobID, "completed")
	if got := c.logs(j.JobID); got != "no-tty\n" {
		t.Errorf("without tty: %q", got)
	}

	// Children, a grandchild and a child that ignores SIGTERM, on a
	// terminal, killed at the timeout.
	const tree = `sleep 300 & echo $!; sh -c 'sleep 300 & echo $!; trap "" TERM; wait' & echo $!; echo $$; wait`
	j = c.submit(fmt.Sprintf(`{"command":%q,"tty":true,"timeout":1}`, tree))
	done := c.waitState(j.JobID, "timeout", "completed", "failed")
	if done.Status != "timeout" {
		t.Fatalf("tty job with a timeout: %+v", done)
	}
	pids := strings.Fields(c.logs(j.JobID))
	if len(pids) != 4 {
		t.Fatalf("log %q, want 4 pids", pids)
	}
	for _, f := range pids {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("not a pid: %q", f)
		}
		c.waitFor(fmt.Sprintf("process %d gone", pid), func() bool { return processGone(pid) })
	}

	// An agent that puts every job on a terminal unless it says not to,
	// or asks for its streams apart.
	c.startTTYAgent("agent-2", map[string]string{"tty": "default"})
	for body, want := range map[string]string{
		`{"command":"test -t 1 && echo tty","labels":{"tty":"default"}}`:                    "tty\n",
		`{"command":"test -t 1 || echo pipe","tty":false,"labels":{"tty":"default"}}`:       "pipe\n",
		`{"command":"test -t 1 || echo pipe","output":"split","labels":{"tty":"default"}}`:  "pipe\n",
		`{"command":"test -t 1 && echo tty","output":"ordered","labels":{"tty":"default"}}`: "tty\n",
	} {
		j := c.submit(body)
		if done := c.waitState(j.JobID, "completed", "failed"); done.Status != "completed" {
			t.Errorf("%s: %+v", body, done)
		}
		if got := c.logs(j.JobID); got != want {
			t.Errorf("%s on an agent with -tty: %q, want %q", body, got, want)
		}
	}
}

// TestAttempts retries a job twice and reads each attempt on its own:
// by offsets in the job, with GET ?attempt=N, and on the WebSocket with
// attempt markers and with ?attempt=N. The stored bytes carry no marks.
func TestAttempts(t *testing.T) {
	c := startCluster(t, "agent-1")
	// Attempt n prints two lines (the second without a newline for n=2)
	// and fails until the third; attempt 1 also writes to stderr.
	cmd := `echo "attempt $JOBSUITE_ATTEMPT on $JOBSUITE_AGENT"; ` +
		`if [ $JOBSUITE_ATTEMPT = 1 ]; then echo oops >&2; fi; ` +
		`if [ $JOBSUITE_ATTEMPT = 2 ]; then printf 'no newline'; else echo end; fi; ` +
		`[ $JOBSUITE_ATTEMPT -ge 3 ]`
	j := c.submit(fmt.Sprintf(`{"command":%q,"retries":2}`, cmd))
	if done := c.waitState(j.JobID, "completed", "failed"); done.Status != "completed" {
		t.Fatalf("job: %+v", done)
	}
	want := []string{
		"attempt 1 on agent-1\noops\nend\n",
		"attempt 2 on agent-1\nno newline",
		"attempt 3 on agent-1\nend\n",
	}
	if got := c.logs(j.JobID); got != strings.Join(want, "") {
		t.Fatalf("whole log %q, want %q", got, strings.Join(want, ""))
	}
	var v api.JobView
	c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &v)
	if len(v.Attempts) != 3 {
		t.Fatalf("%d attempts", len(v.Attempts))
	}
	var start uint64
	for i, a := range v.Attempts {
		if a.LogStart != start || a.OutputBytes != uint64(len(want[i])) {
			t.Errorf("attempt %d: log_start %d, output_bytes %d; want %d, %d", i+1, a.LogStart, a.OutputBytes, start, len(want[i]))
		}
		start += uint64(len(want[i]))
	}
	for i := range want {
		code, b := c.do("GET", fmt.Sprintf("/jobs/%d/logs?attempt=%d", j.JobID, i+1), "")
		if code != 200 || string(b) != want[i] {
			t.Errorf("GET ?attempt=%d: %d %q, want %q", i+1, code, b, want[i])
		}
	}
	// An offset inside attempt 2 clips it.
	off := v.Attempts[1].LogStart + 3
	if code, b := c.do("GET", fmt.Sprintf("/jobs/%d/logs?attempt=2&offset=%d", j.JobID, off), ""); code != 200 || string(b) != want[1][3:] {
		t.Errorf("attempt 2 from %d: %d %q", off, code, b)
	}

	// The WebSocket with markers: each attempt's marker, then its output.
	msgs := readWS(t, c, fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempts=1", j.JobID))
	var got []string
	for _, m := range msgs {
		switch m.Type {
		case "attempt":
			if int(m.Attempt) != len(got)+1 || m.Agent != "agent-1" || m.Time.IsZero() || m.Attempts != 3 || m.Offset != v.Attempts[m.Attempt-1].LogStart {
				t.Errorf("marker %+v", m)
			}
			got = append(got, "")
		case "output":
			if len(got) == 0 {
				t.Fatalf("output before the first marker: %+v", m)
			}
			got[len(got)-1] += string(m.Data)
		case "end":
			if m.Status != "completed" {
				t.Errorf("end %+v", m)
			}
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("attempts on the WebSocket %q, want %q", got, want)
	}
	// Resumed in the middle of attempt 2: markers from attempt 3 on.
	msgs = readWS(t, c, fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempts=1&offset=%d", j.JobID, off))
	var markers []uint32
	var rest bytes.Buffer
	for _, m := range msgs {
		switch m.Type {
		case "attempt":
			markers = append(markers, m.Attempt)
		case "output":
			rest.Write(m.Data)
		}
	}
	if fmt.Sprint(markers) != "[3]" || rest.String() != want[1][3:]+want[2] {
		t.Errorf("resumed: markers %v, output %q", markers, rest.Bytes())
	}

	// One attempt on the WebSocket: its marker, its output, its outcome.
	for n, w := range want {
		msgs := readWS(t, c, fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempt=%d", j.JobID, n+1))
		if len(msgs) < 3 || msgs[0].Type != "attempt" || int(msgs[0].Attempt) != n+1 {
			t.Fatalf("attempt=%d: messages %+v", n+1, msgs)
		}
		var out bytes.Buffer
		for _, m := range msgs[1 : len(msgs)-1] {
			if m.Type != "output" {
				t.Errorf("attempt=%d: message %+v", n+1, m)
			}
			out.Write(m.Data)
		}
		end := msgs[len(msgs)-1]
		wantOutcome, wantCode := "failed", 1
		if n == 2 {
			wantOutcome, wantCode = "completed", 0
		}
		if out.String() != w || end.Type != "end" || int(end.Attempt) != n+1 || end.Outcome != wantOutcome || end.ExitCode == nil || *end.ExitCode != wantCode {
			t.Errorf("attempt=%d: output %q, end %+v", n+1, out.Bytes(), end)
		}
		// The same as text.
		ws, err := c.dialWS("viewer", fmt.Sprintf("/ws/jobs/%d/logs?attempt=%d", j.JobID, n+1))
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				break
			}
			text.Write(b)
		}
		ws.Close()
		if text.String() != w {
			t.Errorf("attempt=%d as text: %q, want %q", n+1, text.String(), w)
		}
	}

	// Attempts the job does not have, and markers without json.
	for path, field := range map[string]string{
		fmt.Sprintf("/jobs/%d/logs?attempt=4", j.JobID):                         "attempt",
		fmt.Sprintf("/jobs/%d/logs?attempt=0", j.JobID):                         "attempt",
		fmt.Sprintf("/jobs/%d/logs?attempt=x", j.JobID):                         "attempt",
		fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempt=9", j.JobID):          "attempt",
		fmt.Sprintf("/ws/jobs/%d/logs?attempts=1", j.JobID):                     "attempts",
		fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempts=maybe", j.JobID):     "attempts",
		fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempt=-1", j.JobID):         "attempt",
		fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempt=4294967296", j.JobID): "attempt",
	} {
		code, b := c.do("GET", path, "")
		if code != http.StatusBadRequest || !bytes.Contains(b, []byte(`"field": "`+field+`"`)) {
			t.Errorf("GET %s: %d %s, want 400 naming %s", path, code, b, field)
		}
	}
}

// TestAttemptFollow follows attempt 1 of a job that is still running:
// the stream ends when the attempt ends, though the job goes on to a
// retry, and markers announce the new attempt to a follower of the
// whole log.
func TestAttemptFollow(t *testing.T) {
	c := startCluster(t, "agent-1")
	gate := t.TempDir() + "/gate"
	cmd := fmt.Sprintf(`echo "attempt $JOBSUITE_ATTEMPT"; while [ ! -e %s ]; do sleep 0.02; done; [ $JOBSUITE_ATTEMPT -ge 2 ]`, gate)
	j := c.submit(fmt.Sprintf(`{"command":%q,"retries":1,"backoff":{"base":0.05}}`, cmd))
	c.waitState(j.JobID, "running")
	var wg sync.WaitGroup
	var one, all []api.LogMessage
	wg.Add(2)
	go func() {
		defer wg.Done()
		one = readWS(t, c, fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempt=1", j.JobID))
	}()
	go func() {
		defer wg.Done()
		all = readWS(t, c, fmt.Sprintf("/ws/jobs/%d/logs?format=json&attempts=1", j.JobID))
	}()
	c.waitFor("attempt 1's output", func() bool { return c.logs(j.JobID) == "attempt 1\n" })
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if done := c.job(j.JobID); done.Status != "completed" || len(done.Attempts) != 2 {
		t.Fatalf("job %+v", done)
	}
	var out bytes.Buffer
	for _, m := range one {
		if m.Type == "output" {
			out.Write(m.Data)
		}
	}
	last := one[len(one)-1]
	if out.String() != "attempt 1\n" || last.Type != "end" || last.Attempt != 1 || last.Outcome != "failed" {
		t.Errorf("attempt=1: output %q, end %+v", out.Bytes(), last)
	}
	var seq []string
	for _, m := range all {
		switch m.Type {
		case "attempt":
			seq = append(seq, fmt.Sprintf("[%d]", m.Attempt))
		case "output":
			seq = append(seq, string(m.Data))
		case "end":
			seq = append(seq, string(m.Status))
		}
	}
	if got := strings.Join(seq, ""); got != "[1]attempt 1\n[2]attempt 2\ncompleted" {
		t.Errorf("followed with markers: %q", got)
	}
}

// TestAttemptWithoutOutput retries a job whose first attempt writes
// nothing: its marker still comes, right before the second's, and a
// stream of that attempt alone is its marker and its end.
func TestAttemptWithoutOutput(t *testing.T) {
	c := startCluster(t, "agent-1")
	j := c.submit(fmt.Sprintf(`{"command":%q,"retries":1}`, `[ $JOBSUITE_ATTEMPT = 1 ] && exit 7; echo x`))
	if done := c.waitState(j.JobID, "completed", "failed"); done.Status != "completed" {
		t.Fatalf("job %+v", done)
	}
	seq := func(msgs []api.LogMessage) string {
		var b strings.Builder
		for _, m := range msgs {
			switch m.Type {
			case "attempt":
				fmt.Fprintf(&b, "[%d@%d]", m.Attempt, m.Offset)
			case "output":
				b.Write(m.Data)
			case "end":
				fmt.Fprintf(&b, "end %s %s", m.Status, m.Outcome)
			}
		}
		return b.String()
	}
	for query, want := range map[string]string{
		"attempts=1": "[1@0][2@0]x\nend completed ",
		"attempt=1":  "[1@0]end completed failed",
		"attempt=2":  "[2@0]x\nend completed completed",
	} {
		if got := seq(readWS(t, c, fmt.Sprintf("/ws/jobs/%d/logs?format=json&%s", j.JobID, query))); got != want {
			t.Errorf("%s: %q, want %q", query, got, want)
		}
	}
	if code, b := c.do("GET", fmt.Sprintf("/jobs/%d/logs?attempt=1", j.JobID), ""); code != 200 || len(b) != 0 {
		t.Errorf("GET ?attempt=1: %d %q", code, b)
	}
}
