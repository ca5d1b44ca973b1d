package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/api"
	"jobsuite/certs"
)

// Enrollment and renewal, the agent's side.
//
// Enroll turns a join token into certificate files: the agent makes its
// ECDSA key (it never leaves the host) and a CSR, connects to the
// controller's HTTPS API without a client certificate, accepts the
// controller only if its certificate chains to a CA whose SHA-256 is the
// pin and carries the controller role (certs.PinnedTLS) — before the
// token is sent — and posts the token and the CSR (POST /enroll). It
// writes that CA as the CA file, the certificate and the key (0600),
// and enrollment.json (the name and the token's labels) beside them.
//
// Renewal: with Config.API set, Run renews the certificate at two thirds
// of its lifetime (certs.RenewAt) over the HTTPS API (POST
// /enroll/renew), authenticated by the current certificate, with a new
// key. The new files replace the old ones atomically; the session that
// is up goes on, and the next connection uses them. A failed renewal is
// tried again, more often as the expiry nears.

// ErrControllerRefused: the controller refused the enrollment or
// renewal; the error carries its reason.
var ErrControllerRefused = errors.New("refused by the controller")

// enrollTimeout bounds one enrollment or renewal request.
const enrollTimeout = 30 * time.Second

// maxAnswer bounds the controller's answer.
const maxAnswer = 1 << 20

// EnrollConfig configures Enroll.
type EnrollConfig struct {
	API   string // the controller's HTTPS API, host:port or https://host:port; required
	Token string // the join token (jsj_…); required
	CAPin string // SHA-256 of the CA certificate, hex; required
	// ServerName is the name the controller's certificate must carry;
	// default: the host of API.
	ServerName string
	// Name is the agent name asked for; it must start with the token's
	// name prefix and "-". Default: the controller picks PREFIX-<random>.
	Name string
	// Files are where the CA certificate, the agent certificate and its
	// key are written; the directories are made (0700) if missing.
	Files  certs.Files
	Logger hclog.Logger
}

// Enrollment records an enrollment; Enroll writes it as
// enrollment.json beside the certificate.
type Enrollment struct {
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"` // the join token's labels
	API        string            `json:"api"`
	Serial     string            `json:"serial"`
	NotAfter   time.Time         `json:"not_after"`
	EnrolledAt time.Time         `json:"enrolled_at"`
}

// EnrollmentFile is where Enroll records the enrollment of f.
func EnrollmentFile(f certs.Files) string {
	return filepath.Join(filepath.Dir(f.Cert), "enrollment.json")
}

// DefaultEnrollDir is where an enrolling agent keeps its certificate
// files when none are named: /var/lib/jobsuite/agent when running as
// root, else ~/.local/state/jobsuite/agent.
func DefaultEnrollDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/jobsuite/agent"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "jobsuite", "agent")
	}
	return filepath.Join(os.TempDir(), "jobsuite-agent")
}

// Enrolled reports whether f's certificate and key exist, so an
// enrollment would be needless, after completing (or undoing) a write
// of them that a crash interrupted. Only one of them existing is an
// error: something removed the other.
func Enrolled(f certs.Files) (bool, error) {
	if err := finishWrites(f); err != nil {
		return false, err
	}
	cert, err := exists(f.Cert)
	if err != nil {
		return false, err
	}
	key, err := exists(f.Key)
	if err != nil {
		return false, err
	}
	if cert != key {
		have, missing := f.Cert, f.Key
		if key {
			have, missing = f.Key, f.Cert
		}
		return false, fmt.Errorf("%w: %s exists but %s does not; remove %s to enroll again, or put back %s", ErrConfig, have, missing, have, missing)
	}
	return cert, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// ReadEnrollment reads the enrollment recorded beside f's certificate;
// the error wraps fs.ErrNotExist when there is none (certificates made by
// hand).
func ReadEnrollment(f certs.Files) (Enrollment, error) {
	var e Enrollment
	data, err := os.ReadFile(EnrollmentFile(f))
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("%s: %w", EnrollmentFile(f), err)
	}
	return e, nil
}

