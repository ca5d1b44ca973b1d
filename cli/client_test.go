package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	mcli "github.com/mitchellh/cli"

	"jobsuite/api"
	"jobsuite/certs"
)

// clientTestMeta returns a Meta writing to the returned buffers.
func clientTestMeta() (Meta, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	ui := &mcli.BasicUi{Reader: strings.NewReader(""), Writer: &out, ErrorWriter: &errb}
	return Meta{UI: ui, Stdout: &out, Stderr: &errb}, &out, &errb
}

// clearClientEnv unsets the JOBSUITE_* connection variables and moves to
// an empty directory, so no .jobsuite-dev/env is found.
func clearClientEnv(t *testing.T) string {
	t.Helper()
	for _, k := range []string{envAddr, envCACert, envClientCert, envClientKey} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	t.Chdir(dir)
	return dir
}

// testPKI creates a CA, a controller certificate for 127.0.0.1 and an
// operator certificate "alice" in a temporary directory.
type testPKI struct {
	dir             string
	ctlCert, ctlKey string
	opCert, opKey   string
	agentAddr       string // the agent listener, once signingController started one
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := certs.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir}
	var err error
	p.ctlCert, p.ctlKey, err = certs.IssueFiles(dir, certs.Request{Role: certs.RoleController, Name: "ctl", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	p.opCert, p.opKey, err = certs.IssueFiles(dir, certs.Request{Role: certs.RoleOperator, Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPKI) ca() string { return certs.CAFile(p.dir) }

// fakeController mimics the controller's API routes well enough for the
// CLI: jobs 5, 6, 7, 12, 13, 20; job 99 does not exist.
type fakeController struct {
	t   *testing.T
	srv *httptest.Server
	pki *testPKI

	mu       sync.Mutex
	submits  []map[string]any // decoded POST /jobs bodies
	queries  []string         // raw queries of GET /jobs and the WebSocket
	drops    int              // WebSocket connections to cut after the first message
	wsConns  int
	clientCN string
	protos   map[string]int // requests by "METHOD proto", e.g. "POST HTTP/2.0"
}

func newFakeController(t *testing.T) *fakeController {
	t.Helper()
	f := &fakeController{t: t, pki: newTestPKI(t)}
	f.srv = f.pki.serve(t, http.HandlerFunc(f.serve))
	return f
}

// serve runs h behind the PKI's controller certificate, asking for
// client certificates as a controller does.
func (p *testPKI) serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	pool, err := certs.LoadPool(p.ca())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(p.ctlCert, p.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	// As the controller's API: HTTP/2 and HTTP/1.1 by ALPN.
	srv.EnableHTTP2 = true
	srv.TLS = certs.ServerTLS(pool, cert, "h2", "http/1.1")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// useEnv points the CLI at the fake controller through the environment.
func (f *fakeController) useEnv(t *testing.T) {
	clearClientEnv(t)
	t.Setenv(envAddr, f.srv.URL)
	t.Setenv(envCACert, f.pki.ca())
	t.Setenv(envClientCert, f.pki.opCert)
	t.Setenv(envClientKey, f.pki.opKey)
}

// lastSubmit returns the body of the last POST /jobs without the
// idempotency key submit makes when given none (generatedKey checks
// it): the rest is what the tests compare.
func (f *fakeController) lastSubmit() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.submits) == 0 {
		return nil
	}
	body := maps.Clone(f.submits[len(f.submits)-1])
	if k, _ := body["idempotency_key"].(string); generatedKey.MatchString(k) {
		delete(body, "idempotency_key")
	}
	return body
}

// generatedKey is the form of the idempotency key submit makes.
var generatedKey = regexp.MustCompile(`^cli-[0-9a-f]{32}$`)

func (f *fakeController) lastQuery() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queries) == 0 {
		return ""
	}
	return f.queries[len(f.queries)-1]
}

func fakeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func fakeError(w http.ResponseWriter, code int, msg string, extra ...string) {
	body := map[string]any{"error": msg}
	for i := 0; i+1 < len(extra); i += 2 {
		body[extra[i]] = extra[i+1]
	}
	fakeJSON(w, code, body)
}

