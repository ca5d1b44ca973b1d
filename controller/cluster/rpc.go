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
// connections: each connection carries one request and its answer, each
// a 4-byte big-endian length and a JSON body of at most maxRPC bytes.
//
//	request := { "op": name, "body": {...} }
//	answer  := { "body": {...} } | { "error": "what went wrong" }
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
// then.
func (s *RPCServer) Serve(ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, ErrMuxClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(c)
		}()
	}
}

func (s *RPCServer) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(rpcTimeout))
	peer := ""
	if tc, ok := c.(*tls.Conn); ok {
		if _, name, err := certs.PeerIdentity(tc.ConnectionState()); err == nil {
			peer = name
		}
	}
	var req rpcRequest
	if err := readFrame(c, &req); err != nil {
		s.log.Debug("cluster request unreadable", "peer", peer, "error", err)
		return
	}
	s.mu.RLock()
	h := s.ops[req.Op]
	s.mu.RUnlock()
	var ans rpcAnswer
	if h == nil {
		ans.Error = fmt.Sprintf("unknown operation %q (a newer controller's?)", req.Op)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		out, err := h(ctx, peer, req.Body)
		cancel()
		if err != nil {
			ans.Error = err.Error()
		} else if ans.Body, err = json.Marshal(out); err != nil {
			ans.Error = "encoding the answer: " + err.Error()
		}
	}
	if err := writeFrame(c, &ans); err != nil {
		s.log.Debug("cluster answer not sent", "peer", peer, "op", req.Op, "error", err)
	}
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
	if _, name, err := certs.PeerIdentity(c.(*tls.Conn).ConnectionState()); err == nil {
		peer = name
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req := rpcRequest{Op: op}
	if body != nil {
		if req.Body, err = json.Marshal(body); err != nil {
			return peer, fmt.Errorf("cluster: %s to %s: %w", op, addr, err)
		}
	}
	if err := writeFrame(c, &req); err != nil {
		return peer, fmt.Errorf("cluster: %s to %s: %w", op, addr, err)
	}
	var ans rpcAnswer
	if err := readFrame(c, &ans); err != nil {
		return peer, fmt.Errorf("cluster: %s to %s: %w", op, addr, err)
	}
	if ans.Error != "" {
		return peer, fmt.Errorf("cluster: %s to %s: %w: %s", op, addr, ErrRPC, ans.Error)
	}
	if out != nil {
		if err := json.Unmarshal(ans.Body, out); err != nil {
			return peer, fmt.Errorf("cluster: %s to %s: bad answer: %w", op, addr, err)
		}
	}
	return peer, nil
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
