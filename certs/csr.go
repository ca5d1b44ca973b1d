package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Certificate signing requests, CA pinning and renewal times: what
// join-token enrollment and automatic renewal need. The agent makes its
// key and a CSR (CreateCSR) and keeps the key; the controller checks the
// CSR (ParseCSR) and signs its public key (CA.SignCSR) with the role,
// name and lifetime it decides, ignoring whatever else the CSR asks for.
// Before the agent trusts anything, it checks that the controller's
// certificate chains to the CA whose SHA-256 it was given (PinnedTLS).

// Errors of this file, wrapped with context; check them with errors.Is.
var (
	// ErrInvalidCSR is returned by ParseCSR and SignCSR for a request that
	// is not one PEM "CERTIFICATE REQUEST", whose signature does not
	// verify, or whose key is not ECDSA P-256.
	ErrInvalidCSR = errors.New("invalid certificate signing request")

	// ErrInvalidPin is returned by ParsePin for a CA pin that is not 64
	// hex digits.
	ErrInvalidPin = errors.New("invalid CA pin")

	// ErrPinMismatch is returned during a handshake by the
	// VerifyConnection hook of PinnedTLS (and by VerifyPinned) when the
	// server's certificate does not chain to a CA with the pinned
	// fingerprint.
	ErrPinMismatch = errors.New("the server's CA does not match the pin")
)

// MaxCSRBytes bounds the PEM CSR ParseCSR accepts.
const MaxCSRBytes = 16 << 10

// CreateCSR generates a new ECDSA P-256 key and a certificate signing
// request for its public key, asking for the name (CommonName) name; an
// empty name leaves the choice to the signer. It returns both PEM
// encoded: the key never needs to leave the caller.
func CreateCSR(name string) (csrPEM, keyPEM []byte, err error) {
	if name != "" {
		if err := checkName(name); err != nil {
			return nil, nil, fmt.Errorf("certs: create CSR: %w", err)
		}
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("certs: create CSR: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// ParseCSR parses one PEM certificate signing request, at most
// MaxCSRBytes, and checks its self-signature (the sender holds the key)
// and that its key is ECDSA P-256. Errors wrap ErrInvalidCSR.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > MaxCSRBytes {
		return nil, fmt.Errorf("certs: %w: %d bytes, the limit is %d", ErrInvalidCSR, len(data), MaxCSRBytes)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("certs: %w: want one PEM block of type CERTIFICATE REQUEST", ErrInvalidCSR)
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, fmt.Errorf("certs: %w: data after the CERTIFICATE REQUEST block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %w: %v", ErrInvalidCSR, err)
	}
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

// checkCSR checks the key type and the signature of csr.
func checkCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return fmt.Errorf("certs: %w: none given", ErrInvalidCSR)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fmt.Errorf("certs: %w: the key must be ECDSA P-256 (jobsuite's keys all are), got %T", ErrInvalidCSR, csr.PublicKey)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("certs: %w: its signature does not verify: %v", ErrInvalidCSR, err)
	}
	return nil
}

// SignCSR issues a certificate for the public key of csr as req
// describes it (role, name, SANs, TTL; see Issue), and returns it PEM
// encoded. Everything else in the CSR — its subject, its SANs, any
// extension asking for a role, a key usage or CA powers — is ignored:
// the signer alone decides what the certificate says.
func (ca *CA) SignCSR(csr *x509.CertificateRequest, req Request) (certPEM []byte, err error) {
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	tmpl, err := ca.template(req)
	if err != nil {
		return nil, fmt.Errorf("certs: sign CSR: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: sign CSR for %s %q: %w", req.Role, req.Name, err)
	}
	return encodeCert(der), nil
}

// CheckName reports whether name can be a certificate name: 1 to 64 of
// [A-Za-z0-9._-]. Its error wraps ErrInvalidName.
func CheckName(name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// LoadCAFiles loads a CA from its certificate file and its key file,
// which need not share a directory or the names CreateCA gives them.
// certFile may hold several certificates (a CA bundle during a
// rotation); the one whose public key matches the key is the CA.
func LoadCAFiles(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	signer, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA key %s: %w", keyFile, err)
	}
	cas, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA %s: %w", certFile, err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("certs: load CA key %s: unsupported key type %T", keyFile, signer.Public())
	}
	for _, c := range cas {
		if pub.Equal(c.PublicKey) {
			if !c.IsCA {
				return nil, fmt.Errorf("certs: load CA: the certificate of %s in %s is not a CA certificate", keyFile, certFile)
			}
			return &CA{Cert: c, Key: signer}, nil
		}
	}
	return nil, fmt.Errorf("certs: load CA: no certificate in %s belongs to the key %s; give the CA certificate and the CA key (ca.pem, ca-key.pem)", certFile, keyFile)
}