var fakeCreated = time.Now().Add(-3 * time.Minute).UTC()

func fakeJob(id uint64, status string) map[string]any {
	j := map[string]any{
		"job_id": id, "name": "job " + strconv.FormatUint(id, 10), "command": "echo hi", "params": "",
		"priority": "mid", "priority_value": 50, "status": status, "timeout": 0, "retries": 0,
		"max_retries": 0, "logs": true, "cancellable": true, "created_at": fakeCreated,
		"exit_code": nil, "attempt": 0, "attempts": []any{}, "log_bytes": 0,
	}
	if id == 12 {
		exit := 3
		started := fakeCreated.Add(time.Second)
		finished := started.Add(1500 * time.Millisecond)
		j["name"], j["command"], j["params"] = "build", "make", "test"
		j["priority"], j["priority_value"] = "high", 75
		j["reason"] = "attempt 1 failed: exit code 3"
		j["started_at"], j["finished_at"], j["duration"] = started, finished, 1.5
		j["exit_code"], j["attempt"], j["log_bytes"] = exit, 1, 15
		j["labels"] = map[string]string{"gpu": "yes", "os": "linux"}
		j["attempts"] = []any{map[string]any{
			"number": 1, "agent": "worker-1", "dispatched_at": started, "started_at": started,
			"finished_at": finished, "outcome": "failed", "exit_code": exit, "duration": 1.5,
		}}
	}
	return j
}

// fakeLog is job 12's output: offset, stream, data.
var fakeLog = []api.LogMessage{
	{Type: "output", Offset: 0, Stream: "stdout", Data: []byte("hello\n")},
	{Type: "output", Offset: 6, Stream: "stderr", Data: []byte("oops\n")},
	{Type: "output", Offset: 11, Stream: "stdout", Data: []byte("bye\n")},
}

func (f *fakeController) serve(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		fakeError(w, http.StatusUnauthorized, "a client certificate is required")
		return
	}
	f.mu.Lock()
	f.clientCN = r.TLS.PeerCertificates[0].Subject.CommonName
	if f.protos == nil {
		f.protos = map[string]int{}
	}
	f.protos[r.Method+" "+r.Proto]++
	f.mu.Unlock()

	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case parts[0] == "schedules": // schedule_test.go
		f.serveSchedules(w, r, parts)
	case r.Method == "POST" && r.URL.Path == "/jobs":
		var body map[string]any
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			fakeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
			return
		}
		f.mu.Lock()
		f.submits = append(f.submits, body)
		f.mu.Unlock()
		if cmd, _ := body["command"].(string); cmd == "fail" {
			fakeError(w, http.StatusBadRequest, `field "priority": must be low, mid (or med), high, or an integer 0–100`, "field", "priority")
			return
		}
		j := fakeJob(12, "queued")
		j["priority"] = "mid"
		if p, ok := body["priority"]; ok {
			j["priority"] = p
		}
		if body["idempotency_key"] == "dup" {
			j["status"] = "running"
			fakeJSON(w, http.StatusOK, j)
			return
		}
		fakeJSON(w, http.StatusCreated, j)
	case r.Method == "GET" && r.URL.Path == "/jobs":
		f.mu.Lock()
		f.queries = append(f.queries, r.URL.RawQuery)
		f.mu.Unlock()
		fakeJSON(w, http.StatusOK, []any{fakeJob(7, "completed"), fakeJob(12, "failed")})
	case len(parts) == 2 && parts[0] == "jobs":
		id, _ := strconv.ParseUint(parts[1], 10, 64)
		switch {
		case id != 5 && id != 6 && id != 7 && id != 12 && id != 13 && id != 20:
			fakeError(w, http.StatusNotFound, "no job with id "+parts[1], "job_id", parts[1])
		case r.Method == "GET":
			fakeJSON(w, http.StatusOK, fakeJob(id, "failed"))
		case r.Method == "DELETE" && id == 5:
			fakeJSON(w, http.StatusOK, fakeJob(id, "cancelled"))
		case r.Method == "DELETE" && id == 6:
			fakeJSON(w, http.StatusAccepted, fakeJob(id, "running"))
		case r.Method == "DELETE":
			fakeError(w, http.StatusConflict, fmt.Sprintf("job %d is completed; only queued, waiting or running jobs can be cancelled", id), "status", "completed")
		default:
			fakeError(w, http.StatusMethodNotAllowed, "method not allowed")
		}
	case r.Method == "GET" && r.URL.Path == "/agents":
		fakeJSON(w, http.StatusOK, []any{map[string]any{
			"name": "worker-1", "labels": map[string]string{"gpu": "yes"}, "slots": 4, "running": 1,
			"free": 3, "transport": "quic", "address": "127.0.0.1:5000", "version": "0.1.0",
			"connected_at": time.Now().Add(-2 * time.Hour), "last_heartbeat": time.Now().Add(-time.Second), "jobs": []int{12},
		}})
	case r.Method == "GET" && r.URL.Path == "/jobs/12/events": // status prints its webhooks
		fakeJSON(w, http.StatusOK, []map[string]any{
			{"seq": 0, "time": time.Now(), "type": "submitted", "state": "queued"},
			{"seq": 5, "time": time.Now(), "type": "notified", "state": "failed", "message": "job.finished webhook to https://hooks.example/x delivered (200) after 3 tries"},
		})
	case r.Method == "GET" && len(parts) == 4 && parts[0] == "ws" && parts[1] == "jobs" && parts[3] == "logs":
		f.serveLogs(w, r, parts[2])
	default:
		fakeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	}
}

