package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// csrPEM builds a PEM CSR for key from tmpl, to make requests CreateCSR
// never would.
func csrPEM(t *testing.T, tmpl *x509.CertificateRequest, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestCSRSigned(t *testing.T) {
	ca, _ := newTestCA(t)
	reqPEM, keyPEM, err := CreateCSR("worker-9")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(reqPEM)
	if err != nil {
		t.Fatal(err)
	}
	if csr.Subject.CommonName != "worker-9" {
		t.Errorf("CSR asks for %q, want worker-9", csr.Subject.CommonName)
	}
	certPEM, err := ca.SignCSR(csr, Request{Role: RoleAgent, Name: "worker-9", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The certificate goes with the key that never left CreateCSR's caller.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("the signed certificate does not match the CSR's key: %v", err)
	}
	leaf := pair.Leaf
	if role, err := RoleOf(leaf); err != nil || role != RoleAgent || leaf.Subject.CommonName != "worker-9" {
		t.Errorf("signed certificate: role %q (%v), name %q", role, err, leaf.Subject.CommonName)
	}
	if d := time.Until(leaf.NotAfter); d > time.Hour || d < 59*time.Minute {
		t.Errorf("NotAfter in %s, want 1h", d)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("signed certificate does not verify: %v", err)
	}
}

// TestCSRRequestIgnored: whatever a CSR asks for — another role, CA
// powers, SANs, server authentication — the certificate says only what
// the signer decided.
func TestCSRRequestIgnored(t *testing.T) {
	ca, _ := newTestCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	basicCA, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}}) // serverAuth
	greedy := csrPEM(t, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "root", Organization: []string{"jobsuite"}, OrganizationalUnit: []string{"operator"}},
		DNSNames:    []string{"ctl.example.com"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: basicCA},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: eku},
		},
	}, key)
	csr, err := ParseCSR(greedy)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignCSR(csr, Request{Role: RoleAgent, Name: "agent-1a2b", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := leaf[0]
	if role, err := RoleOf(c); err != nil || role != RoleAgent {
		t.Errorf("role %q (%v), want agent", role, err)
	}
	if c.Subject.CommonName != "agent-1a2b" || c.IsCA || len(c.DNSNames) != 0 || len(c.IPAddresses) != 0 {
		t.Errorf("certificate took from the CSR: CN %q, CA %v, DNS %v, IP %v", c.Subject.CommonName, c.IsCA, c.DNSNames, c.IPAddresses)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("extended key usage %v, want client authentication only", c.ExtKeyUsage)
	}
}

func TestParseCSRRefuses(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, p256)
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	certPEM, _, err := CreateCSR("")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string][]byte{
		"empty":            nil,
		"not PEM":          []byte("hello"),
		"certificate":      []byte(strings.Replace(string(certPEM), "CERTIFICATE REQUEST", "CERTIFICATE", 2)),
		"bad signature":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}),
		"P-384 key":        csrPEM(t, &x509.CertificateRequest{}, p384),
		"RSA key":          csrPEM(t, &x509.CertificateRequest{}, rsaKey),
		"trailing data":    append(append([]byte(nil), good...), "junk"...),
		"two CSRs":         append(append([]byte(nil), good...), good...),
		"over the limit":   append(append([]byte(nil), good...), make([]byte, MaxCSRBytes)...),
		"garbage in block": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseCSR(data); !errors.Is(err, ErrInvalidCSR) {
				t.Fatalf("ParseCSR error %v, want ErrInvalidCSR", err)
			}
		})
	}
	ca, _ := newTestCA(t)
	rsaCSR, _ := x509.ParseCertificateRequest(mustBlock(t, csrPEM(t, &x509.CertificateRequest{}, rsaKey)))
	if _, err := ca.SignCSR(rsaCSR, Request{Role: RoleAgent, Name: "a"}); !errors.Is(err, ErrInvalidCSR) {
		t.Errorf("SignCSR of an RSA request: %v, want ErrInvalidCSR", err)
	}
	if _, err := ca.SignCSR(nil, Request{Role: RoleAgent, Name: "a"}); !errors.Is(err, ErrInvalidCSR) {
		t.Errorf("SignCSR(nil): %v, want ErrInvalidCSR", err)
	}
	if _, _, err := CreateCSR("no spaces"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("CreateCSR with a bad name: %v, want ErrInvalidName", err)
	}
}

