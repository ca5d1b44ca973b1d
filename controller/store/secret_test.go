package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
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
	}{{"", 32}, {"x", 0}, {"../x", 32}, {".hidden", 32}} {
		if _, err := s.Secret(bad.name, bad.n); !errors.Is(err, ErrInvalid) {
			t.Errorf("Secret(%q, %d) = %v, want ErrInvalid", bad.name, bad.n, err)
		}
	}
}

// The secret is node-local: a file under node/ of the data directory,
// not a key (a replica copies the keys), readable by its owner only.
func TestSecretIsAFile(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	a, err := s.Secret("quic-stateless-reset", 32)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "node", "quic-stateless-reset")
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("%s: %x, %v; want %x", path, got, err, a)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, %v; want 0600", path, fi.Mode(), err)
	}
	if n := countPrefix(t, s, prefixSecret); n != 0 {
		t.Errorf("%d secret keys in the store, want 0", n)
	}
}

// A directory of schema 3 kept its secrets under "c": Open moves them to
// files (the bytes unchanged) and deletes the keys; a file already there
// wins.
func TestSecretMigration(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{7}, 32)
	kept := bytes.Repeat([]byte{9}, 32)
	// As schema 3 wrote them.
	for name, v := range map[string][]byte{"quic-stateless-reset": old, "other": bytes.Repeat([]byte{8}, 32)} {
		if err := s.db.Set(append([]byte{prefixSecret}, name...), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeFileSynced(filepath.Join(dir, "node", "other"), kept); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	if n := countPrefix(t, s, prefixSecret); n != 0 {
		t.Errorf("%d secret keys left in the store, want 0", n)
	}
	for name, want := range map[string][]byte{"quic-stateless-reset": old, "other": kept} {
		if got, err := s.Secret(name, 32); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Secret(%q) = %x, %v; want %x", name, got, err, want)
		}
	}
}