// apiURL turns host:port or https://host:port into the base URL of the
// controller's API.
func apiURL(api string) (base, host string, err error) {
	s := strings.TrimRight(strings.TrimSpace(api), "/")
	if strings.HasPrefix(strings.ToLower(s), "http://") {
		return "", "", fmt.Errorf("%w: API address %q: the controller's API speaks HTTPS only", ErrConfig, api)
	}
	if i := strings.Index(s, "://"); i >= 0 {
		if !strings.EqualFold(s[:i], "https") {
			return "", "", fmt.Errorf("%w: API address %q: want host:port or https://host:port", ErrConfig, api)
		}
		s = s[i+3:]
	}
	h, _, err := net.SplitHostPort(s)
	if err != nil || s == "" {
		return "", "", fmt.Errorf("%w: API address %q: want host:port, e.g. ctl.example.com:8443", ErrConfig, api)
	}
	if h == "" {
		h = "localhost"
	}
	return "https://" + s, h, nil
}

// post sends body as JSON to url with conf and decodes a 2xx answer. It
// returns the TLS state of the connection.
func post(ctx context.Context, conf *tls.Config, url string, body any, out any) (*tls.ConnectionState, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, enrollTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: conf, TLSHandshakeTimeout: 15 * time.Second, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return resp.TLS, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e api.Error
		if json.Unmarshal(answer, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(answer))
		}
		return resp.TLS, fmt.Errorf("%w (%d %s): %s", ErrControllerRefused, resp.StatusCode, http.StatusText(resp.StatusCode), e.Error)
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return resp.TLS, fmt.Errorf("the answer is not the JSON expected (is this a jobsuite controller?): %w", err)
	}
	return resp.TLS, nil
}

// checkIssued checks a certificate the controller signed for keyPEM: an
// agent certificate from ca, named name when name is set.
func checkIssued(certPEM, keyPEM []byte, roots *x509.CertPool, name string) (*x509.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the certificate the controller sent is not for our key: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, err
		}
	}
	if role, err := certs.RoleOf(leaf); err != nil || role != certs.RoleAgent {
		return nil, fmt.Errorf("the controller sent a certificate with role %q, not agent", role)
	}
	if name != "" && leaf.Subject.CommonName != name {
		return nil, fmt.Errorf("the controller sent a certificate for %q, not %q", leaf.Subject.CommonName, name)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the certificate the controller sent does not verify against the CA: %w", err)
	}
	return leaf, nil
}

// Enroll enrolls this host as an agent with a join token and writes its
// certificate files (see the top of this file). It refuses to overwrite
// an existing certificate or key. Nothing is written unless the
// controller signed a certificate.
func Enroll(ctx context.Context, cfg EnrollConfig) (Enrollment, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	base, host, err := apiURL(cfg.API)
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	if strings.TrimSpace(cfg.Token) == "" {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w: no join token (create one with 'jobsuite agent token create')", ErrConfig)
	}
	pin, err := certs.ParsePin(cfg.CAPin)
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	if cfg.Files.CA == "" || cfg.Files.Cert == "" || cfg.Files.Key == "" {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w: the CA, certificate and key files to write are required", ErrConfig)
	}
	if done, err := Enrolled(cfg.Files); err != nil || done {
		if err == nil {
			err = fmt.Errorf("%w: %s already exists; remove it and its key to enroll again", ErrConfig, cfg.Files.Cert)
		}
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	sn := cfg.ServerName
	if sn == "" {
		sn = host
	}
	csrPEM, keyPEM, err := certs.CreateCSR(cfg.Name)
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	conf, err := certs.PinnedTLS(pin, sn, "http/1.1")
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	log.Info("enrolling", "api", base, "server_name", sn, "name", cfg.Name)
	var ans api.CertificateView
	cs, err := post(ctx, conf, base+"/enroll", api.EnrollRequest{Token: strings.TrimSpace(cfg.Token), CSR: string(csrPEM)}, &ans)
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll at %s: %w", base, err)
	}
	if cs == nil {
		return Enrollment{}, fmt.Errorf("agent: enroll at %s: no TLS connection state", base)
	}
	ca, err := certs.VerifyPinned(*cs, pin, sn) // checked in the handshake; this returns the CA
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	leaf, err := checkIssued([]byte(ans.Certificate), keyPEM, roots, cfg.Name)
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	e := Enrollment{
		Name: leaf.Subject.CommonName, Labels: ans.Labels, API: cfg.API,
		Serial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter.UTC(), EnrolledAt: time.Now().UTC(),
	}
	record, err := json.MarshalIndent(&e, "", "  ")
	if err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: %w", err)
	}
	if err := replaceFiles([]file{ // the certificate last: see finishWrites
		{cfg.Files.CA, certs.EncodeCertificate(ca), 0o644},
		{EnrollmentFile(cfg.Files), append(record, '\n'), 0o600},
		{cfg.Files.Key, keyPEM, 0o600},
		{cfg.Files.Cert, []byte(ans.Certificate), 0o644},
	}); err != nil {
		return Enrollment{}, fmt.Errorf("agent: enroll: writing the certificate files: %w", err)
	}
	log.Info("enrolled", "name", e.Name, "serial", e.Serial, "not_after", e.NotAfter, "cert", cfg.Files.Cert)
	return e, nil
}

