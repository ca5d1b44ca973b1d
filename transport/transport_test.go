package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
)

// modes are the transports every table test runs over.
var modes = map[string]Mode{"quic": ModeQUIC, "tcp": ModeTCP}

// testPKI is a throwaway CA with a controller and an agent certificate.
type testPKI struct {
	dir    string
	server *tls.Config
	client *tls.Config
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	if err := certs.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	return &testPKI{
		dir:    dir,
		server: serverConf(t, dir, dir, "controller"),
		client: clientConf(t, dir, dir, "agent-1"),
	}
}

// serverConf issues a controller certificate from certDir's CA and builds a
// server configuration trusting caDir's CA.
func serverConf(t testing.TB, caDir, certDir, name string) *tls.Config {
	t.Helper()
	cert, key, err := certs.IssueFiles(certDir, certs.Request{Role: certs.RoleController, Name: name, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	pool, pair, err := certs.Files{CA: certs.CAFile(caDir), Cert: cert, Key: key}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return certs.ServerTLS(pool, pair)
}

// clientConf issues an agent certificate from certDir's CA and builds a
// client configuration trusting caDir's CA.
func clientConf(t testing.TB, caDir, certDir, name string) *tls.Config {
	t.Helper()
	cert, key, err := certs.IssueFiles(certDir, certs.Request{Role: certs.RoleAgent, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	pool, pair, err := certs.Files{CA: certs.CAFile(caDir), Cert: cert, Key: key}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return certs.ClientTLS(pool, pair, "localhost")
}

// testLogger logs through t until the test's cleanups have run.
func testLogger(t testing.TB) hclog.Logger {
	w := &tbWriter{t: t}
	t.Cleanup(w.stop) // registered first, so it runs last
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: w})
}

type tbWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tbWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startListener(t testing.TB, p *testPKI, opts Options, serveQUIC bool) *Listener {
	t.Helper()
	l, err := listen("127.0.0.1:0", p.server, opts, serveQUIC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// connect dials l with mode and returns both ends of the session.
func connect(t testing.TB, ctx context.Context, l *Listener, conf *tls.Config, mode Mode, opts Options) (client, server Session) {
	t.Helper()
	client, err := Dial(ctx, l.Addr(), conf, mode, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", mode, err)
	}
	t.Cleanup(func() { _ = client.Close("test over") })
	server, err = l.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { _ = server.Close("test over") })
	return client, server
}

// pair sets up a PKI, a listener and one session over mode.
func pair(t testing.TB, mode Mode, opts Options) (ctx context.Context, client, server Session) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx = testContext(t)
	p := newPKI(t)
	l := startListener(t, p, opts, true)
	client, server = connect(t, ctx, l, p.client, mode, opts)
	return ctx, client, server
}

func TestEcho(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, client, server := pair(t, mode, Options{})
			if client.Transport() != name || server.Transport() != name {
				t.Fatalf("Transport() = %q/%q, want %q", client.Transport(), server.Transport(), name)
			}
			echoed := make(chan error, 1)
			go func() { echoed <- echoOnce(ctx, server) }()

			st, err := client.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(st)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "hello" {
				t.Fatalf("echo = %q, want %q", got, "hello")
			}
			if err := <-echoed; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// echoOnce accepts one stream and copies it back until EOF.
func echoOnce(ctx context.Context, s Session) error {
	st, err := s.AcceptStream(ctx)
	if err != nil {
		return err
	}
	if _, err := io.Copy(st, st); err != nil {
		return err
	}
	return st.Close()
}

func TestConcurrentStreams(t *testing.T) {
	const streams, size = 50, 1 << 20
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, client, server := pair(t, mode, Options{})

			// The server hashes what each stream carries and answers with the digest.
			serverErr := make(chan error, streams)
			go func() {
				for range streams {
					st, err := server.AcceptStream(ctx)
					if err != nil {
						serverErr <- err
						return
					}
					go func() {
						h := sha256.New()
						if _, err := io.Copy(h, st); err != nil {
							serverErr <- err
							return
						}
						if _, err := st.Write(h.Sum(nil)); err != nil {
							serverErr <- err
							return
						}
						serverErr <- st.Close()
					}()
				}
			}()

			var wg sync.WaitGroup
			clientErr := make(chan error, streams)
			for i := range streams {
				wg.Go(func() {
					clientErr <- sendChecked(ctx, client, uint64(i), size)
				})
			}
			wg.Wait()
			for range streams {
				if err := <-clientErr; err != nil {
					t.Error(err)
				}
				if err := <-serverErr; err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// sendChecked sends size pseudo-random bytes on a new stream and checks
// the digest the server answers with.
func sendChecked(ctx context.Context, s Session, seed uint64, size int) error {
	st, err := s.OpenStream(ctx)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for sent := 0; sent < size; sent += len(buf) {
		_, _ = rng.Read(buf)
		h.Write(buf)
		if _, err := st.Write(buf); err != nil {
			return fmt.Errorf("stream %d: write: %w", seed, err)
		}
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("stream %d: close: %w", seed, err)
	}
	got, err := io.ReadAll(st)
	if err != nil {
		return fmt.Errorf("stream %d: read digest: %w", seed, err)
	}
	if want := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("stream %d: server digest %x, want %x", seed, got, want)
	}
	return nil
}

func TestHalfClose(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, client, server := pair(t, mode, Options{})
			st, err := client.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			// Writing after Close fails; reading still works (below).
			if _, err := st.Write([]byte("more")); err == nil {
				t.Error("Write after Close succeeded")
			}

			sst, err := server.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req, err := io.ReadAll(sst) // ends with EOF: the client's Close
			if err != nil || string(req) != "request" {
				t.Fatalf("server read %q, %v; want %q, nil", req, err, "request")
			}
			// The server's direction is still open.
			for _, part := range []string{"response ", "after ", "EOF"} {
				if _, err := sst.Write([]byte(part)); err != nil {
					t.Fatal(err)
				}
			}
			if err := sst.Close(); err != nil {
				t.Fatal(err)
			}
			resp, err := io.ReadAll(st)
			if err != nil || string(resp) != "response after EOF" {
				t.Fatalf("client read %q, %v; want %q, nil", resp, err, "response after EOF")
			}
		})
	}
}

func TestPeerCertificates(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			_, client, server := pair(t, mode, Options{})
			check := func(side string, s Session, wantCN string, wantRole certs.Role) {
				t.Helper()
				cs := s.ConnectionState()
				if len(cs.PeerCertificates) == 0 {
					t.Fatalf("%s: no peer certificate", side)
				}
				if cn := cs.PeerCertificates[0].Subject.CommonName; cn != wantCN {
					t.Errorf("%s: peer CN = %q, want %q", side, cn, wantCN)
				}
				role, _, err := certs.PeerIdentity(cs)
				if err != nil || role != wantRole {
					t.Errorf("%s: PeerIdentity = %q, %v; want %q", side, role, err, wantRole)
				}
				if cs.NegotiatedProtocol != "jobsuite/1" {
					t.Errorf("%s: ALPN = %q", side, cs.NegotiatedProtocol)
				}
				if cs.Version != tls.VersionTLS13 {
					t.Errorf("%s: TLS version %x, want 1.3", side, cs.Version)
				}
			}
			check("server", server, "agent-1", certs.RoleAgent)
			check("client", client, "controller", certs.RoleController)
			if client.RemoteAddr() == nil || server.RemoteAddr() == nil {
				t.Error("no remote address")
			}
		})
	}
}

