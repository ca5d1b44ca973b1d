package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"jobsuite/internal/backoff"
)

// maxPending bounds, per transport, the connections in their handshake or
// waiting for Accept. For tcp, a new connection beyond it pushes out the
// oldest pending handshake; for quic (whose handshakes quic-go finishes
// before Accept), the listener stops accepting and quic-go queues them.
const maxPending = 64

// portAttempts is how often Listen on port 0 retries when the port the
// kernel gave for UDP is taken on TCP.
const portAttempts = 10

// Listener accepts sessions over both transports on one port.
type Listener struct {
	addr     string
	tlsConf  *tls.Config
	opts     Options
	log      hclog.Logger
	udp      net.PacketConn
	qtr      *quic.Transport // on udp; nil when quic is off (tests)
	quic     *quic.Listener  // nil when quic is off (tests)
	tcp      net.Listener
	sessions chan Session

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu   sync.Mutex
	live map[Session]struct{} // sessions handed out that are not Done yet
}

// Listen binds QUIC (UDP) and TLS+yamux (TCP) on the same address. With
// port 0 it picks a port free for both. tlsConf must require and verify
// client certificates (certs.ServerTLS does); Listen uses a copy with
// NextProtos set to protocol.ALPN and TLS 1.3 as the minimum.
func Listen(addr string, tlsConf *tls.Config, opts Options) (*Listener, error) {
	return listen(addr, tlsConf, opts, true)
}

// listen is Listen; with serveQUIC false it still holds the UDP port but
// never answers on it, the way a firewall that drops UDP looks to a client.
func listen(addr string, tlsConf *tls.Config, opts Options, serveQUIC bool) (*Listener, error) {
	opts = opts.withDefaults()
	conf, err := serverTLS(tlsConf)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	udp, tcp, err := bind(addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		addr:     tcp.Addr().String(),
		tlsConf:  conf,
		opts:     opts,
		log:      opts.Logger.Named("transport"),
		udp:      udp,
		tcp:      tcp,
		sessions: make(chan Session),
		ctx:      ctx,
		cancel:   cancel,
		live:     make(map[Session]struct{}),
	}
	if serveQUIC {
		l.qtr = &quic.Transport{Conn: udp}
		if k := opts.StatelessResetKey; k != nil {
			key := quic.StatelessResetKey(*k)
			l.qtr.StatelessResetKey = &key
		}
		l.quic, err = l.qtr.Listen(conf, quicConfig(opts, true))
		if err != nil {
			_ = l.qtr.Close()
			cancel()
			_ = udp.Close()
			_ = tcp.Close()
			return nil, fmt.Errorf("transport: listen %s: quic: %w", addr, err)
		}
		l.wg.Add(1)
		go l.acceptQUIC()
	}
	l.wg.Add(1)
	go l.acceptTCP()
	l.log.Info("listening", "addr", l.addr, "quic", serveQUIC, "tcp", true)
	return l, nil
}

// bind binds UDP and TCP on addr. On port 0 it binds UDP first, then TCP
// on the port UDP got, and tries again with another port if that is taken.
func bind(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	if p, err := strconv.Atoi(port); err == nil && p != 0 {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("udp (quic): %w", err)
		}
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			_ = udp.Close()
			return nil, nil, fmt.Errorf("tcp: %w", err)
		}
		return udp, tcp, nil
	}
	for attempt := 1; ; attempt++ {
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, nil, fmt.Errorf("udp (quic): %w", err)
		}
		picked := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, picked))
		if err == nil {
			return udp, tcp, nil
		}
		_ = udp.Close()
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == portAttempts {
			return nil, nil, fmt.Errorf("tcp on port %s: %w", picked, err)
		}
	}
}

// Addr is the "host:port" the listener is bound to, the same for both
// transports.
func (l *Listener) Addr() string { return l.addr }

// Accept returns the next session from either transport, once its TLS
// handshake has completed. Failed handshakes are logged at debug and
// skipped. After Close it fails with an error matching both ErrClosed and
// net.ErrClosed. The caller owns the session, but Close of the listener
// closes it too.
func (l *Listener) Accept(ctx context.Context) (Session, error) {
	select {
	case s := <-l.sessions:
		if l.ctx.Err() != nil {
			_ = s.Close("listener closed")
			return nil, l.closedErr()
		}
		return s, nil
	case <-l.ctx.Done():
		return nil, l.closedErr()
	case <-ctx.Done():
		return nil, fmt.Errorf("transport: accept: %w", ctx.Err())
	}
}

func (l *Listener) closedErr() error {
	return fmt.Errorf("transport: accept on %s: listener %w: %w", l.addr, ErrClosed, net.ErrClosed)
}

