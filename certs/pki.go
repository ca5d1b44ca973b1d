package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Validity periods.
const (
	// CAValidity is how long a CA made by CreateCA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// DefaultTTL is the validity of an issued certificate when
	// Request.TTL is 0.
	DefaultTTL = 365 * 24 * time.Hour
	// MaxTTL is the longest validity Issue accepts.
	MaxTTL = 825 * 24 * time.Hour
)

// caCommonName is the CommonName of the CA certificate.
const caCommonName = "jobsuite CA"

// maxNameLen is the longest certificate name Issue accepts.
const maxNameLen = 64

// clockSkew is how far in the past NotBefore is set.
const clockSkew = time.Minute

// CAFile returns the path of the CA certificate in the PKI directory dir.
func CAFile(dir string) string { return filepath.Join(dir, "ca.pem") }

// caKeyFile returns the path of the CA private key in dir.
func caKeyFile(dir string) string { return KeyFile(dir, "ca") }

// CertFile returns the path of the certificate for name in dir.
func CertFile(dir, name string) string { return filepath.Join(dir, name+".pem") }

// KeyFile returns the path of the private key for name in dir.
func KeyFile(dir, name string) string { return filepath.Join(dir, name+"-key.pem") }

// CA is a loaded certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CreateCA creates a new CA in dir (made with mode 0700 if missing): a
// self-signed certificate valid for 10 years in ca.pem and its private key
// in ca-key.pem (mode 0600). It returns an error wrapping ErrExists, and
// writes nothing, if either file already exists.
func CreateCA(dir string) error {
	certPath, keyPath := CAFile(dir), caKeyFile(dir)
	if err := refuseExisting(certPath, keyPath); err != nil {
		return fmt.Errorf("certs: create CA: %w", err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return fmt.Errorf("certs: create CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return fmt.Errorf("certs: create CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName, Organization: []string{organization}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("certs: create CA: sign: %w", err)
	}
	if err := writePair(dir, certPath, keyPath, encodeCert(der), keyPEM); err != nil {
		return fmt.Errorf("certs: create CA: %w", err)
	}
	return nil
}

// LoadCA loads the CA certificate and key from dir and checks that they
// belong together and that the certificate is a CA.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := CAFile(dir), caKeyFile(dir)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w (create a CA with 'jobsuite tls ca create -dir %s')", err, dir)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w (the CA key must be next to %s)", err, certPath)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA from %s and %s: %w", certPath, keyPath, err)
	}
	cert := pair.Leaf
	if cert == nil {
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: load CA %s: %w", certPath, err)
		}
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certs: load CA: %s is not a CA certificate", certPath)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: load CA: key %s cannot sign", keyPath)
	}
	return &CA{Cert: cert, Key: signer}, nil
}

// Request describes a certificate to issue.
type Request struct {
	Role Role
	Name string // CommonName; [A-Za-z0-9._-], 1 to 64 characters
	DNS  []string
	IPs  []net.IP
	// TTL is the validity; 0 means DefaultTTL (1 year), at most MaxTTL
	// (825 days). It is cut to the CA's own expiry.
	TTL time.Duration
}

// Issue creates a new key and a certificate for req signed by ca, and
// returns both PEM encoded. See the package documentation for the role
// encoding, key usages and SANs.
func (ca *CA) Issue(req Request) (certPEM, keyPEM []byte, err error) {
	tmpl, err := ca.template(req)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: issue: %w", err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("certs: issue %s %q: %w", req.Role, req.Name, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: issue %s %q: sign: %w", req.Role, req.Name, err)
	}
	return encodeCert(der), keyPEM, nil
}

// template validates req and turns it into a certificate template.
func (ca *CA) template(req Request) (*x509.Certificate, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("no CA loaded")
	}
	if err := req.check(); err != nil {
		return nil, err
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}

	var dns []string
	var ips []net.IP
	addDNS := func(d string) {
		for _, have := range dns {
			if strings.EqualFold(have, d) {
				return
			}
		}
		dns = append(dns, d)
	}
	addIP := func(ip net.IP) {
		for _, have := range ips {
			if have.Equal(ip) {
				return
			}
		}
		ips = append(ips, ip)
	}
	for _, d := range req.DNS {
		addDNS(d)
	}
	for _, ip := range req.IPs {
		addIP(ip)
	}

	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if req.Role == RoleController {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		if ip := net.ParseIP(req.Name); ip != nil {
			addIP(ip)
		} else if validHostname(req.Name) {
			addDNS(req.Name)
		}
		addDNS("localhost")
		addIP(net.IPv4(127, 0, 0, 1))
		addIP(net.IPv6loopback)
	}

	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("the CA expired on %s: create a new CA", ca.Cert.NotAfter.Format(time.RFC3339))
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         req.Name,
			Organization:       []string{organization},
			OrganizationalUnit: []string{string(req.Role)},
		},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}, nil
}

