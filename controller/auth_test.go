package controller_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/controller/store"
	"jobsuite/transport"
)

// runAgent starts agent name with the certificate files f and returns the
// channel its Run result arrives on. Unlike startAgent it neither waits
// for the agent to connect nor treats an error as a test failure.
func (c *cluster) runAgent(name string, f certs.Files) <-chan error {
	c.t.Helper()
	a, err := agent.New(agent.Config{
		Controller: c.srv.AgentAddr(), TLS: f, Slots: 2, Transport: transport.ModeQUIC,
		Logger: testLogger(c.t, name), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		StateDir: c.t.TempDir(),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() { defer close(done); errc <- a.Run(ctx) }()
	c.t.Cleanup(func() { cancel(); <-done })
	return errc
}

// agentConnected reports whether GET /agents lists name.
func (c *cluster) agentConnected(name string) bool {
	var agents []api.AgentInfo
	c.getJSON("/agents", &agents)
	for _, a := range agents {
		if a.Name == name {
			return true
		}
	}
	return false
}

// refusedWith waits for an agent's Run to end and checks it was refused
// for want.
func refusedWith(t *testing.T, errc <-chan error, want string) {
	t.Helper()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("agent ended with %v; want a refusal mentioning %q", err, want)
		}
		t.Logf("agent refused: %v", err)
	case <-time.After(waitLimit):
		t.Fatalf("agent was not refused (%q) within %v", want, waitLimit)
	}
}

// jobAttempts is what these tests read of a job.
type jobAttempts struct {
	Status   string `json:"status"`
	Attempts []struct {
		Number  int    `json:"number"`
		Agent   string `json:"agent"`
		Outcome string `json:"outcome"`
		Error   string `json:"error"`
	} `json:"attempts"`
}

func (c *cluster) attempts(id uint64) jobAttempts {
	c.t.Helper()
	var j jobAttempts
	c.getJSON(fmt.Sprintf("/jobs/%d", id), &j)
	return j
}

func certSerial(t *testing.T, dir, name string) string {
	t.Helper()
	pair, err := certs.LoadKeyPair(certs.CertFile(dir, name), certs.KeyFile(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber.Text(16)
}

func TestRevokeAgent(t *testing.T) {
	c := startCluster(t)
	errc := c.runAgent("agent-1", files(c.dir, "agent-1"))
	c.waitFor("agent-1 connected", func() bool { return c.agentConnected("agent-1") })

	// The first attempt blocks on agent-1; a retry finishes at once.
	mark := filepath.Join(t.TempDir(), "mark")
	j := c.submit(fmt.Sprintf(`{"command":"if [ -e %[1]s ]; then echo second; else touch %[1]s; sleep 300; fi","retries":1}`, mark))
	c.waitState(j.JobID, "running")

	code, b := c.do("POST", "/agents/agent-1/revoke", `{"reason":"host stolen"}`)
	if code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, b)
	}
	var res api.RevokeResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	serial := certSerial(t, c.dir, "agent-1")
	if res.Revocation.ID != "serial:"+serial || res.Revocation.Reason != "host stolen" || !strings.Contains(res.Revocation.By, "operator operator") {
		t.Errorf("revocation %+v, want serial %s", res.Revocation, serial)
	}
	if len(res.SessionsClosed) != 1 || res.SessionsClosed[0] != "agent-1" || len(res.JobsLost) != 1 || res.JobsLost[0] != j.JobID {
		t.Errorf("result %+v, want agent-1 closed and job %d lost", res, j.JobID)
	}

	// The session is closed at once and the reconnect is refused for good.
	refusedWith(t, errc, "revoked")
	if c.agentConnected("agent-1") {
		t.Error("agent-1 is still listed after its revocation")
	}
	got := c.attempts(j.JobID)
	if len(got.Attempts) != 1 || got.Attempts[0].Outcome != "lost" || !strings.Contains(got.Attempts[0].Error, "revoked") {
		t.Fatalf("after revocation: %+v, want one lost attempt", got)
	}
	if got.Status != "queued" && got.Status != "waiting" {
		t.Fatalf("job is %s, want it back in the queue for its retry", got.Status)
	}

	// After a restart the revocation still holds: the same certificate is
	// refused at session start and nothing is dispatched to it.
	c.stopController()
	c.startController()
	refusedWith(t, c.runAgent("agent-1", files(c.dir, "agent-1")), "revoked")
	c.waitState(j.JobID, "queued")
	if got := c.attempts(j.JobID); len(got.Attempts) != 1 {
		t.Fatalf("the revoked agent got the job again: %+v", got)
	}

	// Another agent runs the retry.
	c.startAgent("agent-2", 2, nil, transport.ModeQUIC)
	done := c.waitState(j.JobID, "completed")
	if len(done.Attempts) != 2 || done.Attempts[1].Agent != "agent-2" || c.logs(j.JobID) != "second\n" {
		t.Errorf("retry: %+v, logs %q", done, c.logs(j.JobID))
	}

	var revs []api.RevocationView
	c.getJSON("/revocations", &revs)
	if len(revs) != 1 || revs[0].Serial != serial || revs[0].Name != "agent-1" || revs[0].NotAfter.IsZero() {
		t.Errorf("GET /revocations = %+v", revs)
	}
	// The viewer may not see or change revocations.
	viewer := c.httpClient("viewer")
	for _, req := range [][2]string{{"GET", "/revocations"}, {"POST", "/agents/agent-2/revoke"}, {"POST", "/certs/revoke"}} {
		if code, b := doWith(t, viewer, req[0], c.base+req[1], `{}`); code != http.StatusForbidden {
			t.Errorf("viewer %s %s: %d %s", req[0], req[1], code, b)
		}
	}
}