// Close stops listening on both transports and closes every session the
// listener accepted that is still open: quic sessions share the
// listener's UDP socket and cannot outlive it, and tcp sessions are closed
// too so that both transports behave alike. To end sessions with a reason
// of your own, close them first. Close is idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		if l.quic != nil {
			_ = l.quic.Close()
		}
		_ = l.tcp.Close()
		l.wg.Wait()
		l.mu.Lock()
		live := l.live
		l.live = nil
		l.mu.Unlock()
		for s := range live {
			_ = s.Close("listener closed")
		}
		if l.qtr != nil {
			_ = l.qtr.Close() // the sessions are closed: nothing left to end abruptly
		}
		_ = l.udp.Close()
		l.log.Info("stopped listening", "addr", l.addr)
	})
	return nil
}

// track keeps s in l.live until it is done or the listener closes. It
// costs no goroutine per session: the session calls back once it is done.
func (l *Listener) track(s Session) {
	l.mu.Lock()
	l.live[s] = struct{}{}
	l.mu.Unlock()
	afterDone(s, func() {
		l.mu.Lock()
		delete(l.live, s)
		l.mu.Unlock()
	})
}

// afterDone calls f once s is done (at once if it is already), from the
// goroutine that ended it.
func afterDone(s Session, f func()) {
	switch s := s.(type) {
	case *quicSession:
		context.AfterFunc(s.conn.Context(), f)
	case *tcpSession:
		s.conn.afterClose(f)
	}
}

func (l *Listener) acceptQUIC() {
	defer l.wg.Done()
	pending := make(chan struct{}, maxPending)
	for {
		select {
		case pending <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		conn, err := l.quic.Accept(l.ctx)
		if err != nil {
			if l.ctx.Err() == nil {
				l.log.Error("quic listener failed; only tcp is served now", "error", err)
			}
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { <-pending }()
			l.serveQUIC(conn)
		}()
	}
}

func (l *Listener) serveQUIC(conn *quic.Conn) {
	if err := checkALPN(conn.ConnectionState().TLS); err != nil {
		l.log.Debug("handshake failed", "transport", "quic", "remote", conn.RemoteAddr(), "error", err)
		_ = conn.CloseWithError(codeRefused, "protocol mismatch")
		return
	}
	if err := sendReady(conn); err != nil {
		l.log.Debug("handshake failed", "transport", "quic", "remote", conn.RemoteAddr(), "error", err)
		_ = conn.CloseWithError(codeClosed, "")
		return
	}
	l.deliver(newQUICSession(conn, l.log))
}

func (l *Listener) acceptTCP() {
	defer l.wg.Done()
	// Handshakes run concurrently, at most maxPending at once. When that
	// many are pending, the oldest is dropped to make room: a peer that
	// opens connections and never finishes a handshake (slowloris) cannot
	// lock real agents out; it only loses its own oldest connection.
	var mu sync.Mutex
	var pending []net.Conn
	// Accept errors are a local shortage (file descriptors and the
	// like), with no crowd of peers to spread: no jitter.
	retry := backoff.Policy{Base: 5 * time.Millisecond, Max: time.Second}
	failures := 0
	for {
		c, err := l.tcp.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, then retry.
			failures++
			wait := retry.Delay(failures, 0)
			l.log.Warn("accepting a tcp connection failed", "error", err, "retry_in", wait)
			select {
			case <-time.After(wait):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		failures = 0
		mu.Lock()
		if len(pending) >= maxPending {
			oldest := pending[0]
			pending = pending[1:]
			l.log.Debug("too many pending handshakes; dropping the oldest", "remote", oldest.RemoteAddr())
			_ = oldest.Close()
		}
		pending = append(pending, c)
		mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serveTCP(c, func() {
				mu.Lock()
				for i, p := range pending {
					if p == c {
						pending = append(pending[:i], pending[i+1:]...)
						break
					}
				}
				mu.Unlock()
			})
		}()
	}
}

// serveTCP completes one connection's handshake; handshaken is called
// when it is no longer pending, whatever the outcome.
func (l *Listener) serveTCP(c net.Conn, handshaken func()) {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.HandshakeTimeout)
	defer cancel()
	opts := l.opts
	opts.Logger = l.log
	s, err := acceptTCP(ctx, c, l.tlsConf, opts)
	handshaken()
	if err != nil {
		l.log.Debug("handshake failed", "transport", "tcp", "remote", c.RemoteAddr(), "error", err)
		return
	}
	l.deliver(s)
}

// deliver hands s to Accept, or closes it if the listener closes first.
func (l *Listener) deliver(s Session) {
	l.log.Debug("session established", "transport", s.Transport(), "remote", s.RemoteAddr(), "peer", peerName(s.ConnectionState()))
	select {
	case l.sessions <- s:
		l.track(s)
	case <-l.ctx.Done():
		_ = s.Close("listener closed")
	}
}

func peerName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].Subject.CommonName
}
