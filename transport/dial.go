package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
)

// Dial connects to a Listener at addr. tlsConf is the client side of
// mutual TLS (certs.ClientTLS); Dial uses a copy with NextProtos set to
// protocol.ALPN and TLS 1.3 as the minimum. Dial returns once the listener
// has accepted the client certificate, so a refused certificate fails here
// with ErrHandshake rather than on first use.
//
// ModeAuto tries quic for a third of HandshakeTimeout and falls back to tcp
// when quic gets no answer in time or the network refuses UDP: the common
// case of a firewall that drops UDP. It does not fall back when the
// handshake itself was refused (ErrHandshake): tcp would be refused too.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, mode Mode, opts Options) (Session, error) {
	opts = opts.withDefaults()
	opts.Logger = opts.Logger.Named("transport")
	conf, err := clientTLS(tlsConf)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	var s Session
	switch mode {
	case ModeQUIC:
		s, err = dialQUIC(ctx, addr, conf, opts, opts.HandshakeTimeout)
	case ModeTCP:
		s, err = dialTCP(ctx, addr, conf, opts)
	case ModeAuto:
		return dialAuto(ctx, addr, conf, opts)
	default:
		return nil, fmt.Errorf("transport: dial %s: unknown mode %q: use auto, quic or tcp", addr, mode)
	}
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s %s: %w", mode, addr, withHint(err))
	}
	opts.Logger.Debug("session established", "transport", s.Transport(), "remote", s.RemoteAddr())
	return s, nil
}

func dialAuto(ctx context.Context, addr string, conf *tls.Config, opts Options) (Session, error) {
	qs, qerr := dialQUIC(ctx, addr, conf, opts, opts.HandshakeTimeout/3)
	if qerr == nil {
		opts.Logger.Debug("session established", "transport", "quic", "remote", qs.RemoteAddr())
		return qs, nil
	}
	if ctx.Err() != nil || errors.Is(qerr, ErrHandshake) {
		return nil, fmt.Errorf("transport: dial quic %s: %w", addr, withHint(qerr))
	}
	opts.Logger.Debug("quic got no answer, trying tcp", "addr", addr, "error", qerr)
	ts, terr := dialTCP(ctx, addr, conf, opts)
	if terr != nil {
		return nil, fmt.Errorf("transport: dial %s: quic: %v; tcp: %w", addr, qerr, withHint(terr))
	}
	opts.Logger.Debug("session established", "transport", "tcp", "remote", ts.RemoteAddr())
	return ts, nil
}

// withHint says what to do about a refused handshake.
func withHint(err error) error {
	if errors.Is(err, ErrHandshake) {
		return fmt.Errorf("%w (check that both certificates come from the same jobsuite CA, are valid, carry the right roles, and that both ends run the same jobsuite version)", err)
	}
	return err
}
