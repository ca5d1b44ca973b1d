package certs

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newTestCA creates a CA in a fresh temporary directory and loads it.
func newTestCA(t *testing.T) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := CreateCA(dir); err != nil {
		t.Fatalf("CreateCA: %v", err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return ca, dir
}

// issue issues req from ca and returns the parsed key pair.
func issue(t *testing.T, ca *CA, req Request) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", req, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("X509KeyPair: %v", err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			t.Fatal(err)
		}
	}
	return pair
}

// issueCustom issues a certificate for req after mutate has changed its
// template, to build certificates Issue would never make.
func issueCustom(t *testing.T, ca *CA, req Request, mutate func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	tmpl, err := ca.template(req)
	if err != nil {
		t.Fatal(err)
	}
	mutate(tmpl)
	key, keyPEM, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(encodeCert(der), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pair.Leaf, _ = x509.ParseCertificate(der)
	return pair
}

func pool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCreateLoadCA(t *testing.T) {
	ca, dir := newTestCA(t)
	if ca.Cert.Subject.CommonName != "jobsuite CA" || !ca.Cert.IsCA {
		t.Errorf("CA subject %q IsCA %v, want \"jobsuite CA\" true", ca.Cert.Subject.CommonName, ca.Cert.IsCA)
	}
	if _, ok := ca.Key.Public().(*ecdsa.PublicKey); !ok {
		t.Errorf("CA key is %T, want ECDSA", ca.Key.Public())
	}
	if !ca.Cert.PublicKey.(*ecdsa.PublicKey).Equal(ca.Key.Public()) {
		t.Error("CA key does not match its certificate")
	}
	years := time.Until(ca.Cert.NotAfter).Hours() / 24 / 365
	if years < 9.9 || years > 10.1 {
		t.Errorf("CA valid for %.2f years, want 10", years)
	}
	if got := fileMode(t, filepath.Join(dir, "ca-key.pem")); got != 0o600 {
		t.Errorf("ca-key.pem mode %o, want 600", got)
	}
	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("PKI dir mode %o, want 700", got)
	}
	if CAFile(dir) != filepath.Join(dir, "ca.pem") {
		t.Errorf("CAFile = %q", CAFile(dir))
	}
	if _, err := RoleOf(ca.Cert); !errors.Is(err, ErrNoRole) {
		t.Errorf("RoleOf(CA) error %v, want ErrNoRole", err)
	}
	if _, err := LoadCA(t.TempDir()); err == nil || !strings.Contains(err.Error(), "tls ca create") {
		t.Errorf("LoadCA(empty dir) error %v, want a hint to create a CA", err)
	}
}

func TestCreateCAExists(t *testing.T) {
	tests := map[string][]string{
		"both files": {"ca.pem", "ca-key.pem"},
		"only cert":  {"ca.pem"},
		"only key":   {"ca-key.pem"},
	}
	for name, files := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("old"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := CreateCA(dir)
			if !errors.Is(err, ErrExists) {
				t.Fatalf("CreateCA error %v, want ErrExists", err)
			}
			if !strings.Contains(err.Error(), files[0]) {
				t.Errorf("error %q does not name %s", err, files[0])
			}
			for _, f := range []string{"ca.pem", "ca-key.pem"} {
				data, err := os.ReadFile(filepath.Join(dir, f))
				switch {
				case slices.Contains(files, f) && string(data) != "old":
					t.Errorf("%s was overwritten", f)
				case !slices.Contains(files, f) && err == nil:
					t.Errorf("%s was written", f)
				}
			}
		})
	}
}

