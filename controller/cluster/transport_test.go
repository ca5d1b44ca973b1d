package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"jobsuite/certs"
)

// pki is a CA with controller certificates c1..c3 (for 127.0.0.1), an
// agent certificate and, from another CA, a controller certificate.
type pki struct {
	dir, other string
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), other: t.TempDir()}
	for _, dir := range []string{p.dir, p.other} {
		if err := certs.CreateCA(dir); err != nil {
			t.Fatal(err)
		}
	}
	ip := []net.IP{net.ParseIP("127.0.0.1")}
	for _, req := range []certs.Request{
		{Role: certs.RoleController, Name: "c1", IPs: ip},
		{Role: certs.RoleController, Name: "c2", IPs: ip},
		{Role: certs.RoleController, Name: "c3", IPs: ip},
		{Role: certs.RoleController, Name: "c4", IPs: ip},
		{Role: certs.RoleAgent, Name: "a1"},
		{Role: certs.RoleOperator, Name: "op"},
	} {
		if _, _, err := certs.IssueFiles(p.dir, req); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := certs.IssueFiles(p.other, certs.Request{Role: certs.RoleController, Name: "c1", IPs: ip}); err != nil {
		t.Fatal(err)
	}
	return p
}

// identity is name's identity in dir's PKI, trusting dir's CA.
func identity(t testing.TB, dir, name string, check func(*x509.Certificate) error) *Identity {
	t.Helper()
	pool, err := certs.LoadPool(certs.CAFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(certs.CertFile(dir, name), certs.KeyFile(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return &Identity{CA: pool, Certificate: func() (*tls.Certificate, error) { return &cert, nil }, Check: check}
}

// serve starts a Mux for id on a loopback port.
func serve(t testing.TB, id *Identity) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, id, hclog.NewNullLogger(), ALPNRaft, ALPNCluster)
	done := make(chan error, 1)
	go func() { done <- m.Serve() }()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return m
}

// accept returns the next connection of l, or fails after a deadline.
func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			ch <- c
		}
	}()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second): // a hang guard, not a timing
		t.Fatal("no connection accepted")
		return nil
	}
}

// TestMuxRoutesByALPN: a controller's connections reach the listener of
// the protocol it asked for, and bytes flow both ways.
func TestMuxRoutesByALPN(t *testing.T) {
	p := newPKI(t)
	m := serve(t, identity(t, p.dir, "c1", nil))
	peer := identity(t, p.dir, "c2", nil)
	for _, proto := range []string{ALPNRaft, ALPNCluster} {
		t.Run(proto, func(t *testing.T) {
			c, err := peer.Dial(context.Background(), m.Addr().String(), proto)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := accept(t, m.Listener(proto))
			defer s.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("server read %q, %v", buf, err)
			}
			role, name, err := certs.PeerIdentity(s.(*tls.Conn).ConnectionState())
			if err != nil || role != certs.RoleController || name != "c2" {
				t.Errorf("peer identity %s %s, %v; want controller c2", role, name, err)
			}
		})
	}
	if m.Listener("h2") != nil {
		t.Error("a listener for a protocol the Mux does not serve")
	}
}

// TestMuxRefuses: only controllers of the cluster's CA that Check
// accepts get in, either way; a client speaking none of the protocols is
// refused; a silent client does not hold up the others.
func TestMuxRefuses(t *testing.T) {
	p := newPKI(t)
	revoked := errors.New("certificate revoked")
	check := func(c *x509.Certificate) error {
		if c.Subject.CommonName == "c3" {
			return revoked
		}
		return nil
	}
	m := serve(t, identity(t, p.dir, "c1", check))
	addr := m.Addr().String()

	// A silent client: connects and never speaks.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	tests := map[string]*Identity{
		"agent certificate":    identity(t, p.dir, "a1", nil),
		"operator certificate": identity(t, p.dir, "op", nil),
		"other CA":             identity(t, p.other, "c1", nil),
		"revoked controller":   identity(t, p.dir, "c3", nil),
	}
	for name, id := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := id.Dial(context.Background(), addr, ALPNRaft)
			if err == nil {
				// TLS 1.3: the client may finish before the server's
				// verdict; the refusal then shows on the first read.
				// A read that times out means the server kept the
				// connection: it let the peer in.
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("dial with %s = %v, want a refusal", name, err)
			}
		})
	}
	t.Run("no ALPN", func(t *testing.T) {
		cfg := identity(t, p.dir, "c2", nil).clientTLS("127.0.0.1", "")
		cfg.NextProtos = nil
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err) // the handshake itself succeeds
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("read on a connection without a protocol = %v, want EOF (closed)", err)
		}
	})
	t.Run("unknown ALPN", func(t *testing.T) {
		if c, err := identity(t, p.dir, "c2", nil).Dial(context.Background(), addr, "h2"); err == nil {
			c.Close()
			t.Fatal("dial for h2 succeeded")
		}
	})
	// A server that is not a controller is refused by the dialling node.
	t.Run("peer is an agent", func(t *testing.T) {
		fake := serve(t, identity(t, p.dir, "a1", nil))
		if c, err := identity(t, p.dir, "c2", nil).Dial(context.Background(), fake.Addr().String(), ALPNRaft); err == nil {
			c.Close()
			t.Fatal("dialled a peer with an agent certificate")
		}
	})
	// After all this, and with the silent client still connected, a
	// controller gets in.
	c, err := identity(t, p.dir, "c2", nil).Dial(context.Background(), addr, ALPNCluster)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accept(t, m.Listener(ALPNCluster)).Close()
}

