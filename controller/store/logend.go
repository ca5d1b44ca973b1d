package store

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// LogEnd returns the end offset of job id's stored output: the offset
// after its last byte (0 when it has none). The controller uses it to
// resume an attempt's output after a restart.
func (s *Store) LogEnd(id uint64) (uint64, error) {
	if !s.acquire() {
		return 0, fmt.Errorf("store: log end of job %d: %w", id, ErrClosed)
	}
	defer s.mu.RUnlock()
	prefix := logKey(id, 0)[:9]
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, fmt.Errorf("store: log end of job %d: %w", id, err)
	}
	defer it.Close()
	if !it.Last() {
		return 0, it.Error()
	}
	k, v := it.Key(), it.Value()
	if len(k) != 17 || len(v) < 1 {
		return 0, fmt.Errorf("store: log end of job %d: malformed chunk key", id)
	}
	return binary.BigEndian.Uint64(k[9:]) + uint64(len(v)-1), nil
}