func TestIssueRoles(t *testing.T) {
	ca, _ := newTestCA(t)
	tests := map[Role]struct {
		usage []x509.ExtKeyUsage
		dns   []string
		ips   []string
	}{
		RoleController: {
			usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			dns:   []string{"n1", "localhost"},
			ips:   []string{"127.0.0.1", "::1"},
		},
		RoleAgent:    {usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		RoleOperator: {usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		RoleViewer:   {usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for role, tt := range tests {
		t.Run(string(role), func(t *testing.T) {
			leaf := issue(t, ca, Request{Role: role, Name: "n1"}).Leaf
			got, err := RoleOf(leaf)
			if err != nil || got != role {
				t.Fatalf("RoleOf = %q, %v; want %q", got, err, role)
			}
			if leaf.Subject.CommonName != "n1" || !slices.Equal(leaf.Subject.Organization, []string{"jobsuite"}) ||
				!slices.Equal(leaf.Subject.OrganizationalUnit, []string{string(role)}) {
				t.Errorf("subject %v", leaf.Subject)
			}
			if !slices.Equal(leaf.ExtKeyUsage, tt.usage) {
				t.Errorf("ExtKeyUsage %v, want %v", leaf.ExtKeyUsage, tt.usage)
			}
			if !slices.Equal(leaf.DNSNames, tt.dns) {
				t.Errorf("DNS SANs %q, want %q", leaf.DNSNames, tt.dns)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.ips) {
				t.Errorf("IP SANs %q, want %q", ips, tt.ips)
			}
			if leaf.IsCA {
				t.Error("leaf is a CA")
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", leaf.SerialNumber)
			}
			if d := time.Since(leaf.NotBefore); d < 50*time.Second || d > 2*time.Minute {
				t.Errorf("NotBefore %v ago, want about 1m", d)
			}
			if d := time.Until(leaf.NotAfter) - DefaultTTL; d < -time.Minute || d > time.Minute {
				t.Errorf("NotAfter off the 1 year default by %v", d)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: tt.usage}); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestControllerSANs(t *testing.T) {
	ca, _ := newTestCA(t)
	tests := map[string]struct {
		req     Request
		wantDNS []string
		wantIPs []string
	}{
		"hostname name": {
			req:     Request{Name: "ctl.example.com"},
			wantDNS: []string{"ctl.example.com", "localhost"},
			wantIPs: []string{"127.0.0.1", "::1"},
		},
		"non-hostname name": {
			req:     Request{Name: "ctl_1"},
			wantDNS: []string{"localhost"},
			wantIPs: []string{"127.0.0.1", "::1"},
		},
		"ip name": {
			req:     Request{Name: "10.1.2.3"},
			wantDNS: []string{"localhost"},
			wantIPs: []string{"10.1.2.3", "127.0.0.1", "::1"},
		},
		"extra SANs deduplicated": {
			req: Request{Name: "ctl", DNS: []string{"a.example", "*.b.example", "LOCALHOST", "a.example"},
				IPs: []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("127.0.0.1"), net.ParseIP("2001:db8::1")}},
			wantDNS: []string{"a.example", "*.b.example", "LOCALHOST", "ctl"},
			wantIPs: []string{"192.0.2.1", "127.0.0.1", "2001:db8::1", "::1"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			tt.req.Role = RoleController
			leaf := issue(t, ca, tt.req).Leaf
			if !slices.Equal(leaf.DNSNames, tt.wantDNS) {
				t.Errorf("DNS SANs %q, want %q", leaf.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IP SANs %q, want %q", ips, tt.wantIPs)
			}
		})
	}

	leaf := issue(t, ca, Request{Role: RoleAgent, Name: "a1", DNS: []string{"w1.example"}, IPs: []net.IP{net.ParseIP("192.0.2.7")}}).Leaf
	if !slices.Equal(leaf.DNSNames, []string{"w1.example"}) || len(leaf.IPAddresses) != 1 {
		t.Errorf("agent SANs %q %v, want only the requested ones", leaf.DNSNames, leaf.IPAddresses)
	}
}

func TestIssueInvalid(t *testing.T) {
	ca, _ := newTestCA(t)
	tests := map[string]struct {
		req  Request
		want error
	}{
		"empty name":        {Request{Role: RoleAgent, Name: ""}, ErrInvalidName},
		"65 characters":     {Request{Role: RoleAgent, Name: strings.Repeat("a", 65)}, ErrInvalidName},
		"slash":             {Request{Role: RoleAgent, Name: "../a"}, ErrInvalidName},
		"space":             {Request{Role: RoleAgent, Name: "a b"}, ErrInvalidName},
		"non-ascii":         {Request{Role: RoleAgent, Name: "agént"}, ErrInvalidName},
		"bad DNS SAN":       {Request{Role: RoleController, Name: "c", DNS: []string{"bad_host"}}, ErrInvalidName},
		"empty DNS SAN":     {Request{Role: RoleController, Name: "c", DNS: []string{""}}, ErrInvalidName},
		"nil IP":            {Request{Role: RoleController, Name: "c", IPs: []net.IP{nil}}, ErrInvalidName},
		"unknown role":      {Request{Role: "admin", Name: "a"}, ErrInvalidRole},
		"empty role":        {Request{Name: "a"}, ErrInvalidRole},
		"negative ttl":      {Request{Role: RoleAgent, Name: "a", TTL: -time.Hour}, ErrInvalidTTL},
		"ttl over 825 days": {Request{Role: RoleAgent, Name: "a", TTL: MaxTTL + time.Hour}, ErrInvalidTTL},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := ca.Issue(tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Issue error %v, want %v", err, tt.want)
			}
			_, _, err = IssueFiles(t.TempDir(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("IssueFiles error %v, want %v", err, tt.want)
			}
		})
	}

	valid := []string{"a", strings.Repeat("a", 64), "ctl-1.example_2", "A.B"}
	for _, n := range valid {
		if _, _, err := ca.Issue(Request{Role: RoleAgent, Name: n}); err != nil {
			t.Errorf("Issue(name %q): %v", n, err)
		}
	}
}

func TestIssueTTL(t *testing.T) {
	ca, _ := newTestCA(t)
	short := *ca
	cert := *ca.Cert
	cert.NotAfter = time.Now().Add(48 * time.Hour)
	short.Cert = &cert

	tests := map[string]struct {
		ca   *CA
		ttl  time.Duration
		want time.Duration
	}{
		"default":          {ca, 0, DefaultTTL},
		"two hours":        {ca, 2 * time.Hour, 2 * time.Hour},
		"max":              {ca, MaxTTL, MaxTTL},
		"cut to CA expiry": {&short, DefaultTTL, 48 * time.Hour},
		"inside CA expiry": {&short, time.Hour, time.Hour},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			leaf := issue(t, tt.ca, Request{Role: RoleViewer, Name: "v", TTL: tt.ttl}).Leaf
			if d := time.Until(leaf.NotAfter) - tt.want; d < -time.Minute || d > time.Minute {
				t.Errorf("NotAfter in %v, want %v", time.Until(leaf.NotAfter), tt.want)
			}
		})
	}
}

func TestIssueFiles(t *testing.T) {
	_, dir := newTestCA(t)
	certPath, keyPath, err := IssueFiles(dir, Request{Role: RoleAgent, Name: "worker-1"})
	if err != nil {
		t.Fatal(err)
	}
	if certPath != CertFile(dir, "worker-1") || certPath != filepath.Join(dir, "worker-1.pem") {
		t.Errorf("cert path %q", certPath)
	}
	if keyPath != KeyFile(dir, "worker-1") || keyPath != filepath.Join(dir, "worker-1-key.pem") {
		t.Errorf("key path %q", keyPath)
	}
	if got := fileMode(t, keyPath); got != 0o600 {
		t.Errorf("key mode %o, want 600", got)
	}
	pair, err := LoadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if pair.Leaf == nil || pair.Leaf.Subject.CommonName != "worker-1" {
		t.Fatalf("Leaf %v", pair.Leaf)
	}
	before, _ := os.ReadFile(keyPath)

	tests := map[string]struct {
		dir  string
		req  Request
		want error
	}{
		"same name again": {dir, Request{Role: RoleOperator, Name: "worker-1"}, ErrExists},
		"reserved ca":     {dir, Request{Role: RoleOperator, Name: "ca"}, ErrInvalidName},
		"no CA":           {t.TempDir(), Request{Role: RoleOperator, Name: "op"}, os.ErrNotExist},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := IssueFiles(tt.dir, tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("IssueFiles error %v, want %v", err, tt.want)
			}
		})
	}
	if after, _ := os.ReadFile(keyPath); string(after) != string(before) {
		t.Error("existing key was overwritten")
	}
}

func TestParseRole(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    Role
		wantErr bool
	}{
		"controller":    {"controller", RoleController, false},
		"agent":         {"agent", RoleAgent, false},
		"operator":      {"operator", RoleOperator, false},
		"viewer":        {"viewer", RoleViewer, false},
		"upper case":    {" Agent ", RoleAgent, false},
		"unknown":       {"admin", "", true},
		"empty":         {"", "", true},
		"ca is no role": {"ca", "", true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseRole(tt.in)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("ParseRole(%q) = %q, %v", tt.in, got, err)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidRole) {
					t.Errorf("error %v is not ErrInvalidRole", err)
				}
				if !strings.Contains(err.Error(), "controller, agent, operator, viewer") {
					t.Errorf("error %q does not list the valid roles", err)
				}
			}
		})
	}
}

