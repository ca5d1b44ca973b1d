package controller

import (
	"crypto/x509"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"jobsuite/certs"
)

// TestForwardedCertVerifiedOnce: a forwarded client certificate is
// parsed and verified once, then served from the cache within its
// chain's validity; another CA's certificate, garbage, and a cached
// certificate past its validity are refused.
func TestForwardedCertVerifiedOnce(t *testing.T) {
	issue := func(dir string) (string, *x509.CertPool) {
		t.Helper()
		if err := certs.CreateCA(dir); err != nil {
			t.Fatal(err)
		}
		ca, err := certs.LoadCA(dir)
		if err != nil {
			t.Fatal(err)
		}
		pemBytes, _, err := ca.Issue(certs.Request{Role: certs.RoleOperator, Name: "alice", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		cs, err := certs.ParseCertificatesPEM(pemBytes)
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := os.ReadFile(certs.CAFile(dir))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			t.Fatal("no CA certificate in", certs.CAFile(dir))
		}
		return base64.StdEncoding.EncodeToString(cs[0].Raw), pool
	}
	ours, pool := issue(t.TempDir())
	theirs, _ := issue(t.TempDir())

	var c verifiedCerts
	now := time.Now()
	v1, err := c.verify(ours, pool, now)
	if err != nil {
		t.Fatal(err)
	}
	if v1.cert.Subject.CommonName != "alice" || len(v1.chains) == 0 {
		t.Fatalf("verified %+v", v1)
	}
	v2, err := c.verify(ours, pool, now.Add(time.Minute))
	if err != nil || v2 != v1 {
		t.Fatalf("second verify: %p %v, want the cached %p", v2, err, v1)
	}
	if _, err := c.verify(theirs, pool, now); err == nil {
		t.Fatal("another CA's certificate verified")
	}
	if _, err := c.verify("not base64!", pool, now); err == nil || !strings.Contains(err.Error(), "forwarded certificate") {
		t.Fatalf("garbage: %v", err)
	}
	if _, err := c.verify(ours, pool, v1.until.Add(time.Second)); err == nil {
		t.Fatal("a cached certificate verified after it expired")
	}
}
