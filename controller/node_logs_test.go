package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/transport"
)

// channelCluster starts 3 nodes with the output channel and an agent
// that knows them all.
func channelCluster(t *testing.T) *nodeCluster {
	t.Helper()
	c := startNodes(t, 3)
	var addrs []string
	for _, cfg := range c.cfgs {
		addrs = append(addrs, cfg.AgentAddr)
	}
	a, err := agent.New(agent.Config{
		Controller: strings.Join(addrs, ","), TLS: files(c.dir, "agent-1"), Slots: 2, Transport: transport.ModeQUIC,
		Logger: testLogger(t, "agent-1"), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		StateDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// nodeName is node i's ID (its certificate's name).
func nodeName(i int) string { return fmt.Sprintf("ctl-%d", i+1) }

// getLog reads path on node i and returns the status, the body and who
// served it (Jobsuite-Served-By).
func getLog(t *testing.T, c *nodeCluster, i int, path string) (int, string, string) {
	t.Helper()
	resp, err := c.client.Get(c.url(i, path))
	if err != nil {
		t.Fatalf("GET %s on node %d: %v", path, i, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header.Get("Jobsuite-Served-By")
}

// logFollow is one WebSocket follow (format=json) of a job's log.
type logFollow struct {
	servedBy string
	data     []byte // output received, from the offset asked for on
	end      *api.LogMessage
	closed   error // how the connection ended: nil after end and a normal close
}

// followOn follows job id's log on node i from offset until the end
// message and the close after it, or until the connection ends
// otherwise, or until stop returns true (checked after each message).
// It checks that each output message starts where the last ended.
func followOn(t *testing.T, c *nodeCluster, i int, id, offset uint64, query string, stop func(*logFollow) bool) (*logFollow, error) {
	t.Helper()
	pool, cert, err := files(c.dir, "operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"), HandshakeTimeout: 10 * time.Second}
	url := fmt.Sprintf("wss://%s/ws/jobs/%d/logs?format=json&offset=%d%s", c.cfgs[i].HTTPAddr, id, offset, query)
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w (%v)", url, err, resp)
	}
	defer ws.Close()
	f := &logFollow{servedBy: resp.Header.Get("Jobsuite-Served-By")}
	_ = ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if f.end == nil || !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				f.closed = err
			}
			return f, nil
		}
		var m api.LogMessage
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Fatalf("message %q: %v", msg, err)
		}
		switch m.Type {
		case "output":
			if at := offset + uint64(len(f.data)); m.Offset != at {
				t.Fatalf("node %d sent output at %d after %d bytes from %d (expected %d)", i, m.Offset, len(f.data), offset, at)
			}
			f.data = append(f.data, m.Data...)
		case "end":
			f.end = &m
		}
		if stop != nil && stop(f) {
			return f, nil
		}
	}
}

func lines(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "line-%d\n", i)
	}
	return b.String()
}

