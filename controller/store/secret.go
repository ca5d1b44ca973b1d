package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
)

// A controller's own secrets are node-local: they are not part of the
// state that commands change and that a replica would copy, so they are
// not in Pebble but in files under the node directory of the data
// directory (Pebble ignores files it did not name). Schema 3 kept them
// under the "c" prefix; Open moves them out (migrateSecrets).
const (
	nodeDir      = "node"
	prefixSecret = 'c' // retired: Open moves these keys to files
)

// Secret returns the controller secret called name: n random bytes
// created, and synced, the first time it is asked for and the same
// bytes on every later call and start. The controller uses one to key
// QUIC stateless resets, which must survive a restart to be of use.
// A stored secret of another length is an error, not replaced. It lives
// in the file node/NAME of the data directory, readable by its owner
// only; name must be a plain file name.
func (s *Store) Secret(name string, n int) ([]byte, error) {
	if name == "" || n <= 0 || name != filepath.Base(name) || name[0] == '.' {
		return nil, fmt.Errorf("store: secret %q of %d bytes: %w", name, n, ErrInvalid)
	}
	if !s.acquire() {
		return nil, fmt.Errorf("store: secret %q: %w", name, ErrClosed)
	}
	defer s.mu.RUnlock()
	s.secretMu.Lock()
	defer s.secretMu.Unlock()
	path := filepath.Join(s.dir, nodeDir, name)
	v, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(v) != n {
			return nil, fmt.Errorf("store: secret %q is %d bytes, want %d", name, len(v), n)
		}
		return v, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: secret %q: %w", name, err)
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("store: secret %q: %w", name, err)
	}
	if err := writeFileSynced(path, b); err != nil {
		return nil, fmt.Errorf("store: secret %q: %w", name, err)
	}
	return b, nil
}

// writeFileSynced writes data to path (mode 0600, in a directory of mode
// 0700) through a synced temporary file renamed into place, and syncs the
// directory: after a crash the file is either absent or complete.
func writeFileSynced(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing there
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// migrateSecrets moves the secrets schema 3 kept under "c" NAME to files
// node/NAME (a file already there wins) and deletes the keys, synced.
// Open runs it, as part of opening, before anything else writes.
func (s *Store) migrateSecrets() error {
	lower := []byte{prefixSecret}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return err
	}
	type secret struct {
		name string
		v    []byte
	}
	var found []secret
	for ok := it.First(); ok; ok = it.Next() {
		found = append(found, secret{string(it.Key()[1:]), bytes.Clone(it.Value())})
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	if len(found) == 0 {
		return nil
	}
	for _, sec := range found {
		if sec.name == "" || sec.name != filepath.Base(sec.name) || sec.name[0] == '.' {
			s.log.Warn("dropping a stored secret whose name is not a file name", "name", sec.name)
			continue
		}
		path := filepath.Join(s.dir, nodeDir, sec.name)
		if _, err := os.Stat(path); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := writeFileSynced(path, sec.v); err != nil {
			return fmt.Errorf("moving secret %q to %s: %w", sec.name, path, err)
		}
	}
	if err := s.db.DeleteRange(lower, prefixEnd(lower), pebble.Sync); err != nil {
		return err
	}
	s.log.Info("moved the controller's secrets out of the store into files", "dir", filepath.Join(s.dir, nodeDir), "secrets", len(found))
	return nil
}