// serveLogs mimics the log WebSocket in format=json: job 12 writes
// fakeLog and fails with exit code 3; job 13 is lost; job 20 writes one
// line and runs until the client leaves.
func (f *fakeController) serveLogs(w http.ResponseWriter, r *http.Request, rawID string) {
	q := r.URL.Query()
	f.mu.Lock()
	f.queries = append(f.queries, r.URL.RawQuery)
	f.wsConns++
	drop := f.drops > 0
	if drop {
		f.drops--
	}
	f.mu.Unlock()
	if q.Get("format") != "json" {
		fakeError(w, http.StatusBadRequest, "the CLI must ask for format=json", "field", "format")
		return
	}
	if rawID != "12" && rawID != "13" && rawID != "14" && rawID != "20" {
		fakeError(w, http.StatusNotFound, "no job with id "+rawID)
		return
	}
	offset, _ := strconv.ParseUint(q.Get("offset"), 10, 64)
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	switch rawID {
	case "20":
		_ = conn.WriteJSON(api.LogMessage{Type: "output", Stream: "stdout", Data: []byte("working\n")})
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	case "13":
		_ = conn.WriteJSON(api.LogMessage{Type: "end", Status: "failed", Reason: "attempt 1 lost: agent worker-1 stopped sending heartbeats"})
		return
	case "14":
		serveRetried(conn, q, offset)
		return
	}
	for _, m := range fakeLog {
		// Like the store, start at the chunk holding offset.
		if m.Offset+uint64(len(m.Data)) <= offset {
			continue
		}
		if err := conn.WriteJSON(m); err != nil {
			return
		}
		if drop {
			return // cut without a close frame, before the end
		}
	}
	if drop {
		return // nothing left to send, but cut before the end all the same
	}
	exit := 3
	end := api.LogMessage{Type: "end", Status: "failed", ExitCode: &exit, Reason: "attempt 1 failed: exit code 3"}
	if q.Get("follow") == "0" {
		end = api.LogMessage{Type: "end", Status: "running"}
	}
	_ = conn.WriteJSON(end)
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "job 12 failed"), time.Now().Add(time.Second))
}

