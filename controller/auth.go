package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// Who may do what.
//
// A request proves who it comes from with a client certificate issued by
// the CA (its role and name are in the certificate) or with an API token
// (Authorization: Bearer jst_…; the browser's log WebSocket may pass it
// as ?access_token=). The HTTPS listener asks for a certificate but lets
// a client without one finish the handshake, so token clients can
// connect; a certificate that is given is still verified against the CA
// in the handshake. auth then refuses a request with neither (401), with
// a revoked certificate or an unknown, revoked or expired token (401),
// and with a role that may not use the endpoint (403).
//
// Revocations deny one certificate by serial or every certificate of a
// role and name. They and the tokens live in the store and are loaded
// into memory at start, so each check is a map lookup. The agent
// listener checks revocations when a session starts, and revoking closes
// the sessions the revocation covers at once.

// TokenPrefix starts every API token, so a leaked one is easy to spot.
const TokenPrefix = "jst_"

// Token lifetimes.
const (
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 365 * 24 * time.Hour
)

// tokenSecretBytes is the random part of a token.
const tokenSecretBytes = 32

// maxAuthBody bounds the bodies of the token and revocation endpoints.
const maxAuthBody = 64 << 10

var (
	tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)
	certNameRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`) // as certs issues them
)

// identity is who a request or agent session comes from.
type identity struct {
	Role       certs.Role
	Name       string // certificate CN or token name
	Via        string // "certificate" or "token"
	Credential string // certificate serial (hex) or token ID
}

// String names the identity in messages: certificate "alice", token "ci".
func (id identity) String() string {
	return fmt.Sprintf("%s %q", id.Via, id.Name)
}

// who is the identity as stored in records: "operator alice (certificate 1f2e…)".
func (id identity) who() string {
	cred := id.Credential
	if len(cred) > 12 {
		cred = cred[:12] + "…"
	}
	return fmt.Sprintf("%s %s (%s %s)", id.Role, id.Name, id.Via, cred)
}

// identityKey is the request context's key of the *identity auth
// admitted it with (a pointer: boxing it allocates nothing).
type identityKey struct{}

// requestIdentity returns the identity auth admitted r with.
func requestIdentity(r *http.Request) (identity, bool) {
	id, ok := r.Context().Value(identityKey{}).(*identity)
	if !ok {
		return identity{}, false
	}
	return *id, true
}

// withIdentity is r carrying id for requestIdentity.
func withIdentity(r *http.Request, id *identity) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
}

// certIdentities remembers the identity of the client certificates
// requests came with: a connection's requests share one parsed
// certificate, and its role, name and serial (the serial formatted from
// a big.Int) were worked out anew for each. Keyed by the certificate's
// pointer, which the map keeps alive, so an address is never reused
// while it is a key; emptied when it reaches maxCertIdentities. The
// identities are never modified once stored. Revocation is checked on
// every request, before this is consulted.
type certIdentities struct {
	mu sync.RWMutex
	m  map[*x509.Certificate]*identity
}

// maxCertIdentities bounds certIdentities: far more clients than an API
// has connected at once.
const maxCertIdentities = 1024

// of returns the identity of the verified certificate leaf of cs.
func (c *certIdentities) of(cs tls.ConnectionState, leaf *x509.Certificate) (*identity, error) {
	c.mu.RLock()
	id, ok := c.m[leaf]
	c.mu.RUnlock()
	if ok {
		return id, nil
	}
	role, name, err := certs.PeerIdentity(cs)
	if err != nil {
		return nil, err
	}
	id = &identity{Role: role, Name: name, Via: "certificate", Credential: serialHex(leaf.SerialNumber)}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCertIdentities {
		c.m = make(map[*x509.Certificate]*identity)
	}
	c.m[leaf] = id
	c.mu.Unlock()
	return id, nil
}

// security holds the revocations and tokens in memory, and the audit
// log's sequence. A nil *security (a Server built without New, in tests)
// knows no tokens and no revocations.
type security struct {
	st     *store.Store     // read at start
	c      *sched.Committer // writes
	log    hclog.Logger
	retain time.Duration // audit entries older than this are pruned; <= 0 keeps them

	mu      sync.RWMutex
	revoked map[string]store.Revocation       // by ID
	tokens  map[[sha256.Size]byte]store.Token // by hash of the secret

	auditMu   sync.Mutex
	auditLast uint64 // ID of the newest audit entry
	auditN    int    // entries since the last prune
}

// loadSecurity reads the revocations, tokens and the audit sequence;
// the security records are written through c.
func loadSecurity(st *store.Store, c *sched.Committer, log hclog.Logger, retain time.Duration) (*security, error) {
	sec := &security{st: st, c: c, log: log, retain: retain, revoked: map[string]store.Revocation{}, tokens: map[[sha256.Size]byte]store.Token{}}
	revs, err := st.Revocations()
	if err != nil {
		return nil, err
	}
	for _, r := range revs {
		sec.revoked[r.ID()] = r
	}
	toks, err := st.Tokens()
	if err != nil {
		return nil, err
	}
	for _, t := range toks {
		if len(t.Hash) != sha256.Size {
			log.Warn("ignoring a stored token with a malformed hash", "token", t.ID)
			continue
		}
		sec.tokens[[sha256.Size]byte(t.Hash)] = t
	}
	if sec.auditLast, err = st.LastAuditID(); err != nil {
		return nil, err
	}
	sec.pruneAudit()
	log.Debug("security records loaded", "revocations", len(sec.revoked), "tokens", len(sec.tokens))
	return sec, nil
}

// serialHex is how serials are written: lowercase hex, no leading zeros.
func serialHex(n *big.Int) string { return n.Text(16) }

// parseSerial reads a serial number in hex, with or without 0x, colons
// or spaces, in any case.
func parseSerial(s string) (string, error) {
	clean := strings.ToLower(strings.NewReplacer(":", "", " ", "", "-", "").Replace(strings.TrimSpace(s)))
	clean = strings.TrimPrefix(clean, "0x")
	n, ok := new(big.Int).SetString(clean, 16)
	if !ok || n.Sign() <= 0 || n.BitLen() > 160 {
		return "", fmt.Errorf("serial %q is not a certificate serial number: want up to 40 hex digits (openssl x509 -noout -serial -in CERT.pem prints it)", s)
	}
	return serialHex(n), nil
}

// leafOf returns the verified peer certificate of cs, or nil.
func leafOf(cs tls.ConnectionState) *x509.Certificate {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	return cs.VerifiedChains[0][0]
}

// deniedCert returns the revocation that covers leaf, if any.
func (sec *security) deniedCert(leaf *x509.Certificate) (store.Revocation, bool) {
	if sec == nil || leaf == nil {
		return store.Revocation{}, false
	}
	sec.mu.RLock()
	defer sec.mu.RUnlock()
	if len(sec.revoked) == 0 {
		return store.Revocation{}, false
	}
	role, _ := certs.RoleOf(leaf)
	if r, ok := sec.revoked["serial:"+serialHex(leaf.SerialNumber)]; ok {
		return r, true
	}
	if role != "" {
		if r, ok := sec.revoked["name:"+string(role)+":"+leaf.Subject.CommonName]; ok {
			return r, true
		}
	}
	// Revoking an agent's certificate also revokes every certificate of
	// that agent issued before the revocation: an enrolled agent may have
	// renewed already, and its newer certificate must not let it back in.
	// A certificate issued afterwards (a deliberate re-issue) is not
	// covered. certs sets NotBefore one minute before issuing.
	if role == certs.RoleAgent {
		issued := leaf.NotBefore.Add(time.Minute)
		for _, r := range sec.revoked {
			if r.Serial != "" && r.Role == string(certs.RoleAgent) && r.Name == leaf.Subject.CommonName && !issued.After(r.At) {
				return r, true
			}
		}
	}
	return store.Revocation{}, false
}

// deniedConn returns the revocation that covers the peer of cs, if any.
func (sec *security) deniedConn(cs tls.ConnectionState) (store.Revocation, bool) {
	return sec.deniedCert(leafOf(cs))
}

// revokedMessage tells a refused peer why and what to do.
func revokedMessage(leaf *x509.Certificate, r store.Revocation) string {
	msg := fmt.Sprintf("certificate %q (serial %s) was revoked at %s by %s", leaf.Subject.CommonName, serialHex(leaf.SerialNumber), r.At.UTC().Format(time.RFC3339), r.By)
	if r.Reason != "" {
		msg += ": " + r.Reason
	}
	return msg + "; ask an operator for a new certificate"
}

func (sec *security) add(r store.Revocation) error {
	if _, err := sec.c.Do(&store.PutRevocation{Revocation: r}); err != nil {
		return err
	}
	sec.mu.Lock()
	sec.revoked[r.ID()] = r
	sec.mu.Unlock()
	return nil
}

func (sec *security) remove(id string) (store.Revocation, error) {
	sec.mu.RLock()
	r, ok := sec.revoked[id]
	sec.mu.RUnlock()
	if !ok {
		return r, store.ErrNotFound
	}
	res, err := sec.c.Do(&store.DeleteRevocation{ID: id})
	if err == nil && !errors.Is(res.Err, store.ErrNotFound) {
		err = res.Err
	}
	if err != nil {
		return r, err
	}
	sec.mu.Lock()
	delete(sec.revoked, id)
	sec.mu.Unlock()
	return r, nil
}

// token returns the token whose secret is secret.
func (sec *security) token(secret string) (store.Token, bool) {
	if sec == nil {
		return store.Token{}, false
	}
	sum := sha256.Sum256([]byte(secret))
	sec.mu.RLock()
	defer sec.mu.RUnlock()
	t, ok := sec.tokens[sum]
	return t, ok
}

// errNoCredentials is a request with neither a certificate nor a token.
var errNoCredentials = errors.New("no client certificate and no API token: present an operator or viewer certificate issued by the controller's CA (-client-cert), or a token as 'Authorization: Bearer jst_…' (JOBSUITE_TOKEN; create one with 'jobsuite token create')")

// bearer returns the API token of r: its Authorization header, or on a
// WebSocket path the access_token query parameter (browsers cannot set
// headers on a WebSocket).
func bearer(r *http.Request) (token string, given bool, err error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(strings.TrimSpace(h), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", true, errors.New("the Authorization header must be 'Bearer jst_…'")
		}
		return strings.TrimSpace(tok), true, nil
	}
	if strings.HasPrefix(r.URL.Path, "/ws/") {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			return tok, true, nil
		}
	}
	return "", false, nil
}

// authenticate finds who r comes from. A revoked certificate is refused
// even with a valid token; a token, when given, decides the identity.
func (s *Server) authenticate(r *http.Request) (*identity, error) {
	var leaf *x509.Certificate
	if r.TLS != nil {
		leaf = leafOf(*r.TLS)
	}
	if rev, ok := s.sec.deniedCert(leaf); ok {
		s.log.Warn("refusing request: certificate revoked", "name", leaf.Subject.CommonName, "serial", serialHex(leaf.SerialNumber),
			"revocation", rev.ID(), "remote", r.RemoteAddr, "path", r.URL.Path)
		return nil, errors.New(revokedMessage(leaf, rev))
	}
	tok, given, err := bearer(r)
	if err != nil {
		return nil, err
	}
	if given {
		t, ok := s.sec.token(tok)
		if !ok || !strings.HasPrefix(tok, TokenPrefix) {
			s.log.Warn("refusing request: unknown API token", "remote", r.RemoteAddr, "path", r.URL.Path)
			return nil, errors.New("the API token is not valid (unknown, mistyped or revoked); create one with 'jobsuite token create'")
		}
		if now := time.Now(); !now.Before(t.ExpiresAt) {
			s.log.Info("refusing request: API token expired", "token", t.ID, "name", t.Name, "expired", t.ExpiresAt, "remote", r.RemoteAddr)
			return nil, fmt.Errorf("the API token %q (id %s) expired at %s; create a new one with 'jobsuite token create'", t.Name, t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))
		}
		return &identity{Role: certs.Role(t.Role), Name: t.Name, Via: "token", Credential: t.ID}, nil
	}
	if leaf == nil {
		return nil, errNoCredentials
	}
	id, err := s.certIDs.of(*r.TLS, leaf)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %v", err)
	}
	return id, nil
}

// auth admits a request whose certificate or token carries a role at
// least as strong as min: operator may do everything, viewer may read.
func (s *Server) auth(min certs.Role, h httprouter.Handle) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
		id, err := s.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="jobsuite"`)
			writeError(w, http.StatusUnauthorized, "%v", err)
			return
		}
		switch {
		case id.Role == certs.RoleOperator:
		case id.Role == certs.RoleViewer && min == certs.RoleViewer:
		case id.Role == certs.RoleViewer:
			writeError(w, http.StatusForbidden, "%s has role viewer, which may only read; %s %s needs an operator certificate or token", id, r.Method, r.URL.Path)
			return
		default:
			writeError(w, http.StatusForbidden, "%s has role %s, which may not use the API; use an operator or viewer certificate or token", id, id.Role)
			return
		}
		h(w, withIdentity(r, id), p)
	}
}

