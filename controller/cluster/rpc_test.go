package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// countingListener counts the connections it hands out.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// oneShot is a server from before kept connections: one request per
// connection, then it closes it.
type oneShot struct{ net.Listener }

func (l oneShot) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &closeAfterAnswer{Conn: c}, nil
}

type closeAfterAnswer struct{ net.Conn }

func (c *closeAfterAnswer) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	_ = c.Conn.Close()
	return n, err
}

// rpcPeer serves ops "echo" (answers its body) and "refuse" (an error)
// on a loopback cluster port for c1, through wrap, and returns its
// address and the connections it accepted.
func rpcPeer(t *testing.T, p *pki, wrap func(net.Listener) net.Listener) (string, *countingListener) {
	t.Helper()
	m := serve(t, identity(t, p.dir, "c1", nil))
	rpc := NewRPCServer(hclog.NewNullLogger())
	rpc.Handle("echo", func(_ context.Context, _ string, b json.RawMessage) (any, error) { return b, nil })
	rpc.Handle("refuse", func(context.Context, string, json.RawMessage) (any, error) { return nil, errors.New("no") })
	cl := &countingListener{Listener: m.Listener(ALPNCluster)}
	var ln net.Listener = cl
	if wrap != nil {
		ln = wrap(cl)
	}
	done := make(chan error, 1)
	go func() { done <- rpc.Serve(ln) }()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return m.Addr().String(), cl
}

// TestConnsKeepsConnections: repeated questions through Conns share one
// connection, an answered error keeps it, and a peer that closes
// connections after each answer (a controller from before kept
// connections) is still answered every time, on fresh ones.
func TestConnsKeepsConnections(t *testing.T) {
	p := newPKI(t)
	for name, tc := range map[string]struct {
		wrap  func(net.Listener) net.Listener
		conns int64
	}{
		"kept":     {conns: 1},
		"one-shot": {wrap: func(l net.Listener) net.Listener { return oneShot{l} }, conns: 20},
	} {
		t.Run(name, func(t *testing.T) {
			addr, cl := rpcPeer(t, p, tc.wrap)
			k := identity(t, p.dir, "c2", nil).Kept()
			defer k.Close()
			for i := range 10 {
				var got int
				if err := k.Call(t.Context(), addr, "echo", i, &got); err != nil || got != i {
					t.Fatalf("echo %d: %d, %v", i, got, err)
				}
				if err := k.Call(t.Context(), addr, "refuse", nil, nil); !errors.Is(err, ErrRPC) {
					t.Fatalf("refuse: %v, want ErrRPC", err)
				}
			}
			// One-shot: every request after the first finds the kept
			// connection closed and is sent again on a new one — one
			// connection per answer, as before kept connections.
			if got := cl.n.Load(); got != tc.conns {
				t.Errorf("%d connections for 20 requests, want %d", got, tc.conns)
			}
		})
	}
}

// TestServeClosesKeptConnections: a server that stops closes the kept
// connections it serves instead of waiting out their keptIdle — a
// stopping controller took over 30 s to exit while its leader's status
// poll kept a connection to it.
func TestServeClosesKeptConnections(t *testing.T) {
	p := newPKI(t)
	m := serve(t, identity(t, p.dir, "c1", nil))
	rpc := NewRPCServer(hclog.NewNullLogger())
	rpc.Handle("echo", func(_ context.Context, _ string, b json.RawMessage) (any, error) { return b, nil })
	done := make(chan error, 1)
	go func() { done <- rpc.Serve(m.Listener(ALPNCluster)) }()
	k := identity(t, p.dir, "c2", nil).Kept()
	defer k.Close()
	if err := k.Call(t.Context(), m.Addr().String(), "echo", 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(keptIdle / 2): // a hang guard: it returns at once
		t.Fatalf("Serve still waiting for a kept connection %s after its listener closed", keptIdle/2)
	}
}
