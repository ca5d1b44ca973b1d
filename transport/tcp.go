package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// acceptBacklog is yamux's AcceptBacklog unless MaxStreams is lower.
const acceptBacklog = 256

func yamuxConfig(opts Options, server bool) *yamux.Config {
	c := yamux.DefaultConfig()
	// The backlog of streams waiting for AcceptStream, and on the opening
	// side the number of streams the peer has not yet accepted: OpenStream
	// waits beyond it. A session allocates room for the backlog up front
	// (8 bytes a stream), so it stays at yamux's default of 256 rather
	// than MaxStreams, which tcpSession enforces itself.
	c.AcceptBacklog = min(opts.MaxStreams, acceptBacklog)
	// Only the dialer pings: its pings and our answers keep the session
	// alive both ways (see Options.KeepAlive), and a listener's session
	// needs no keep-alive goroutine.
	c.EnableKeepAlive = !server
	c.KeepAliveInterval = opts.KeepAlive
	// Bounds both a stuck write and a keep-alive ping left unanswered.
	c.ConnectionWriteTimeout = opts.IdleTimeout
	// Unaccepted streams wait for a MaxStreams slot, like on quic, instead
	// of killing the session after yamux's 75s; a dead peer is caught by
	// the idle timeout.
	c.StreamOpenTimeout = 0
	// A half-closed stream may stay open as long as the peer writes (job
	// output can run for hours); yamux would reset it after 5 minutes.
	c.StreamCloseTimeout = 0
	// yamux logs at [ERR] what is a normal end of a session for us (a peer
	// going away); the session's owner logs that, so yamux goes to debug.
	c.LogOutput = nil
	c.Logger = opts.Logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})
	return c
}

// dialTCP dials addr over TLS+yamux and waits for the listener to answer,
// all within opts.HandshakeTimeout.
func dialTCP(ctx context.Context, addr string, conf *tls.Config, opts Options) (*tcpSession, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, handshakeError(err)
	}
	cs := tc.ConnectionState()
	if err := checkALPN(cs); err != nil {
		_ = raw.Close()
		return nil, err
	}
	ic := &idleConn{Conn: tc, idle: opts.IdleTimeout}
	mux, err := yamux.Client(ic, yamuxConfig(opts, false))
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	// In TLS 1.3 the client completes its handshake before the server has
	// verified the client certificate; a server that refuses it answers
	// the first thing it reads with an alert. One ping is that first thing.
	pinged := make(chan error, 1)
	go func() {
		_, err := mux.Ping()
		pinged <- err
	}()
	select {
	case err = <-pinged:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		_ = mux.Close()
		if cause := ic.readErr(); cause != nil {
			return nil, handshakeError(cause)
		}
		return nil, err
	}
	return newTCPSession(mux, ic, cs, raw.RemoteAddr(), opts), nil
}

// acceptTCP runs the server side of the handshake on raw within ctx.
func acceptTCP(ctx context.Context, raw net.Conn, conf *tls.Config, opts Options) (*tcpSession, error) {
	tc := tls.Server(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, handshakeError(err)
	}
	cs := tc.ConnectionState()
	if err := checkALPN(cs); err != nil {
		_ = raw.Close()
		return nil, err
	}
	ic := &idleConn{Conn: tc, idle: opts.IdleTimeout}
	mux, err := yamux.Server(ic, yamuxConfig(opts, true))
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	return newTCPSession(mux, ic, cs, raw.RemoteAddr(), opts), nil
}

// handshakeError marks a TLS failure with ErrHandshake, leaving plain
// timeouts and cancellations alone.
func handshakeError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrHandshake, err)
}

// idleConn is the TLS connection under yamux. Every Read and Write gets a
// deadline IdleTimeout ahead: with keep-alives flowing both ways, a read
// that waits longer means the peer is gone, and the session ends the way a
// quic session ends after MaxIdleTimeout. It also keeps the first read
// error, which is how a refused client certificate shows up. yamux
// closes it when its session ends, for whatever reason, after closing
// the session's CloseChan; afterClose hooks that moment.
type idleConn struct {
	net.Conn
	idle time.Duration

	mu      sync.Mutex
	err     error
	closed  bool
	onClose []func()
}

// afterClose calls f once the connection is closed: from Close, or at
// once if it is closed already.
func (c *idleConn) afterClose(f func()) {
	c.mu.Lock()
	if !c.closed {
		c.onClose = append(c.onClose, f)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	f()
}

func (c *idleConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	fs := c.onClose
	c.onClose, c.closed = nil, true
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
	return err
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *idleConn) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

type tcpSession struct {
	mux    *yamux.Session
	conn   *idleConn
	state  tls.ConnectionState
	remote net.Addr
	log    hclog.Logger
	// slots holds one token per accepted stream that is not done yet;
	// its capacity is MaxStreams.
	slots chan struct{}
}

func newTCPSession(mux *yamux.Session, conn *idleConn, cs tls.ConnectionState, remote net.Addr, opts Options) *tcpSession {
	return &tcpSession{
		mux:    mux,
		conn:   conn,
		state:  cs,
		remote: remote,
		log:    opts.Logger,
		slots:  make(chan struct{}, opts.MaxStreams),
	}
}

func (s *tcpSession) OpenStream(ctx context.Context) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: open stream: %w", err)
	}
	// yamux's OpenStream blocks, without a context, while AcceptBacklog
	// streams are waiting for the peer to accept them.
	type result struct {
		st  *yamux.Stream
		err error
	}
	opened := make(chan result, 1)
	go func() {
		st, err := s.mux.OpenStream()
		opened <- result{st, err}
	}()
	select {
	case r := <-opened:
		if r.err != nil {
			return nil, fmt.Errorf("transport: open stream: %w", s.err(r.err))
		}
		return &tcpStream{s: r.st, sess: s}, nil
	case <-ctx.Done():
		go func() {
			if r := <-opened; r.st != nil {
				_ = r.st.Close()
			}
		}()
		return nil, fmt.Errorf("transport: open stream: %w", ctx.Err())
	}
}