// retriedLog is job 14's output: attempt 1 on worker-1 writes "one\none"
// (no newline at the end) and fails with exit code 4 after it was
// received at two times; attempt 2 on worker-2 writes "two\n" and
// completes.
var (
	retriedAt  = time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)
	retriedLog = []api.LogMessage{
		{Type: "attempt", Attempt: 1, Agent: "worker-1", Time: retriedAt, Offset: 0, Attempts: 2},
		{Type: "output", Offset: 0, Stream: "stdout", Data: []byte("one\no"), Time: retriedAt.Add(1500 * time.Millisecond)},
		{Type: "output", Offset: 5, Stream: "stdout", Data: []byte("ne"), Time: retriedAt.Add(2 * time.Second)},
		{Type: "attempt", Attempt: 2, Agent: "worker-2", Time: retriedAt.Add(time.Minute), Offset: 7, Attempts: 2},
		{Type: "output", Offset: 7, Stream: "stdout", Data: []byte("two\n")}, // stored before times were kept
	}
)

// serveRetried mimics the log WebSocket of job 14 (retriedLog), with
// attempt markers (attempts=1) or one attempt (attempt=N).
func serveRetried(conn *websocket.Conn, q url.Values, offset uint64) {
	only, _ := strconv.ParseUint(q.Get("attempt"), 10, 32)
	var cur uint32
	for _, m := range retriedLog {
		if m.Type == "attempt" {
			cur = m.Attempt
			if only != 0 && uint64(cur) == only || only == 0 && q.Get("attempts") == "1" && m.Offset >= offset {
				_ = conn.WriteJSON(m)
			}
			continue
		}
		if only != 0 && uint64(cur) != only || m.Offset+uint64(len(m.Data)) <= offset {
			continue
		}
		_ = conn.WriteJSON(m)
	}
	end := api.LogMessage{Type: "end", Status: "completed", ExitCode: new(int)}
	switch only {
	case 1:
		end = api.LogMessage{Type: "end", Status: "completed", Attempt: 1, Outcome: "failed", ExitCode: intPtr(4)}
	case 2:
		end = api.LogMessage{Type: "end", Status: "completed", Attempt: 2, Outcome: "completed", ExitCode: new(int)}
	}
	_ = conn.WriteJSON(end)
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "job 14 completed"), time.Now().Add(time.Second))
}

