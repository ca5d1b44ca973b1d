package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// LoadKeyPair loads a certificate and its private key from PEM files, with
// Leaf populated.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: load key pair %s, %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("certs: load key pair: parse %s: %w", certFile, err)
		}
		pair.Leaf = leaf
	}
	return pair, nil
}

// LoadPool loads the CA certificates in the PEM file caFile into a pool.
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA pool: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("certs: load CA pool: %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// ServerTLS returns the configuration of a jobsuite server (the
// controller): TLS 1.3 only, presenting cert, and requiring a client
// certificate issued by ca. Any role is accepted here; the server decides
// what a client may do from PeerIdentity.
func ServerTLS(ca *x509.CertPool, cert tls.Certificate, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca,
		NextProtos:   nextProtos,
	}
}

// ClientTLS returns the configuration of a jobsuite client (agent, CLI):
// TLS 1.3 only, presenting cert (if it holds one), trusting only ca, and
// refusing a server whose certificate is not a controller certificate
// (ErrWrongRole, ErrNoRole). serverName is used as tls.Config.ServerName;
// when empty it is left for the caller (or tls.Dial) to set.
func ClientTLS(ca *x509.CertPool, cert tls.Certificate, serverName string, nextProtos ...string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		RootCAs:          ca,
		ServerName:       serverName,
		NextProtos:       nextProtos,
		VerifyConnection: verifyController,
	}
	if len(cert.Certificate) > 0 {
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// verifyController refuses a server whose verified leaf is not a
// controller. It runs after the standard chain and hostname checks.
func verifyController(cs tls.ConnectionState) error {
	who := "server"
	if cs.ServerName != "" {
		who = fmt.Sprintf("server %q", cs.ServerName)
	}
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("certs: refusing %s: %w", who, ErrNoCertificate)
	}
	leaf := cs.PeerCertificates[0]
	role, err := RoleOf(leaf)
	if err != nil {
		return fmt.Errorf("certs: refusing %s, it is not a jobsuite controller: %w", who, err)
	}
	if role != RoleController {
		return fmt.Errorf("certs: refusing %s: its certificate %q has role %s, want %s: %w; the server must use a certificate issued with 'jobsuite tls cert create -role controller'",
			who, leaf.Subject.CommonName, role, RoleController, ErrWrongRole)
	}
	return nil
}

// PeerIdentity returns the role and name (CommonName) of the peer's
// verified certificate. It fails with ErrNoCertificate if the peer sent
// none or it was not verified, and with ErrNoRole if it carries no role.
func PeerIdentity(cs tls.ConnectionState) (role Role, name string, err error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", "", fmt.Errorf("certs: peer identity: %w", ErrNoCertificate)
	}
	leaf := cs.VerifiedChains[0][0]
	role, err = RoleOf(leaf)
	if err != nil {
		return "", "", fmt.Errorf("certs: peer identity: %w", err)
	}
	return role, leaf.Subject.CommonName, nil
}

// Files names the PEM files a TLS client or server needs.
type Files struct {
	CA   string // CA certificate (ca.pem)
	Cert string // own certificate (<name>.pem)
	Key  string // own private key (<name>-key.pem)
}

// Load loads the CA pool and the key pair. Its errors name the file
// concerned and say what to do.
func (f Files) Load() (pool *x509.CertPool, cert tls.Certificate, err error) {
	const hint = "create the PKI with 'jobsuite tls ca create' and 'jobsuite tls cert create', or point to the right file"
	switch {
	case f.CA == "":
		return nil, tls.Certificate{}, errors.New("certs: no CA certificate file given: set the CA file (ca.pem of your PKI directory)")
	case f.Cert == "":
		return nil, tls.Certificate{}, errors.New("certs: no certificate file given: set the certificate file (<name>.pem of your PKI directory)")
	case f.Key == "":
		return nil, tls.Certificate{}, errors.New("certs: no key file given: set the key file (<name>-key.pem of your PKI directory)")
	}
	pool, err = LoadPool(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("%w; %s", err, hint)
	}
	for _, p := range []string{f.Cert, f.Key} {
		if _, err := os.Stat(p); err != nil {
			return nil, tls.Certificate{}, fmt.Errorf("certs: %w; %s", err, hint)
		}
	}
	cert, err = LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("%w; check that %s is the key of %s", err, f.Key, f.Cert)
	}
	return pool, cert, nil
}

// Fingerprint returns the lowercase hex SHA-256 of cert's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}