// TestSessionClose checks that a closed session ends all its streams with
// ErrClosed, on the side that closed it and on the peer.
func TestSessionClose(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, client, server := pair(t, mode, Options{})
			cst, err := client.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cst.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			sst, err := server.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// A Read blocked when the session closes must return.
			blocked := make(chan error, 1)
			go func() {
				_, err := io.ReadAll(cst)
				blocked <- err
			}()

			if err := server.Close("controller shutting down"); err != nil {
				t.Fatal(err)
			}
			if err := server.Close("again"); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			for side, s := range map[string]Session{"server": server, "client": client} {
				select {
				case <-s.Done():
				case <-ctx.Done():
					t.Fatalf("%s: Done not closed", side)
				}
			}
			if err := <-blocked; !errors.Is(err, ErrClosed) {
				t.Errorf("client: blocked Read: %v, want ErrClosed", err)
			}
			for side, ops := range map[string]struct {
				s  Session
				st Stream
			}{"server": {server, sst}, "client": {client, cst}} {
				if _, err := ops.st.Write([]byte("y")); !errors.Is(err, ErrClosed) {
					t.Errorf("%s: Write: %v, want ErrClosed", side, err)
				}
				// tcp still hands out data that had arrived; then ErrClosed.
				if _, err := io.ReadAll(ops.st); !errors.Is(err, ErrClosed) {
					t.Errorf("%s: Read: %v, want ErrClosed", side, err)
				}
				if _, err := ops.s.OpenStream(ctx); !errors.Is(err, ErrClosed) {
					t.Errorf("%s: OpenStream: %v, want ErrClosed", side, err)
				}
				if _, err := ops.s.AcceptStream(ctx); !errors.Is(err, ErrClosed) {
					t.Errorf("%s: AcceptStream: %v, want ErrClosed", side, err)
				}
			}
			if err := client.Close("late"); err != nil {
				t.Errorf("Close of a session the peer closed: %v", err)
			}
		})
	}
}

