package cluster

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
)

// Requests between controllers other than raft's travel on ALPNCluster
// connections: a request and its answer are each a 4-byte big-endian
// length and a JSON body of at most maxRPC bytes.
//
//	request := { "op": name, "body": {...} }
//	answer  := { "body": {...} } | { "error": "what went wrong" }
//
// A connection may carry further requests, one at a time, each after
// the previous answer: the server waits keptIdle for the next one and
// stops taking more once the connection is keptMaxAge old. Identity.Call
// sends one request per connection; Conns keeps a connection per peer
// for a question asked over and over (the leader's status poll for the
// follower-lag bound: a fresh mutual-TLS handshake per question cost
// both ends together about 2 ms of CPU here, BenchmarkRPCCall). A
// server that answers one request per connection (a controller from
// before kept connections) simply closes it, and Conns retries that
// request once on a fresh connection.
//
// The caller's identity is its verified certificate: a handler sees the
// peer's certificate name, so a node can only ever speak for itself
// (JoinRequest.ID must be the caller's name).

// maxRPC bounds a request or an answer on the cluster port.
const maxRPC = 1 << 20

// rpcTimeout bounds one request end to end.
const rpcTimeout = 10 * time.Second

// ErrRPC wraps an error a peer answered with.
var ErrRPC = errors.New("peer refused")

const (
	// keptIdle is how long a server waits for the next request on a
	// connection that carried one; Conns parks a connection for at most
	// half of it.
	keptIdle = 30 * time.Second
	// keptMaxAge bounds a connection's life for further requests, so a
	// revoked or renewed certificate takes effect within it (both are
	// checked at the handshake).
	keptMaxAge = time.Minute
)

type rpcRequest struct {
	Op   string          `json:"op"`
	Body json.RawMessage `json:"body,omitempty"`
}

type rpcAnswer struct {
	Body  json.RawMessage `json:"body,omitempty"`
	Error string          `json:"error,omitempty"`
}

// Handler answers one request from the controller named peer.
type Handler func(ctx context.Context, peer string, body json.RawMessage) (any, error)

// RPCServer answers requests on a Mux's ALPNCluster listener.
type RPCServer struct {
	log hclog.Logger
	mu  sync.RWMutex
	ops map[string]Handler
}

// NewRPCServer returns a server with no operations; Handle adds them.
func NewRPCServer(log hclog.Logger) *RPCServer {
	return &RPCServer{log: log, ops: map[string]Handler{}}
}

// Handle sets the handler of op.
func (s *RPCServer) Handle(op string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[op] = h
}

// Serve answers connections from ln until it is closed; it returns nil
// then, once it has closed the connections it was still serving (a
// kept one waits up to keptIdle for its next request).
func (s *RPCServer) Serve(ln net.Listener) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open = map[net.Conn]bool{}
	)
	defer func() {
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, ErrMuxClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		mu.Lock()
		open[c] = true
		mu.Unlock()
		wg.Go(func() {
			defer func() { mu.Lock(); delete(open, c); mu.Unlock() }()
			s.serveConn(c)
		})
	}
}

func (s *RPCServer) serveConn(c net.Conn) {
	defer c.Close()
	peer := ""
	if tc, ok := c.(*tls.Conn); ok {
		if _, name, err := certs.PeerIdentity(tc.ConnectionState()); err == nil {
			peer = name
		}
	}
	born := time.Now()
	for first := true; ; first = false {
		wait := rpcTimeout
		if !first {
			wait = keptIdle
		}
		_ = c.SetDeadline(time.Now().Add(wait))
		var req rpcRequest
		if err := readFrame(c, &req); err != nil {
			if first || !errors.Is(err, io.EOF) {
				s.log.Debug("cluster request unreadable", "peer", peer, "error", err)
			}
			return
		}
		_ = c.SetDeadline(time.Now().Add(rpcTimeout))
		if err := writeFrame(c, s.answer(peer, &req)); err != nil {
			s.log.Debug("cluster answer not sent", "peer", peer, "op", req.Op, "error", err)
			return
		}
		if time.Since(born) >= keptMaxAge {
			return
		}
	}
}

