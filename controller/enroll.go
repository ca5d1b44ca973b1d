package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller/store"
)

// Enrollment, renewal and the controller's own certificate.
//
// Join tokens: an operator creates one (POST /agent-tokens), gets its
// secret once, with the CA pin (the SHA-256 of the CA certificate) and
// the command to run on the new worker. The store keeps only the
// secret's SHA-256, its expiry, the uses left, the labels and the name
// prefix it gives.
//
// Enrollment: the agent makes its key and a CSR, connects to the HTTPS
// API without a client certificate, checks that the controller's
// certificate chains to the pinned CA (the controller sends the CA
// certificate after its own for this), and sends the token and the CSR
// (POST /enroll). The controller signs the CSR's key as role agent with
// a name it decides — the token's prefix and a random suffix, or the
// name the CSR asks for if it starts with that prefix — for
// Config.AgentCertTTL, takes one use of the token atomically, and
// answers with the certificate. The CSR's subject, SANs and extensions
// are ignored. A refused enrollment (unknown, expired or used-up token,
// bad CSR, name taken) changes nothing.
//
// Renewal: an agent sends a new CSR with its current, valid agent
// certificate as client certificate (POST /enroll/renew) and gets a new
// certificate for the same name; revoked certificates are refused.
//
// Signing needs the CA key (Config.CAKey); without it these routes answer
// 501 and say so. The controller's own certificate is served through
// tls.Config.GetCertificate from an atomic pointer, so ReloadCertificate
// (SIGHUP) and the file watcher swap it for new connections while every
// open session goes on.

// Join tokens.
const (
	// JoinTokenPrefix starts every join token.
	JoinTokenPrefix = "jsj_"
	// DefaultJoinTokenTTL and MaxJoinTokenTTL bound a join token's life.
	DefaultJoinTokenTTL = 30 * time.Minute
	MaxJoinTokenTTL     = 7 * 24 * time.Hour
	// MaxJoinTokenUses is the most enrollments one token allows.
	MaxJoinTokenUses = 1000
	// DefaultNamePrefix starts the names of enrolled agents when the
	// token names no prefix.
	DefaultNamePrefix = "agent"
	// DefaultAgentCertTTL is the lifetime of the agent certificates the
	// controller signs (Config.AgentCertTTL).
	DefaultAgentCertTTL = 30 * 24 * time.Hour
	// DefaultCertReloadInterval is how often the controller checks its
	// certificate files for a change (Config.CertReloadInterval).
	DefaultCertReloadInterval = 5 * time.Second
)

// joinTokenKeep is how long an expired join token is kept, so that using
// it says "expired" rather than "unknown".
const joinTokenKeep = 24 * time.Hour

// Audit actions of this file.
const (
	auditJoinTokenCreate = "join_token_create"
	auditJoinTokenRevoke = "join_token_revoke"
	auditEnroll          = "agent_enroll"
	auditRenew           = "agent_renew"
)

var namePrefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$`)

func viewJoinToken(t store.JoinToken, now time.Time) api.JoinTokenView {
	v := api.JoinTokenView{
		ID: t.ID(), Uses: t.Uses, UsesLeft: t.UsesLeft, Labels: t.Labels, NamePrefix: t.NamePrefix,
		CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Expired: !now.Before(t.ExpiresAt),
		Enrolled: t.Enrolled,
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if v.Enrolled == nil {
		v.Enrolled = []string{}
	}
	return v
}

// pki is the controller's own certificate, reloadable, and the CA that
// signs agent certificates when Config.CAKey is set.
type pki struct {
	log   hclog.Logger
	files certs.Files
	every time.Duration
	cur   atomic.Pointer[tls.Certificate] // served to new connections: leaf, then its CA

	mu     sync.Mutex // serializes loads; guards stamp and failed
	stamp  string     // of the files cur came from
	failed string     // of files that failed to load (reported once)

	ca    *certs.CA // nil without Config.CAKey
	caPEM []byte
	pin   string
	ttl   time.Duration
}

// newPKI prepares serving cert (already loaded from cfg.TLS) and loads the
// CA key if cfg names one.
func newPKI(cfg Config, cert tls.Certificate, log hclog.Logger) (*pki, error) {
	p := &pki{log: log, files: cfg.TLS, every: cfg.CertReloadInterval, ttl: cfg.AgentCertTTL}
	if p.every <= 0 {
		p.every = DefaultCertReloadInterval
	}
	if p.ttl <= 0 {
		p.ttl = DefaultAgentCertTTL
	}
	if p.ttl > certs.MaxTTL {
		return nil, fmt.Errorf("%w: the agent certificate lifetime %s is longer than %s", ErrConfig, p.ttl, certs.MaxTTL)
	}
	if cfg.CAKey != "" {
		ca, err := certs.LoadCAFiles(cfg.TLS.CA, cfg.CAKey)
		if err != nil {
			return nil, fmt.Errorf("%w: -ca-key: %v", ErrConfig, err)
		}
		if err := cert.Leaf.CheckSignatureFrom(ca.Cert); err != nil {
			return nil, fmt.Errorf("%w: the controller certificate %s is not signed by the CA of -ca-key %s; enrolling agents check the controller against that CA, so use one CA for both", ErrConfig, cfg.TLS.Cert, cfg.CAKey)
		}
		p.ca, p.caPEM, p.pin = ca, certs.EncodeCertificate(ca.Cert), certs.Fingerprint(ca.Cert)
	}
	cas, _ := p.caCerts() // already loaded once by Files.Load
	p.cur.Store(withIssuer(cert, cas))
	p.stamp = p.stampNow()
	return p, nil
}

// serve makes conf present the current certificate, whatever it is at
// each handshake.
func (p *pki) serve(conf *tls.Config) *tls.Config {
	conf.Certificates = nil
	conf.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.cur.Load(), nil }
	return conf
}

// caCerts parses the CA file.
func (p *pki) caCerts() ([]*x509.Certificate, error) {
	data, err := os.ReadFile(p.files.CA)
	if err != nil {
		return nil, err
	}
	return certs.ParseCertificatesPEM(data)
}

// withIssuer returns pair with the certificate of the CA among cas that
// signed it appended: an enrolling agent, which has only the CA's
// fingerprint, checks the chain against it. Other clients ignore it.
func withIssuer(pair tls.Certificate, cas []*x509.Certificate) *tls.Certificate {
	out := pair
	out.Certificate = [][]byte{pair.Certificate[0]}
	for _, ca := range cas {
		if pair.Leaf.CheckSignatureFrom(ca) == nil {
			out.Certificate = append(out.Certificate, ca.Raw)
			break
		}
	}
	return &out
}

// stampNow identifies the present contents of the certificate and key
// files by modification time and size.
func (p *pki) stampNow() string {
	var b strings.Builder
	for _, f := range []string{p.files.Cert, p.files.Key} {
		fi, err := os.Stat(f)
		if err != nil {
			b.WriteString("missing;")
			continue
		}
		fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return b.String()
}

// reload loads the certificate files and serves them if they hold a
// valid controller certificate from the CA.
func (p *pki) reload() (changed bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	stamp := p.stampNow()
	pair, err := certs.LoadKeyPair(p.files.Cert, p.files.Key)
	if err != nil {
		return false, err
	}
	leaf := pair.Leaf
	if role, err := certs.RoleOf(leaf); err != nil || role != certs.RoleController {
		return false, fmt.Errorf("%s is not a controller certificate (role %q)", p.files.Cert, role)
	}
	cas, err := p.caCerts()
	if err != nil {
		return false, fmt.Errorf("reading the CA file %s: %w", p.files.CA, err)
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return false, fmt.Errorf("%s does not verify against the CA file %s: %w", p.files.Cert, p.files.CA, err)
	}
	if p.ca != nil && leaf.CheckSignatureFrom(p.ca.Cert) != nil {
		return false, fmt.Errorf("%s is not signed by the CA of -ca-key, which enrolling agents pin", p.files.Cert)
	}
	p.stamp, p.failed = stamp, ""
	old := p.cur.Load()
	if old != nil && bytes.Equal(old.Certificate[0], pair.Certificate[0]) {
		return false, nil
	}
	p.cur.Store(withIssuer(pair, cas))
	p.log.Info("controller certificate reloaded; new connections use it, open ones go on",
		"serial", serialHex(leaf.SerialNumber), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return true, nil
}

// watch reloads the certificate whenever its files change, until ctx is
// done. Files that fail to load (half written, mismatched) are reported
// once and tried again when they change again.
func (p *pki) watch(ctx context.Context) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		stamp := p.stampNow()
		same := stamp == p.stamp || stamp == p.failed
		p.mu.Unlock()
		if same {
			continue
		}
		if _, err := p.reload(); err != nil {
			p.mu.Lock()
			p.failed = stamp
			p.mu.Unlock()
			p.log.Warn("the certificate files changed but cannot be used; keeping the current certificate", "cert", p.files.Cert, "error", err)
		}
	}
}

// ReloadCertificate loads the controller's certificate and key files
// again and serves them on both listeners to connections made from now
// on; agent sessions and API connections already open go on. Files that
// do not hold a valid controller certificate from the CA are refused
// and the current certificate stays. The CLI calls it on SIGHUP; the
// controller also reloads by itself when the files change.
func (s *Server) ReloadCertificate() error {
	if s.pki == nil {
		return fmt.Errorf("controller: reload certificate: %w: the server was not built with New", ErrConfig)
	}
	if _, err := s.pki.reload(); err != nil {
		return fmt.Errorf("controller: reload certificate: %w; keeping the current one", err)
	}
	return nil
}

// CertificateSerial is the serial number (hex) of the certificate the
// controller serves to new connections.
func (s *Server) CertificateSerial() string {
	if s.pki == nil {
		return ""
	}
	c := s.pki.cur.Load()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return ""
	}
	return serialHex(leaf.SerialNumber)
}

// canSign answers 501 when the controller holds no CA key.
func (s *Server) canSign(w http.ResponseWriter) bool {
	if s.pki != nil && s.pki.ca != nil {
		return true
	}
	// 501: a controller without Config.CAKey cannot sign.
	writeError(w, http.StatusNotImplemented, "this controller cannot sign agent certificates: it was started without the CA key (-ca-key FILE, key ca_key). Restart it with -ca-key to enroll and renew agents (SECURITY.md explains the trade-off), or issue agent certificates by hand with 'jobsuite tls cert create -role agent'")
	return false
}

// newJoinToken returns a new join token and the SHA-256 of it.
func newJoinToken() (secret string, hash []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	secret = JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(secret))
	return secret, sum[:]
}

// handleCreateJoinToken creates a join token and shows it once.
func (s *Server) handleCreateJoinToken(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	// Who may ask comes first: an API token is refused (403) whether or
	// not this controller could sign (501).
	who, _ := requestIdentity(r)
	if who.Via != "certificate" {
		// An agent certificate outlives the API token that asked for it.
		writeError(w, http.StatusForbidden, "%s may not create join tokens: create them with an operator certificate", who)
		return
	}
	if !s.canSign(w) {
		return
	}
	var req api.JoinTokenRequest
	if !readBody(w, r, &req, true) {
		return
	}
	ttl := DefaultJoinTokenTTL
	if req.TTL != nil {
		secs := *req.TTL
		if !(secs >= 1) || secs > MaxJoinTokenTTL.Seconds() {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("ttl must be between 1 and %.0f seconds (7 days), got %v", MaxJoinTokenTTL.Seconds(), secs), Field: "ttl"})
			return
		}
		ttl = time.Duration(secs * float64(time.Second))
	}
	uses := 1
	if req.Uses != nil {
		if *req.Uses < 1 || *req.Uses > MaxJoinTokenUses {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("uses must be between 1 and %d, got %d", MaxJoinTokenUses, *req.Uses), Field: "uses"})
			return
		}
		uses = *req.Uses
	}
	maxLabels := s.cfg.MaxLabels
	if maxLabels <= 0 {
		maxLabels = defaultMaxLabels
	}
	if len(req.Labels) > maxLabels {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("labels has %d entries; the limit is %d", len(req.Labels), maxLabels), Field: "labels"})
		return
	}
	for k, v := range req.Labels {
		if !labelKeyRE.MatchString(k) || len(v) > maxLabelValue {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("label %q: keys are 1–63 letters, digits, '.', '_', '/' or '-', values at most %d bytes", k, maxLabelValue), Field: "labels"})
			return
		}
	}
	prefix := req.NamePrefix
	if prefix == "" {
		prefix = DefaultNamePrefix
	}
	if !namePrefixRE.MatchString(prefix) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("name_prefix %q must be 1–40 letters, digits, '.', '_' or '-', starting with a letter or digit", prefix), Field: "name_prefix"})
		return
	}
	now := time.Now().UTC()
	// Expired tokens go in the same round as the new one.
	s.c.Add(&store.PruneJoinTokens{Before: now.Add(-joinTokenKeep)})
	secret, hash := newJoinToken()
	t := store.JoinToken{
		Hash: hash, Uses: uses, UsesLeft: uses, Labels: req.Labels, NamePrefix: prefix,
		CreatedBy: who.who(), CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	res, err := s.c.Do(&store.CreateJoinToken{Token: t})
	if err == nil {
		err = res.Err // ErrExists: 256 random bits met an earlier token
	}
	if err != nil {
		s.log.Error("storing join token failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, "the join token could not be stored: %v", err)
		return
	}
	s.log.Info("join token created", "token", t.ID(), "uses", uses, "expires", t.ExpiresAt, "name_prefix", prefix, "by", t.CreatedBy)
	s.auditDetail(r, auditJoinTokenCreate, "join token "+t.ID(),
		fmt.Sprintf("%d use(s), names %s-…, labels %s, expires %s", uses, prefix, labelText(req.Labels), t.ExpiresAt.Format(time.RFC3339)))
	v := viewJoinToken(t, now)
	v.Token, v.CAPin = secret, s.pki.pin
	if _, port, err := net.SplitHostPort(s.AgentAddr()); err == nil {
		v.AgentPort, _ = strconv.Atoi(port)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, v)
}

// labelText shows labels as k=v,k2=v2, sorted, or "none".
func labelText(l map[string]string) string {
	if len(l) == 0 {
		return "none"
	}
	kv := make([]string, 0, len(l))
	for k, v := range l {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// handleJoinTokens lists the join tokens, oldest first, without secrets.
func (s *Server) handleJoinTokens(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	toks, err := s.st.JoinTokens()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "reading the join tokens: %v", err)
		return
	}
	now := time.Now()
	out := make([]api.JoinTokenView, 0, len(toks))
	for _, t := range toks {
		out = append(out, viewJoinToken(t, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRevokeJoinToken deletes a join token: it enrolls nobody from now on.
func (s *Server) handleRevokeJoinToken(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id := p.ByName("id")
	res, err := s.c.Do(&store.DeleteJoinToken{ID: id})
	if err == nil {
		err = res.Err
	}
	var t store.JoinToken
	if res.JoinToken != nil {
		t = *res.JoinToken
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no join token with id %q; 'jobsuite agent token list' shows them", id), Field: "id"})
		return
	case err != nil:
		s.log.Error("deleting join token failed", "token", id, "error", err)
		writeError(w, http.StatusServiceUnavailable, "the join token could not be deleted: %v", err)
		return
	}
	s.log.Info("join token revoked", "token", id)
	s.auditDetail(r, auditJoinTokenRevoke, "join token "+id, fmt.Sprintf("%d of %d use(s) left", t.UsesLeft, t.Uses))
	writeJSON(w, http.StatusOK, viewJoinToken(t, time.Now()))
}

// tokenRefusal explains why a join token cannot enroll.
func tokenRefusal(t store.JoinToken, err error) string {
	const next = "ask an operator for a new one ('jobsuite agent token create')"
	switch {
	case errors.Is(err, store.ErrTokenExpired):
		return fmt.Sprintf("the join token %s expired at %s; %s", t.ID(), t.ExpiresAt.UTC().Format(time.RFC3339), next)
	case errors.Is(err, store.ErrTokenUsedUp):
		return fmt.Sprintf("the join token %s was already used %d time(s), all it allows; %s", t.ID(), t.Uses, next)
	}
	return "the join token is not valid (unknown, mistyped, revoked, or expired more than a day ago); " + next
}

// handleEnroll signs a new agent's CSR in exchange for a join token.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if !s.canSign(w) {
		return
	}
	var req api.EnrollRequest
	if !readBody(w, r, &req, false) {
		return
	}
	if strings.TrimSpace(req.Token) == "" {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "token is required: the join token 'jobsuite agent token create' printed", Field: "token"})
		return
	}
	csr, err := certs.ParseCSR([]byte(req.CSR))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Field: "csr"})
		return
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(req.Token)))
	now := time.Now()
	t, err := s.st.JoinToken(sum[:])
	if err == nil && !now.Before(t.ExpiresAt) {
		err = store.ErrTokenExpired
	} else if err == nil && t.UsesLeft <= 0 {
		err = store.ErrTokenUsedUp
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrTokenExpired) && !errors.Is(err, store.ErrTokenUsedUp) {
		writeError(w, http.StatusServiceUnavailable, "reading the join token: %v", err)
		return
	}
	if err != nil {
		s.log.Warn("enrollment refused", "remote", r.RemoteAddr, "reason", err)
		writeError(w, http.StatusUnauthorized, "%s", tokenRefusal(t, err))
		return
	}
	name, code, msg := s.enrollName(t, csr.Subject.CommonName)
	if code != 0 {
		s.log.Warn("enrollment refused", "remote", r.RemoteAddr, "token", t.ID(), "reason", msg)
		writeJSON(w, code, api.Error{Error: msg, Field: "csr"})
		return
	}
	// Sign first, then take the use: a refused use leaves nothing behind
	// (the certificate is dropped unseen).
	certPEM, err := s.pki.ca.SignCSR(csr, certs.Request{Role: certs.RoleAgent, Name: name, TTL: s.pki.ttl})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "signing the certificate failed: %v", err)
		return
	}
	res, err := s.c.Do(&store.UseJoinToken{Hash: sum[:], Now: now, Agent: name})
	if err == nil {
		err = res.Err
		if res.JoinToken != nil {
			t = *res.JoinToken
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenUsedUp):
		s.log.Warn("enrollment refused", "remote", r.RemoteAddr, "reason", err)
		writeError(w, http.StatusUnauthorized, "%s", tokenRefusal(t, err))
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "taking a use of the join token: %v", err)
		return
	}
	v := s.certificateView(name, certPEM)
	v.Labels = t.Labels
	s.log.Info("agent enrolled", "agent", name, "token", t.ID(), "uses_left", t.UsesLeft, "serial", v.Serial, "not_after", v.NotAfter, "remote", r.RemoteAddr)
	id := identity{Role: certs.RoleAgent, Name: name, Via: "join token", Credential: t.ID()}
	s.auditDetail(withIdentity(r, &id), auditEnroll, "agent "+name,
		fmt.Sprintf("certificate %s until %s; join token %s, %d use(s) left", v.Serial, v.NotAfter.Format(time.RFC3339), t.ID(), t.UsesLeft))
	writeJSON(w, http.StatusCreated, v)
}

// enrollName decides the name of an agent enrolling with t that asks
// for requested (may be empty). A refusal comes with its status code.
func (s *Server) enrollName(t store.JoinToken, requested string) (name string, code int, msg string) {
	prefix := t.NamePrefix
	if prefix == "" {
		prefix = DefaultNamePrefix
	}
	if requested == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		return prefix + "-" + hex.EncodeToString(b), 0, ""
	}
	if !strings.HasPrefix(requested, prefix+"-") || len(requested) == len(prefix)+1 {
		return "", http.StatusBadRequest, fmt.Sprintf("this join token enrolls agents named %s-…: ask for such a name (-name %s-web-1), or for none to get %s-<random>", prefix, prefix, prefix)
	}
	if err := certs.CheckName(requested); err != nil {
		return "", http.StatusBadRequest, err.Error()
	}
	// Revocations of the name cover certificates issued later: the agent
	// could not connect.
	probe := &x509.Certificate{SerialNumber: big.NewInt(0), Subject: pkix.Name{
		CommonName: requested, Organization: []string{"jobsuite"}, OrganizationalUnit: []string{string(certs.RoleAgent)},
	}}
	if rev, ok := s.sec.deniedCert(probe); ok {
		return "", http.StatusForbidden, fmt.Sprintf("the agent name %q is revoked (%s); choose another name", requested, rev.ID())
	}
	// A new session takes over a connected agent's name and its
	// attempts: a join token must not be a way to do that.
	if s.sched.Session(requested) != nil {
		return "", http.StatusConflict, fmt.Sprintf("an agent named %q is connected; choose another name", requested)
	}
	return requested, 0, ""
}

// certificateView describes a certificate the controller just signed.
func (s *Server) certificateView(name string, certPEM []byte) api.CertificateView {
	v := api.CertificateView{Name: name, Certificate: string(certPEM), CA: string(s.pki.caPEM)}
	if c, err := certs.ParseCertificatesPEM(certPEM); err == nil {
		v.Serial, v.NotAfter = serialHex(c[0].SerialNumber), c[0].NotAfter.UTC()
	}
	return v
}

// handleRenew signs a new certificate for the agent whose current
// certificate authenticates the request.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	var leaf *x509.Certificate
	if r.TLS != nil {
		leaf = leafOf(*r.TLS)
	}
	if leaf == nil {
		writeError(w, http.StatusUnauthorized, "renewing needs the agent's current certificate as the client certificate; an agent whose certificate expired must enroll again with a new join token")
		return
	}
	role, name, err := certs.PeerIdentity(*r.TLS)
	if err != nil || role != certs.RoleAgent {
		writeError(w, http.StatusForbidden, "only agent certificates are renewed here; this certificate %q has role %q", leaf.Subject.CommonName, role)
		return
	}
	if rev, ok := s.sec.deniedCert(leaf); ok {
		s.log.Warn("renewal refused: certificate revoked", "agent", name, "serial", serialHex(leaf.SerialNumber), "revocation", rev.ID(), "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "%s", revokedMessage(leaf, rev))
		return
	}
	if !s.canSign(w) { // after the caller is known: 401/403 before 501
		return
	}
	var req api.RenewRequest
	if !readBody(w, r, &req, false) {
		return
	}
	csr, err := certs.ParseCSR([]byte(req.CSR))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Field: "csr"})
		return
	}
	certPEM, err := s.pki.ca.SignCSR(csr, certs.Request{Role: certs.RoleAgent, Name: name, TTL: s.pki.ttl})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "signing the certificate failed: %v", err)
		return
	}
	v := s.certificateView(name, certPEM)
	old := serialHex(leaf.SerialNumber)
	s.log.Info("agent certificate renewed", "agent", name, "old_serial", old, "serial", v.Serial, "not_after", v.NotAfter)
	id := identity{Role: certs.RoleAgent, Name: name, Via: "certificate", Credential: old}
	s.auditDetail(withIdentity(r, &id), auditRenew, "agent "+name,
		fmt.Sprintf("certificate %s replaces %s, until %s", v.Serial, old, v.NotAfter.Format(time.RFC3339)))
	writeJSON(w, http.StatusCreated, v)
}