// TestOutputChannelLogsOnFollowers: with the output channel a follower
// serves a job's log from its own copy — a WebSocket follow gets the
// output as it is written, byte-exact, and ends with the job; GET reads
// are answered by the follower itself — but forwards a read of output
// its copy lacks (a hole) to the leader rather than serving a short log.
func TestOutputChannelLogsOnFollowers(t *testing.T) {
	c := channelCluster(t)
	lead := c.leader()
	fol := c.other(lead)
	for i, nd := range c.nodes {
		if i != lead {
			(&cluster{t: t}).waitFor(fmt.Sprintf("the leader's output stream to node %d", i), nd.OutputStreaming)
		}
	}

	// A job that writes slowly, followed from its start on a follower.
	code, body := doWith(t, c.client, "POST", c.url(lead, "/jobs"), `{"command":"for i in $(seq 1 150); do echo line-$i; sleep 0.02; done"}`)
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var j job
	_ = json.Unmarshal(body, &j)
	want := lines(1, 150)
	f, err := followOn(t, c, fol, j.JobID, 0, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.servedBy != nodeName(fol) {
		t.Errorf("the follow on follower %s was served by %q", nodeName(fol), f.servedBy)
	}
	if string(f.data) != want || f.end == nil || f.end.Status != "completed" || f.closed != nil {
		t.Fatalf("follow on a follower: %d bytes (want %d, equal %v), end %+v, closed %v", len(f.data), len(want), string(f.data) == want, f.end, f.closed)
	}

	// GET on each follower, from its own copy (once it holds it all).
	for i := range c.nodes {
		if i == lead {
			continue
		}
		(&cluster{t: t}).waitFor(fmt.Sprintf("node %d serving job %d's log itself", i, j.JobID), func() bool {
			code, b, by := getLog(t, c, i, fmt.Sprintf("/jobs/%d/logs", j.JobID))
			if code != 200 || b != want {
				t.Fatalf("GET logs on node %d: %d, %d bytes (want %d)", i, code, len(b), len(want))
			}
			return by == nodeName(i)
		})
		if code, b, by := getLog(t, c, i, fmt.Sprintf("/jobs/%d/logs?offset=100&attempt=1", j.JobID)); code != 200 || b != want[100:] || by != nodeName(i) {
			t.Fatalf("GET logs?offset=100&attempt=1 on node %d: %d, %d bytes (want %d), served by %q", i, code, len(b), len(want)-100, by)
		}
	}
	// Every follower acknowledged all the leader synced: no lag in bytes.
	(&cluster{t: t}).waitFor("no output lag in bytes on the leader", func() bool {
		code, b := doWith(t, c.client, "GET", c.url(lead, "/metrics"), "")
		if code != 200 {
			t.Fatalf("GET /metrics: %d", code)
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "jobsuite_cluster_output_lag_bytes{") {
				if !strings.HasSuffix(line, "} 0") {
					return false
				}
				n++
			}
		}
		return n == 2
	})
	if code, _, by := getLog(t, c, fol, "/jobs/999999/logs"); code != 404 || by != nodeName(lead) {
		t.Fatalf("GET logs of no job on a follower: %d, served by %q (want 404 from the leader)", code, by)
	}

	// A hole in the follower's copy: the read goes to the leader, which
	// holds it all; so does a follow.
	if err := c.nodes[fol].PunchLogHole(j.JobID, 100, 300); err != nil {
		t.Fatal(err)
	}
	if code, b, by := getLog(t, c, fol, fmt.Sprintf("/jobs/%d/logs?stale=1", j.JobID)); code != 200 || by != nodeName(fol) || len(b) != len(want)-200 {
		t.Fatalf("stale GET on the follower after the hole: %d, %d bytes (want %d), served by %q", code, len(b), len(want)-200, by)
	}
	if code, b, by := getLog(t, c, fol, fmt.Sprintf("/jobs/%d/logs", j.JobID)); code != 200 || b != want || by != nodeName(lead) {
		t.Fatalf("GET logs on a follower with a hole: %d, %d bytes (want %d), served by %q (want the leader %s)", code, len(b), len(want), by, nodeName(lead))
	}
	// Past the hole the copy is whole: served there.
	if code, b, by := getLog(t, c, fol, fmt.Sprintf("/jobs/%d/logs?offset=300", j.JobID)); code != 200 || b != want[300:] || by != nodeName(fol) {
		t.Fatalf("GET logs?offset=300 on a follower with a hole below: %d, %d bytes (want %d), served by %q", code, len(b), len(want)-300, by)
	}
	f, err = followOn(t, c, fol, j.JobID, 0, "&follow=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(f.data) != want || f.end == nil || f.closed != nil || f.servedBy != nodeName(lead) {
		t.Fatalf("follow on a follower with a hole: %d bytes (want %d), end %+v, closed %v, served by %q", len(f.data), len(want), f.end, f.closed, f.servedBy)
	}
}

// TestOutputChannelLogResumesOnAnotherNode: a WebSocket follow of a
// running job on the leader, cut when the leader stops, resumes by
// offset on another node and continues byte-exact to the job's end.
func TestOutputChannelLogResumesOnAnotherNode(t *testing.T) {
	c := channelCluster(t)
	lead := c.leader()
	gate := filepath.Join(t.TempDir(), "gate")
	code, body := doWith(t, c.client, "POST", c.url(lead, "/jobs"),
		fmt.Sprintf(`{"command":"for i in $(seq 1 2000); do echo line-$i; done; while [ ! -e %s ]; do sleep 0.05; done; for i in $(seq 2001 2400); do echo line-$i; sleep 0.005; done"}`, gate))
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var j job
	_ = json.Unmarshal(body, &j)
	want := lines(1, 2400)
	first := len(lines(1, 2000))
	f, err := followOn(t, c, lead, j.JobID, 0, "", func(f *logFollow) bool { return len(f.data) >= first })
	if err != nil {
		t.Fatal(err)
	}
	if string(f.data) != want[:first] {
		t.Fatalf("before the failover: %d bytes, want the first %d", len(f.data), first)
	}
	got := f.data
	c.stop(lead)
	lead2 := c.leader()
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Resume on the node that follows the new leader; a refusal (503
	// while leadership settles) or a 1013 is retried from where it got.
	next := c.other(lead2)
	var served []string
	for tries := 0; ; tries++ {
		if tries == 10 {
			t.Fatalf("the follow did not finish after %d reconnects: %d bytes of %d", tries, len(got), len(want))
		}
		f, err := followOn(t, c, next, j.JobID, uint64(len(got)), "", nil)
		if err != nil {
			t.Logf("reconnect: %v", err)
			time.Sleep(200 * time.Millisecond) // a client's backoff before it tries again
			continue
		}
		served = append(served, f.servedBy)
		got = append(got, f.data...)
		if f.end != nil && f.closed == nil {
			if f.end.Status != "completed" {
				t.Fatalf("the job ended %+v", f.end)
			}
			break
		}
		t.Logf("follow on node %d cut at %d bytes: %v", next, len(got), f.closed)
	}
	if string(got) != want {
		t.Fatalf("resumed follow: %d bytes (want %d), byte-exact %v", len(got), len(want), string(got) == want)
	}
	t.Logf("resumed on node %d, served by %v", next, served)
	if code, b, _ := getLog(t, c, next, fmt.Sprintf("/jobs/%d/logs", j.JobID)); code != 200 || b != want {
		t.Fatalf("GET logs on node %d after the failover: %d, %d bytes", next, code, len(b))
	}
}