// parseKey parses the first private key in PEM data: PKCS #8, or SEC 1
// ("EC PRIVATE KEY").
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", key)
		}
		return signer, nil
	}
}

// ParseCertificatesPEM parses every CERTIFICATE block of PEM data; it
// fails if there is none.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// EncodeCertificate returns cert PEM encoded.
func EncodeCertificate(cert *x509.Certificate) []byte { return encodeCert(cert.Raw) }

// ParsePin normalizes a CA pin — the hex SHA-256 of the CA certificate's
// DER, as Fingerprint returns it — accepting upper case, colons or
// spaces between bytes, and a "sha256:" prefix. Errors wrap
// ErrInvalidPin.
func ParsePin(s string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(s))
	p = strings.TrimPrefix(p, "sha256:")
	p = strings.NewReplacer(":", "", " ", "").Replace(p)
	if b, err := hex.DecodeString(p); err != nil || len(b) != 32 {
		return "", fmt.Errorf("certs: %w %q: want the 64 hex digits of the CA certificate's SHA-256 ('jobsuite agent token create' prints it)", ErrInvalidPin, s)
	}
	return p, nil
}

// PinnedTLS returns the configuration of a client that has no CA file
// yet, only the CA's fingerprint: TLS 1.3, no client certificate, and a
// server accepted only if VerifyPinned accepts it — its certificate
// chains to a CA certificate the server sends along whose SHA-256 is pin,
// names serverName and has the controller role. Use VerifyPinned on the
// connection's state afterwards to get that CA.
func PinnedTLS(pin, serverName string, nextProtos ...string) (*tls.Config, error) {
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	if serverName == "" {
		return nil, errors.New("certs: pinned TLS: no server name to check the certificate against")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		NextProtos: nextProtos,
		// The standard verification needs a CA file, which the client does
		// not have yet; VerifyConnection checks the chain against the
		// pinned CA instead, before any application data is sent.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := VerifyPinned(cs, want, serverName)
			return err
		},
	}, nil
}

// VerifyPinned checks a server connection against a CA pin and returns
// the pinned CA certificate: one of the certificates the server sent
// after its own must have the SHA-256 fingerprint pin and be a CA, the
// server's certificate must chain to it, be valid now for serverName and
// for server authentication, and carry the controller role.
func VerifyPinned(cs tls.ConnectionState, pin, serverName string) (*x509.Certificate, error) {
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	who := fmt.Sprintf("server %q", serverName)
	if len(cs.PeerCertificates) == 0 {
		return nil, fmt.Errorf("certs: refusing %s: %w", who, ErrNoCertificate)
	}
	leaf := cs.PeerCertificates[0]
	var ca *x509.Certificate
	var seen []string
	for _, c := range cs.PeerCertificates[1:] {
		fp := Fingerprint(c)
		if fp == want {
			ca = c
			break
		}
		seen = append(seen, fp)
	}
	if ca == nil {
		if len(seen) == 0 {
			return nil, fmt.Errorf("certs: refusing %s: %w: it sent no CA certificate with its own (is the controller older than this agent?)", who, ErrPinMismatch)
		}
		return nil, fmt.Errorf("certs: refusing %s: %w: it sent the CA %s, not %s; check the pin 'jobsuite agent token create' printed — a different CA means another server is answering", who, ErrPinMismatch, strings.Join(seen, ", "), want)
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("certs: refusing %s: %w: the pinned certificate %q is not a CA certificate", who, ErrPinMismatch, ca.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("certs: refusing %s: %w: its certificate does not verify against the pinned CA: %v", who, ErrPinMismatch, err)
	}
	if err := leaf.VerifyHostname(serverName); err != nil {
		return nil, fmt.Errorf("certs: refusing %s: %v; connect by a name the controller's certificate carries", who, err)
	}
	if err := verifyController(tls.ConnectionState{ServerName: serverName, PeerCertificates: cs.PeerCertificates}); err != nil {
		return nil, err
	}
	return ca, nil
}

// RenewAt returns when a certificate should be renewed: once two thirds
// of its lifetime have passed. The lifetime starts when it was issued,
// which for certificates of this package is NotBefore plus the minute
// NotBefore is backdated by.
func RenewAt(cert *x509.Certificate) time.Time {
	start := cert.NotBefore.Add(clockSkew)
	if !start.Before(cert.NotAfter) {
		start = cert.NotBefore
	}
	return start.Add(cert.NotAfter.Sub(start) * 2 / 3)
}
