package transport

import "errors"

// Sentinel errors. Every error returned by this package that stems from one
// of these conditions matches it with errors.Is; the library's own error
// (a *quic.ApplicationError, a TLS alert, ...) stays in the chain for
// errors.As and for the message.
var (
	// ErrClosed means the session or the listener is gone: closed by this
	// side or the peer, dropped after IdleTimeout of silence, or broken.
	// Every pending and later operation on the session and its streams
	// fails with it. Nothing on that session can succeed any more: dial
	// (or accept) a new one.
	ErrClosed = errors.New("closed")

	// ErrHandshake means the TLS handshake failed or the peer refused it:
	// a certificate from another CA, an expired or wrong-role certificate,
	// or a peer speaking another protocol version (ALPN). Retrying with the
	// same certificates will fail again.
	ErrHandshake = errors.New("handshake failed")

	// ErrAborted means a stream was torn down with Abort: by this side on
	// both transports, or by the peer on quic. (On tcp a peer's Abort reads
	// as EOF; see the package documentation.)
	ErrAborted = errors.New("stream aborted")
)