func TestAbort(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, client, server := pair(t, mode, Options{})
			cst, err := client.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cst.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			sst, err := server.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(sst, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}

			blocked := make(chan error, 1)
			go func() {
				_, err := cst.Read(make([]byte, 1))
				blocked <- err
			}()
			cst.Abort()
			cst.Abort() // idempotent
			if err := <-blocked; !errors.Is(err, ErrAborted) {
				t.Errorf("blocked Read after Abort: %v, want ErrAborted", err)
			}
			if _, err := cst.Write([]byte("y")); !errors.Is(err, ErrAborted) {
				t.Errorf("Write after Abort: %v, want ErrAborted", err)
			}
			if err := cst.Close(); err != nil {
				t.Errorf("Close after Abort: %v", err)
			}

			// The peer: ErrAborted on quic, EOF on tcp (see the package doc).
			_, err = io.ReadAll(sst)
			switch mode {
			case ModeQUIC:
				if !errors.Is(err, ErrAborted) {
					t.Errorf("peer Read: %v, want ErrAborted", err)
				}
			case ModeTCP:
				if err != nil {
					t.Errorf("peer Read: %v, want EOF", err)
				}
			}
			// The session is unharmed.
			echoed := make(chan error, 1)
			go func() { echoed <- echoOnce(ctx, server) }()
			if err := roundTrip(ctx, client, "still alive"); err != nil {
				t.Fatal(err)
			}
			if err := <-echoed; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// roundTrip sends msg on a new stream to an echoing peer and checks the
// answer.
func roundTrip(ctx context.Context, s Session, msg string) error {
	st, err := s.OpenStream(ctx)
	if err != nil {
		return err
	}
	if _, err := st.Write([]byte(msg)); err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	got, err := io.ReadAll(st)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

func TestDeadline(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, client, _ := pair(t, mode, Options{})
			st, err := client.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			_, err = st.Read(make([]byte, 1))
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("Read past deadline: %v, want os.ErrDeadlineExceeded", err)
			}
			// The stream survives an expired deadline.
			if err := st.SetReadDeadline(time.Time{}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMaxStreams checks that a peer cannot have more than MaxStreams open,
// and that a stream done in both directions frees its slot.
func TestMaxStreams(t *testing.T) {
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, client, server := pair(t, mode, Options{MaxStreams: 2})
			var open []Stream
			for range 2 {
				st, err := client.OpenStream(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				open = append(open, st)
			}
			var accepted []Stream
			for range 2 {
				st, err := server.AcceptStream(ctx)
				if err != nil {
					t.Fatal(err)
				}
				accepted = append(accepted, st)
			}

			// A third stream: quic does not let the client open it, tcp
			// opens it but the server does not hand it out.
			third := make(chan error, 1)
			go func() {
				st, err := client.OpenStream(ctx)
				if err == nil {
					_, err = st.Write([]byte("3"))
				}
				third <- err
			}()
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			_, err := server.AcceptStream(short)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("AcceptStream beyond MaxStreams: %v, want context.DeadlineExceeded", err)
			}

			// Finish the first stream in both directions.
			if err := open[0].Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(accepted[0]); err != nil {
				t.Fatal(err)
			}
			if err := accepted[0].Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(open[0]); err != nil {
				t.Fatal(err)
			}

			st, err := server.AcceptStream(ctx)
			if err != nil {
				t.Fatalf("AcceptStream after a slot was freed: %v", err)
			}
			if err := <-third; err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			if _, err := io.ReadFull(st, b); err != nil || b[0] != '3' {
				t.Fatalf("third stream read %q, %v", b, err)
			}
		})
	}
}

