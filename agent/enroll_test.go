package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/certs"
)

// fakeSigner is a stand-in for the controller's enrollment routes: an
// HTTPS server with a controller certificate (sent with its CA, as the
// controller does) that signs CSRs with ca.
type fakeSigner struct {
	t      *testing.T
	ca     *certs.CA
	srv    *httptest.Server
	ttl    time.Duration
	calls  atomic.Int32
	mu     sync.Mutex
	answer func(w http.ResponseWriter, csrPEM string) bool // overrides the answer when it returns true
}

func newFakeSigner(t *testing.T, ttl time.Duration) *fakeSigner {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := certs.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(certs.Request{Role: certs.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pair.Certificate = append(pair.Certificate, ca.Cert.Raw)
	f := &fakeSigner{t: t, ca: ca, ttl: ttl}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	conf := certs.ServerTLS(poolOf(ca), pair, "http/1.1")
	conf.ClientAuth = tls.VerifyClientCertIfGiven
	f.srv.TLS = conf
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func poolOf(ca *certs.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func (f *fakeSigner) addr() string { return strings.TrimPrefix(f.srv.URL, "https://") }
func (f *fakeSigner) pin() string  { return certs.Fingerprint(f.ca.Cert) }

func (f *fakeSigner) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	var body struct {
		Token string `json:"token"`
		CSR   string `json:"csr"`
	}
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	answer := f.answer
	f.mu.Unlock()
	if answer != nil && answer(w, body.CSR) {
		return
	}
	csr, err := certs.ParseCSR([]byte(body.CSR))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := csr.Subject.CommonName
	switch r.URL.Path {
	case "/enroll":
		if body.Token != "jsj_good" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "the join token is not valid"})
			return
		}
		if name == "" {
			name = "agent-1a2b3c4d"
		}
	case "/enroll/renew":
		if len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "no certificate", http.StatusUnauthorized)
			return
		}
		name = r.TLS.VerifiedChains[0][0].Subject.CommonName
	}
	f.sign(w, csr.Raw, name)
}

// sign answers with a certificate for the CSR in der, named name.
func (f *fakeSigner) sign(w http.ResponseWriter, der []byte, name string) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	certPEM, err := f.ca.SignCSR(csr, certs.Request{Role: certs.RoleAgent, Name: name, TTL: f.ttl})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"name": name, "certificate": string(certPEM), "ca": string(certs.EncodeCertificate(f.ca.Cert)),
		"labels": map[string]string{"pool": "fake"},
	})
}

func enrollLog(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "enroll", Level: hclog.Debug, Output: tWriter{t}})
}

func enrollTo(dir string) certs.Files {
	return certs.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "agent.pem"), Key: filepath.Join(dir, "agent-key.pem")}
}

