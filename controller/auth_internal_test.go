package controller

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"

	"jobsuite/certs"
)

// certIdentities works a certificate's identity out once, as
// certs.PeerIdentity and the serial in hex say, and stays bounded.
func TestCertIdentities(t *testing.T) {
	leaf := func(serial int64, role, name string) (tls.ConnectionState, *x509.Certificate) {
		c := &x509.Certificate{SerialNumber: big.NewInt(serial),
			Subject: pkix.Name{Organization: []string{"jobsuite"}, OrganizationalUnit: []string{role}, CommonName: name}}
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}, c
	}
	var ids certIdentities
	cs, c := leaf(0x1f2e, "operator", "alice")
	first, err := ids.of(cs, c)
	if err != nil {
		t.Fatal(err)
	}
	want := identity{Role: certs.RoleOperator, Name: "alice", Via: "certificate", Credential: "1f2e"}
	if *first != want {
		t.Errorf("identity %+v, want %+v", *first, want)
	}
	if again, _ := ids.of(cs, c); again != first {
		t.Error("the same certificate was worked out again")
	}
	// A certificate with no role is refused every time, and not kept.
	bad, badLeaf := leaf(7, "nobody", "x")
	for range 2 {
		if _, err := ids.of(bad, badLeaf); err == nil {
			t.Fatal("a certificate with no role has an identity")
		}
	}
	if _, kept := ids.m[badLeaf]; kept {
		t.Error("a refused certificate was kept")
	}
	for i := range 3 * maxCertIdentities {
		cs, c := leaf(int64(i+1), "viewer", "v")
		if _, err := ids.of(cs, c); err != nil {
			t.Fatal(err)
		}
		if n := len(ids.m); n > maxCertIdentities {
			t.Fatalf("%d certificates kept, more than %d", n, maxCertIdentities)
		}
	}
}