func TestForeignCertificates(t *testing.T) {
	p := newPKI(t)
	other := t.TempDir()
	if err := certs.CreateCA(other); err != nil {
		t.Fatal(err)
	}
	confs := map[string]*tls.Config{
		// The client trusts the controller but holds a certificate of another CA.
		"client cert from another CA": clientConf(t, p.dir, other, "intruder"),
		// The client holds a good certificate but trusts another CA.
		"client trusts another CA": clientConf(t, other, p.dir, "agent-2"),
	}
	for name, mode := range map[string]Mode{"quic": ModeQUIC, "tcp": ModeTCP, "auto": ModeAuto} {
		for cname, conf := range confs {
			t.Run(name+"/"+cname, func(t *testing.T) {
				opts := Options{Logger: testLogger(t)}
				ctx := testContext(t)
				l := startListener(t, p, opts, true)
				s, err := Dial(ctx, l.Addr(), conf, mode, opts)
				if err == nil {
					_ = s.Close("")
					t.Fatal("Dial succeeded")
				}
				if !errors.Is(err, ErrHandshake) {
					t.Fatalf("Dial: %v, want ErrHandshake", err)
				}
				t.Logf("Dial: %v", err)
				// The listener goes on serving good clients.
				connect(t, ctx, l, p.client, modeOr(mode), opts)
			})
		}
	}
}

func modeOr(m Mode) Mode {
	if m == ModeAuto {
		return ModeTCP
	}
	return m
}

