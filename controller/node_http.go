package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"jobsuite/certs"
)

// The API on any node. A follower forwards every request to the
// leader's API over HTTPS, presenting its own controller certificate,
// with the caller's verified client certificate (if any) in
// Jobsuite-Forwarded-Cert and its own ID in Jobsuite-Forwarded-By; an
// API token travels in its Authorization header as sent. The leader
// believes those headers only from a peer whose verified certificate
// is a controller's of its CA and not revoked, re-verifies the
// forwarded certificate against its CA, and then handles the request
// exactly as if the caller had come directly: the same roles, the same
// revocation checks, the same audit entry (with the caller's address
// from X-Forwarded-For). A request is never forwarded twice: a
// follower that receives a forwarded request answers 503 (two nodes
// that disagree about the leader for a moment cannot loop). While
// there is no leader a request waits up to 5 s for one, then gets 503
// with Retry-After; the CLI retries with its idempotency key.
//
// Reads are forwarded too, so every answer comes from the leader's
// committed state; WebSocket log followers are proxied the same way and
// resume by offset after a failover. The exceptions: a stale read
// (?stale=1 on GET /jobs, /jobs/:id, /jobs/:id/logs), which a follower
// answers from its own store (node_stale.go), and, with the output
// channel, a job's log (GET /jobs/:id/logs, /ws/jobs/:id/logs), which a
// follower serves from its own copy once it has applied what the leader
// had (node_logs.go).
//
// Every answer a node gives itself says so in Jobsuite-Served-By (its
// ID); a forwarded answer carries the leader's.

// Headers between controllers.
const (
	hdrForwardedBy   = "Jobsuite-Forwarded-By"
	hdrForwardedCert = "Jobsuite-Forwarded-Cert"
	hdrServedBy      = "Jobsuite-Served-By"
)

// fencedRead reports whether r reads the cluster's state, which the
// leader answers only while it knows it leads (sendGate: within a lease
// of the last quorum contact, else after a VerifyLeader): a deposed
// leader that has not noticed yet (a SIGSTOP, a partition) would
// otherwise answer from a state older than the new leader's. Writes
// need no fence (they commit through raft or fail), nor do the pages,
// the API description, health, metrics, whoami and the members list,
// which say nothing about jobs.
func fencedRead(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	switch p := r.URL.Path; {
	case p == "/health", p == "/metrics", p == "/openapi.json", p == "/whoami", p == "/operator/members",
		p == "/ui", strings.HasPrefix(p, "/ui/"):
		return false
	}
	return true
}

// ServeHTTP serves the API: the leader's term Server answers, a
// follower forwards.
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	what, id := staleRead(r) // node_stale.go
	if t := n.term.Load(); t != nil && !t.ended() {
		r, err := n.fromPeer(t, r)
		if err != nil {
			writeError(w, http.StatusForbidden, "%v", err)
			return
		}
		if what != "" {
			n.staleness(w, true)
		} else if fencedRead(r) && t.gate != nil && !t.gate.ok() {
			// A leader that cannot confirm it still leads (paused, or
			// cut off, while the others elected another) must not answer
			// from a state that may be behind one a client already read
			// from the new leader.
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "controller %s cannot confirm it still leads the cluster (it lost contact with the others); retry, or read with ?stale=1", n.id)
			return
		}
		w.Header().Set(hdrServedBy, n.id)
		t.srv.handler.ServeHTTP(w, r)
		return
	}
	by := r.Header.Get(hdrForwardedBy)
	direct := by == "" && r.Header.Get(hdrForwardedCert) == ""
	if what != "" && direct {
		w.Header().Set(hdrServedBy, n.id)
		n.serveStale(w, r, what, id)
		return
	}
	if ws, id, ok := logRead(r); ok && direct && !n.cfg.OutputInRaft {
		n.serveLogs(w, r, ws, id) // node_logs.go
		return
	}
	n.forward(w, r)
}