// TestMuxClose: Accept returns ErrMuxClosed once the Mux is closed.
func TestMuxClose(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, identity(t, p.dir, "c1", nil), hclog.NewNullLogger(), ALPNRaft)
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	accepted := make(chan error, 1)
	go func() {
		_, err := m.Listener(ALPNRaft).Accept()
		accepted <- err
	}()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, ErrMuxClosed) {
		t.Errorf("Accept after Close = %v, want ErrMuxClosed", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Close = %v, want nil", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// countFSM records the entries applied to it.
type countFSM struct {
	mu      sync.Mutex
	entries []string
	got     chan struct{} // signalled on each apply
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	f.entries = append(f.entries, string(l.Data))
	f.mu.Unlock()
	select {
	case f.got <- struct{}{}:
	default:
	}
	return nil
}
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (f *countFSM) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

func (f *countFSM) has(entry string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.entries {
		if e == entry {
			return true
		}
	}
	return false
}

// TestRaftOverClusterPort: three raft nodes on real loopback ports with
// mutual TLS elect a leader and replicate an entry to all of them.
func TestRaftOverClusterPort(t *testing.T) {
	p := newPKI(t)
	type node struct {
		r   *raft.Raft
		fsm *countFSM
		tr  *raft.NetworkTransport
	}
	var (
		nodes  []*node
		config raft.Configuration
	)
	for i := 1; i <= 3; i++ {
		id := identity(t, p.dir, fmt.Sprintf("c%d", i), nil)
		m := serve(t, id)
		tr := raft.NewNetworkTransportWithLogger(NewStreamLayer(m, id), 3, 10*time.Second, hclog.NewNullLogger())
		config.Servers = append(config.Servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("c%d", i)), Address: tr.LocalAddr()})
		nodes = append(nodes, &node{fsm: &countFSM{got: make(chan struct{}, 1)}, tr: tr})
	}
	for i, n := range nodes {
		conf := raft.DefaultConfig()
		conf.LocalID = config.Servers[i].ID
		conf.Logger = hclog.NewNullLogger()
		store := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, store, store, snaps, n.tr, config); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(conf, n.fsm, store, store, snaps, n.tr)
		if err != nil {
			t.Fatal(err)
		}
		n.r = r
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Error(err)
			}
		})
	}
	// Apply through whichever node leads; ErrNotLeader until one does.
	deadline := time.Now().Add(30 * time.Second) // a hang guard: elections take ~1-3 s
	var applied bool
	for !applied && time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.r.State() != raft.Leader {
				continue
			}
			if err := n.r.Apply([]byte("hello"), 10*time.Second).Error(); err == nil {
				applied = true
				break
			}
		}
		if !applied {
			select {
			case <-nodes[0].r.LeaderCh():
			case <-nodes[1].r.LeaderCh():
			case <-nodes[2].r.LeaderCh():
			case <-time.After(100 * time.Millisecond): // re-check states
			}
		}
	}
	if !applied {
		t.Fatal("no leader applied an entry within 30s")
	}
	for i, n := range nodes {
		for !n.fsm.has("hello") {
			select {
			case <-n.fsm.got:
			case <-time.After(30 * time.Second): // a hang guard
				t.Fatalf("node %d never applied the entry", i+1)
			}
		}
	}
}
