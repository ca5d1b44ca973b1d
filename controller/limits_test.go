package controller_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// restartWith restarts the cluster's controller with cfg changed by set.
func (c *cluster) restartWith(set func(*controller.Config)) {
	c.t.Helper()
	c.stopController()
	set(&c.cfg)
	c.startController()
}

func TestLimitConfig(t *testing.T) {
	dir := newPKI(t)
	base := controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", TLS: files(dir, "controller"),
	}
	for name, set := range map[string]func(*controller.Config){
		"body over 3 MiB":  func(c *controller.Config) { c.MaxBodyBytes = 4 << 20 },
		"frame too small":  func(c *controller.Config) { c.MaxFrameBytes = controller.MinFrameBytes - 1 },
		"frame over limit": func(c *controller.Config) { c.MaxFrameBytes = protocol.MaxFrameSize + 1 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			cfg.DataDir = filepath.Join(t.TempDir(), "data")
			set(&cfg)
			if srv, err := controller.New(cfg); err == nil {
				srv.Run(canceled())
				t.Fatal("New accepted the configuration")
			} else if !strings.Contains(err.Error(), "limit") {
				t.Errorf("error %q does not name the limit", err)
			}
		})
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestLimitSubmit: configured job limits refuse what exceeds them with a
// clear error that names the field and the flag, accept what is at the
// limit, and leave nothing behind.
func TestLimitSubmit(t *testing.T) {
	c := startCluster(t)
	c.restartWith(func(cfg *controller.Config) {
		cfg.MaxBodyBytes = 4096
		cfg.MaxCommandBytes = 100
		cfg.MaxEnv = 2
		cfg.MaxLabels = 2
	})
	cmd := func(n int) string { return strings.Repeat("x", n) }
	tests := map[string]struct {
		path, body string
		code       int
		field      string
		says       string
	}{
		"command at limit":     {"/jobs", `{"command":"` + cmd(100) + `"}`, 201, "", ""},
		"command over limit":   {"/jobs", `{"command":"` + cmd(101) + `"}`, 400, "command", "-max-command-bytes"},
		"params over limit":    {"/jobs", `{"command":"` + cmd(90) + `","params":"` + cmd(11) + `"}`, 400, "params", "-max-command-bytes"},
		"env at limit":         {"/jobs", `{"command":"true","env":{"A":"1","B":"2"}}`, 201, "", ""},
		"env over limit":       {"/jobs", `{"command":"true","env":{"A":"1","B":"2","C":"3"}}`, 400, "env", "-max-env"},
		"labels at limit":      {"/jobs", `{"command":"true","labels":{"a":"1","b":"2"}}`, 201, "", ""},
		"labels over limit":    {"/jobs", `{"command":"true","labels":{"a":"1","b":"2","c":"3"}}`, 400, "labels", "-max-labels"},
		"body over limit":      {"/jobs", `{"command":"true","name":"` + cmd(4096) + `"}`, 413, "", "larger than 4096 bytes"},
		"batch job over limit": {"/jobs/batch", `[{"command":"true"},{"command":"true","dir":"` + cmd(4096) + `"}]`, 400, "jobs[1]", "-max-body-bytes"},
		"decoded job too big":  {"/jobs", `{"command":"true","env":{"A":"` + strings.Repeat("\xff", 1400) + `","B":"` + strings.Repeat("\xff", 1400) + `"}}`, 400, "", "once decoded"},
	}
	created := 0
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, b := c.do("POST", tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("%d %s, want %d", code, b, tc.code)
			}
			if code == 201 {
				created++
				return
			}
			var e struct {
				Error string `json:"error"`
				Field string `json:"field"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Fatalf("error body is not {\"error\": ...}: %s", b)
			}
			if e.Field != tc.field || !strings.Contains(e.Error, tc.says) {
				t.Errorf("error %q (field %q), want field %q and %q", e.Error, e.Field, tc.field, tc.says)
			}
		})
	}
	var jobs []job
	c.getJSON("/jobs", &jobs)
	if len(jobs) != created {
		t.Errorf("%d jobs stored, want the %d accepted", len(jobs), created)
	}
}

// TestLimitFollowers: a job's WebSocket followers are capped; one over
// the cap gets 429 with a clear error, the others get the whole output,
// and a place freed is taken again.
func TestLimitFollowers(t *testing.T) {
	c := startCluster(t)
	c.restartWith(func(cfg *controller.Config) { cfg.MaxFollowers = 2 })
	c.startAgent("agent-1", 1, nil, transport.ModeQUIC)
	gate := filepath.Join(t.TempDir(), "gate")
	j := c.submit(fmt.Sprintf(`{"command":"echo one; while [ ! -e %s ]; do sleep 0.02; done; echo two"}`, gate))
	path := fmt.Sprintf("/ws/jobs/%d/logs", j.JobID)

	first, err := c.dialWS("viewer", path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := c.dialWS("operator", path)
	if err != nil {
		t.Fatal(err)
	}

	code, body := c.dialWSStatus("viewer", path)
	if code != http.StatusTooManyRequests || !strings.Contains(body, "-max-followers") || !strings.Contains(body, "2 log followers") {
		t.Fatalf("third follower: %d %s; want 429 naming the limit", code, body)
	}
	// Reading stored output is not limited.
	c.waitFor("first output", func() bool { return c.logs(j.JobID) == "one\n" })

	second.Close()
	var third *websocket.Conn
	c.waitFor("a freed follower place", func() bool {
		third, err = c.dialWS("operator", path)
		return err == nil
	})
	defer third.Close()

	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, ws := range []*websocket.Conn{first, third} {
		var got strings.Builder
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				break
			}
			got.Write(msg)
		}
		if got.String() != "one\ntwo\n" {
			t.Errorf("follower %d got %q", i, got.String())
		}
	}
	c.waitState(j.JobID, "completed")
}

// dialWSStatus dials a WebSocket expected to be refused and returns the
// HTTP status and body of the refusal.
func (c *cluster) dialWSStatus(name, path string) (int, string) {
	c.t.Helper()
	pool, cert, err := files(c.dir, name).Load()
	if err != nil {
		c.t.Fatal(err)
	}
	d := websocket.Dialer{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"), HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial("wss://"+c.srv.HTTPAddr()+path, nil)
	if err == nil {
		conn.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		c.t.Fatalf("dial %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLimitFrame: with a lower frame limit, a frame over it ends the
// stream it came on — a job stream, or the control stream of a hello —
// and nothing else: the session, the attempt and its log carry on.
func TestLimitFrame(t *testing.T) {
	c := startCluster(t)
	c.restartWith(func(cfg *controller.Config) { cfg.MaxFrameBytes = controller.MinFrameBytes })

	// A hello over the limit is refused with a clear error.
	sess, err := dialSession(t, c, "agent-2", transport.ModeTCP)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close("test over")
	big := map[string]string{"big": strings.Repeat("x", controller.MinFrameBytes)}
	m, _, _, err := controlReply(sess, &protocol.Hello{Version: protocol.Version, Name: "agent-2", Labels: big, Slots: 1})
	if e, ok := m.(*protocol.Error); err != nil || !ok || e.Code != protocol.CodeProtocol || !strings.Contains(e.Message, "frame too large") {
		t.Errorf("oversized hello: answer %#v, %v; want Error{CodeProtocol, frame too large}", m, err)
	}

	fake := connectFake(t, c, "agent-1", 1, transport.ModeTCP)
	j := c.submit(`{"command":"true"}`)
	d := fake.dispatch()
	js := fake.openJob(d.JobID, d.Attempt)
	mustWrite(t, js.w, &protocol.Started{PID: 1, StartedAt: time.Now()})
	mustWrite(t, js.w, &protocol.LogChunk{Stream: protocol.Stdout, Offset: 0, Data: []byte("ok\n")})
	// The frame over the limit: written from a goroutine, since the
	// controller stops reading the stream.
	go func() {
		_ = js.w.Write(&protocol.LogChunk{Stream: protocol.Stdout, Offset: 3, Data: make([]byte, controller.MinFrameBytes)})
	}()
	if m, err := js.reply(); err == nil || isTimeout(err) {
		t.Fatalf("after an oversized frame: answer %#v, %v; want the stream ended", m, err)
	}
	_ = js.st.Close()

	// The session lives on: the attempt reports again on a new stream,
	// from the output the controller holds.
	c.waitFor("the first chunk stored", func() bool { return c.logs(j.JobID) == "ok\n" })
	js = fake.openJob(d.JobID, d.Attempt)
	mustWrite(t, js.w, &protocol.LogChunk{Stream: protocol.Stdout, Offset: 3, Data: []byte("done\n")})
	mustWrite(t, js.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 8})
	if m, err := js.reply(); err != nil {
		t.Fatalf("result on a new stream: %v", err)
	} else if _, ok := m.(*protocol.FinishAck); !ok {
		t.Fatalf("result on a new stream: answer %#v, want FinishAck", m)
	}
	c.waitState(j.JobID, "completed")
	if got := c.logs(j.JobID); got != "ok\ndone\n" {
		t.Errorf("logs %q", got)
	}
}

// TestSlowBodyCutOff: a client that trickles a request body is cut off
// after the body timeout instead of holding its connection for ever.
func TestSlowBodyCutOff(t *testing.T) {
	c := &cluster{t: t, dir: newPKI(t), data: filepath.Join(t.TempDir(), "data"), agents: map[string]context.CancelFunc{}}
	c.cfg = controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: c.data,
		TLS: files(c.dir, "controller"), BodyTimeout: 300 * time.Millisecond,
	}
	c.startController()
	c.client = c.httpClient("operator")
	t.Cleanup(c.close)

	pool, cert, err := files(c.dir, "operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", c.srv.HTTPAddr(), certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"command\":")
	if err := readUntilClosed(conn, 20*time.Second); err != nil {
		t.Fatalf("a trickled body kept the connection: %v", err)
	}
	var jobs []job
	c.getJSON("/jobs", &jobs)
	if len(jobs) != 0 {
		t.Errorf("a cut-off body created %d jobs", len(jobs))
	}
}