// refuseRevoked turns away an agent session whose certificate is revoked,
// with a CodeForbidden error the agent reports and does not retry.
func (s *Server) refuseRevoked(ctx context.Context, sess transport.Session, log hclog.Logger) bool {
	cs := sess.ConnectionState()
	rev, ok := s.sec.deniedConn(cs)
	if !ok {
		return false
	}
	leaf := leafOf(cs)
	log.Warn("refusing session: certificate revoked", "name", leaf.Subject.CommonName, "serial", serialHex(leaf.SerialNumber),
		"revocation", rev.ID(), "revoked_by", rev.By, "revoked_at", rev.At, "reason", rev.Reason)
	s.refuse(ctx, sess, protocol.CodeForbidden, revokedMessage(leaf, rev))
	return true
}

// cutOff closes every agent session a revocation now covers. Their
// running attempts are lost at once (and retried if the job has retries
// left), as if their leases had expired: the agent will not be let back
// in to report on them. Each is drained first, so nothing more is
// dispatched to it. It returns the sessions closed and the jobs whose
// attempts were lost, once the losses are durable.
func (s *Server) cutOff() (sessions []string, lost []uint64, err error) {
	var batches []*sched.Batch
	for _, sess := range s.sched.Sessions() {
		a := conn(sess)
		rev, ok := s.sec.deniedConn(a.sess.ConnectionState())
		if !ok {
			continue
		}
		s.sched.Drain(a.name)
		ids, b := s.sched.LoseAttempts(a, fmt.Sprintf("agent %s's certificate was revoked by %s", a.name, rev.By))
		if b != nil {
			batches = append(batches, b)
		}
		lost = append(lost, ids...)
		a.log.Warn("closing session: certificate revoked", "revocation", rev.ID(), "by", rev.By, "lost_jobs", len(ids))
		a.Close("certificate revoked")
		sessions = append(sessions, a.name)
	}
	for _, b := range batches {
		if werr := b.Wait(); werr != nil && err == nil {
			err = werr
		}
	}
	sort.Strings(sessions)
	sort.Slice(lost, func(i, j int) bool { return lost[i] < lost[j] })
	return sessions, lost, err
}

