package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// result is what one side of a handshake saw.
type result struct {
	state tls.ConnectionState
	err   error
}

// handshake connects a client using clientCfg to a server using serverCfg
// over a real loopback listener. The client side error includes the first
// read, since with TLS 1.3 a server rejects a client certificate only after
// the client's handshake has completed.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (server, client result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	done := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		conn := tls.Server(raw, serverCfg)
		err = conn.Handshake()
		if err == nil {
			_, err = conn.Write([]byte("ok"))
		}
		done <- result{state: conn.ConnectionState(), err: err}
	}()

	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2)
		if _, err = io.ReadFull(conn, buf); err == nil && string(buf) != "ok" {
			err = errors.New("unexpected reply " + string(buf))
		}
		client = result{state: conn.ConnectionState(), err: err}
	} else {
		client = result{err: err}
	}
	server = <-done
	return server, client
}

func TestHandshake(t *testing.T) {
	ca, _ := newTestCA(t)
	other, _ := newTestCA(t)

	controller := issue(t, ca, Request{Role: RoleController, Name: "ctl"})
	operator := issue(t, ca, Request{Role: RoleOperator, Name: "op-1"})
	agent := issue(t, ca, Request{Role: RoleAgent, Name: "worker-1"})
	foreignOperator := issue(t, other, Request{Role: RoleOperator, Name: "op-1"})
	foreignController := issue(t, other, Request{Role: RoleController, Name: "ctl"})
	// An agent certificate that passes the server checks of crypto/tls
	// (ServerAuth, loopback SAN), so only the role check can refuse it.
	agentAsServer := issueCustom(t, ca, Request{Role: RoleAgent, Name: "worker-2"}, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	})

	tests := map[string]struct {
		server     tls.Certificate
		client     tls.Certificate
		clientMax  uint16 // MaxVersion for the client, 0 for default
		wantOK     bool
		wantClient error  // errors.Is target on the client side, if any
		wantMsg    string // in the client error, if any
		wantRole   Role   // client role seen by the server
		wantName   string // client name seen by the server
	}{
		"operator client":            {server: controller, client: operator, wantOK: true, wantRole: RoleOperator, wantName: "op-1"},
		"agent client":               {server: controller, client: agent, wantOK: true, wantRole: RoleAgent, wantName: "worker-1"},
		"client from another CA":     {server: controller, client: foreignOperator},
		"client without certificate": {server: controller, client: tls.Certificate{}},
		"server from another CA":     {server: foreignController, client: operator},
		"server with agent cert":     {server: agent, client: operator},
		"server with agent role":     {server: agentAsServer, client: operator, wantClient: ErrWrongRole, wantMsg: "role agent"},
		"client limited to TLS 1.2":  {server: controller, client: operator, clientMax: tls.VersionTLS12},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			serverCfg := ServerTLS(pool(ca), tt.server, "jobsuite/1")
			clientCfg := ClientTLS(pool(ca), tt.client, "127.0.0.1", "jobsuite/1")
			clientCfg.MaxVersion = tt.clientMax
			server, client := handshake(t, serverCfg, clientCfg)
			if !tt.wantOK {
				if server.err == nil || client.err == nil {
					t.Fatalf("connection not refused: server error %v, client error %v", server.err, client.err)
				}
				t.Logf("server: %v; client: %v", server.err, client.err)
				if tt.wantClient != nil && !errors.Is(client.err, tt.wantClient) {
					t.Errorf("client error %v, want %v", client.err, tt.wantClient)
				}
				if !strings.Contains(client.err.Error(), tt.wantMsg) {
					t.Errorf("client error %q does not contain %q", client.err, tt.wantMsg)
				}
				return
			}
			if server.err != nil || client.err != nil {
				t.Fatalf("server error %v, client error %v", server.err, client.err)
			}
			for side, st := range map[string]tls.ConnectionState{"server": server.state, "client": client.state} {
				if st.Version != tls.VersionTLS13 {
					t.Errorf("%s: TLS version %x, want 1.3", side, st.Version)
				}
				if st.NegotiatedProtocol != "jobsuite/1" {
					t.Errorf("%s: ALPN %q", side, st.NegotiatedProtocol)
				}
			}
			role, cn, err := PeerIdentity(server.state)
			if err != nil || role != tt.wantRole || cn != tt.wantName {
				t.Errorf("server sees client as %q %q (%v), want %q %q", role, cn, err, tt.wantRole, tt.wantName)
			}
			role, cn, err = PeerIdentity(client.state)
			if err != nil || role != RoleController || cn != "ctl" {
				t.Errorf("client sees server as %q %q (%v), want controller ctl", role, cn, err)
			}
		})
	}
}

func TestTLSConfigs(t *testing.T) {
	ca, _ := newTestCA(t)
	cert := issue(t, ca, Request{Role: RoleController, Name: "ctl"})
	s := ServerTLS(pool(ca), cert)
	if s.MinVersion != tls.VersionTLS13 || s.ClientAuth != tls.RequireAndVerifyClientCert || s.ClientCAs == nil || len(s.Certificates) != 1 {
		t.Errorf("ServerTLS = %+v", s)
	}
	c := ClientTLS(pool(ca), cert, "")
	if c.MinVersion != tls.VersionTLS13 || c.RootCAs == nil || c.ServerName != "" || len(c.Certificates) != 1 || c.VerifyConnection == nil {
		t.Errorf("ClientTLS = %+v", c)
	}
	if c := ClientTLS(pool(ca), tls.Certificate{}, "ctl"); len(c.Certificates) != 0 || c.ServerName != "ctl" {
		t.Errorf("ClientTLS without certificate = %+v", c)
	}
}

func TestPeerIdentityNoCertificate(t *testing.T) {
	ca, _ := newTestCA(t)
	leaf := issue(t, ca, Request{Role: RoleAgent, Name: "a"}).Leaf
	tests := map[string]tls.ConnectionState{
		"empty":      {},
		"unverified": {PeerCertificates: []*x509.Certificate{leaf}},
	}
	for name, cs := range tests {
		t.Run(name, func(t *testing.T) {
			if _, _, err := PeerIdentity(cs); !errors.Is(err, ErrNoCertificate) {
				t.Fatalf("PeerIdentity error %v, want ErrNoCertificate", err)
			}
		})
	}
}
