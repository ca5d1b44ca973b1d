package store

import (
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
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, fmt.Errorf("store: log end of job %d: %w", id, err)
	}
	e, err := decodeLogEntry(it.Key(), v)
	if err != nil {
		return 0, fmt.Errorf("store: log end of job %d: %w", id, err)
	}
	return e.off + uint64(len(e.data)), nil
}