// TestAutoFallback runs a listener whose UDP port swallows every packet, as
// behind a firewall that drops UDP: auto mode must end up on tcp.
func TestAutoFallback(t *testing.T) {
	opts := Options{Logger: testLogger(t), HandshakeTimeout: 1500 * time.Millisecond}
	ctx := testContext(t)
	p := newPKI(t)
	l := startListener(t, p, opts, false)

	if _, err := Dial(ctx, l.Addr(), p.client, ModeQUIC, opts); err == nil || errors.Is(err, ErrHandshake) {
		t.Fatalf("quic Dial to a UDP black hole: %v, want a timeout", err)
	}
	start := time.Now()
	client, server := connect(t, ctx, l, p.client, ModeAuto, opts)
	t.Logf("auto dial took %v", time.Since(start))
	if client.Transport() != "tcp" || server.Transport() != "tcp" {
		t.Fatalf("Transport() = %q/%q, want tcp", client.Transport(), server.Transport())
	}
	echoed := make(chan error, 1)
	go func() { echoed <- echoOnce(ctx, server) }()
	if err := roundTrip(ctx, client, "over tcp"); err != nil {
		t.Fatal(err)
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
}

func TestAutoPrefersQUIC(t *testing.T) {
	_, client, server := pair(t, ModeAuto, Options{})
	if client.Transport() != "quic" || server.Transport() != "quic" {
		t.Fatalf("Transport() = %q/%q, want quic", client.Transport(), server.Transport())
	}
}

func TestListenSamePort(t *testing.T) {
	p := newPKI(t)
	opts := Options{Logger: testLogger(t)}
	ctx := testContext(t)
	l := startListener(t, p, opts, true)
	_, port, err := net.SplitHostPort(l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if port == "0" {
		t.Fatalf("Addr() = %s, want the bound port", l.Addr())
	}
	if udp := strconv.Itoa(l.udp.LocalAddr().(*net.UDPAddr).Port); udp != port {
		t.Fatalf("udp port %s, tcp port %s", udp, port)
	}
	// Both transports answer on that one address.
	for name, mode := range modes {
		client, _ := connect(t, ctx, l, p.client, mode, opts)
		if client.Transport() != name {
			t.Errorf("Transport() = %q, want %q", client.Transport(), name)
		}
	}
	// And the port is really taken for both: a second Listen on it fails.
	if l2, err := Listen(l.Addr(), p.server, opts); err == nil {
		_ = l2.Close()
		t.Fatal("second Listen on the same address succeeded")
	}
}

func TestListenRefusesWeakTLS(t *testing.T) {
	p := newPKI(t)
	conf := p.server.Clone()
	conf.ClientAuth = tls.VerifyClientCertIfGiven
	if l, err := Listen("127.0.0.1:0", conf, Options{}); err == nil {
		_ = l.Close()
		t.Fatal("Listen accepted a TLS config that does not require client certificates")
	}
}

func TestListenerClose(t *testing.T) {
	p := newPKI(t)
	ctx := testContext(t)
	l := startListener(t, p, Options{Logger: testLogger(t)}, true)
	blocked := make(chan error, 1)
	go func() {
		_, err := l.Accept(ctx)
		blocked <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, err := range []error{<-blocked, func() error { _, err := l.Accept(ctx); return err }()} {
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed and ErrClosed", err)
		}
	}
	if _, err := Dial(ctx, l.Addr(), p.client, ModeTCP, Options{}); err == nil {
		t.Error("Dial to a closed listener succeeded")
	}
}

// TestListenerCloseEndsSessions checks that closing the listener closes the
// sessions it accepted, on both transports alike.
func TestListenerCloseEndsSessions(t *testing.T) {
	p := newPKI(t)
	opts := Options{Logger: testLogger(t)}
	ctx := testContext(t)
	l := startListener(t, p, opts, true)
	var sessions []Session
	for _, mode := range modes {
		client, server := connect(t, ctx, l, p.client, mode, opts)
		sessions = append(sessions, client, server)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		select {
		case <-s.Done():
		case <-ctx.Done():
			t.Fatalf("%s session still open after the listener closed", s.Transport())
		}
		if _, err := s.OpenStream(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: OpenStream: %v, want ErrClosed", s.Transport(), err)
		}
	}
}

// TestIdleTimeout cuts the network between the peers: both must drop the
// session after IdleTimeout, and keep-alives must hold an idle but healthy
// session open well past it.
func TestIdleTimeout(t *testing.T) {
	const idle = time.Second
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			opts := Options{Logger: testLogger(t), IdleTimeout: idle, KeepAlive: idle / 5}
			ctx := testContext(t)
			p := newPKI(t)
			l := startListener(t, p, opts, true)
			r := newRelay(t, name, l.Addr())

			client, err := Dial(ctx, r.addr, p.client, mode, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = client.Close("") })
			server, err := l.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = server.Close("") })

			select {
			case <-client.Done():
				t.Fatal("an idle session with keep-alives was dropped")
			case <-server.Done():
				t.Fatal("an idle session with keep-alives was dropped")
			case <-time.After(3 * idle):
			}

			r.cut()
			cut := time.Now()
			for side, s := range map[string]Session{"client": client, "server": server} {
				select {
				case <-s.Done():
					t.Logf("%s dropped the session %v after the cut", side, time.Since(cut).Round(time.Millisecond))
				case <-ctx.Done():
					t.Fatalf("%s never dropped the session", side)
				}
			}
			if _, err := client.OpenStream(ctx); !errors.Is(err, ErrClosed) {
				t.Errorf("OpenStream: %v, want ErrClosed", err)
			}
		})
	}
}

// relay forwards one connection between a client and addr over "quic"
// (UDP) or "tcp", until cut, after which it drops everything both ways.
type relay struct {
	addr string
	dead atomic.Bool
}

func (r *relay) cut() { r.dead.Store(true) }