func viewRevocation(r store.Revocation) api.RevocationView {
	return api.RevocationView{ID: r.ID(), Serial: r.Serial, Role: r.Role, Name: r.Name, Reason: r.Reason, By: r.By, At: r.At, NotAfter: r.NotAfter}
}

// decodeJSONBody decodes one JSON object from rd into v, refusing
// unknown fields. An empty body is an error unless optional.
func decodeJSONBody(rd io.Reader, v any, optional bool) error {
	body, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return errors.New("request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return badField(typeErr.Field, "must be %s, got %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badField(field, "is not a field of this request")
		}
		return fmt.Errorf("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("request body holds more than one JSON value")
	}
	return nil
}

// readBody decodes a small JSON body into v; an empty body leaves v as it
// is when optional. It writes the error itself.
func readBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	err := decodeJSONBody(http.MaxBytesReader(w, r.Body, maxAuthBody), v, optional)
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	var fe *fieldError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", maxAuthBody)
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fe.Error(), Field: fe.field})
	default:
		writeError(w, http.StatusBadRequest, "%v", err)
	}
	return false
}

// handleRevokeAgent revokes the certificate of a connected agent (or,
// with all_certs, its name), closes its session and loses its attempts.
func (s *Server) handleRevokeAgent(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name := p.ByName("name")
	var req api.RevokeAgentRequest
	if !readBody(w, r, &req, true) {
		return
	}
	if len(req.Reason) > 1024 {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "reason is longer than 1024 bytes", Field: "reason"})
		return
	}
	id, _ := requestIdentity(r)
	rev := store.Revocation{Role: string(certs.RoleAgent), Name: name, Reason: req.Reason, By: id.who(), At: time.Now().UTC()}
	if !req.AllCerts {
		var leaf *x509.Certificate
		if a := s.sched.Session(name); a != nil {
			leaf = leafOf(conn(a).sess.ConnectionState())
		}
		if leaf == nil {
			writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no connected agent named %q, so its certificate is unknown; revoke the name instead (every certificate named %q: all_certs, 'jobsuite agents revoke -all-certs %s') or the certificate by serial ('jobsuite certs revoke -cert FILE')", name, name, name), Field: "name"})
			return
		}
		rev.Serial, rev.NotAfter = serialHex(leaf.SerialNumber), leaf.NotAfter.UTC()
	} else if !certNameRE.MatchString(name) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("%q is not a certificate name", name), Field: "name"})
		return
	}
	s.revoke(w, r, rev, "agent "+name)
}