// forward answers r with the leader's answer, or 503 while there is
// none.
func (n *Node) forward(w http.ResponseWriter, r *http.Request) {
	by := r.Header.Get(hdrForwardedBy)
	if by != "" {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "controller %s forwarded this request here, but %s is not the leader either (leadership is changing); retry", by, n.id)
		return
	}
	epoch := n.leaderEpoch() // before the lookup: a change after it ends the request
	a, err := n.leaderAddrs(r.Context(), true)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "%v; retry", err)
		return
	}
	if a == n.addrs { // became leader while waiting
		n.ServeHTTP(w, r)
		return
	}
	if r.URL.Path == "/operator/transfer-leadership" || r.URL.Path == "/operator/transfer-leadership/" {
		// Its success is a leader change: let it finish (the leader
		// bounds it to 10 s).
		epoch = nil
	}
	n.fwd.forward(w, r, a.API, epoch)
}

// fromPeer turns a request another controller forwarded into the
// caller's own: its TLS state carries the forwarded client certificate
// (re-verified here) or none, and RemoteAddr the caller's address. A
// request without the forwarding headers is returned as it is; the
// headers from anyone but a controller of this CA are refused.
func (n *Node) fromPeer(t *term, r *http.Request) (*http.Request, error) {
	by := r.Header.Get(hdrForwardedBy)
	if by == "" && r.Header.Get(hdrForwardedCert) == "" {
		return r, nil
	}
	leaf := (*x509.Certificate)(nil)
	if r.TLS != nil {
		leaf = leafOf(*r.TLS)
	}
	if leaf == nil {
		return nil, errors.New("forwarding headers are only accepted from another controller of this cluster")
	}
	if role, _ := certs.RoleOf(leaf); role != certs.RoleController {
		return nil, fmt.Errorf("forwarding headers are only accepted from another controller of this cluster, not from a certificate with role %s", role)
	}
	if rev, ok := t.srv.sec.deniedCert(leaf); ok {
		return nil, errors.New(revokedMessage(leaf, rev))
	}
	cs := *r.TLS
	cs.PeerCertificates, cs.VerifiedChains = nil, nil
	if h := r.Header.Get(hdrForwardedCert); h != "" {
		v, err := n.fwdCerts.verify(h, n.pool, time.Now())
		if err != nil {
			return nil, err
		}
		cs.PeerCertificates, cs.VerifiedChains = []*x509.Certificate{v.cert}, v.chains
	}
	r2 := r.Clone(r.Context())
	r2.TLS = &cs
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		client := strings.TrimSpace(strings.Split(xff, ",")[0])
		r2.RemoteAddr = net.JoinHostPort(client, "0")
	}
	r2.Header.Del(hdrForwardedCert)
	return r2, nil
}

// forwarder proxies requests to the leader's API.
type forwarder struct {
	n     *Node
	proxy *httputil.ReverseProxy

	mu    sync.Mutex
	addrs map[string]NodeAddrs // by "id@cluster address"
}

// forwardTarget carries the leader's API address to the proxy.
type forwardTarget struct{}

func newForwarder(n *Node) *forwarder {
	f := &forwarder{n: n, addrs: map[string]NodeAddrs{}}
	tr := &http.Transport{
		TLSClientConfig:     f.tlsConfig(),
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     time.Minute,
		TLSHandshakeTimeout: 10 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	f.proxy = &httputil.ReverseProxy{
		Transport:     tr,
		FlushInterval: -1, // log streams and WebSocket frames go through at once
		Rewrite: func(pr *httputil.ProxyRequest) {
			target := pr.In.Context().Value(forwardTarget{}).(string)
			pr.SetURL(&url.URL{Scheme: "https", Host: target})
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			pr.Out.Header.Del(hdrForwardedCert)
			pr.Out.Header.Set(hdrForwardedBy, n.id)
			if pr.In.TLS != nil {
				if leaf := leafOf(*pr.In.TLS); leaf != nil {
					pr.Out.Header.Set(hdrForwardedCert, base64.StdEncoding.EncodeToString(leaf.Raw))
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			n.log.Warn("forwarding to the leader failed", "path", r.URL.Path, "error", err)
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "the leader could not be reached (%v); retry", err)
		},
	}
	return f
}

// tlsConfig is how a follower dials the leader's API: its own
// controller certificate, and the leader's must be a controller's of
// this CA. Not its host name: nodes know each other by the addresses
// the leader announced over the mutually authenticated cluster port,
// and a controller's API certificate names the host clients use.
func (f *forwarder) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return f.n.pki.cur.Load(), nil
		},
		NextProtos:         []string{"http/1.1"},
		InsecureSkipVerify: true, // verified below, against the CA and the controller role
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("leader sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: f.n.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("leader's certificate: %w", err)
			}
			if role, _ := certs.RoleOf(leaf); role != certs.RoleController {
				return fmt.Errorf("leader's certificate %q has role %s, not controller", leaf.Subject.CommonName, role)
			}
			return nil
		},
	}
}