func TestRoleOfRefuses(t *testing.T) {
	ca, _ := newTestCA(t)
	tests := map[string]func(*x509.Certificate){
		"no organization":    func(c *x509.Certificate) { c.Subject.Organization = nil },
		"other organization": func(c *x509.Certificate) { c.Subject.Organization = []string{"acme"} },
		"no role":            func(c *x509.Certificate) { c.Subject.OrganizationalUnit = nil },
		"two roles":          func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"agent", "operator"} },
		"unknown role":       func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"admin"} },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			leaf := issueCustom(t, ca, Request{Role: RoleAgent, Name: "x"}, mutate).Leaf
			if role, err := RoleOf(leaf); !errors.Is(err, ErrNoRole) {
				t.Fatalf("RoleOf = %q, %v; want ErrNoRole", role, err)
			}
		})
	}
	if _, err := RoleOf(nil); !errors.Is(err, ErrNoRole) {
		t.Errorf("RoleOf(nil) error %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	ca, _ := newTestCA(t)
	sum := sha256.Sum256(ca.Cert.Raw)
	got := Fingerprint(ca.Cert)
	if got != hex.EncodeToString(sum[:]) || len(got) != 64 || strings.ToLower(got) != got {
		t.Errorf("Fingerprint = %q", got)
	}
}

func TestFilesLoad(t *testing.T) {
	_, dir := newTestCA(t)
	certPath, keyPath, err := IssueFiles(dir, Request{Role: RoleOperator, Name: "op"})
	if err != nil {
		t.Fatal(err)
	}
	otherCert, _, err := IssueFiles(dir, Request{Role: RoleOperator, Name: "op2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := (Files{CA: CAFile(dir), Cert: certPath, Key: keyPath}).Load(); err != nil {
		t.Fatalf("Load: %v", err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := map[string]struct {
		files Files
		want  string // in the error
	}{
		"no CA given":   {Files{Cert: certPath, Key: keyPath}, "no CA certificate file"},
		"missing CA":    {Files{CA: missing, Cert: certPath, Key: keyPath}, missing},
		"CA not PEM":    {Files{CA: keyPath, Cert: certPath, Key: keyPath}, "no PEM certificate"},
		"missing cert":  {Files{CA: CAFile(dir), Cert: missing, Key: keyPath}, missing},
		"missing key":   {Files{CA: CAFile(dir), Cert: certPath, Key: missing}, missing},
		"key mismatch":  {Files{CA: CAFile(dir), Cert: otherCert, Key: keyPath}, "is the key of " + otherCert},
		"no cert given": {Files{CA: CAFile(dir), Key: keyPath}, "no certificate file"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := tt.files.Load()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := LoadPool(missing); err == nil {
		t.Error("LoadPool(missing) succeeded")
	}
}
