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
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/transport"
)

// startSigningCluster is startCluster with a controller that holds the
// CA key, so it enrolls and renews agents; agent certificates it signs
// live agentTTL.
func startSigningCluster(t *testing.T, agentTTL time.Duration, agents ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: newPKI(t), data: filepath.Join(t.TempDir(), "data"), agents: map[string]context.CancelFunc{}}
	c.cfg = controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: c.data,
		TLS: files(c.dir, "controller"), LeaseTTL: 3 * time.Second, KillGrace: 500 * time.Millisecond,
		BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		CAKey: certs.KeyFile(c.dir, "ca"), AgentCertTTL: agentTTL, CertReloadInterval: 50 * time.Millisecond,
	}
	c.startController()
	c.client = c.httpClient("operator")
	for _, a := range agents {
		c.startAgent(a, 4, nil, transport.ModeQUIC)
	}
	t.Cleanup(c.close)
	return c
}

func (c *cluster) createJoinToken(body string) api.JoinTokenView {
	c.t.Helper()
	code, b := c.do("POST", "/agent-tokens", body)
	if code != http.StatusCreated {
		c.t.Fatalf("POST /agent-tokens %s: %d %s", body, code, b)
	}
	var v api.JoinTokenView
	if err := json.Unmarshal(b, &v); err != nil {
		c.t.Fatal(err)
	}
	return v
}

// joinToken returns the join token id as GET /agent-tokens lists it.
func (c *cluster) joinToken(id string) api.JoinTokenView {
	c.t.Helper()
	var all []api.JoinTokenView
	c.getJSON("/agent-tokens", &all)
	for _, v := range all {
		if v.ID == id {
			return v
		}
	}
	c.t.Fatalf("join token %s is not listed", id)
	return api.JoinTokenView{}
}

// enrollFiles are the files an agent enrolled into dir writes.
func enrollFiles(dir string) certs.Files {
	return certs.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "agent.pem"), Key: filepath.Join(dir, "agent-key.pem")}
}

// enroll runs agent.Enroll against the cluster into a new directory.
func (c *cluster) enroll(token, pin, name string) (certs.Files, agent.Enrollment, error) {
	c.t.Helper()
	f := enrollFiles(filepath.Join(c.t.TempDir(), "pki"))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	e, err := agent.Enroll(ctx, agent.EnrollConfig{
		API: c.srv.HTTPAddr(), Token: token, CAPin: pin, Name: name, Files: f, Logger: testLogger(c.t, "enroll"),
	})
	return f, e, err
}