// forward proxies r to the API at addr. The request ends when raft
// reports another leader (or none): a leader that stopped answering
// without closing its connections (paused, cut off) must not hold the
// client until its own timeout; it gets 503 and retries.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, addr string, epoch <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.WithValue(r.Context(), forwardTarget{}, addr))
	defer cancel()
	go func() {
		for {
			select {
			case <-epoch:
			case <-ctx.Done():
				return
			}
			// The leader changed since the request was sent on its way,
			// or this node only now heard who leads: a request that
			// went to the leader of now goes on.
			epoch = f.n.leaderEpoch()
			if a, err := f.n.leaderAddrs(ctx, false); err != nil || a.API != addr {
				cancel()
				return
			}
		}
	}()
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// known returns the addresses of node id at clusterAddr if addrsOf
// learnt them, without asking.
func (f *forwarder) known(id, clusterAddr string) (NodeAddrs, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.addrs[id+"@"+clusterAddr]
	return a, ok
}

// addrsOf returns the API and agent addresses of the node id at its
// cluster address, asking it once and remembering the answer.
func (f *forwarder) addrsOf(ctx context.Context, id, clusterAddr string) (NodeAddrs, error) {
	key := id + "@" + clusterAddr
	f.mu.Lock()
	a, ok := f.addrs[key]
	f.mu.Unlock()
	if ok {
		return a, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := f.n.ident.Call(ctx, clusterAddr, opAddrs, nil, &a); err != nil {
		return NodeAddrs{}, fmt.Errorf("asking the leader %s for its addresses: %w", id, err)
	}
	f.mu.Lock()
	f.addrs[key] = a
	f.mu.Unlock()
	return a, nil
}

// verifiedCerts remembers the client certificates forwarded requests
// carried, verified: a follower forwards every request of its clients
// with the client's certificate in a header, and parsing and verifying
// it anew (an ECDSA signature check) was 11% of the leader's CPU in
// row 9g. Keyed by the header's text, so only the same bytes hit; an
// entry is used only within the validity of its verified chain, and
// revocation is still checked on every request (auth). Emptied when it
// reaches maxCertIdentities. The pool is the node's, fixed for its life.
type verifiedCerts struct {
	mu sync.RWMutex
	m  map[string]*verifiedCert
}

type verifiedCert struct {
	cert        *x509.Certificate
	chains      [][]*x509.Certificate
	from, until time.Time // when every certificate of chains[0] is valid
}

// verify returns the certificate the header h (base64 DER) carries,
// verified against pool as a client certificate at now.
func (c *verifiedCerts) verify(h string, pool *x509.CertPool, now time.Time) (*verifiedCert, error) {
	c.mu.RLock()
	v, ok := c.m[h]
	c.mu.RUnlock()
	if ok && !now.Before(v.from) && !now.After(v.until) {
		return v, nil
	}
	der, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("forwarded certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("forwarded certificate: %v", err)
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, fmt.Errorf("forwarded certificate %q: %v", cert.Subject.CommonName, err)
	}
	v = &verifiedCert{cert: cert, chains: chains, from: cert.NotBefore, until: cert.NotAfter}
	for _, ca := range chains[0] {
		if ca.NotBefore.After(v.from) {
			v.from = ca.NotBefore
		}
		if ca.NotAfter.Before(v.until) {
			v.until = ca.NotAfter
		}
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCertIdentities {
		c.m = make(map[string]*verifiedCert)
	}
	c.m[h] = v
	c.mu.Unlock()
	return v, nil
}
