package store

import (
	"bytes"
	"errors"
	"testing"
)

// A secret is made once and the same bytes come back, also after the
// store is reopened; a different length or bad arguments are errors.
func TestSecret(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Secret("quic-stateless-reset", 32)
	if err != nil || len(a) != 32 {
		t.Fatalf("Secret: %x, %v", a, err)
	}
	if bytes.Equal(a, make([]byte, 32)) {
		t.Fatal("the secret is all zeros")
	}
	other, err := s.Secret("another", 32)
	if err != nil || bytes.Equal(other, a) {
		t.Fatalf("a second secret: %x, %v; want other bytes", other, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.Secret("quic-stateless-reset", 32)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("after reopening: %x, %v; want %x", b, err, a)
	}
	if _, err := s.Secret("quic-stateless-reset", 16); err == nil {
		t.Error("a stored secret of 32 bytes was returned for 16")
	}
	for _, bad := range []struct {
		name string
		n    int
	}{{"", 32}, {"x", 0}} {
		if _, err := s.Secret(bad.name, bad.n); !errors.Is(err, ErrInvalid) {
			t.Errorf("Secret(%q, %d) = %v, want ErrInvalid", bad.name, bad.n, err)
		}
	}
}