func TestEnrollWritesFiles(t *testing.T) {
	f := newFakeSigner(t, time.Hour)
	files := enrollTo(filepath.Join(t.TempDir(), "new", "pki"))
	e, err := agent.Enroll(context.Background(), agent.EnrollConfig{
		API: f.addr(), Token: "jsj_good", CAPin: strings.ToUpper(f.pin()), Files: files, Logger: enrollLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != "agent-1a2b3c4d" || e.Labels["pool"] != "fake" {
		t.Fatalf("enrollment %+v", e)
	}
	for path, mode := range map[string]os.FileMode{files.Key: 0o600, files.Cert: 0o644, files.CA: 0o644, agent.EnrollmentFile(files): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v; want %v", path, err, fi.Mode().Perm(), mode)
		}
	}
	if _, cert, err := files.Load(); err != nil || cert.Leaf.Subject.CommonName != e.Name {
		t.Fatalf("the written files do not load: %v", err)
	}
	if got, _ := os.ReadFile(files.CA); string(got) != string(certs.EncodeCertificate(f.ca.Cert)) {
		t.Error("ca.pem is not the pinned CA")
	}
	if done, err := agent.Enrolled(files); !done || err != nil {
		t.Errorf("Enrolled = %v, %v", done, err)
	}
	if got, err := agent.ReadEnrollment(files); err != nil || got.Name != e.Name || got.Labels["pool"] != "fake" {
		t.Errorf("ReadEnrollment = %+v, %v", got, err)
	}
	// Enrolled already: refused without asking the controller.
	calls := f.calls.Load()
	if _, err := agent.Enroll(context.Background(), agent.EnrollConfig{API: f.addr(), Token: "jsj_good", CAPin: f.pin(), Files: files}); !errors.Is(err, agent.ErrConfig) {
		t.Fatalf("second enrollment: %v, want ErrConfig", err)
	}
	if f.calls.Load() != calls {
		t.Error("the second enrollment reached the controller")
	}
	// A name asked for is sent in the CSR.
	files2 := enrollTo(t.TempDir())
	if e, err := agent.Enroll(context.Background(), agent.EnrollConfig{API: "https://" + f.addr(), Token: "jsj_good", CAPin: f.pin(), Name: "agent-web", Files: files2}); err != nil || e.Name != "agent-web" {
		t.Fatalf("enroll as agent-web: %+v, %v", e, err)
	}
}

// TestEnrollRefusedWritesNothing: whatever goes wrong, no file is
// written; with a wrong pin the token is not even sent.
func TestEnrollRefusedWritesNothing(t *testing.T) {
	f := newFakeSigner(t, time.Hour)
	other := newFakeSigner(t, time.Hour)
	tests := map[string]struct {
		token, pin, name, api string
		answer                func(w http.ResponseWriter, csr string) bool
		want                  error  // errors.Is target, or nil for any error
		msg                   string // in the error
		noRequest             bool   // the controller must not be asked
	}{
		"refused token": {token: "jsj_bad", want: agent.ErrControllerRefused, msg: "the join token is not valid"},
		"wrong pin":     {token: "jsj_good", pin: other.pin(), want: certs.ErrPinMismatch, noRequest: true},
		"bad pin":       {token: "jsj_good", pin: "00", want: certs.ErrInvalidPin, noRequest: true},
		"plain http":    {token: "jsj_good", api: "http://" + f.addr(), want: agent.ErrConfig, noRequest: true},
		"no token":      {token: "", want: agent.ErrConfig, noRequest: true},
		"certificate for another key": {token: "jsj_good", msg: "not for our key", answer: func(w http.ResponseWriter, _ string) bool {
			csr, _, _ := certs.CreateCSR("")
			c, _ := certs.ParseCSR(csr)
			f.sign(w, c.Raw, "agent-x")
			return true
		}},
		"certificate for another name": {token: "jsj_good", name: "agent-a", msg: `not "agent-a"`, answer: func(w http.ResponseWriter, csr string) bool {
			c, _ := certs.ParseCSR([]byte(csr))
			f.sign(w, c.Raw, "agent-b")
			return true
		}},
		"certificate from another CA": {token: "jsj_good", msg: "does not verify", answer: func(w http.ResponseWriter, csr string) bool {
			c, _ := certs.ParseCSR([]byte(csr))
			other.sign(w, c.Raw, "agent-x")
			return true
		}},
		"not JSON": {token: "jsj_good", msg: "not the JSON expected", answer: func(w http.ResponseWriter, _ string) bool {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "<html>")
			return true
		}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f.mu.Lock()
			f.answer = tt.answer
			f.mu.Unlock()
			pin, api := tt.pin, tt.api
			if pin == "" {
				pin = f.pin()
			}
			if api == "" {
				api = f.addr()
			}
			files := enrollTo(t.TempDir())
			before := f.calls.Load()
			_, err := agent.Enroll(context.Background(), agent.EnrollConfig{API: api, Token: tt.token, CAPin: pin, Name: tt.name, Files: files, Logger: enrollLog(t)})
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Enroll: %v; want %v mentioning %q", err, tt.want, tt.msg)
			}
			t.Logf("refused: %v", err)
			if tt.noRequest && f.calls.Load() != before {
				t.Error("the token was sent")
			}
			for _, p := range []string{files.CA, files.Cert, files.Key, agent.EnrollmentFile(files)} {
				if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was written (%v)", p, err)
				}
			}
			entries, _ := os.ReadDir(filepath.Dir(files.Cert))
			if len(entries) != 0 {
				t.Errorf("files left behind: %v", entries)
			}
		})
	}
}

