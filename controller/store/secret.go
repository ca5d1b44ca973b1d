package store

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// prefixSecret holds the controller's own secrets by name (doc.go).
const prefixSecret = 'c'

// Secret returns the controller secret called name: n random bytes
// created, and synced, the first time it is asked for and the same
// bytes on every later call and start. The controller uses one to key
// QUIC stateless resets, which must survive a restart to be of use.
// A stored secret of another length is an error, not replaced.
func (s *Store) Secret(name string, n int) ([]byte, error) {
	if name == "" || n <= 0 {
		return nil, fmt.Errorf("store: secret %q of %d bytes: %w", name, n, ErrInvalid)
	}
	if !s.acquire() {
		return nil, fmt.Errorf("store: secret %q: %w", name, ErrClosed)
	}
	defer s.mu.RUnlock()
	s.secretMu.Lock()
	defer s.secretMu.Unlock()
	key := append([]byte{prefixSecret}, name...)
	v, closer, err := s.db.Get(key)
	switch {
	case err == nil:
		defer closer.Close()
		if len(v) != n {
			return nil, fmt.Errorf("store: secret %q is %d bytes, want %d", name, len(v), n)
		}
		return append([]byte(nil), v...), nil
	case !errors.Is(err, pebble.ErrNotFound):
		return nil, fmt.Errorf("store: secret %q: %w", name, err)
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("store: secret %q: %w", name, err)
	}
	if err := s.db.Set(key, b, pebble.Sync); err != nil {
		return nil, fmt.Errorf("store: secret %q: %w", name, err)
	}
	return b, nil
}