// runEnrolled runs an agent with the files f that renews its
// certificate over the API; it returns the channel its Run result
// arrives on.
func (c *cluster) runEnrolled(name string, f certs.Files, labels map[string]string) <-chan error {
	c.t.Helper()
	a, err := agent.New(agent.Config{
		Controller: c.srv.AgentAddr(), API: c.srv.HTTPAddr(), TLS: f, Slots: 2, Labels: labels, Transport: transport.ModeQUIC,
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

// connectedAt returns when agent name's session started, or the zero
// time if it is not connected.
func (c *cluster) connectedAt(name string) time.Time {
	c.t.Helper()
	var agents []api.AgentInfo
	c.getJSON("/agents", &agents)
	for _, a := range agents {
		if a.Name == name {
			return a.ConnectedAt
		}
	}
	return time.Time{}
}

func fileLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return c[0]
}

type auditRow struct {
	Who    string `json:"who"`
	Role   string `json:"role"`
	Via    string `json:"via"`
	Action string `json:"action"`
	Target string `json:"target"`
	Detail string `json:"detail"`
}

func (c *cluster) auditRows(action string) []auditRow {
	c.t.Helper()
	var all []auditRow
	c.getJSON("/audit?limit=1000", &all)
	var out []auditRow
	for _, e := range all {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// TestEnrollRenewEndToEnd: a join token enrolls a new agent, which runs
// a job, renews its short-lived certificate twice over without losing
// its session — past the first certificate's expiry — connects again
// with a renewed certificate, and is revoked and cut off.
func TestEnrollRenewEndToEnd(t *testing.T) {
	const ttl = 6 * time.Second // renewed after 4 s
	c := startSigningCluster(t, ttl)
	ca := fileLeaf(t, certs.CAFile(c.dir))

	tok := c.createJoinToken(`{"uses":1,"labels":{"pool":"joined"},"name_prefix":"ci","ttl":600}`)
	_, agentPort, _ := net.SplitHostPort(c.srv.AgentAddr())
	switch {
	case !strings.HasPrefix(tok.Token, controller.JoinTokenPrefix) || len(tok.Token) != len(controller.JoinTokenPrefix)+43:
		t.Fatalf("token %q", tok.Token)
	case tok.CAPin != certs.Fingerprint(ca):
		t.Fatalf("ca_pin %s, want the CA's fingerprint %s", tok.CAPin, certs.Fingerprint(ca))
	case strconv.Itoa(tok.AgentPort) != agentPort:
		t.Fatalf("agent_port %d, want %s", tok.AgentPort, agentPort)
	case tok.Uses != 1 || tok.UsesLeft != 1 || tok.NamePrefix != "ci" || tok.Labels["pool"] != "joined":
		t.Fatalf("token view %+v", tok)
	}

	f, e, err := c.enroll(tok.Token, tok.CAPin, "")
	if err != nil {
		t.Fatal(err)
	}
	name := e.Name
	if !strings.HasPrefix(name, "ci-") || e.Labels["pool"] != "joined" {
		t.Fatalf("enrolled as %+v", e)
	}
	// The files: the pinned CA, an agent certificate for the name with
	// the controller's lifetime, and the key, readable by the agent only.
	if got, _ := os.ReadFile(f.CA); string(got) != string(certs.EncodeCertificate(ca)) {
		t.Errorf("ca.pem is not the CA certificate")
	}
	leaf0 := fileLeaf(t, f.Cert)
	if role, _ := certs.RoleOf(leaf0); role != certs.RoleAgent || leaf0.Subject.CommonName != name {
		t.Errorf("enrolled certificate: role %s, name %q", role, leaf0.Subject.CommonName)
	}
	if d := time.Until(leaf0.NotAfter); d > ttl || d < ttl-3*time.Second {
		t.Errorf("enrolled certificate expires in %s, want about %s", d, ttl)
	}
	if fi, err := os.Stat(f.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if done, err := agent.Enrolled(f); !done || err != nil {
		t.Errorf("Enrolled = %v, %v after enrolling", done, err)
	}
	if v := c.joinToken(tok.ID); v.UsesLeft != 0 || len(v.Enrolled) != 1 || v.Enrolled[0] != name {
		t.Errorf("after the enrollment the token is %+v", v)
	}

	errc := c.runEnrolled(name, f, e.Labels)
	c.waitFor(name+" connected", func() bool { return !c.connectedAt(name).IsZero() })
	since := c.connectedAt(name)
	j := c.submit(`{"command":"echo joined","labels":{"pool":"joined"}}`)
	if got := c.waitState(j.JobID, "completed", "failed"); got.Status != "completed" || got.Attempts[0].Agent != name {
		t.Fatalf("job on the enrolled agent: %+v", got)
	}

	// Renewal, twice, with the session that is up staying up past the
	// first certificate's expiry.
	var serials []string
	c.waitFor("two renewals", func() bool {
		s := fileLeaf(t, f.Cert).SerialNumber.Text(16)
		if len(serials) == 0 || serials[len(serials)-1] != s {
			serials = append(serials, s)
		}
		return len(serials) >= 3 && time.Now().After(leaf0.NotAfter)
	})
	if s := fileLeaf(t, f.Cert).Subject.CommonName; s != name {
		t.Fatalf("renewed certificate is for %q", s)
	}
	if got := c.connectedAt(name); !got.Equal(since) {
		t.Fatalf("the session was replaced during renewal: connected at %s, then %s", since, got)
	}
	j = c.submit(`{"command":"echo still here","labels":{"pool":"joined"}}`)
	if got := c.waitState(j.JobID, "completed", "failed"); got.Status != "completed" {
		t.Fatalf("job after renewal: %+v", got)
	}
	renewals := c.auditRows("agent_renew")
	if len(renewals) < 2 || renewals[0].Who != name || renewals[0].Role != "agent" {
		t.Fatalf("audit log renewals: %+v", renewals)
	}
	if enrolls := c.auditRows("agent_enroll"); len(enrolls) != 1 || enrolls[0].Via != "join token" || enrolls[0].Target != "agent "+name {
		t.Fatalf("audit log enrollments: %+v", enrolls)
	}

	// A new session uses a renewed certificate: restart the controller.
	c.stopController()
	c.startController()
	c.waitFor(name+" reconnected", func() bool { return !c.connectedAt(name).IsZero() })
	code, b := c.do("POST", "/agents/"+name+"/revoke", `{"reason":"test"}`)
	if code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, b)
	}
	var rev api.RevokeResult
	if err := json.Unmarshal(b, &rev); err != nil {
		t.Fatal(err)
	}
	issued := map[string]bool{}
	for _, r := range c.auditRows("agent_renew") {
		var serial string
		fmt.Sscanf(r.Detail, "certificate %s replaces", &serial)
		issued[serial] = true
	}
	if rev.Revocation.Serial == leaf0.SerialNumber.Text(16) || !issued[rev.Revocation.Serial] {
		t.Fatalf("the new session's certificate %s is not a renewed one (enrolled %s, renewed %v)", rev.Revocation.Serial, leaf0.SerialNumber.Text(16), issued)
	}
	// Revoking the name cuts the agent off for good, renewed
	// certificates included.
	if code, b := c.do("POST", "/agents/"+name+"/revoke", `{"all_certs":true}`); code != http.StatusOK {
		t.Fatalf("revoke name: %d %s", code, b)
	}
	refusedWith(t, errc, "revoked")
}

// TestEnrollRefusals: an unknown, expired or used-up token, a wrong CA
// pin, a name outside the token's prefix or of a connected agent are
// refused with a clear error, and leave the token and the disk as they
// were.
func TestEnrollRefusals(t *testing.T) {
	c := startSigningCluster(t, time.Hour, "agent-1")
	other := t.TempDir()
	if err := certs.CreateCA(other); err != nil {
		t.Fatal(err)
	}
	otherPin := certs.Fingerprint(fileLeaf(t, certs.CAFile(other)))

	used := c.createJoinToken(`{"uses":1}`)
	if _, _, err := c.enroll(used.Token, used.CAPin, ""); err != nil {
		t.Fatal(err)
	}
	expired := c.createJoinToken(`{"ttl":1}`)
	c.waitFor("the 1-second token to expire", func() bool { return time.Now().After(expired.ExpiresAt) })

	tests := map[string]struct {
		body  string // for a new token; "" when token is set
		token string
		pin   string // default: the token's
		name  string
		want  error
		msg   string
	}{
		"unknown token":           {token: controller.JoinTokenPrefix + "nope", want: agent.ErrControllerRefused, msg: "not valid"},
		"empty token":             {token: " ", want: agent.ErrConfig, msg: "no join token"},
		"expired token":           {token: expired.Token, want: agent.ErrControllerRefused, msg: "expired at"},
		"used-up token":           {token: used.Token, want: agent.ErrControllerRefused, msg: "already used 1 time(s)"},
		"wrong CA pin":            {body: `{}`, pin: otherPin, want: certs.ErrPinMismatch, msg: otherPin},
		"malformed pin":           {body: `{}`, pin: "1234", want: certs.ErrInvalidPin, msg: "64 hex digits"},
		"name outside prefix":     {body: `{"name_prefix":"web"}`, name: "db-1", want: agent.ErrControllerRefused, msg: "agents named web-…"},
		"bare prefix as name":     {body: `{"name_prefix":"web"}`, name: "web-", want: agent.ErrControllerRefused, msg: "agents named web-…"},
		"name of a connected one": {body: `{}`, name: "agent-1", want: agent.ErrControllerRefused, msg: `"agent-1" is connected`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			token, pin, id := tt.token, tt.pin, ""
			if tt.body != "" {
				v := c.createJoinToken(tt.body)
				token, id = v.Token, v.ID
				if pin == "" {
					pin = v.CAPin
				}
			}
			if pin == "" {
				pin = used.CAPin
			}
			var before api.JoinTokenView
			if id != "" {
				before = c.joinToken(id)
			}
			f, _, err := c.enroll(token, pin, tt.name)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Enroll: %v; want %v mentioning %q", err, tt.want, tt.msg)
			}
			t.Logf("refused: %v", err)
			for _, p := range []string{f.CA, f.Cert, f.Key, agent.EnrollmentFile(f)} {
				if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was written (%v)", p, err)
				}
			}
			if id != "" {
				if after := c.joinToken(id); after.UsesLeft != before.UsesLeft || len(after.Enrolled) != 0 {
					t.Errorf("the refused enrollment changed the token: %+v → %+v", before, after)
				}
			}
		})
	}
	if v := c.joinToken(used.ID); v.UsesLeft != 0 || len(v.Enrolled) != 1 {
		t.Errorf("used-up token after refusals: %+v", v)
	}
	// A name in the prefix is taken as asked.
	v := c.createJoinToken(`{"name_prefix":"web"}`)
	if _, e, err := c.enroll(v.Token, v.CAPin, "web-7"); err != nil || e.Name != "web-7" {
		t.Fatalf("enroll as web-7: %+v, %v", e, err)
	}
	// Join tokens can be revoked.
	v = c.createJoinToken(`{}`)
	if code, b := c.do("DELETE", "/agent-tokens/"+v.ID, ""); code != http.StatusOK {
		t.Fatalf("DELETE /agent-tokens/%s: %d %s", v.ID, code, b)
	}
	if _, _, err := c.enroll(v.Token, v.CAPin, ""); !errors.Is(err, agent.ErrControllerRefused) {
		t.Fatalf("revoked join token: %v", err)
	}
	if code, _ := c.do("DELETE", "/agent-tokens/"+v.ID, ""); code != http.StatusNotFound {
		t.Fatalf("second DELETE: %d, want 404", code)
	}
}