// answer runs req's handler for peer.
func (s *RPCServer) answer(peer string, req *rpcRequest) *rpcAnswer {
	s.mu.RLock()
	h := s.ops[req.Op]
	s.mu.RUnlock()
	var ans rpcAnswer
	if h == nil {
		ans.Error = fmt.Sprintf("unknown operation %q (a newer controller's?)", req.Op)
		return &ans
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	out, err := h(ctx, peer, req.Body)
	cancel()
	if err != nil {
		ans.Error = err.Error()
	} else if ans.Body, err = json.Marshal(out); err != nil {
		ans.Error = "encoding the answer: " + err.Error()
	}
	return &ans
}

// Call sends op with body to the controller at addr and decodes its
// answer into out (if not nil). An error the peer answered wraps ErrRPC.
func (id *Identity) Call(ctx context.Context, addr, op string, body, out any) error {
	_, err := id.call(ctx, addr, op, body, out)
	return err
}

// call is Call, also returning the name on the peer's verified
// certificate.
func (id *Identity) call(ctx context.Context, addr, op string, body, out any) (peer string, err error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	c, err := id.Dial(ctx, addr, ALPNCluster)
	if err != nil {
		return "", err
	}
	defer c.Close()
	peer = peerName(c)
	return peer, exchange(ctx, c, addr, op, body, out)
}

// peerName is the name on the verified certificate of c's peer.
func peerName(c net.Conn) string {
	if _, name, err := certs.PeerIdentity(c.(*tls.Conn).ConnectionState()); err == nil {
		return name
	}
	return ""
}

// exchange sends one request on c and reads its answer into out.
func exchange(ctx context.Context, c net.Conn, addr, op string, body, out any) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req := rpcRequest{Op: op}
	if body != nil {
		var err error
		if req.Body, err = json.Marshal(body); err != nil {
			return fmt.Errorf("cluster: %s to %s: %w", op, addr, err)
		}
	}
	if err := writeFrame(c, &req); err != nil {
		return fmt.Errorf("cluster: %s to %s: %w", op, addr, err)
	}
	var ans rpcAnswer
	if err := readFrame(c, &ans); err != nil {
		return fmt.Errorf("cluster: %s to %s: %w", op, addr, err)
	}
	if ans.Error != "" {
		return fmt.Errorf("cluster: %s to %s: %w: %s", op, addr, ErrRPC, ans.Error)
	}
	if out != nil {
		if err := json.Unmarshal(ans.Body, out); err != nil {
			return fmt.Errorf("cluster: %s to %s: bad answer: %w", op, addr, err)
		}
	}
	return nil
}

// Conns keeps one connection per peer address for requests asked over
// and over, so each costs a round trip rather than a mutual-TLS
// handshake. Only requests that are safe to send twice (questions) may
// go through it: one that fails on a connection kept from before is
// sent again once on a fresh one, since the peer may have closed the
// kept connection just before it arrived. Safe for concurrent use; a
// request finding the peer's connection in use by another dials its
// own.
type Conns struct {
	id *Identity

	mu     sync.Mutex
	idle   map[string]*keptConn
	closed bool
}

type keptConn struct {
	c        net.Conn
	born     time.Time
	lastUsed time.Time
}

// Kept returns an empty set of kept connections of id; Close closes it.
func (id *Identity) Kept() *Conns { return &Conns{id: id, idle: map[string]*keptConn{}} }

// Call is Identity.Call on a kept connection to addr.
func (k *Conns) Call(ctx context.Context, addr, op string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	kc := k.take(addr)
	if kc != nil {
		err := exchange(ctx, kc.c, addr, op, body, out)
		if err == nil || errors.Is(err, ErrRPC) {
			k.park(addr, kc)
			return err
		}
		_ = kc.c.Close()
		if ctx.Err() != nil {
			return err
		}
		// The peer closed it (idle, too old, restarted): once more on a
		// fresh connection.
	}
	c, err := k.id.Dial(ctx, addr, ALPNCluster)
	if err != nil {
		return err
	}
	kc = &keptConn{c: c, born: time.Now()}
	err = exchange(ctx, c, addr, op, body, out)
	if err == nil || errors.Is(err, ErrRPC) {
		k.park(addr, kc)
		return err
	}
	_ = c.Close()
	return err
}

// take removes addr's parked connection and returns it, unless it is
// too old or idle too long to be worth a try.
func (k *Conns) take(addr string) *keptConn {
	k.mu.Lock()
	defer k.mu.Unlock()
	kc := k.idle[addr]
	if kc == nil {
		return nil
	}
	delete(k.idle, addr)
	if now := time.Now(); now.Sub(kc.lastUsed) >= keptIdle/2 || now.Sub(kc.born) >= keptMaxAge {
		_ = kc.c.Close()
		return nil
	}
	return kc
}

// park keeps kc for addr's next request, if there is room and kc is
// young enough.
func (k *Conns) park(addr string, kc *keptConn) {
	_ = kc.c.SetDeadline(time.Time{})
	kc.lastUsed = time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed || k.idle[addr] != nil || kc.lastUsed.Sub(kc.born) >= keptMaxAge {
		_ = kc.c.Close()
		return
	}
	k.idle[addr] = kc
}

// Close closes the parked connections; later requests still work, each
// on a connection of its own that is not kept.
func (k *Conns) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	for addr, kc := range k.idle {
		_ = kc.c.Close()
		delete(k.idle, addr)
	}
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxRPC {
		return fmt.Errorf("message of %d bytes, over %d", len(b), maxRPC)
	}
	buf := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	_, err = w.Write(append(buf, b...))
	return err
}

func readFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxRPC {
		return fmt.Errorf("message of %d bytes, over %d", n, maxRPC)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