// handleRevokeCert revokes a certificate of any role by serial, or every
// certificate of a role and name.
func (s *Server) handleRevokeCert(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	var req api.RevokeCertRequest
	if !readBody(w, r, &req, false) {
		return
	}
	id, _ := requestIdentity(r)
	rev := store.Revocation{Name: req.Name, Reason: req.Reason, By: id.who(), At: time.Now().UTC(), NotAfter: req.NotAfter.UTC()}
	if req.Role != "" {
		role, err := certs.ParseRole(req.Role)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Field: "role"})
			return
		}
		rev.Role = string(role)
	}
	switch {
	case len(req.Reason) > 1024:
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "reason is longer than 1024 bytes", Field: "reason"})
		return
	case req.Name != "" && !certNameRE.MatchString(req.Name):
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("%q is not a certificate name", req.Name), Field: "name"})
		return
	case req.Serial != "":
		serial, err := parseSerial(req.Serial)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Field: "serial"})
			return
		}
		rev.Serial = serial
	case rev.Role == "" || rev.Name == "":
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "give a serial, or a role and a name (every certificate of that role with that name)", Field: "serial"})
		return
	case rev.Role == string(certs.RoleController):
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "controller certificates are not checked against revocations; to retire one, rotate the CA", Field: "role"})
		return
	}
	target := "certificate " + rev.ID()
	s.revoke(w, r, rev, target)
}

