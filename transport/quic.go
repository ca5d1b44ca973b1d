package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"
)

// QUIC application error codes sent in CONNECTION_CLOSE and stream resets.
const (
	codeClosed  quic.ApplicationErrorCode = 0 // Session.Close; the reason is the message
	codeRefused quic.ApplicationErrorCode = 1 // the peer failed the ALPN check
	codeAborted quic.StreamErrorCode      = 1 // Stream.Abort
)

// readyMarker is what the listener writes on a unidirectional stream once
// it has accepted a quic connection. In TLS 1.3 the client completes its
// handshake before the server has verified the client certificate, so
// without an answer from the server Dial could not tell a refused
// certificate from an accepted one.
const readyMarker = "\x01"

func quicConfig(opts Options, server bool) *quic.Config {
	c := &quic.Config{
		HandshakeIdleTimeout: opts.HandshakeTimeout,
		MaxIdleTimeout:       opts.IdleTimeout,
		KeepAlivePeriod:      opts.KeepAlive,
		MaxIncomingStreams:   int64(opts.MaxStreams),
		// Only the listener opens a unidirectional stream: the ready marker.
		MaxIncomingUniStreams: 1,
	}
	if server {
		c.MaxIncomingUniStreams = -1
		// The dialer's keep-alives, and our answers, keep the session
		// alive both ways (see Options.KeepAlive).
		c.KeepAlivePeriod = 0
	}
	return c
}

// dialQUIC dials addr over quic and waits for the listener's ready marker,
// all within timeout.
func dialQUIC(ctx context.Context, addr string, conf *tls.Config, opts Options, timeout time.Duration) (*quicSession, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	qc := quicConfig(opts, false)
	qc.HandshakeIdleTimeout = timeout
	conn, err := quic.DialAddr(ctx, addr, conf, qc)
	if err != nil {
		return nil, quicDialError(err)
	}
	if err := checkALPN(conn.ConnectionState().TLS); err != nil {
		_ = conn.CloseWithError(codeRefused, "protocol mismatch")
		return nil, err
	}
	if err := awaitReady(ctx, conn); err != nil {
		_ = conn.CloseWithError(codeClosed, "dial failed")
		return nil, quicDialError(err)
	}
	return newQUICSession(conn, opts.Logger), nil
}

func awaitReady(ctx context.Context, conn *quic.Conn) error {
	rs, err := conn.AcceptUniStream(ctx)
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = rs.SetReadDeadline(d)
	}
	buf := make([]byte, len(readyMarker))
	if _, err := io.ReadFull(rs, buf); err != nil {
		return err
	}
	if string(buf) != readyMarker {
		return fmt.Errorf("%w: unexpected ready marker %q from a quic peer that speaks %s", ErrHandshake, buf, conn.ConnectionState().TLS.NegotiatedProtocol)
	}
	return nil
}

// sendReady tells a freshly accepted client that its certificate passed.
func sendReady(conn *quic.Conn) error {
	s, err := conn.OpenUniStream()
	if err != nil {
		return err
	}
	if err := s.TryWriteAll([]byte(readyMarker)); err != nil {
		return err
	}
	return s.Close()
}

// quicDialError marks errors that mean "the handshake was refused" with
// ErrHandshake; timeouts and network errors stay as they are, so that
// ModeAuto can fall back to tcp on them.
func quicDialError(err error) error {
	var te *quic.TransportError
	if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeRefused {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return err
}

type quicSession struct {
	conn *quic.Conn
	log  hclog.Logger
}

func newQUICSession(conn *quic.Conn, log hclog.Logger) *quicSession {
	return &quicSession{conn: conn, log: log}
}

func (s *quicSession) OpenStream(ctx context.Context) (Stream, error) {
	st, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("transport: open stream: %w", s.err(err))
	}
	return &quicStream{s: st, sess: s}, nil
}

func (s *quicSession) AcceptStream(ctx context.Context) (Stream, error) {
	st, err := s.conn.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("transport: accept stream: %w", s.err(err))
	}
	return &quicStream{s: st, sess: s}, nil
}

func (s *quicSession) ConnectionState() tls.ConnectionState { return s.conn.ConnectionState().TLS }
func (s *quicSession) RemoteAddr() net.Addr                 { return s.conn.RemoteAddr() }
func (s *quicSession) Transport() string                    { return string(ModeQUIC) }
func (s *quicSession) Done() <-chan struct{}                { return s.conn.Context().Done() }

func (s *quicSession) Close(reason string) error {
	select {
	case <-s.Done():
		return nil
	default:
	}
	s.log.Debug("closing session", "transport", "quic", "remote", s.conn.RemoteAddr(), "reason", reason)
	// CloseWithError is idempotent; its error only repeats why the
	// connection was already gone.
	_ = s.conn.CloseWithError(codeClosed, reason)
	return nil
}

// err maps quic-go's connection and stream errors onto the package's
// sentinels. io.EOF, deadline and context errors pass unchanged.
func (s *quicSession) err(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var se *quic.StreamError
	if errors.As(err, &se) {
		return fmt.Errorf("transport: %w: %w", ErrAborted, err)
	}
	var (
		ae *quic.ApplicationError
		te *quic.TransportError
		ie *quic.IdleTimeoutError
		he *quic.HandshakeTimeoutError
		re *quic.StatelessResetError
		ve *quic.VersionNegotiationError
	)
	if errors.As(err, &ae) || errors.As(err, &te) || errors.As(err, &ie) || errors.As(err, &he) ||
		errors.As(err, &re) || errors.As(err, &ve) || errors.Is(err, quic.ErrTransportClosed) || errors.Is(err, net.ErrClosed) {
		return closedError(err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if s.conn.Context().Err() != nil {
		return closedError(err)
	}
	return err
}

type quicStream struct {
	s       *quic.Stream
	sess    *quicSession
	aborted atomic.Bool
}

func (st *quicStream) Read(p []byte) (int, error) {
	n, err := st.s.Read(p)
	return n, st.sess.err(err)
}

func (st *quicStream) Write(p []byte) (int, error) {
	n, err := st.s.Write(p)
	return n, st.sess.err(err)
}

func (st *quicStream) Close() error {
	if st.aborted.Load() {
		return nil // as on tcp; quic-go would complain about the reset
	}
	return st.sess.err(st.s.Close())
}

func (st *quicStream) Abort() {
	st.aborted.Store(true)
	st.s.CancelRead(codeAborted)
	st.s.CancelWrite(codeAborted)
}

func (st *quicStream) SetReadDeadline(t time.Time) error  { return st.s.SetReadDeadline(t) }
func (st *quicStream) SetWriteDeadline(t time.Time) error { return st.s.SetWriteDeadline(t) }