func newRelay(t *testing.T, network, target string) *relay {
	t.Helper()
	r := &relay{}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	if network == "quic" {
		front, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		back, err := net.Dial("udp", target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = front.Close(); _ = back.Close() })
		r.addr = front.LocalAddr().String()
		var client atomic.Pointer[net.Addr]
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, from, err := front.ReadFrom(buf)
				if err != nil {
					return
				}
				client.Store(&from)
				if !r.dead.Load() {
					_, _ = back.Write(buf[:n])
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := back.Read(buf)
				if err != nil {
					return
				}
				if to := client.Load(); to != nil && !r.dead.Load() {
					_, _ = front.WriteTo(buf[:n], *to)
				}
			}
		})
		return r
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	r.addr = ln.Addr().String()
	wg.Go(func() {
		front, err := ln.Accept()
		if err != nil {
			return
		}
		back, err := net.Dial("tcp", target)
		if err != nil {
			_ = front.Close()
			return
		}
		t.Cleanup(func() { _ = front.Close(); _ = back.Close() })
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 64<<10)
			for {
				n, err := src.Read(buf)
				if err != nil {
					return
				}
				if !r.dead.Load() {
					if _, err := dst.Write(buf[:n]); err != nil {
						return
					}
				}
			}
		}
		wg.Go(func() { pipe(back, front) })
		wg.Go(func() { pipe(front, back) })
	})
	return r
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"auto": ModeAuto, "QUIC": ModeQUIC, " tcp ": ModeTCP, "": ModeAuto} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("udp"); err == nil {
		t.Error(`ParseMode("udp") succeeded`)
	}
}

// The listener forgets a session once it is done, whichever side ended
// it, without a goroutine per session to notice.
func TestListenerForgetsEndedSessions(t *testing.T) {
	p := newPKI(t)
	opts := Options{Logger: testLogger(t)}
	ctx := testContext(t)
	l := startListener(t, p, opts, true)
	live := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.live)
	}
	for name, mode := range modes {
		for _, closer := range []string{"client", "server"} {
			client, server := connect(t, ctx, l, p.client, mode, opts)
			for live() != 1 { // tracked just after Accept returned it
				if ctx.Err() != nil {
					t.Fatalf("%s: %d live sessions after one was accepted", name, live())
				}
				time.Sleep(time.Millisecond)
			}
			if closer == "client" {
				_ = client.Close("done")
			} else {
				_ = server.Close("done")
			}
			select {
			case <-server.Done():
			case <-ctx.Done():
				t.Fatalf("%s: server session not done after the %s closed it", name, closer)
			}
			// The callback runs just after Done is closed: wait for it.
			for live() != 0 {
				if ctx.Err() != nil {
					t.Fatalf("%s: the listener still tracks a session the %s closed", name, closer)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
}

// crash stops l the way a killed process would: no CONNECTION_CLOSE to
// the peers of its sessions, the port freed.
func (l *Listener) crash() {
	l.closeOnce.Do(func() {
		l.cancel()
		_ = l.qtr.Close() // ends the sessions without telling the peers
		_ = l.tcp.Close()
		_ = l.udp.Close()
		l.wg.Wait()
	})
}

// TestStatelessResetAfterRestart: a listener restarted on the same port
// with the same StatelessResetKey answers a packet of its previous run's
// session with a stateless reset, so the dialer learns at once that the
// session is gone — long before its idle timeout (five minutes here,
// beyond the test's deadline).
func TestStatelessResetAfterRestart(t *testing.T) {
	key := [32]byte{7, 1, 9}
	opts := Options{Logger: testLogger(t), IdleTimeout: 5 * time.Minute, KeepAlive: 5 * time.Minute, StatelessResetKey: &key}
	ctx := testContext(t)
	p := newPKI(t)
	l := startListener(t, p, opts, true)
	client, _ := connect(t, ctx, l, p.client, ModeQUIC, opts)
	l.crash()
	l2, err := listen(l.Addr(), p.server, opts, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l2.Close() })

	// The client's next packet reaches the restarted listener.
	if st, err := client.OpenStream(ctx); err == nil {
		_, _ = st.Write(make([]byte, 512))
	}
	select {
	case <-client.Done():
	case <-ctx.Done():
		t.Fatal("the session outlived the listener's restart: no stateless reset")
	}
}