// revoke stores rev, closes the sessions it covers and answers.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request, rev store.Revocation, target string) {
	if err := s.sec.add(rev); err != nil {
		s.log.Error("storing revocation failed", "revocation", rev.ID(), "error", err)
		writeError(w, http.StatusServiceUnavailable, "the revocation could not be stored: %v", err)
		return
	}
	s.log.Warn("certificate revoked", "revocation", rev.ID(), "by", rev.By, "reason", rev.Reason)
	sessions, lost, err := s.cutOff()
	detail := rev.ID()
	if rev.Reason != "" {
		detail += ": " + rev.Reason
	}
	s.auditDetail(r, auditRevoke, target, detail)
	if err != nil {
		s.log.Error("losing the attempts of a revoked agent failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, "the certificate is revoked and its sessions are closed, but its attempts could not be marked lost: %v", err)
		return
	}
	if sessions == nil {
		sessions = []string{}
	}
	if lost == nil {
		lost = []uint64{}
	}
	writeJSON(w, http.StatusOK, api.RevokeResult{Revocation: viewRevocation(rev), SessionsClosed: sessions, JobsLost: lost})
}

// handleRevocations lists the revocations, oldest first.
func (s *Server) handleRevocations(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	out := []api.RevocationView{}
	if s.sec != nil {
		s.sec.mu.RLock()
		for _, rev := range s.sec.revoked {
			out = append(out, viewRevocation(rev))
		}
		s.sec.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.Before(out[j].At)
		}
		return out[i].ID < out[j].ID
	})
	writeJSON(w, http.StatusOK, out)
}

// handleUnrevoke removes a revocation: its certificates are accepted again.
func (s *Server) handleUnrevoke(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id := p.ByName("id")
	rev, err := s.sec.remove(id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no revocation %q; 'jobsuite certs revoked' lists them", id), Field: "id"})
		return
	case err != nil:
		s.log.Error("removing revocation failed", "revocation", id, "error", err)
		writeError(w, http.StatusServiceUnavailable, "the revocation could not be removed: %v", err)
		return
	}
	s.log.Warn("revocation removed", "revocation", id)
	s.audit(r, auditUnrevoke, "certificate "+id)
	writeJSON(w, http.StatusOK, viewRevocation(rev))
}