func TestRevokeAgentName(t *testing.T) {
	c := startCluster(t)
	// Not connected: its certificate is unknown, so only its name can be revoked.
	code, b := c.do("POST", "/agents/agent-1/revoke", "")
	if code != http.StatusNotFound || !strings.Contains(string(b), "all_certs") {
		t.Fatalf("revoking an unconnected agent's certificate: %d %s", code, b)
	}
	if code, b := c.do("POST", "/agents/agent-1/revoke", `{"all_certs":true,"reason":"retired"}`); code != http.StatusOK {
		t.Fatalf("revoke name: %d %s", code, b)
	}
	refusedWith(t, c.runAgent("agent-1", files(c.dir, "agent-1")), "revoked")

	// A certificate issued later with the same name is refused too.
	ca, err := certs.LoadCA(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(certs.Request{Role: certs.RoleAgent, Name: "agent-1"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fresh := certs.Files{CA: certs.CAFile(c.dir), Cert: filepath.Join(dir, "a.pem"), Key: filepath.Join(dir, "a-key.pem")}
	writeFile(t, fresh.Cert, certPEM)
	writeFile(t, fresh.Key, keyPEM)
	refusedWith(t, c.runAgent("agent-1", fresh), "revoked")

	// Other agents are unaffected; removing the revocation lets it back in.
	c.startAgent("agent-2", 1, nil, transport.ModeQUIC)
	if code, b := c.do("DELETE", "/revocations/name:agent:agent-1", ""); code != http.StatusOK {
		t.Fatalf("unrevoke: %d %s", code, b)
	}
	if code, _ := c.do("DELETE", "/revocations/name:agent:agent-1", ""); code != http.StatusNotFound {
		t.Errorf("second unrevoke: %d, want 404", code)
	}
	c.startAgent("agent-1", 1, nil, transport.ModeQUIC)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tokenClient is an HTTPS client with no certificate that sends token.
type tokenClient struct {
	t     *testing.T
	base  string
	http  *http.Client
	token string
}

func (c *cluster) tokenClient(token string) *tokenClient {
	c.t.Helper()
	pool, err := certs.LoadPool(certs.CAFile(c.dir))
	if err != nil {
		c.t.Fatal(err)
	}
	return &tokenClient{t: c.t, base: c.base, token: token, http: &http.Client{Timeout: waitLimit, Transport: &http.Transport{
		TLSClientConfig: certs.ClientTLS(pool, tls.Certificate{}, "127.0.0.1", "http/1.1"),
	}}}
}

func (tc *tokenClient) do(method, path, body string) (int, []byte) {
	tc.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, tc.base+path, r)
	if err != nil {
		tc.t.Fatal(err)
	}
	if tc.token != "" {
		req.Header.Set("Authorization", "Bearer "+tc.token)
	}
	resp, err := tc.http.Do(req)
	if err != nil {
		tc.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c *cluster) createToken(body string) api.TokenView {
	c.t.Helper()
	code, b := c.do("POST", "/tokens", body)
	if code != http.StatusCreated {
		c.t.Fatalf("POST /tokens %s: %d %s", body, code, b)
	}
	var tv api.TokenView
	if err := json.Unmarshal(b, &tv); err != nil {
		c.t.Fatal(err)
	}
	return tv
}

func TestAPITokens(t *testing.T) {
	c := startCluster(t, "agent-1")
	viewer := c.createToken(`{"role":"viewer","name":"grafana","ttl":3600}`)
	operator := c.createToken(`{"role":"operator","name":"ci"}`)
	if !strings.HasPrefix(viewer.Token, controller.TokenPrefix) || len(viewer.Token) != len(controller.TokenPrefix)+43 || viewer.Role != "viewer" || viewer.Name != "grafana" {
		t.Fatalf("viewer token %+v", viewer)
	}
	if d := time.Until(operator.ExpiresAt) - controller.DefaultTokenTTL; d > time.Minute || d < -time.Minute {
		t.Errorf("default token expiry %s, want in %s", operator.ExpiresAt, controller.DefaultTokenTTL)
	}

	tests := map[string]struct {
		token, method, path, body string
		code                      int
		msg                       string
	}{
		"viewer reads":              {viewer.Token, "GET", "/jobs", "", 200, ""},
		"viewer may not submit":     {viewer.Token, "POST", "/jobs", `{"command":"true"}`, 403, "may only read"},
		"viewer may not cancel":     {viewer.Token, "DELETE", "/jobs/1", "", 403, "may only read"},
		"viewer may not see tokens": {viewer.Token, "GET", "/tokens", "", 403, "may only read"},
		"operator submits":          {operator.Token, "POST", "/jobs", `{"command":"echo tok"}`, 201, ""},
		"token may not mint tokens": {operator.Token, "POST", "/tokens", `{"role":"operator"}`, 403, "operator certificate"},
		"no certificate, no token":  {"", "GET", "/jobs", "", 401, "no client certificate and no API token"},
		"unknown token":             {controller.TokenPrefix + strings.Repeat("A", 43), "GET", "/jobs", "", 401, "not valid"},
		"not a jobsuite token":      {"hello", "GET", "/jobs", "", 401, "not valid"},
		"health needs nothing":      {"", "GET", "/health", "", 200, ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, b := c.tokenClient(tt.token).do(tt.method, tt.path, tt.body)
			if code != tt.code || !strings.Contains(string(b), tt.msg) {
				t.Fatalf("%s %s: %d %s; want %d with %q", tt.method, tt.path, code, b, tt.code, tt.msg)
			}
		})
	}

	// Other Authorization schemes are refused, not ignored.
	req, _ := http.NewRequest("GET", c.base+"/jobs", nil)
	req.Header.Set("Authorization", "Basic b3A6cHc=")
	if resp, err := c.tokenClient("").http.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("Basic auth: %d %v", resp.StatusCode, resp.Header)
	}

	// The log WebSocket takes the token as a header or, for browsers, as
	// ?access_token=; other paths ignore access_token.
	j := c.submit(`{"command":"echo ws"}`)
	c.waitState(j.JobID, "completed")
	pool, err := certs.LoadPool(certs.CAFile(c.dir))
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{TLSClientConfig: certs.ClientTLS(pool, tls.Certificate{}, "127.0.0.1", "http/1.1"), HandshakeTimeout: 10 * time.Second}
	wsURL := fmt.Sprintf("wss://%s/ws/jobs/%d/logs", c.srv.HTTPAddr(), j.JobID)
	for name, dial := range map[string]func() (*websocket.Conn, *http.Response, error){
		"query": func() (*websocket.Conn, *http.Response, error) {
			return d.Dial(wsURL+"?access_token="+viewer.Token, nil)
		},
		"header": func() (*websocket.Conn, *http.Response, error) {
			return d.Dial(wsURL, http.Header{"Authorization": {"Bearer " + viewer.Token}})
		},
	} {
		conn, _, err := dial()
		if err != nil {
			t.Fatalf("websocket with token in %s: %v", name, err)
		}
		_, msg, err := conn.ReadMessage()
		conn.Close()
		if err != nil || string(msg) != "ws\n" {
			t.Errorf("websocket with token in %s: %q %v", name, msg, err)
		}
	}
	if _, resp, err := d.Dial(wsURL, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Errorf("websocket without credentials: %v %v", resp, err)
	}
	if code, _ := c.tokenClient("").do("GET", "/jobs?access_token="+viewer.Token, ""); code != 401 {
		t.Errorf("access_token outside the WebSocket: %d, want 401", code)
	}

	// Tokens are listed without secrets and survive a restart.
	code, b := c.do("GET", "/tokens", "")
	if code != 200 || strings.Contains(string(b), viewer.Token) || strings.Contains(string(b), operator.Token) {
		t.Fatalf("GET /tokens: %d %s", code, b)
	}
	var list []api.TokenView
	if err := json.Unmarshal(b, &list); err != nil || len(list) != 2 || list[0].ID != viewer.ID || list[1].ID != operator.ID || !strings.Contains(list[0].CreatedBy, "operator operator") {
		t.Fatalf("tokens %+v (%v)", list, err)
	}
	c.stopController()
	c.startController()
	if code, b := c.tokenClient(operator.Token).do("GET", "/jobs", ""); code != 200 {
		t.Fatalf("operator token after restart: %d %s", code, b)
	}

	// Revoked: refused at once.
	if code, b := c.do("DELETE", "/tokens/"+viewer.ID, ""); code != 200 {
		t.Fatalf("revoke token: %d %s", code, b)
	}
	if code, b := c.tokenClient(viewer.Token).do("GET", "/jobs", ""); code != 401 {
		t.Errorf("revoked token: %d %s", code, b)
	}
	if code, _ := c.do("DELETE", "/tokens/"+viewer.ID, ""); code != 404 {
		t.Errorf("second revoke: %d, want 404", code)
	}

	// Expired: refused with a message that says so.
	short := c.createToken(`{"role":"viewer","name":"short","ttl":1}`)
	c.waitFor("the short token to expire", func() bool {
		code, b := c.tokenClient(short.Token).do("GET", "/jobs", "")
		return code == 401 && strings.Contains(string(b), "expired")
	})

	for body, field := range map[string]string{
		`{"role":"agent"}`:                   "role",
		`{"role":"viewer","ttl":0}`:          "ttl",
		`{"role":"viewer","ttl":1e9}`:        "ttl",
		`{"role":"viewer","name":"a b"}`:     "name",
		`{"role":"viewer","scope":"x"}`:      "scope",
		`{"role":"viewer","ttl":"1h"}`:       "ttl",
		`{"role":"viewer"}{"role":"viewer"}`: "",
	} {
		code, b := c.do("POST", "/tokens", body)
		var e struct{ Field string }
		_ = json.Unmarshal(b, &e)
		if code != 400 || e.Field != field {
			t.Errorf("POST /tokens %s: %d %s, want 400 naming %q", body, code, b, field)
		}
	}
}

// expiredCert issues an operator certificate from the cluster's CA whose
// validity ended yesterday.
func expiredCert(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0xdead),
		Subject:      pkix.Name{CommonName: "old-operator", Organization: []string{"jobsuite"}, OrganizationalUnit: []string{"operator"}},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(-24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLSRefusals(t *testing.T) {
	c := startCluster(t)
	pool, err := certs.LoadPool(certs.CAFile(c.dir))
	if err != nil {
		t.Fatal(err)
	}

	// An expired certificate fails the handshake, token or not.
	expired := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: certs.ClientTLS(pool, expiredCert(t, c.dir), "127.0.0.1", "http/1.1"),
	}}
	if resp, err := expired.Get(c.base + "/health"); err == nil {
		resp.Body.Close()
		t.Errorf("expired certificate: status %d, want a TLS failure", resp.StatusCode)
	} else {
		t.Logf("expired certificate: %v", err)
	}

	// Plain HTTP to the TLS port gets 400 and changes nothing.
	resp, err := http.Get("http://" + c.srv.HTTPAddr() + "/jobs")
	if err != nil {
		t.Fatalf("plaintext request: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plaintext request: %d %s, want 400", resp.StatusCode, body)
	}
	// Garbage that starts like a TLS record is answered (an alert at
	// most) and the connection closed.
	conn, err := net.Dial("tcp", c.srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write([]byte("\x16\x03\x01\x00\x05hello, not TLS at all\r\n\r\n"))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Errorf("garbage: the server did not close the connection: %v", err)
	}
	conn.Close()
	if code, b := c.do("GET", "/jobs", ""); code != 200 || string(b) != "[]\n" {
		t.Errorf("after the strangers: GET /jobs %d %s", code, b)
	}

	// A revoked operator certificate gets 401, even with a valid token;
	// revoking by role and name refuses the viewer.
	tok := c.createToken(`{"role":"viewer"}`)
	second := c.issueFiles(certs.Request{Role: certs.RoleOperator, Name: "op-2"})
	op2 := c.httpClient("op-2")
	if code, b := doWith(t, op2, "GET", c.base+"/jobs", ""); code != 200 {
		t.Fatalf("op-2 before revocation: %d %s", code, b)
	}
	code, b := c.do("POST", "/certs/revoke", fmt.Sprintf(`{"serial":"0x%s","reason":"left"}`, strings.ToUpper(second)))
	if code != 200 {
		t.Fatalf("revoke op-2: %d %s", code, b)
	}
	if code, b := doWith(t, op2, "GET", c.base+"/jobs", ""); code != 401 || !strings.Contains(string(b), "revoked") || !strings.Contains(string(b), "left") {
		t.Errorf("op-2 after revocation: %d %s", code, b)
	}
	req, _ := http.NewRequest("GET", c.base+"/jobs", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	if resp, err := op2.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != 401 {
		t.Errorf("revoked certificate with a valid token: %d, want 401", resp.StatusCode)
	}
	if code, b := c.do("POST", "/certs/revoke", `{"role":"viewer","name":"viewer"}`); code != 200 {
		t.Fatalf("revoke viewer by name: %d %s", code, b)
	}
	if code, _ := doWith(t, c.httpClient("viewer"), "GET", c.base+"/jobs", ""); code != 401 {
		t.Errorf("revoked viewer: %d, want 401", code)
	}
	if code, _ := c.do("GET", "/jobs", ""); code != 200 {
		t.Errorf("the operator is unaffected: %d", code)
	}
	for body, field := range map[string]string{
		`{}`:                                 "serial",
		`{"serial":"xyz"}`:                   "serial",
		`{"serial":"0"}`:                     "serial",
		`{"role":"admin","name":"x"}`:        "role",
		`{"role":"controller","name":"ctl"}`: "role",
		`{"role":"viewer","name":"a/b"}`:     "name",
		`{"serial":"1f","surprise":true}`:    "surprise",
	} {
		code, b := c.do("POST", "/certs/revoke", body)
		var e struct{ Field string }
		_ = json.Unmarshal(b, &e)
		if code != 400 || e.Field != field {
			t.Errorf("POST /certs/revoke %s: %d %s, want 400 naming %q", body, code, b, field)
		}
	}
}

// issueFiles issues a certificate into the cluster's PKI and returns its
// serial in hex.
func (c *cluster) issueFiles(req certs.Request) string {
	c.t.Helper()
	if _, _, err := certs.IssueFiles(c.dir, req); err != nil {
		c.t.Fatal(err)
	}
	return certSerial(c.t, c.dir, req.Name)
}

func TestAuditLog(t *testing.T) {
	c := startCluster(t)
	c.runAgent("agent-1", files(c.dir, "agent-1")) // revoked below: its Run fails
	c.waitFor("agent-1 connected", func() bool { return c.agentConnected("agent-1") })
	j := c.submit(`{"command":"sleep 300"}`)
	c.waitState(j.JobID, "running")
	if code, b := c.do("DELETE", fmt.Sprintf("/jobs/%d", j.JobID), ""); code != 202 {
		t.Fatalf("cancel: %d %s", code, b)
	}
	if code, b := c.do("POST", "/agents/agent-1/drain", ""); code != 200 {
		t.Fatalf("drain: %d %s", code, b)
	}
	// A batch is one entry naming its jobs; repeating it with the same
	// idempotency keys creates nothing and leaves no entry.
	batchBody := `[{"command":"true","idempotency_key":"audit-a"},{"command":"true","idempotency_key":"audit-b"}]`
	code, items, b := c.submitBatch(batchBody)
	if code != 201 || len(items) != 2 {
		t.Fatalf("batch: %d %s", code, b)
	}
	if code, _, b := c.submitBatch(batchBody); code != 200 {
		t.Fatalf("repeated batch: %d %s", code, b)
	}
	tok := c.createToken(`{"role":"operator","name":"ci-bot"}`)
	code, b = c.tokenClient(tok.Token).do("POST", "/jobs", `{"command":"true"}`)
	if code != 201 {
		t.Fatalf("submit with token: %d %s", code, b)
	}
	var byToken struct {
		JobID uint64 `json:"job_id"`
	}
	_ = json.Unmarshal(b, &byToken)
	if code, b := c.do("DELETE", "/tokens/"+tok.ID, ""); code != 200 {
		t.Fatalf("revoke token: %d %s", code, b)
	}
	if code, b := c.do("POST", "/agents/agent-1/revoke", `{"reason":"audit test"}`); code != 200 {
		t.Fatalf("revoke agent: %d %s", code, b)
	}
	// Refused requests leave no entry.
	if code, _ := doWith(t, c.httpClient("viewer"), "POST", c.base+"/jobs", `{"command":"true"}`); code != 403 {
		t.Fatalf("viewer submit: %d", code)
	}

	opSerial := certSerial(t, c.dir, "operator")
	type want struct{ action, target, who, via, credential string }
	wants := []want{ // newest first
		{"revoke", "agent agent-1", "operator", "certificate", opSerial},
		{"token_revoke", "token " + tok.ID, "operator", "certificate", opSerial},
		{"submit", fmt.Sprintf("job %d", byToken.JobID), "ci-bot", "token", tok.ID},
		{"token_create", "token " + tok.ID, "operator", "certificate", opSerial},
		{"submit", fmt.Sprintf("jobs %d-%d", items[0].JobID, items[1].JobID), "operator", "certificate", opSerial},
		{"drain", "agent agent-1", "operator", "certificate", opSerial},
		{"cancel", fmt.Sprintf("job %d", j.JobID), "operator", "certificate", opSerial},
		{"submit", fmt.Sprintf("job %d", j.JobID), "operator", "certificate", opSerial},
	}
	var entries []store.AuditEntry
	c.getJSON("/audit", &entries)
	if len(entries) != len(wants) {
		t.Fatalf("%d audit entries, want %d: %+v", len(entries), len(wants), entries)
	}
	for i, w := range wants {
		e := entries[i]
		if e.Action != w.action || e.Target != w.target || e.Who != w.who || e.Via != w.via || e.Credential != w.credential || e.Role != "operator" || e.Remote == "" {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
		if i > 0 && (e.ID >= entries[i-1].ID || e.Time.After(entries[i-1].Time)) {
			t.Errorf("entry %d is not older than entry %d", i, i-1)
		}
	}
	if !strings.Contains(entries[0].Detail, "audit test") {
		t.Errorf("revoke detail %q lacks the reason", entries[0].Detail)
	}
	if entries[4].Detail != "batch of 2" {
		t.Errorf("batch submit detail %q, want %q", entries[4].Detail, "batch of 2")
	}

	// Paging with limit and before; the log survives a restart.
	c.stopController()
	c.startController()
	var page []store.AuditEntry
	code, b = c.do("GET", "/audit?limit=3", "")
	if code != 200 || json.Unmarshal(b, &page) != nil || len(page) != 3 || page[0].ID != entries[0].ID {
		t.Fatalf("first page: %d %s", code, b)
	}
	c.getJSON(fmt.Sprintf("/audit?limit=100&before=%d", page[2].ID), &page)
	if len(page) != 5 || page[0].ID != entries[3].ID || page[4].ID != entries[7].ID {
		t.Fatalf("second page: %+v", page)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "before=-1", "before=0"} {
		if code, b := c.do("GET", "/audit?"+q, ""); code != 400 {
			t.Errorf("GET /audit?%s: %d %s", q, code, b)
		}
	}
	if code, _ := doWith(t, c.httpClient("viewer"), "GET", c.base+"/audit", ""); code != 403 {
		t.Errorf("viewer GET /audit: %d, want 403", code)
	}
}
