package store

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Lock takes the data directory's lock, the one Open takes (Pebble's
// LOCK file: an fcntl write lock, and within one process a table of
// locked paths), without opening the store: a restore holds it while it
// replaces the directory, so no controller opens the store meanwhile.
// It fails with ErrLocked while a controller (or another Lock) holds it.
// dir must exist. Within one process the path must be spelled as the
// holder spelled it for the conflict to be seen (Pebble's table is keyed
// by path); across processes the kernel sees it whatever the spelling.
func Lock(dir string) (io.Closer, error) {
	l, err := pebble.LockDirectory(dir, vfs.Default)
	if isLocked(err) {
		return nil, fmt.Errorf("store: lock %s: %w: another process (a controller or 'jobsuite dev') holds its LOCK file; stop it first", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	return l, nil
}

// isLocked says whether err is Pebble's "someone holds the lock":
// EAGAIN from fcntl for another process, its own message for this one.
func isLocked(err error) bool {
	return err != nil && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		strings.Contains(err.Error(), "lock held by current process"))
}
