package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"jobsuite/certs"
)

// The cluster port (issue 14): controllers talk to each other over TCP
// with mutual TLS 1.3, on a port of their own (-cluster-addr), and only
// controller-role certificates of the cluster's CA, not revoked, get in
// — either way: a node dialling a peer refuses a peer that is not a
// controller too. One port carries several protocols, told apart by
// ALPN in the handshake, so no byte after the handshake is spent on
// routing and a client that speaks none of them is refused by TLS:
//
//	jobsuite-raft/1     raft's RPCs (raft.NetworkTransport over StreamLayer)
//	jobsuite-cluster/1  everything else between controllers (one request
//	                    and its answer per connection: formation,
//	                    status, output gap fill)
//	jobsuite-output/2   the output channel's leader → follower stream
//	                    (controller/outchan; every node serves it)
//	jobsuite-output/1   the same without the leader's ends frames: a
//	                    leader falls back to it for a node of an earlier
//	                    release, which speaks only that
//
// The handshake runs on its own goroutine under a deadline, so a peer
// that connects and says nothing holds a socket for handshakeTimeout,
// never the accept loop.

// ALPN protocol names on the cluster port.
const (
	ALPNRaft    = "jobsuite-raft/1"
	ALPNCluster = "jobsuite-cluster/1"
	ALPNOutput  = "jobsuite-output/2"
	// ALPNOutputV1 is ALPNOutput before the ends frames (outchan/wire.go).
	ALPNOutputV1 = "jobsuite-output/1"
)

// handshakeTimeout bounds a TLS handshake on the cluster port.
const handshakeTimeout = 10 * time.Second

// ErrMuxClosed is returned by Accept once the Mux is closed.
var ErrMuxClosed = errors.New("cluster listener closed")

// Identity is what a node presents and trusts on the cluster port.
type Identity struct {
	// CA is the cluster's certificate authority: peers must have a
	// certificate it issued.
	CA *x509.CertPool
	// Certificate returns the node's own controller certificate; it is
	// asked at every handshake, so a renewed certificate takes effect
	// without a restart.
	Certificate func() (*tls.Certificate, error)
	// Check, if set, refuses a peer's verified certificate for reasons
	// the chain does not show (a revocation).
	Check func(*x509.Certificate) error
}

// verifyPeer requires the verified leaf to be a controller's that Check
// accepts.
func (id *Identity) verifyPeer(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return fmt.Errorf("cluster: peer without a verified certificate")
	}
	leaf := cs.VerifiedChains[0][0]
	role, err := certs.RoleOf(leaf)
	if err != nil {
		return fmt.Errorf("cluster: refusing peer: %w", err)
	}
	if role != certs.RoleController {
		return fmt.Errorf("cluster: refusing peer %q: its certificate's role is %s; only controllers may join the cluster", leaf.Subject.CommonName, role)
	}
	if id.Check != nil {
		if err := id.Check(leaf); err != nil {
			return fmt.Errorf("cluster: refusing peer %q: %w", leaf.Subject.CommonName, err)
		}
	}
	return nil
}

// serverTLS is the cluster port's side of the handshake.
func (id *Identity) serverTLS(protos []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return id.Certificate()
		},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        id.CA,
		NextProtos:       protos,
		VerifyConnection: id.verifyPeer,
	}
}

// clientTLS is a dialling node's side, for the peer at host.
func (id *Identity) clientTLS(host, proto string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    id.CA,
		ServerName: host,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.Certificate()
		},
		NextProtos:       []string{proto},
		VerifyConnection: id.verifyPeer,
	}
}

// Mux accepts connections on the cluster port and hands each, once its
// handshake succeeded, to the listener of the protocol it negotiated.
type Mux struct {
	ln   net.Listener
	id   *Identity
	log  hclog.Logger
	subs map[string]*subListener

	closeOnce sync.Once
	closed    chan struct{}
	// mu orders handshakes begun (wg.Add) before Close's wg.Wait: once
	// stopping is set, no handshake starts.
	mu       sync.Mutex
	stopping bool
	wg       sync.WaitGroup
}

