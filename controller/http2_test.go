package controller_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
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
)

// The API offers HTTP/2 and HTTP/1.1 by ALPN: a client that asks for h2
// gets it (one connection for many requests), one that asks for
// http/1.1 alone — a WebSocket dialer — or for nothing gets HTTP/1.1,
// and the log WebSocket still works beside HTTP/2 requests of the same
// client certificate.
func TestAPIOffersHTTP2(t *testing.T) {
	c := startCluster(t, "agent-1")
	pool, cert, err := files(c.dir, "operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	j := c.submit(`{"command":"echo hi"}`)
	for name, tc := range map[string]struct {
		protos []string
		force  bool
		want   int // ProtoMajor
	}{
		"h2 and http/1.1": {[]string{"h2", "http/1.1"}, true, 2},
		"http/1.1 only":   {[]string{"http/1.1"}, false, 1},
		"no ALPN":         {nil, false, 1},
	} {
		t.Run(name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", tc.protos...), ForceAttemptHTTP2: tc.force}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Timeout: 30 * time.Second, Transport: tr}
			for _, path := range []string{"/jobs", fmt.Sprintf("/jobs/%d", j.JobID)} {
				resp, err := cl.Get(c.base + path)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
				}
				if resp.ProtoMajor != tc.want {
					t.Fatalf("GET %s answered over %s, want HTTP/%d", path, resp.Proto, tc.want)
				}
			}
			code, b := doWith(t, cl, "POST", c.base+"/jobs", `{"command":"true"}`)
			if code != http.StatusCreated {
				t.Fatalf("POST /jobs: %d %s", code, b)
			}
		})
	}
	c.waitState(j.JobID, "completed")
	// gorilla's dialer asks for http/1.1 alone (so do browsers, for a
	// server that does not offer extended CONNECT: TestAPIHTTP2Settings).
	d := websocket.Dialer{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"), HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial("wss://"+c.srv.HTTPAddr()+fmt.Sprintf("/ws/jobs/%d/logs", j.JobID), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if resp.ProtoMajor != 1 {
		t.Fatalf("WebSocket upgrade over %s", resp.Proto)
	}
	if got := readWSText(t, ws); got != "hi\n" {
		t.Errorf("websocket streamed %q, want %q", got, "hi\n")
	}
}

// The API's HTTP/2 server does not offer RFC 8441's extended CONNECT
// (SETTINGS_ENABLE_CONNECT_PROTOCOL): a browser that negotiated h2 would
// otherwise open the log WebSocket as an HTTP/2 CONNECT, which the log
// route cannot take, instead of over a connection of its own with
// http/1.1. The SETTINGS frame is read off the wire; and a GODEBUG that
// turns extended CONNECT on makes the API offer http/1.1 alone.
func TestAPIHTTP2Settings(t *testing.T) {
	c := startCluster(t)
	pool, cert, err := files(c.dir, "operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", c.srv.HTTPAddr(), certs.ClientTLS(pool, cert, "127.0.0.1", "h2", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	offered := controller.APIProtocols(os.Getenv("GODEBUG"))
	if p := conn.ConnectionState().NegotiatedProtocol; p != offered[0] {
		t.Fatalf("negotiated %q, want %q (the API offers %q)", p, offered[0], offered)
	}
	if offered[0] == "h2" {
		checkNoExtendedConnect(t, conn)
	} else {
		t.Logf("GODEBUG=%q turns extended CONNECT on: the API offers http/1.1 alone", os.Getenv("GODEBUG"))
	}
	for godebug, want := range map[string]string{
		"":                             "h2 http/1.1",
		"http2debug=1":                 "h2 http/1.1",
		"http2xconnect=0":              "h2 http/1.1",
		"http2xconnect=1":              "http/1.1",
		"x=1,http2xconnect=1,y=2":      "http/1.1",
		"http2debug=2,http2xconnect=1": "http/1.1",
	} {
		if got := strings.Join(controller.APIProtocols(godebug), " "); got != want {
			t.Errorf("GODEBUG %q: the API offers %q, want %q", godebug, got, want)
		}
	}
}

// checkNoExtendedConnect reads the server's first SETTINGS frame on
// conn, which negotiated h2, and fails if it offers extended CONNECT.
func checkNoExtendedConnect(t *testing.T, conn *tls.Conn) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	// The client preface and an empty SETTINGS frame.
	if _, err := io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	settings := map[uint16]uint32{}
	r := bufio.NewReader(conn)
	for {
		var hdr [9]byte // length (24 bits), type, flags, stream
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			t.Fatalf("reading the server's frames: %v", err)
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			t.Fatal(err)
		}
		const frameSettings, flagAck = 0x4, 0x1
		if hdr[3] != frameSettings || hdr[4]&flagAck != 0 {
			continue
		}
		for i := 0; i+6 <= len(payload); i += 6 {
			settings[binary.BigEndian.Uint16(payload[i:])] = binary.BigEndian.Uint32(payload[i+2:])
		}
		break
	}
	const maxConcurrentStreams, enableConnectProtocol = 0x3, 0x8
	if _, ok := settings[maxConcurrentStreams]; !ok {
		t.Errorf("the server's SETTINGS %v lack MAX_CONCURRENT_STREAMS: not read right", settings)
	}
	if v, ok := settings[enableConnectProtocol]; ok && v != 0 {
		t.Errorf("the server's SETTINGS %v offer extended CONNECT: browsers would send the log WebSocket over HTTP/2", settings)
	}
}

// A client that negotiated HTTP/2 for its requests follows a running
// job's log over a WebSocket (on a connection of its own, with
// http/1.1, as the CLI and browsers open it) while it keeps sending
// HTTP/2 requests: the output arrives live, then the rest, to a normal
// close.
func TestLogFollowBesideHTTP2(t *testing.T) {
	c := startCluster(t, "agent-1")
	pool, cert, err := files(c.dir, "operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ClientTLS(pool, cert, "127.0.0.1", "h2", "http/1.1")
	tr := &http.Transport{TLSClientConfig: cfg.Clone(), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	get := func(path string) {
		t.Helper()
		resp, err := cl.Get(c.base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("GET %s: %d over %s, want 200 over HTTP/2: %s", path, resp.StatusCode, resp.Proto, b)
		}
	}

	gate := filepath.Join(t.TempDir(), "gate")
	j := c.submit(fmt.Sprintf(`{"command":"echo first; while [ ! -e %s ]; do sleep 0.05; done; echo second"}`, gate))
	get(fmt.Sprintf("/jobs/%d", j.JobID))
	wsCfg := cfg.Clone()
	wsCfg.NextProtos = []string{"http/1.1"}
	d := websocket.Dialer{TLSClientConfig: wsCfg, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(fmt.Sprintf("wss://%s/ws/jobs/%d/logs", c.srv.HTTPAddr(), j.JobID), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if resp.ProtoMajor != 1 {
		t.Fatalf("WebSocket upgrade over %s", resp.Proto)
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil || string(msg) != "first\n" {
		t.Fatalf("first message %q, %v; want %q", msg, err, "first\n")
	}
	// The job is still running: its gate is closed.
	get(fmt.Sprintf("/jobs/%d", j.JobID))
	get("/jobs")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readWSText(t, ws); got != "second\n" {
		t.Errorf("the rest of the log %q, want %q", got, "second\n")
	}
	get(fmt.Sprintf("/jobs/%d", j.JobID))
}
