package controller

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"jobsuite/certs"
	"jobsuite/controller/store"
)

// TestRevocationCoversRenewedCertificates: revoking an agent's
// certificate by serial also refuses the agent's other certificates
// issued before the revocation (one it renewed to), but not one issued
// after it.
func TestRevocationCoversRenewedCertificates(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rev := store.Revocation{Serial: "0a", Role: string(certs.RoleAgent), Name: "w1", At: at}
	sec := &security{revoked: map[string]store.Revocation{rev.ID(): rev}}
	leaf := func(serial int64, cn string, issued time.Time) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn, Organization: []string{"jobsuite"}, OrganizationalUnit: []string{"agent"}},
			NotBefore:    issued.Add(-time.Minute),
		}
	}
	tests := map[string]struct {
		cert   *x509.Certificate
		denied bool
	}{
		"the revoked serial":          {leaf(10, "w1", at.Add(-time.Hour)), true},
		"renewed before revocation":   {leaf(11, "w1", at.Add(-time.Second)), true},
		"issued after the revocation": {leaf(12, "w1", at.Add(2*time.Minute)), false},
		"another agent":               {leaf(13, "w2", at.Add(-time.Hour)), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, denied := sec.deniedCert(tc.cert); denied != tc.denied {
				t.Errorf("denied = %v, want %v", denied, tc.denied)
			}
		})
	}
}
