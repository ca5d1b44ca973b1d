// Package transport carries agent–controller sessions over QUIC or over
// TCP+TLS+yamux behind one Session/Stream abstraction. It knows nothing
// about jobs: it authenticates the peer, multiplexes streams and reports
// when a session is gone.
//
// # Why two transports, on one port
//
// QUIC gives each stream its own flow control and loss recovery, so a lost
// packet of one job's log stream never stalls another's (TCP's
// head-of-line blocking). Some networks drop UDP, though, so the same
// sessions also run over TLS 1.3 on TCP with yamux multiplexing (the
// stack of Consul and Nomad). The controller listens on both with the same
// port number, QUIC on UDP and TLS on TCP (Listen), so one address and one
// firewall rule serve both. Agents dial with ModeAuto by default: QUIC
// first, TCP when QUIC gets no answer within a third of HandshakeTimeout.
//
// Both transports use the same tls.Config: TLS 1.3, client certificates
// required and verified, ALPN protocol.ALPN ("jobsuite/1"), so a peer of
// another protocol version is refused during the handshake (ErrHandshake).
// In TLS 1.3 a client finishes its handshake before the server has checked
// the client certificate, so Dial waits for one answer from the listener
// before returning: a yamux ping on TCP; on QUIC, the listener opens a
// unidirectional stream and writes one byte (0x01), the only
// unidirectional stream either side ever opens.
//
// # Sessions and streams
//
// The agent dials; the controller accepts. Streams are opened by the agent
// (a control stream, then one per job); the controller only accepts them,
// though nothing in this package enforces that. A stream is usable as soon
// as OpenStream returns, but the peer's AcceptStream returns it only once
// data has arrived (QUIC sends nothing for a stream before that), so the
// opener writes first.
//
// Stream.Close is a half-close: the peer reads EOF after the data written
// before it, and both sides can go on using the other direction. Abort
// tears a stream down in both directions; later Reads and Writes on this
// side fail with ErrAborted. On QUIC the peer's Reads and Writes fail with
// ErrAborted too (RESET_STREAM and STOP_SENDING). yamux has no stream
// reset, so on TCP the peer reads EOF and whatever it still writes is
// discarded until it closes its side.
//
// A session is gone after Close on either side (or of the Listener that
// accepted it), after IdleTimeout without hearing from the peer, or when
// the connection breaks. The dialer sends a keep-alive every KeepAlive and
// the listener answers it, which keeps an idle session alive on both
// sides; the listener sends none of its own, so the side that holds many
// sessions spends as little as possible on idle ones. A listener with a
// StatelessResetKey that stays the same across restarts answers packets
// of its previous run's QUIC sessions with a stateless reset, so after a
// crash or restart their dialers learn at once that the session is gone
// (on TCP the kernel's RST does that). Done is closed then, and every
// pending and later operation on the session and its streams fails with
// an error matching ErrClosed. Data the peer wrote but this side had not read yet may be lost
// (on TCP a reader still gets what had arrived before ErrClosed), and a
// half-close that had not been read as EOF reads as ErrClosed: a protocol
// that needs to know its data arrived has the peer acknowledge it before
// closing the session. Close's reason reaches the peer on QUIC (in the
// quic.ApplicationError inside the error); on TCP it is only logged.
//
// MaxStreams bounds the streams a peer may have open on a session at once;
// a stream counts until both directions are done (see Options.MaxStreams).
//
// # Errors
//
// Errors match the sentinels in errors.go with errors.Is: ErrClosed,
// ErrHandshake, ErrAborted. io.EOF is returned unwrapped; an expired
// deadline matches os.ErrDeadlineExceeded and is a net.Error timeout.
package transport