func mustBlock(t *testing.T, data []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}

func TestParsePin(t *testing.T) {
	const hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	colons := ""
	for i := 0; i < len(hex); i += 2 {
		if i > 0 {
			colons += ":"
		}
		colons += hex[i : i+2]
	}
	tests := map[string]struct {
		in   string
		want string // "" for an error
	}{
		"plain":       {hex, hex},
		"upper case":  {strings.ToUpper(hex), hex},
		"colons":      {strings.ToUpper(colons), hex},
		"sha256:":     {"sha256:" + hex, hex},
		"spaces":      {"  " + hex + "\n", hex},
		"short":       {hex[:62], ""},
		"long":        {hex + "00", ""},
		"not hex":     {strings.Replace(hex, "0", "g", 1), ""},
		"empty":       {"", ""},
		"sha1 length": {hex[:40], ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePin(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidPin) {
					t.Fatalf("ParsePin(%q) = %q, %v; want ErrInvalidPin", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePin(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// errRefused stands for any refusal in TestPinnedTLS.
var errRefused = errors.New("refused")

// chain returns pair with extra certificates sent after the leaf.
func chain(pair tls.Certificate, extra ...*x509.Certificate) tls.Certificate {
	for _, c := range extra {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	return pair
}

func TestPinnedTLS(t *testing.T) {
	ca, _ := newTestCA(t)
	other, _ := newTestCA(t)
	pin := Fingerprint(ca.Cert)
	controller := issue(t, ca, Request{Role: RoleController, Name: "ctl"})
	foreign := issue(t, other, Request{Role: RoleController, Name: "ctl"})
	agentAsServer := issueCustom(t, ca, Request{Role: RoleAgent, Name: "worker-2"}, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	})

	tests := map[string]struct {
		server     tls.Certificate
		pin        string
		serverName string
		want       error  // errors.Is target on the client side; nil: accepted
		msg        string // in the client error
	}{
		"pinned CA":                     {server: chain(controller, ca.Cert), pin: pin, serverName: "127.0.0.1"},
		"pin with colons and uppercase": {server: chain(controller, ca.Cert), pin: strings.ToUpper(pin), serverName: "localhost"},
		"another CA":                    {server: chain(foreign, other.Cert), pin: pin, serverName: "127.0.0.1", want: ErrPinMismatch, msg: Fingerprint(other.Cert)},
		"no CA sent":                    {server: controller, pin: pin, serverName: "127.0.0.1", want: ErrPinMismatch, msg: "no CA certificate"},
		// A server that sends our CA's certificate along cannot pass with a
		// certificate our CA did not sign.
		"pinned CA sent by an impostor": {server: chain(foreign, ca.Cert), pin: pin, serverName: "127.0.0.1", want: ErrPinMismatch, msg: "does not verify"},
		"wrong server name":             {server: chain(controller, ca.Cert), pin: pin, serverName: "ctl.example.com", want: errRefused, msg: "not ctl.example.com"},
		"agent certificate":             {server: chain(agentAsServer, ca.Cert), pin: pin, serverName: "127.0.0.1", want: ErrWrongRole, msg: "role agent"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			serverCfg := ServerTLS(pool(ca), tt.server, "http/1.1")
			serverCfg.ClientAuth = tls.NoClientCert
			clientCfg, err := PinnedTLS(tt.pin, tt.serverName, "http/1.1")
			if err != nil {
				t.Fatal(err)
			}
			_, client := handshake(t, serverCfg, clientCfg)
			if tt.want == nil {
				if client.err != nil {
					t.Fatalf("refused: %v", client.err)
				}
				got, err := VerifyPinned(client.state, tt.pin, tt.serverName)
				if err != nil || !got.Equal(ca.Cert) {
					t.Fatalf("VerifyPinned = %v, %v; want the pinned CA", got, err)
				}
				return
			}
			if client.err == nil || tt.want != errRefused && !errors.Is(client.err, tt.want) || !strings.Contains(client.err.Error(), tt.msg) {
				t.Fatalf("client error %v; want %v mentioning %q", client.err, tt.want, tt.msg)
			}
			t.Logf("refused: %v", client.err)
		})
	}
	if _, err := PinnedTLS("abc", "ctl"); !errors.Is(err, ErrInvalidPin) {
		t.Errorf("PinnedTLS with a bad pin: %v", err)
	}
	if _, err := PinnedTLS(pin, ""); err == nil {
		t.Error("PinnedTLS without a server name: no error")
	}
}

func TestRenewAt(t *testing.T) {
	ca, _ := newTestCA(t)
	tests := map[string]struct {
		ttl  time.Duration
		want time.Duration // after issuing
	}{
		"one year":  {365 * 24 * time.Hour, 243*24*time.Hour + 8*time.Hour},
		"three sec": {3 * time.Second, 2 * time.Second},
		"an hour":   {time.Hour, 40 * time.Minute},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			before := time.Now()
			leaf := issue(t, ca, Request{Role: RoleAgent, Name: "a", TTL: tt.ttl}).Leaf
			after := time.Now()
			got := RenewAt(leaf)
			// Certificates carry whole seconds.
			lo, hi := before.Add(tt.want).Add(-time.Second), after.Add(tt.want).Add(time.Second)
			if got.Before(lo) || got.After(hi) {
				t.Fatalf("RenewAt = %s, want between %s and %s", got, lo, hi)
			}
		})
	}
	// A certificate not backdated: two thirds from NotBefore.
	now := time.Now().Truncate(time.Second)
	c := &x509.Certificate{NotBefore: now, NotAfter: now.Add(30 * time.Second)}
	if got := RenewAt(c); !got.Equal(now.Add(20 * time.Second)) {
		t.Errorf("RenewAt of a 30s certificate = %s, want %s", got, now.Add(20*time.Second))
	}
}

func TestLoadCAFiles(t *testing.T) {
	_, dir := newTestCA(t)
	_, otherDir := newTestCA(t)
	ca, err := LoadCAFiles(CAFile(dir), caKeyFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := LoadCA(dir)
	if !ca.Cert.Equal(want.Cert) {
		t.Error("LoadCAFiles loaded another certificate than LoadCA")
	}
	// A bundle of two CAs: the one of the key is chosen.
	a, _ := os.ReadFile(CAFile(dir))
	b, _ := os.ReadFile(CAFile(otherDir))
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundle, append(b, a...), 0o644); err != nil {
		t.Fatal(err)
	}
	if ca, err := LoadCAFiles(bundle, caKeyFile(dir)); err != nil || !ca.Cert.Equal(want.Cert) {
		t.Errorf("LoadCAFiles(bundle) = %v, %v", ca, err)
	}
	if _, err := LoadCAFiles(CAFile(otherDir), caKeyFile(dir)); err == nil || !strings.Contains(err.Error(), "belongs to the key") {
		t.Errorf("LoadCAFiles with another CA's key: %v", err)
	}
	if _, err := LoadCAFiles(CAFile(dir), filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("LoadCAFiles with a missing key: no error")
	}
	// A leaf's key is no CA.
	if _, _, err := IssueFiles(dir, Request{Role: RoleAgent, Name: "w"}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCAFiles(CertFile(dir, "w"), KeyFile(dir, "w")); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("LoadCAFiles of a leaf: %v", err)
	}
}