func TestResolveSettings(t *testing.T) {
	writeDevEnv := func(t *testing.T, dir string) {
		t.Helper()
		env := strings.Join([]string{
			"# written by jobsuite dev",
			"",
			"export JOBSUITE_ADDR='https://127.0.0.1:8443'",
			`export JOBSUITE_CACERT="pki/ca.pem"`,
			"export JOBSUITE_CLIENT_CERT=/abs/op.pem",
			"  export JOBSUITE_CLIENT_KEY='/abs/it'\\''s-key.pem'",
		}, "\n")
		if err := os.MkdirAll(filepath.Join(dir, ".jobsuite-dev"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ".jobsuite-dev", "env"), []byte(env), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]struct {
		env   map[string]string
		flags clientFlags
		file  bool
		want  func(dir string) settings
	}{
		"nothing": {
			want: func(string) settings { return settings{} },
		},
		"dev env file": {
			file: true,
			want: func(dir string) settings {
				return settings{Addr: "https://127.0.0.1:8443", CA: filepath.Join(dir, "pki", "ca.pem"), Cert: "/abs/op.pem", Key: "/abs/it's-key.pem"}
			},
		},
		"environment beats the file, which is ignored": {
			file: true,
			env:  map[string]string{envAddr: "ctl:9443"},
			want: func(string) settings { return settings{Addr: "ctl:9443", devSkipped: envAddr} },
		},
		"flags beat the environment": {
			file:  true,
			env:   map[string]string{envAddr: "ctl:9443", envCACert: "/env/ca.pem", envClientCert: "/env/op.pem", envClientKey: "/env/op-key.pem"},
			flags: clientFlags{addr: "flag:1", clientKey: "/flag/key.pem"},
			want: func(string) settings {
				return settings{Addr: "flag:1", CA: "/env/ca.pem", Cert: "/env/op.pem", Key: "/flag/key.pem",
					devSkipped: "JOBSUITE_ADDR, JOBSUITE_CACERT, JOBSUITE_CLIENT_CERT, JOBSUITE_CLIENT_KEY"}
			},
		},
		"flags beat the file": {
			file:  true,
			flags: clientFlags{caCert: "/flag/ca.pem"},
			want: func(dir string) settings {
				return settings{Addr: "https://127.0.0.1:8443", CA: "/flag/ca.pem", Cert: "/abs/op.pem", Key: "/abs/it's-key.pem"}
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := clearClientEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if tt.file {
				writeDevEnv(t, dir)
			}
			flags := tt.flags
			got, err := resolveSettings(&flags)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want(dir); got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestParseEnvFileErrors(t *testing.T) {
	tests := map[string]string{
		"no equals":      "export JOBSUITE_ADDR",
		"open quote":     "JOBSUITE_ADDR='x",
		"space in key":   "export A B=1",
		"open dquote":    `JOBSUITE_ADDR="x`,
		"lone quote val": "JOBSUITE_ADDR='",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if env, err := parseEnvFile([]byte(in)); err == nil {
				t.Errorf("parsed %q as %v, want an error", in, env)
			}
		})
	}
	env, err := parseEnvFile([]byte("A=\"x \\\"y\\\" \\$z\"\nB=plain\n#C=1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if env["A"] != `x "y" $z` || env["B"] != "plain" || len(env) != 2 {
		t.Errorf("got %q", env)
	}
}

func TestNormalizeAddr(t *testing.T) {
	tests := map[string]struct {
		in, want, err string
	}{
		"host:port":        {in: "127.0.0.1:8443", want: "https://127.0.0.1:8443"},
		"https":            {in: "https://ctl.example.com:8443", want: "https://ctl.example.com:8443"},
		"trailing slash":   {in: "https://ctl:8443/", want: "https://ctl:8443"},
		"upper-case":       {in: "HTTPS://ctl:8443", want: "https://ctl:8443"},
		"ipv6":             {in: "[::1]:8443", want: "https://[::1]:8443"},
		"spaces":           {in: "  ctl:1  ", want: "https://ctl:1"},
		"http is refused":  {in: "http://ctl:8443", err: "mutual TLS"},
		"other scheme":     {in: "ftp://ctl:21", err: "want host:port"},
		"no host":          {in: "https://:8443", err: "no host"},
		"a path":           {in: "https://ctl:8443/jobsuite/", want: "https://ctl:8443/jobsuite"},
		"the dashboard":    {in: "https://ctl:8443/ui/", err: "is the web dashboard's, not the API's: use https://ctl:8443"},
		"a dashboard page": {in: "ctl:8443/ui/job?id=3", err: "use https://ctl:8443"},
		"unparseable port": {in: "ctl:port", err: "want host:port"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			u, err := normalizeAddr(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, %v; want an error containing %q", u, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != tt.want {
				t.Errorf("got %s, want %s", u, tt.want)
			}
		})
	}
}

func TestNewClientErrors(t *testing.T) {
	pki := newTestPKI(t)
	tests := map[string]struct {
		flags clientFlags
		err   string
	}{
		"no address": {
			err: "no controller address: set JOBSUITE_ADDR or run 'jobsuite dev' in this folder (see 'jobsuite submit -h')",
		},
		"http":       {flags: clientFlags{addr: "http://127.0.0.1:1"}, err: "mutual TLS"},
		"no CA":      {flags: clientFlags{addr: "127.0.0.1:1"}, err: "JOBSUITE_CACERT"},
		"no cert":    {flags: clientFlags{addr: "127.0.0.1:1", caCert: pki.ca()}, err: "JOBSUITE_CLIENT_CERT"},
		"no key":     {flags: clientFlags{addr: "127.0.0.1:1", caCert: pki.ca(), clientCert: pki.opCert}, err: "JOBSUITE_CLIENT_KEY"},
		"wrong file": {flags: clientFlags{addr: "127.0.0.1:1", caCert: pki.ca(), clientCert: pki.opCert, clientKey: pki.ctlKey}, err: "check that"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			clearClientEnv(t)
			m, _, _ := clientTestMeta()
			flags := tt.flags
			_, err := newClient(m, &flags)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestClientFromDevEnvFile(t *testing.T) {
	f := newFakeController(t)
	dir := clearClientEnv(t)
	env := fmt.Sprintf("export JOBSUITE_ADDR='%s'\nexport JOBSUITE_CACERT='%s'\nexport JOBSUITE_CLIENT_CERT='%s'\nexport JOBSUITE_CLIENT_KEY='%s'\n",
		strings.TrimPrefix(f.srv.URL, "https://"), f.pki.ca(), f.pki.opCert, f.pki.opKey)
	if err := os.MkdirAll(filepath.Join(dir, ".jobsuite-dev"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".jobsuite-dev", "env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	m, out, errb := clientTestMeta()
	if code := (&AgentsCommand{Meta: m}).Run(nil); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	if !strings.Contains(out.String(), "worker-1") {
		t.Errorf("stdout %q", out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clientCN != "alice" {
		t.Errorf("the controller saw client %q, want alice", f.clientCN)
	}
}

func TestClientUnreachable(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	m, _, errb := clientTestMeta()
	if code := (&ListCommand{Meta: m}).Run([]string{"-addr", addr}); code != ExitError {
		t.Fatalf("exit %d, want %d", code, ExitError)
	}
	if want := "is the controller running at https://" + addr; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q does not contain %q", errb, want)
	}
}

func TestClientRefusesNonController(t *testing.T) {
	f := newFakeController(t)
	// A server presenting an operator certificate is not a controller.
	certPath, keyPath, err := certs.IssueFiles(f.pki.dir, certs.Request{Role: certs.RoleOperator, Name: "mallory", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := certs.LoadPool(f.pki.ca())
	cert, err := certs.LoadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	f.useEnv(t)
	m, _, errb := clientTestMeta()
	if code := (&AgentsCommand{Meta: m}).Run([]string{"-addr", srv.URL}); code != ExitError {
		t.Fatalf("exit %d, want %d", code, ExitError)
	}
	if want := "error: the controller at " + srv.URL + " is not trusted"; !strings.HasPrefix(errb.String(), want) {
		t.Errorf("stderr %q does not start with %q", errb, want)
	}
}

func TestAPIErrorFromBody(t *testing.T) {
	e := apiError(409, []byte(`{"error":"job 7 is completed","status":"completed","field":"x"}`))
	if e.Error() != "job 7 is completed" || e.JobStatus != "completed" || e.Field != "x" || e.Status != 409 {
		t.Errorf("got %+v", e)
	}
	e = apiError(502, []byte("Bad Gateway\n"))
	if !strings.Contains(e.Error(), "502") || !strings.Contains(e.Error(), "Bad Gateway") {
		t.Errorf("got %q", e.Error())
	}
	e = apiError(500, nil)
	if !strings.Contains(e.Error(), "500 Internal Server Error") {
		t.Errorf("got %q", e.Error())
	}
}

// clientCommandList is every client command, by name.
func clientCommandList(m Meta) map[string]mcli.Command {
	out := map[string]mcli.Command{}
	for name, factory := range clientCommands(m) {
		c, err := factory()
		if err != nil {
			panic(err)
		}
		out[name] = c
	}
	return out
}

func TestClientCommandsHelp(t *testing.T) {
	m, _, _ := clientTestMeta()
	for name := range clientCommandList(m) {
		t.Run(name, func(t *testing.T) {
			m, out, errb := clientTestMeta()
			c := clientCommandList(m)[name]
			if code := c.Run([]string{"-h"}); code != ExitOK {
				t.Fatalf("-h: exit %d, stderr %q", code, errb)
			}
			for _, want := range []string{"Usage: jobsuite " + name, "Example:", "-addr", "JOBSUITE_ADDR"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("help lacks %q:\n%s", want, out)
				}
			}
			if c.Synopsis() == "" {
				t.Error("no synopsis")
			}

			m, out, errb = clientTestMeta()
			c = clientCommandList(m)[name]
			if code := c.Run([]string{"-no-such-flag"}); code != ExitUsage {
				t.Fatalf("bad flag: exit %d, want %d", code, ExitUsage)
			}
			if want := "error: flag provided but not defined: -no-such-flag\nRun 'jobsuite " + name + " -h' for usage.\n"; errb.String() != want {
				t.Errorf("bad flag: stderr %q", errb)
			}
			if out.Len() != 0 {
				t.Errorf("bad flag: stdout %q", out)
			}
		})
	}
}

// TestClientCommandsThroughCLI runs the commands the way main does, with
// clientCommands merged into commands().
func TestClientCommandsThroughCLI(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	cmds := commands(m)
	for k, v := range clientCommands(m) {
		cmds[k] = v
	}
	run := func(args ...string) int {
		out.Reset()
		errb.Reset()
		c := &mcli.CLI{Name: "jobsuite", Args: args, Commands: cmds, HelpWriter: out, ErrorWriter: errb}
		code, err := c.Run()
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	if code := run("submit", "-h"); code != ExitOK || !strings.Contains(out.String()+errb.String(), "jobsuite submit") {
		t.Errorf("submit -h: exit %d, %q %q", code, out, errb)
	}
	if code := run("status", "12"); code != ExitOK || !strings.Contains(out.String(), "build") {
		t.Errorf("status 12: exit %d, %q %q", code, out, errb)
	}
	if code := run("submit", "-f", "--", "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("submit -f: exit %d, want 3; stderr %q", code, errb)
	}
	if got := f.lastSubmit()["command"]; got != "sh -c exit 3" {
		t.Errorf("command %q", got)
	}
}

// TestClientErrorsSayWhatIsWrong: the mistakes that used to get a
// misleading error get one that names them.
func TestClientErrorsSayWhatIsWrong(t *testing.T) {
	pki := newTestPKI(t)

	// One JOBSUITE_* variable set beside a dev env file.
	dir := clearClientEnv(t)
	if err := os.MkdirAll(filepath.Join(dir, ".jobsuite-dev"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".jobsuite-dev", "env"), []byte("export JOBSUITE_ADDR=127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envCACert, pki.ca())
	m, _, _ := clientTestMeta()
	_, err := newClient(m, nil)
	if want := "(JOBSUITE_CACERT is set, so .jobsuite-dev/env is not read"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("one variable beside the dev file: %v; want %q", err, want)
	}

	// The agent port (TLS with another application protocol) as -addr.
	pool, _ := certs.LoadPool(pki.ca())
	cert, err := certs.LoadKeyPair(pki.ctlCert, pki.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	agentPort := httptest.NewUnstartedServer(http.NotFoundHandler())
	agentPort.TLS = certs.ServerTLS(pool, cert, "jobsuite-agent")
	agentPort.Config.ErrorLog = log.New(io.Discard, "", 0)
	agentPort.StartTLS()
	defer agentPort.Close()
	clearClientEnv(t)
	t.Setenv(envCACert, pki.ca())
	t.Setenv(envClientCert, pki.opCert)
	t.Setenv(envClientKey, pki.opKey)
	m, _, errb := clientTestMeta()
	if code := (&ListCommand{Meta: m}).Run([]string{"-addr", agentPort.URL}); code != ExitError {
		t.Errorf("list at the agent port: exit %d", code)
	}
	if want := "is it the agent port"; !strings.Contains(errb.String(), want) || strings.Contains(errb.String(), "refused our certificate") {
		t.Errorf("list at the agent port: %q; want %q", errb, want)
	}

	// An expired certificate, and one not valid yet.
	leaf, err := certs.LoadKeyPair(pki.opCert, pki.opKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkValidity(pki.opCert, leaf.Leaf, time.Now()); err != nil {
		t.Errorf("a valid certificate: %v", err)
	}
	err = checkValidity(pki.opCert, leaf.Leaf, leaf.Leaf.NotAfter.Add(time.Hour))
	if err == nil || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), `("alice")`) {
		t.Errorf("an expired certificate: %v", err)
	}
	err = checkValidity(pki.opCert, leaf.Leaf, leaf.Leaf.NotBefore.Add(-time.Hour))
	if err == nil || !strings.Contains(err.Error(), "is not valid before") {
		t.Errorf("a certificate not valid yet: %v", err)
	}
}