func viewToken(t store.Token, now time.Time) api.TokenView {
	return api.TokenView{ID: t.ID, Name: t.Name, Role: t.Role, CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Expired: !now.Before(t.ExpiresAt)}
}

// newToken returns a new token secret and its ID.
func newToken() (secret, id string) {
	b := make([]byte, tokenSecretBytes+8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:tokenSecretBytes]), hex.EncodeToString(b[tokenSecretBytes:])
}

// handleCreateToken issues an API token and shows its secret once.
func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	who, _ := requestIdentity(r)
	if who.Via != "certificate" {
		// A token that mints tokens would outlive its own revocation.
		writeError(w, http.StatusForbidden, "%s may not create tokens: create them with an operator certificate", who)
		return
	}
	var req api.TokenRequest
	if !readBody(w, r, &req, false) {
		return
	}
	role, err := certs.ParseRole(req.Role)
	if err != nil || (role != certs.RoleViewer && role != certs.RoleOperator) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("role must be viewer or operator, got %q", req.Role), Field: "role"})
		return
	}
	name := req.Name
	if name == "" {
		name = "token"
	}
	if !tokenNameRE.MatchString(name) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("name %q must be 1–64 letters, digits, '.', '_', '@' or '-'", name), Field: "name"})
		return
	}
	ttl := DefaultTokenTTL
	if req.TTL != nil {
		secs := *req.TTL
		if !(secs >= 1) || secs > MaxTokenTTL.Seconds() {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: fmt.Sprintf("ttl must be between 1 and %.0f seconds (a year), got %v", MaxTokenTTL.Seconds(), secs), Field: "ttl"})
			return
		}
		ttl = time.Duration(secs * float64(time.Second))
	}
	secret, id := newToken()
	sum := sha256.Sum256([]byte(secret))
	now := time.Now().UTC()
	t := store.Token{ID: id, Hash: sum[:], Role: string(role), Name: name, CreatedBy: who.who(), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if _, err := s.c.Do(&store.PutToken{Token: t}); err != nil {
		s.log.Error("storing token failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, "the token could not be stored: %v", err)
		return
	}
	s.sec.mu.Lock()
	s.sec.tokens[sum] = t
	s.sec.mu.Unlock()
	s.log.Info("API token created", "token", id, "name", name, "role", role, "expires", t.ExpiresAt, "by", t.CreatedBy)
	s.auditDetail(r, auditTokenCreate, "token "+id, fmt.Sprintf("%s token %q, expires %s", role, name, t.ExpiresAt.Format(time.RFC3339)))
	v := viewToken(t, now)
	v.Token = secret
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, v)
}

// handleTokens lists the API tokens, oldest first, without secrets.
func (s *Server) handleTokens(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	out := []api.TokenView{}
	now := time.Now()
	if s.sec != nil {
		s.sec.mu.RLock()
		for _, t := range s.sec.tokens {
			out = append(out, viewToken(t, now))
		}
		s.sec.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	writeJSON(w, http.StatusOK, out)
}

// handleRevokeToken deletes an API token: it stops working at once.
func (s *Server) handleRevokeToken(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id := p.ByName("id")
	var found *store.Token
	if s.sec != nil {
		s.sec.mu.RLock()
		for _, t := range s.sec.tokens {
			if t.ID == id {
				found = &t
				break
			}
		}
		s.sec.mu.RUnlock()
	}
	if found == nil {
		writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no API token with id %q; 'jobsuite token list' shows them", id), Field: "id"})
		return
	}
	// Forget it in memory first: from here on it is refused, even if the
	// store write fails (it would come back after a restart).
	s.sec.mu.Lock()
	delete(s.sec.tokens, [sha256.Size]byte(found.Hash))
	s.sec.mu.Unlock()
	res, err := s.c.Do(&store.DeleteToken{ID: id})
	if err == nil && !errors.Is(res.Err, store.ErrNotFound) {
		err = res.Err
	}
	if err != nil {
		s.log.Error("deleting token failed", "token", id, "error", err)
		writeError(w, http.StatusServiceUnavailable, "the token is refused until the controller restarts, but could not be deleted from the store: %v", err)
		return
	}
	s.log.Info("API token revoked", "token", id, "name", found.Name)
	s.auditDetail(r, auditTokenRevoke, "token "+id, fmt.Sprintf("%s token %q", found.Role, found.Name))
	writeJSON(w, http.StatusOK, viewToken(*found, time.Now()))
}