// file is one file replaceFiles writes.
type file struct {
	path string
	data []byte
	perm os.FileMode
}

// replaceFiles replaces files (made with their directories, 0700, if
// missing) so that, once finishWrites has run, a reader finds either
// all the old contents or all the new ones, even after a crash. Each
// file is first written in full to PATH.new (through PATH.tmp, synced,
// then renamed), in order; the last one is the marker. Then each PATH.new
// is renamed over PATH, in order. The agent's writes always end with the
// certificate, so its .new file marks a complete set (see finishWrites).
func replaceFiles(files []file) error {
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			return err
		}
		if err := writeFileSynced(f.path+".tmp", f.data, f.perm); err != nil {
			_ = os.Remove(f.path + ".tmp")
			return err
		}
		if err := os.Rename(f.path+".tmp", f.path+".new"); err != nil {
			return err
		}
	}
	if err := syncDirs(files); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.Rename(f.path+".new", f.path); err != nil {
			return err
		}
	}
	return syncDirs(files)
}

func writeFileSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDirs makes the renames in files' directories durable. A failure
// is reported: the files could otherwise be lost in a crash after the
// agent said it had enrolled.
func syncDirs(files []file) error {
	done := map[string]bool{}
	for _, f := range files {
		dir := filepath.Dir(f.path)
		if done[dir] {
			continue
		}
		done[dir] = true
		d, err := os.Open(dir)
		if err != nil {
			return fmt.Errorf("sync directory %s: %w", dir, err)
		}
		err = d.Sync()
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync directory %s: %w", dir, err)
		}
	}
	return nil
}

// finishWrites completes or undoes a replaceFiles of f's files that a
// crash interrupted. Enrollment writes the CA, enrollment.json, the key
// and the certificate, renewal the key and the certificate: always the
// certificate last. If its .new file exists, every .new file is complete
// and goes into place, in that order; if not, the replacement never got
// that far, and the .new files are removed.
func finishWrites(f certs.Files) error {
	order := []string{f.CA, EnrollmentFile(f), f.Key, f.Cert}
	marker, err := exists(f.Cert + ".new")
	if err != nil {
		return err
	}
	for _, p := range order {
		_ = os.Remove(p + ".tmp")
		if ok, _ := exists(p + ".new"); !ok {
			continue
		}
		if !marker {
			if err := os.Remove(p + ".new"); err != nil {
				return err
			}
			continue
		}
		if err := os.Rename(p+".new", p); err != nil {
			return fmt.Errorf("finishing an interrupted write of %s: %w", p, err)
		}
	}
	return nil
}

// checkAPI validates Config.API.
func checkAPI(api string) error {
	if api == "" {
		return nil
	}
	_, _, err := apiURL(api)
	return err
}

