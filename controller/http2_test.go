package controller_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/certs"
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
	// gorilla's dialer asks for http/1.1 alone (so do browsers).
	d := websocket.Dialer{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"), HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial("wss://"+c.srv.HTTPAddr()+fmt.Sprintf("/ws/jobs/%d/logs", j.JobID), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if resp.ProtoMajor != 1 {
		t.Fatalf("WebSocket upgrade over %s", resp.Proto)
	}
	var got strings.Builder
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("websocket ended with %v", err)
			}
			break
		}
		got.Write(msg)
	}
	if got.String() != "hi\n" {
		t.Errorf("websocket streamed %q, want %q", got.String(), "hi\n")
	}
}