// csrWithRole builds a CSR for a new key asking for role and name, and
// returns it with the key.
func csrWithRole(t *testing.T, role, name string) (string, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: name, Organization: []string{"jobsuite"}, OrganizationalUnit: []string{role}},
		DNSNames: []string{"localhost"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), key
}

func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestEnrollCSRRoleIgnored: a CSR asking for the operator role gets an
// agent certificate, which the API refuses.
func TestEnrollCSRRoleIgnored(t *testing.T) {
	c := startSigningCluster(t, time.Hour)
	tok := c.createJoinToken(`{"name_prefix":"x"}`)
	csr, key := csrWithRole(t, "operator", "x-admin")
	code, b := c.tokenClient("").do("POST", "/enroll", jsonBody(t, api.EnrollRequest{Token: tok.Token, CSR: csr}))
	if code != http.StatusCreated {
		t.Fatalf("POST /enroll: %d %s", code, b)
	}
	var v api.CertificateView
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.ParseCertificatesPEM([]byte(v.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	if role, _ := certs.RoleOf(leaf[0]); role != certs.RoleAgent || leaf[0].Subject.CommonName != "x-admin" || len(leaf[0].DNSNames) != 0 {
		t.Fatalf("certificate for a CSR asking for operator: role %s, name %q, DNS %v", role, leaf[0].Subject.CommonName, leaf[0].DNSNames)
	}
	if !key.PublicKey.Equal(leaf[0].PublicKey) {
		t.Fatal("the certificate is not for the CSR's key")
	}
	// With that certificate the API answers 403.
	der, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair([]byte(v.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	cl := certClient(t, c, pair)
	if code, b := doWith(t, cl, "POST", c.base+"/jobs", `{"command":"id"}`); code != http.StatusForbidden {
		t.Fatalf("submit with the enrolled certificate: %d %s, want 403", code, b)
	}
	// Bad requests.
	for name, body := range map[string]string{
		"no token":  jsonBody(t, api.EnrollRequest{CSR: csr}),
		"bad CSR":   jsonBody(t, api.EnrollRequest{Token: tok.Token, CSR: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}),
		"extra key": `{"token":"x","csr":"y","role":"operator"}`,
	} {
		if code, b := c.tokenClient("").do("POST", "/enroll", body); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, code, b)
		}
	}
}

// certClient is an HTTPS client of the cluster presenting pair.
func certClient(t *testing.T, c *cluster, pair tls.Certificate) *http.Client {
	t.Helper()
	pool, err := certs.LoadPool(certs.CAFile(c.dir))
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: waitLimit, Transport: &http.Transport{
		TLSClientConfig: certs.ClientTLS(pool, pair, "127.0.0.1", "http/1.1"),
	}}
}

func loadPair(t *testing.T, dir, name string) tls.Certificate {
	t.Helper()
	pair, err := certs.LoadKeyPair(certs.CertFile(dir, name), certs.KeyFile(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// postRenew posts a renewal with pair (none if empty) and returns the
// status, or the transport error.
func postRenew(t *testing.T, c *cluster, pair tls.Certificate) (int, []byte, error) {
	t.Helper()
	csr, _, err := certs.CreateCSR("")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := certClient(t, c, pair).Post(c.base+"/enroll/renew", "application/json",
		strings.NewReader(jsonBody(t, api.RenewRequest{CSR: string(csr)})))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

func TestRenewRefusals(t *testing.T) {
	c := startSigningCluster(t, time.Hour)
	other := t.TempDir()
	if err := certs.CreateCA(other); err != nil {
		t.Fatal(err)
	}
	for _, r := range []certs.Request{
		{Role: certs.RoleAgent, Name: "expired", TTL: time.Nanosecond},
		{Role: certs.RoleAgent, Name: "revoked"},
	} {
		c.issueFiles(r)
	}
	if _, _, err := certs.IssueFiles(other, certs.Request{Role: certs.RoleAgent, Name: "agent-1"}); err != nil {
		t.Fatal(err)
	}
	if code, b := c.do("POST", "/certs/revoke", `{"role":"agent","name":"revoked"}`); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, b)
	}

	tests := map[string]struct {
		pair tls.Certificate
		code int    // 0: the TLS handshake fails
		msg  string // in the answer
	}{
		"no certificate":       {pair: tls.Certificate{}, code: http.StatusUnauthorized, msg: "current certificate"},
		"operator certificate": {pair: loadPair(t, c.dir, "operator"), code: http.StatusForbidden, msg: "only agent certificates"},
		"viewer certificate":   {pair: loadPair(t, c.dir, "viewer"), code: http.StatusForbidden, msg: "only agent certificates"},
		"revoked certificate":  {pair: loadPair(t, c.dir, "revoked"), code: http.StatusUnauthorized, msg: "revoked"},
		"expired certificate":  {pair: loadPair(t, c.dir, "expired")},
		"another CA's agent":   {pair: loadPair(t, other, "agent-1")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, b, err := postRenew(t, c, tt.pair)
			if tt.code == 0 {
				if err == nil {
					t.Fatalf("renewal answered %d %s; want the handshake refused", code, b)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil || code != tt.code || !strings.Contains(string(b), tt.msg) {
				t.Fatalf("renewal: %d %s (%v); want %d mentioning %q", code, b, err, tt.code, tt.msg)
			}
		})
	}
	if n := len(c.auditRows("agent_renew")); n != 0 {
		t.Fatalf("%d renewals in the audit log after refusals", n)
	}

	// A valid agent certificate is renewed: same name, new serial.
	old := loadPair(t, c.dir, "agent-2")
	code, b, err := postRenew(t, c, old)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("renewal: %d %s (%v)", code, b, err)
	}
	var v api.CertificateView
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.ParseCertificatesPEM([]byte(v.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	if role, _ := certs.RoleOf(leaf[0]); role != certs.RoleAgent || v.Name != "agent-2" || leaf[0].Subject.CommonName != "agent-2" ||
		leaf[0].SerialNumber.Cmp(old.Leaf.SerialNumber) == 0 || time.Until(leaf[0].NotAfter) > time.Hour {
		t.Fatalf("renewed: %+v, role %s", v, role)
	}
}

func TestEnrollWithoutCAKey(t *testing.T) {
	c := startCluster(t)
	agent2 := loadPair(t, c.dir, "agent-2")
	csr, _, _ := certs.CreateCSR("")
	for name, do := range map[string]func() (int, []byte){
		"create token": func() (int, []byte) { return c.do("POST", "/agent-tokens", `{}`) },
		"enroll": func() (int, []byte) {
			return c.tokenClient("").do("POST", "/enroll", jsonBody(t, api.EnrollRequest{Token: "jsj_x", CSR: string(csr)}))
		},
		"renew": func() (int, []byte) {
			code, b, err := postRenew(t, c, agent2)
			if err != nil {
				t.Fatal(err)
			}
			return code, b
		},
	} {
		code, b := do()
		if code != http.StatusNotImplemented || !strings.Contains(string(b), "-ca-key") {
			t.Errorf("%s without a CA key: %d %s; want 501 naming -ca-key", name, code, b)
		}
	}
	// Who may not ask hears so first, CA key or not: 403, not 501.
	tok := c.createToken(`{"role":"operator"}`)
	viewer := loadPair(t, c.dir, "viewer")
	for name, do := range map[string]func() (int, []byte){
		"create token with an API token": func() (int, []byte) {
			return c.tokenClient(tok.Token).do("POST", "/agent-tokens", `{}`)
		},
		"renew with a viewer certificate": func() (int, []byte) {
			code, b, err := postRenew(t, c, viewer)
			if err != nil {
				t.Fatal(err)
			}
			return code, b
		},
	} {
		if code, b := do(); code != http.StatusForbidden {
			t.Errorf("%s without a CA key: %d %s; want 403", name, code, b)
		}
	}
	// Listing works (and is empty).
	var all []api.JoinTokenView
	c.getJSON("/agent-tokens", &all)
	if len(all) != 0 {
		t.Fatalf("join tokens: %+v", all)
	}
}

func TestJoinTokenRequests(t *testing.T) {
	c := startSigningCluster(t, time.Hour)
	tests := map[string]struct {
		body  string
		field string // "" for success
	}{
		"defaults":      {body: ``},
		"all fields":    {body: `{"ttl":60,"uses":3,"labels":{"gpu":"yes"},"name_prefix":"gpu.node"}`},
		"ttl too short": {body: `{"ttl":0.5}`, field: "ttl"},
		"ttl too long":  {body: `{"ttl":604801}`, field: "ttl"},
		"no uses":       {body: `{"uses":0}`, field: "uses"},
		"too many uses": {body: `{"uses":1001}`, field: "uses"},
		"bad label":     {body: `{"labels":{"a b":"c"}}`, field: "labels"},
		"bad prefix":    {body: `{"name_prefix":"-x"}`, field: "name_prefix"},
		"long prefix":   {body: `{"name_prefix":"` + strings.Repeat("p", 41) + `"}`, field: "name_prefix"},
		"unknown field": {body: `{"role":"operator"}`, field: "role"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, b := c.do("POST", "/agent-tokens", tt.body)
			if tt.field == "" {
				if code != http.StatusCreated {
					t.Fatalf("%d %s", code, b)
				}
				var v api.JoinTokenView
				_ = json.Unmarshal(b, &v)
				if tt.body == "" && (v.Uses != 1 || v.NamePrefix != controller.DefaultNamePrefix ||
					v.ExpiresAt.Sub(v.CreatedAt) != controller.DefaultJoinTokenTTL) {
					t.Errorf("defaults: %+v", v)
				}
				return
			}
			var e struct {
				Field string `json:"field"`
			}
			_ = json.Unmarshal(b, &e)
			if code != http.StatusBadRequest || e.Field != tt.field {
				t.Fatalf("%d %s; want 400 naming %q", code, b, tt.field)
			}
		})
	}
	// Secrets are shown once: the list has none.
	var all []json.RawMessage
	c.getJSON("/agent-tokens", &all)
	for _, raw := range all {
		if strings.Contains(string(raw), controller.JoinTokenPrefix) {
			t.Fatalf("GET /agent-tokens shows a secret: %s", raw)
		}
	}
	// Only operator certificates create join tokens: not viewers, not API tokens.
	viewer := c.httpClient("viewer")
	if code, b := doWith(t, viewer, "POST", c.base+"/agent-tokens", `{}`); code != http.StatusForbidden {
		t.Fatalf("viewer: %d %s", code, b)
	}
	api := c.createToken(`{"role":"operator","name":"ci"}`)
	if code, b := c.tokenClient(api.Token).do("POST", "/agent-tokens", `{}`); code != http.StatusForbidden {
		t.Fatalf("API token: %d %s", code, b)
	}
}

// peerSerial dials the listener at addr over mode ("https", "quic" or
// "tcp") and returns the serial of the certificate it presents.
func (c *cluster) peerSerial(mode string) string {
	c.t.Helper()
	pool, cert, err := files(c.dir, "agent-3").Load()
	if err != nil {
		c.t.Fatal(err)
	}
	conf := certs.ClientTLS(pool, cert, "127.0.0.1")
	if mode == "https" {
		conf.NextProtos = []string{"http/1.1"}
		conn, err := tls.Dial("tcp", c.srv.HTTPAddr(), conf)
		if err != nil {
			c.t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	}
	m, _ := transport.ParseMode(mode)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := transport.Dial(ctx, c.srv.AgentAddr(), conf, m, transport.Options{Logger: testLogger(c.t, "dial")})
	if err != nil {
		c.t.Fatal(err)
	}
	defer s.Close("test done")
	return s.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// replaceController issues a new controller certificate from ca (a PKI
// directory) and moves it over the cluster's controller files. It
// returns the new serial.
func (c *cluster) replaceController(caDir string) string {
	c.t.Helper()
	tmp := c.t.TempDir()
	for _, f := range []string{"ca.pem", "ca-key.pem"} {
		data, err := os.ReadFile(filepath.Join(caDir, f))
		if err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, f), data, 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
	if _, _, err := certs.IssueFiles(tmp, certs.Request{Role: certs.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
		c.t.Fatal(err)
	}
	// Key first, then the certificate, each renamed into place.
	for _, f := range []string{"controller-key.pem", "controller.pem"} {
		if err := os.Rename(filepath.Join(tmp, f), filepath.Join(c.dir, f)); err != nil {
			c.t.Fatal(err)
		}
	}
	return certSerial(c.t, c.dir, "controller")
}

// TestReloadCertificate: the controller serves a replaced certificate to
// new connections on both listeners — after ReloadCertificate, and by
// itself when the files change — while an agent session goes on; files
// that are not a controller certificate from the CA are refused.
func TestReloadCertificate(t *testing.T) {
	c := startSigningCluster(t, time.Hour, "agent-1")
	since := c.connectedAt("agent-1")
	serial0 := certSerial(t, c.dir, "controller")
	if got := c.srv.CertificateSerial(); got != serial0 {
		t.Fatalf("CertificateSerial = %s, want %s", got, serial0)
	}

	// The watcher may notice the new files first; either way the
	// explicit reload leaves them served.
	serial1 := c.replaceController(c.dir)
	if err := c.srv.ReloadCertificate(); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"https", "quic", "tcp"} {
		if got := c.peerSerial(mode); got != serial1 {
			t.Errorf("%s: new connection sees serial %s, want %s (was %s)", mode, got, serial1, serial0)
		}
	}

	// Files that cannot serve are refused; the current certificate stays.
	other := t.TempDir()
	if err := certs.CreateCA(other); err != nil {
		t.Fatal(err)
	}
	good := map[string][]byte{}
	for _, f := range []string{"controller.pem", "controller-key.pem"} {
		good[f], _ = os.ReadFile(filepath.Join(c.dir, f))
	}
	c.replaceController(other)
	if err := c.srv.ReloadCertificate(); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("reload of another CA's certificate: %v", err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "controller.pem"), good["controller.pem"], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.srv.ReloadCertificate(); err == nil {
		t.Fatal("reload of a certificate with another's key: no error")
	}
	if err := os.WriteFile(filepath.Join(c.dir, "controller.pem"), certs.EncodeCertificate(fileLeaf(t, certs.CertFile(c.dir, "agent-1"))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.srv.ReloadCertificate(); err == nil {
		t.Fatal("reload of an agent certificate: no error")
	}
	if got := c.peerSerial("https"); got != serial1 {
		t.Fatalf("after refused reloads the controller serves %s, want %s", got, serial1)
	}

	// The watcher reloads by itself when the files change.
	serial2 := c.replaceController(c.dir)
	c.waitFor("the watcher to reload", func() bool { return c.srv.CertificateSerial() == serial2 })
	if got := c.peerSerial("quic"); got != serial2 {
		t.Errorf("quic after the watcher's reload: %s, want %s", got, serial2)
	}

	// The agent's session stayed up all along and still runs jobs.
	if got := c.connectedAt("agent-1"); !got.Equal(since) {
		t.Fatalf("agent-1's session was replaced: connected at %s, then %s", since, got)
	}
	j := c.submit(`{"command":"echo ok"}`)
	if got := c.waitState(j.JobID, "completed", "failed"); got.Status != "completed" {
		t.Fatalf("job after reloads: %+v", got)
	}
}
