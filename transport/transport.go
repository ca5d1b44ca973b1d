package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/protocol"
)

// Stream is one bidirectional byte stream of a Session. Read and Write may
// be used from two goroutines at once, but each only from one at a time.
type Stream interface {
	io.Reader
	io.Writer
	// Close ends the writing direction: the peer reads EOF once it has
	// read everything written before. Reading still works.
	Close() error
	// Abort tears down both directions at once. Pending and later Reads
	// and Writes on this side fail with ErrAborted. See the package
	// documentation for what the peer sees.
	Abort()
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Session is one authenticated connection between an agent and the
// controller, carrying any number of streams.
type Session interface {
	// OpenStream opens a new stream. The peer's AcceptStream returns it
	// only once the opener has written to it (quic sends nothing before),
	// so the opener writes first.
	OpenStream(ctx context.Context) (Stream, error)
	// AcceptStream waits for the next stream opened by the peer.
	AcceptStream(ctx context.Context) (Stream, error)
	// ConnectionState is the TLS state; the peer's verified certificates
	// are in PeerCertificates and VerifiedChains.
	ConnectionState() tls.ConnectionState
	RemoteAddr() net.Addr
	// Transport is "quic" or "tcp".
	Transport() string
	// Close ends the session and all its streams. reason is logged, and
	// sent to the peer on quic. Close is idempotent.
	Close(reason string) error
	// Done is closed when the session is gone for any reason.
	Done() <-chan struct{}
}

// Mode says which transport Dial uses.
type Mode string

// The dial modes.
const (
	ModeAuto Mode = "auto" // quic, falling back to tcp when quic gets no answer
	ModeQUIC Mode = "quic"
	ModeTCP  Mode = "tcp"
)

// ParseMode parses "auto", "quic" or "tcp" (any case). The empty string
// is ModeAuto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeQUIC, ModeTCP:
		return m, nil
	}
	return "", fmt.Errorf("transport: unknown mode %q: use auto, quic or tcp", s)
}

// Options tune both transports. The zero value is ready to use.
type Options struct {
	// KeepAlive is how often an idle session that Dial opened sends a
	// keep-alive; 0 means 5s. The listener's sessions only answer them
	// (their answers keep the dialer's session alive), so an idle session
	// costs one keep-alive and one answer per KeepAlive, and nothing more
	// on the side that holds many sessions.
	KeepAlive time.Duration
	// IdleTimeout drops a session after this long without hearing from
	// the peer (keep-alives count); 0 means 15s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake; 0 means 10s. In ModeAuto,
	// Dial gives quic a third of it before falling back to tcp.
	HandshakeTimeout time.Duration
	// MaxStreams is how many streams the peer may have open at once on a
	// session; 0 means 1024. A stream counts until it is done in both
	// directions: closed (or failed) for writing and read to EOF (or
	// failed), or aborted. Streams beyond the limit wait: on quic the
	// opener's OpenStream blocks, on tcp the peer's AcceptStream does not
	// return them until a slot is free.
	MaxStreams int
	// StatelessResetKey, on a listener, keys QUIC stateless resets
	// (RFC 9000 §10.3). It must be secret and stay the same across
	// restarts: a restarted listener then answers packets of its previous
	// run's sessions with a reset, and their peers notice at once that
	// the session is gone and dial again, instead of after IdleTimeout.
	// nil sends no resets. TCP needs none: the kernel answers with RST.
	StatelessResetKey *[32]byte
	// Logger receives the package's logs; nil discards them.
	Logger hclog.Logger
}

// Defaults for the zero values of Options.
const (
	DefaultKeepAlive        = 5 * time.Second
	DefaultIdleTimeout      = 15 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxStreams       = 1024
)

func (o Options) withDefaults() Options {
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return o
}

// serverTLS checks that conf authenticates clients and returns a copy
// speaking TLS 1.3 and only protocol.ALPN.
func serverTLS(conf *tls.Config) (*tls.Config, error) {
	if conf == nil {
		return nil, errors.New("no TLS configuration: build one with certs.ServerTLS")
	}
	verifies := conf.VerifyPeerCertificate != nil || conf.VerifyConnection != nil
	switch {
	case conf.ClientAuth == tls.RequireAndVerifyClientCert:
	case conf.ClientAuth == tls.RequireAnyClientCert && verifies:
	default:
		return nil, errors.New("the TLS configuration must require client certificates (ClientAuth: tls.RequireAndVerifyClientCert): build it with certs.ServerTLS")
	}
	if len(conf.Certificates) == 0 && conf.GetCertificate == nil && conf.GetConfigForClient == nil {
		return nil, errors.New("the TLS configuration holds no server certificate: build it with certs.ServerTLS")
	}
	conf = withALPN(conf)
	// Clients keep no session cache (certs.ClientTLS), so they never
	// resume: a ticket would be encrypted and sent on every handshake,
	// and its buffers kept with the session, for nothing.
	conf.SessionTicketsDisabled = true
	return conf, nil
}

// clientTLS returns a copy of conf speaking TLS 1.3 and only protocol.ALPN.
func clientTLS(conf *tls.Config) (*tls.Config, error) {
	if conf == nil {
		return nil, errors.New("no TLS configuration: build one with certs.ClientTLS")
	}
	return withALPN(conf), nil
}

func withALPN(conf *tls.Config) *tls.Config {
	conf = conf.Clone()
	conf.NextProtos = []string{protocol.ALPN}
	if conf.MinVersion < tls.VersionTLS13 {
		conf.MinVersion = tls.VersionTLS13
	}
	return conf
}

// checkALPN refuses a peer that did not agree on protocol.ALPN.
func checkALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != protocol.ALPN {
		return fmt.Errorf("%w: peer negotiated protocol %q, want %q: run the same jobsuite version on both ends",
			ErrHandshake, cs.NegotiatedProtocol, protocol.ALPN)
	}
	return nil
}

// closedError marks cause, an error of a session that is gone, as ErrClosed.
func closedError(cause error) error {
	if cause == nil || errors.Is(cause, ErrClosed) {
		return cause
	}
	return fmt.Errorf("transport: session %w: %w", ErrClosed, cause)
}

// pastDeadline is a deadline that has expired: setting it wakes blocked
// calls.
var pastDeadline = time.Unix(1, 0)