// NewMux serves protos on ln; Listener(proto) gives each one's
// connections. Serve must be called to accept.
func NewMux(ln net.Listener, id *Identity, log hclog.Logger, protos ...string) *Mux {
	m := &Mux{ln: ln, id: id, log: log, subs: map[string]*subListener{}, closed: make(chan struct{})}
	for _, p := range protos {
		m.subs[p] = &subListener{m: m, proto: p, conns: make(chan net.Conn)}
	}
	return m
}

// Listener returns the listener of proto's connections; nil for a
// protocol the Mux was not given.
func (m *Mux) Listener(proto string) net.Listener {
	if s, ok := m.subs[proto]; ok {
		return s
	}
	return nil
}

// Addr is the cluster port's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Serve accepts connections until Close; it returns nil after Close.
func (m *Mux) Serve() error {
	protos := make([]string, 0, len(m.subs))
	for p := range m.subs {
		protos = append(protos, p)
	}
	cfg := m.id.serverTLS(protos)
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of file descriptors or a transient error: wait a
				// little rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				m.log.Warn("cluster port: accept failed; retrying", "error", err, "in", delay)
				select {
				case <-time.After(delay):
				case <-m.closed:
					return nil
				}
				continue
			}
			return fmt.Errorf("cluster: accept: %w", err)
		}
		delay = 0
		m.mu.Lock()
		if m.stopping {
			m.mu.Unlock()
			_ = c.Close()
			return nil
		}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.handshake(tls.Server(c, cfg))
	}
}

// handshake completes one connection's handshake and hands it over.
func (m *Mux) handshake(c *tls.Conn) {
	defer m.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	go func() {
		select {
		case <-m.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := c.HandshakeContext(ctx); err != nil {
		m.log.Debug("cluster port: handshake failed", "remote", c.RemoteAddr(), "error", err)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	sub := m.subs[c.ConnectionState().NegotiatedProtocol]
	if sub == nil { // TLS lets a client without ALPN through
		m.log.Debug("cluster port: no protocol negotiated", "remote", c.RemoteAddr())
		_ = c.Close()
		return
	}
	select {
	case sub.conns <- c:
	case <-m.closed:
		_ = c.Close()
	}
}

// Close stops accepting and ends every listener's Accept; connections
// already handed over are their owners' to close.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.stopping = true
		m.mu.Unlock()
		close(m.closed)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

// subListener is one protocol's listener.
type subListener struct {
	m     *Mux
	proto string
	conns chan net.Conn
}

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.m.closed:
		return nil, fmt.Errorf("cluster: %s: %w", s.proto, ErrMuxClosed)
	}
}

// Close closes the whole Mux: the protocols share one port.
func (s *subListener) Close() error   { return s.m.Close() }
func (s *subListener) Addr() net.Addr { return s.m.Addr() }

// Dial connects to the peer at addr ("host:port") for proto, verifying
// that it is a controller of the cluster.
func (id *Identity) Dial(ctx context.Context, addr, proto string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	d := tls.Dialer{Config: id.clientTLS(host, proto)}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	if got := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != proto {
		_ = c.Close()
		return nil, fmt.Errorf("cluster: dial %s: the peer does not speak %s", addr, proto)
	}
	return c, nil
}

// StreamLayer is raft's network layer on the cluster port: it accepts
// the Mux's raft connections and dials peers with ALPNRaft.
type StreamLayer struct {
	net.Listener
	id *Identity
}

// NewStreamLayer returns the raft stream layer of m (which must serve
// ALPNRaft).
func NewStreamLayer(m *Mux, id *Identity) *StreamLayer {
	return &StreamLayer{Listener: m.Listener(ALPNRaft), id: id}
}

// Dial implements raft.StreamLayer.
func (s *StreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.id.Dial(ctx, string(addr), ALPNRaft)
}