func (s *tcpSession) AcceptStream(ctx context.Context) (Stream, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("transport: accept stream: %w", ctx.Err())
	case <-s.Done():
		return nil, fmt.Errorf("transport: accept stream: %w", closedError(yamux.ErrSessionShutdown))
	}
	st, err := s.mux.AcceptStreamWithContext(ctx)
	if err != nil {
		<-s.slots
		return nil, fmt.Errorf("transport: accept stream: %w", s.err(err))
	}
	return &tcpStream{s: st, sess: s, slot: true}, nil
}

func (s *tcpSession) ConnectionState() tls.ConnectionState { return s.state }
func (s *tcpSession) RemoteAddr() net.Addr                 { return s.remote }
func (s *tcpSession) Transport() string                    { return string(ModeTCP) }
func (s *tcpSession) Done() <-chan struct{}                { return s.mux.CloseChan() }

func (s *tcpSession) Close(reason string) error {
	if s.mux.IsClosed() {
		return nil
	}
	s.log.Debug("closing session", "transport", "tcp", "remote", s.remote, "reason", reason)
	_ = s.mux.Close() // always nil

	return nil
}

// err maps yamux errors onto the package's sentinels. io.EOF, deadline
// and context errors pass unchanged, except that yamux reports the end of
// the session to a stream reader as EOF.
func (s *tcpSession) err(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, yamux.ErrTimeout):
		return os.ErrDeadlineExceeded
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, yamux.ErrSessionShutdown), errors.Is(err, yamux.ErrRemoteGoAway), s.mux.IsClosed():
		if errors.Is(err, io.EOF) {
			// Keep errors.Is(err, io.EOF) for a clean end of stream only.
			err = yamux.ErrSessionShutdown
		}
		return closedError(err)
	case errors.Is(err, yamux.ErrConnectionReset):
		return fmt.Errorf("transport: %w by the peer: %w", ErrAborted, err)
	}
	return err
}

// tcpStream adapts a yamux stream. yamux has no stream reset: Abort
// half-closes (the peer reads EOF) and discards whatever the peer still
// sends until it closes its side too.
type tcpStream struct {
	s    *yamux.Stream
	sess *tcpSession
	slot bool // accepted: holds one of sess.slots until done

	readMu  sync.Mutex // held by Read and by discardUntilEOF after Abort
	aborted atomic.Bool

	readDone, writeDone atomic.Bool
	release             sync.Once
}

var errAborted = fmt.Errorf("transport: %w on this side", ErrAborted)

func (st *tcpStream) Read(p []byte) (int, error) {
	if st.aborted.Load() {
		return 0, errAborted
	}
	st.readMu.Lock()
	defer st.readMu.Unlock()
	if st.aborted.Load() {
		return 0, errAborted
	}
	n, err := st.s.Read(p)
	if err == nil {
		return n, nil
	}
	if st.aborted.Load() {
		return n, errAborted
	}
	err = st.sess.err(err)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		st.done(&st.readDone)
	}
	return n, err
}

func (st *tcpStream) Write(p []byte) (int, error) {
	if st.aborted.Load() {
		return 0, errAborted
	}
	n, err := st.s.Write(p)
	if err == nil {
		return n, nil
	}
	if st.aborted.Load() {
		return n, errAborted
	}
	err = st.sess.err(err)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		st.done(&st.writeDone)
	}
	return n, err
}

func (st *tcpStream) Close() error {
	if st.aborted.Load() {
		return nil
	}
	err := st.s.Close()
	st.done(&st.writeDone)
	return st.sess.err(err)
}

func (st *tcpStream) Abort() {
	if !st.aborted.CompareAndSwap(false, true) {
		return
	}
	// Wake a blocked Read or Write; they see aborted and return.
	_ = st.s.SetReadDeadline(pastDeadline)
	_ = st.s.SetWriteDeadline(pastDeadline)
	_ = st.s.Close()
	st.done(&st.writeDone)
	go st.discardUntilEOF()
}

// discardUntilEOF reads and discards until the peer closes its side or
// the session ends, so that the peer's writes do not stall on flow
// control and yamux can forget the stream.
func (st *tcpStream) discardUntilEOF() {
	st.readMu.Lock() // waits for a Read woken by Abort's deadline
	defer st.readMu.Unlock()
	_ = st.s.SetReadDeadline(time.Time{})
	_, _ = io.Copy(io.Discard, st.s)
	st.done(&st.readDone)
}

// done records that one direction is finished and frees the stream's
// MaxStreams slot once both are.
func (st *tcpStream) done(dir *atomic.Bool) {
	dir.Store(true)
	if st.slot && st.readDone.Load() && st.writeDone.Load() {
		st.release.Do(func() { <-st.sess.slots })
	}
}

func (st *tcpStream) SetReadDeadline(t time.Time) error {
	if st.aborted.Load() {
		return nil
	}
	return st.s.SetReadDeadline(t)
}

func (st *tcpStream) SetWriteDeadline(t time.Time) error {
	if st.aborted.Load() {
		return nil
	}
	return st.s.SetWriteDeadline(t)
}