// startRenewal starts renewing the certificate (when Config.API is set)
// until ctx is done; stop ends it and waits.
func (a *Agent) startRenewal(ctx context.Context) (stop func()) {
	if a.cfg.API == "" {
		if leaf, err := a.leaf(); err == nil {
			a.log.Debug("certificate renewal is off (no -api)", "not_after", leaf.NotAfter)
		}
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.renewLoop(ctx) }()
	return func() { cancel(); <-done }
}

// leaf reads the current certificate file.
func (a *Agent) leaf() (*x509.Certificate, error) {
	a.certMu.Lock()
	defer a.certMu.Unlock()
	data, err := os.ReadFile(a.files.Cert)
	if err != nil {
		return nil, err
	}
	c, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.files.Cert, err)
	}
	return c[0], nil
}

// renewLoop renews the certificate whenever it reaches certs.RenewAt,
// until ctx is done.
func (a *Agent) renewLoop(ctx context.Context) {
	log := a.log.Named("renew")
	var retry time.Duration // after a failure: when to try again; 0: at RenewAt
	var expiredSerial string
	for {
		wait := time.Minute // when nothing can be done: look at the file again then
		leaf, err := a.leaf()
		now := time.Now()
		switch {
		case err != nil:
			log.Warn("cannot read the agent certificate; renewal waits", "error", err)
		case !now.Before(leaf.NotAfter):
			if s := leaf.SerialNumber.Text(16); s != expiredSerial {
				expiredSerial = s
				log.Error("the agent certificate expired and cannot be renewed: enroll again (remove it and its key, start with a new -join token) or install a new one",
					"cert", a.files.Cert, "not_after", leaf.NotAfter)
			}
		case retry > 0:
			wait = retry
		default:
			wait = certs.RenewAt(leaf).Sub(now)
			log.Debug("certificate renewal scheduled", "at", now.Add(wait).Round(time.Second), "not_after", leaf.NotAfter)
		}
		if !sleep(ctx, wait) {
			return
		}
		if err != nil || !time.Now().Before(leaf.NotAfter) {
			continue
		}
		if cur, err := a.leaf(); err != nil || !cur.Equal(leaf) {
			retry = 0 // the file changed meanwhile: plan from the new one
			continue
		}
		renewed, err := a.renew(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			retry = min(max(time.Until(leaf.NotAfter)/6, time.Second), 10*time.Minute)
			log.Warn("certificate renewal failed; trying again", "error", err, "in", retry.Round(time.Millisecond), "not_after", leaf.NotAfter)
			continue
		}
		retry = 0
		log.Info("certificate renewed; the next connection uses it", "serial", renewed.SerialNumber.Text(16),
			"not_after", renewed.NotAfter, "old_serial", leaf.SerialNumber.Text(16))
	}
}

// sleep waits d (nothing if d <= 0) and reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ctx.Err() == nil
}

// renew gets a new certificate for a new key and replaces the files.
func (a *Agent) renew(ctx context.Context) (*x509.Certificate, error) {
	a.certMu.Lock()
	pool, cert, err := a.files.Load()
	a.certMu.Unlock()
	if err != nil {
		return nil, err
	}
	base, _, err := apiURL(a.cfg.API)
	if err != nil {
		return nil, err
	}
	csrPEM, keyPEM, err := certs.CreateCSR(a.name)
	if err != nil {
		return nil, err
	}
	var ans api.CertificateView
	if _, err := post(ctx, certs.ClientTLS(pool, cert, a.serverName(strings.TrimPrefix(base, "https://")), "http/1.1"), base+"/enroll/renew", api.RenewRequest{CSR: string(csrPEM)}, &ans); err != nil {
		return nil, fmt.Errorf("renewing at %s: %w", base, err)
	}
	leaf, err := checkIssued([]byte(ans.Certificate), keyPEM, pool, a.name)
	if err != nil {
		return nil, err
	}
	a.certMu.Lock()
	defer a.certMu.Unlock()
	if err := replaceFiles([]file{{a.files.Key, keyPEM, 0o600}, {a.files.Cert, []byte(ans.Certificate), 0o644}}); err != nil {
		return nil, fmt.Errorf("writing the renewed certificate: %w", err)
	}
	return leaf, nil
}