// check validates everything in req that does not depend on the CA.
func (req Request) check() error {
	if !req.Role.valid() {
		return fmt.Errorf("%w %q: valid roles are %s", ErrInvalidRole, req.Role, roleList())
	}
	if err := checkName(req.Name); err != nil {
		return err
	}
	if req.TTL < 0 || req.TTL > MaxTTL {
		return fmt.Errorf("%w %v: must be between 0 (default %v) and %v (825 days)", ErrInvalidTTL, req.TTL, DefaultTTL, MaxTTL)
	}
	for _, d := range req.DNS {
		if !validDNSName(d) {
			return fmt.Errorf("%w: DNS name %q is not a valid hostname", ErrInvalidName, d)
		}
	}
	for i, ip := range req.IPs {
		if ip.To4() == nil && len(ip) != net.IPv6len {
			return fmt.Errorf("%w: IP address #%d (%v) is invalid", ErrInvalidName, i+1, ip)
		}
	}
	return nil
}

// IssueFiles loads the CA from dir, issues a certificate for req and writes
// it to CertFile(dir, req.Name) and its key to KeyFile(dir, req.Name)
// (mode 0600). It returns an error wrapping ErrExists, and writes nothing,
// if either file already exists.
func IssueFiles(dir string, req Request) (certPath, keyPath string, err error) {
	if err := req.check(); err != nil {
		return "", "", fmt.Errorf("certs: issue: %w", err)
	}
	if req.Name == "ca" {
		return "", "", fmt.Errorf("certs: issue: %w %q: reserved for the CA files, choose another name", ErrInvalidName, req.Name)
	}
	certPath, keyPath = CertFile(dir, req.Name), KeyFile(dir, req.Name)
	if err := refuseExisting(certPath, keyPath); err != nil {
		return "", "", fmt.Errorf("certs: issue %s %q: %w", req.Role, req.Name, err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return "", "", err
	}
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		return "", "", err
	}
	if err := writePair(dir, certPath, keyPath, certPEM, keyPEM); err != nil {
		return "", "", fmt.Errorf("certs: issue %s %q: %w", req.Role, req.Name, err)
	}
	return certPath, keyPath, nil
}

// checkName validates a certificate name.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", ErrInvalidName)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w %q: longer than %d characters", ErrInvalidName, name, maxNameLen)
	}
	for _, c := range name {
		if !isNameChar(c) {
			return fmt.Errorf("%w %q: use only letters, digits, '.', '_' and '-'", ErrInvalidName, name)
		}
	}
	return nil
}

func isNameChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// validHostname reports whether s is a DNS hostname: dot-separated labels
// of 1 to 63 letters, digits and hyphens, not starting or ending with a
// hyphen, 253 characters at most.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validDNSName reports whether s is a hostname, optionally a wildcard
// ("*.example.com").
func validDNSName(s string) bool {
	return validHostname(strings.TrimPrefix(s, "*."))
}

// newKey generates an ECDSA P-256 key and returns it with its PKCS #8 PEM.
func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// newSerial returns a random, positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// refuseExisting returns an error wrapping ErrExists naming the first of
// paths that exists.
func refuseExisting(paths ...string) error {
	for _, p := range paths {
		_, err := os.Lstat(p)
		if err == nil {
			return fmt.Errorf("%s %w: remove it or choose another directory or name", p, ErrExists)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writePair creates dir if needed (mode 0700) and writes the key (0600)
// then the certificate (0644), never overwriting. If the certificate
// cannot be written the key is removed again.
func writePair(dir, certPath, keyPath string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

// writeNew writes data to a new file at path with mode perm and syncs it.
// It fails with ErrExists if path exists.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s %w: remove it or choose another directory or name", path, ErrExists)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