func TestEnrolledPartial(t *testing.T) {
	files := enrollTo(t.TempDir())
	if done, err := agent.Enrolled(files); done || err != nil {
		t.Fatalf("nothing there: %v, %v", done, err)
	}
	if err := os.WriteFile(files.Cert, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Enrolled(files); !errors.Is(err, agent.ErrConfig) || !strings.Contains(err.Error(), files.Key) {
		t.Fatalf("certificate without key: %v", err)
	}
}

// TestRenewal: an agent with an API address renews its certificate at
// two thirds of its lifetime, again and again, replacing both files
// with a matching pair each time — here while it cannot reach the
// agent listener at all.
func TestRenewal(t *testing.T) {
	f := newFakeSigner(t, 3*time.Second) // renewed after 2 s
	files := enrollTo(t.TempDir())
	if _, err := agent.Enroll(context.Background(), agent.EnrollConfig{API: f.addr(), Token: "jsj_good", CAPin: f.pin(), Files: files}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenPacket("udp", "127.0.0.1:0") // a controller that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := agent.New(agent.Config{
		Controller: ln.LocalAddr().String(), API: f.addr(), TLS: files, Slots: 1, Logger: enrollLog(t),
		StateDir: t.TempDir(), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The agent reads and replaces the files under its own lock; another
	// reader may catch the key renamed and the certificate not yet, so
	// only the certificate is read while the agent runs.
	seen := map[string]bool{certSerial(t, files): true}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d certificates in 30 s; want 3", len(seen))
		}
		time.Sleep(10 * time.Millisecond)
		seen[certSerial(t, files)] = true
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil
	_, cert, err := files.Load()
	if err != nil {
		t.Fatalf("the renewed files do not load: %v", err)
	}
	if cert.Leaf.Subject.CommonName != "agent-1a2b3c4d" {
		t.Errorf("renewed for %q", cert.Leaf.Subject.CommonName)
	}
	if fi, err := os.Stat(files.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("renewed key: %v, mode %v", err, fi.Mode().Perm())
	}
	if entries, _ := filepath.Glob(filepath.Join(filepath.Dir(files.Cert), "*.new")); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

// certSerial reads the serial of f's certificate file.
func certSerial(t *testing.T, f certs.Files) string {
	t.Helper()
	data, err := os.ReadFile(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return c[0].SerialNumber.Text(16)
}

// TestInterruptedRenewal: a renewal cut short by a crash at any point
// leaves files that load, old or new, once the agent starts again.
func TestInterruptedRenewal(t *testing.T) {
	f := newFakeSigner(t, time.Hour)
	issue := func() (cert, key []byte) {
		c, k, err := f.ca.Issue(certs.Request{Role: certs.RoleAgent, Name: "w"})
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	oldCert, oldKey := issue()
	newCert, newKey := issue()
	write := func(path string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]struct {
		setup func(f certs.Files)
		want  []byte // the certificate in place afterwards
	}{
		"crash while writing the key": {func(f certs.Files) {
			write(f.Key+".tmp", newKey[:10])
		}, oldCert},
		"crash before the certificate was written": {func(f certs.Files) {
			write(f.Key+".new", newKey)
			write(f.Cert+".tmp", newCert[:10])
		}, oldCert},
		"crash before renaming": {func(f certs.Files) {
			write(f.Key+".new", newKey)
			write(f.Cert+".new", newCert)
		}, newCert},
		"crash between the renames": {func(f certs.Files) {
			write(f.Key, newKey)
			write(f.Cert+".new", newCert)
		}, newCert},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			files := enrollTo(dir)
			write(files.CA, certs.EncodeCertificate(f.ca.Cert))
			write(files.Cert, oldCert)
			write(files.Key, oldKey)
			tt.setup(files)
			a, err := agent.New(agent.Config{Controller: "127.0.0.1:1", TLS: files, StateDir: t.TempDir()})
			if err != nil {
				t.Fatalf("New after the crash: %v", err)
			}
			_ = a
			if got, _ := os.ReadFile(files.Cert); string(got) != string(tt.want) {
				t.Error("the certificate in place is not the expected one")
			}
			if _, _, err := files.Load(); err != nil {
				t.Fatal(err)
			}
			for _, pattern := range []string{"*.new", "*.tmp"} {
				if left, _ := filepath.Glob(filepath.Join(dir, pattern)); len(left) != 0 {
					t.Errorf("left behind: %v", left)
				}
			}
		})
	}
}

func TestAPIAddressChecked(t *testing.T) {
	f := newFakeSigner(t, time.Hour)
	files := enrollTo(t.TempDir())
	if _, err := agent.Enroll(context.Background(), agent.EnrollConfig{API: f.addr(), Token: "jsj_good", CAPin: f.pin(), Files: files}); err != nil {
		t.Fatal(err)
	}
	for _, api := range []string{"http://ctl:8443", "ctl", "ftp://ctl:1"} {
		_, err := agent.New(agent.Config{Controller: "127.0.0.1:1", API: api, TLS: files, StateDir: t.TempDir()})
		if !errors.Is(err, agent.ErrConfig) {
			t.Errorf("API %q: %v, want ErrConfig", api, err)
		}
	}
}
