package store

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// Stats are Pebble's figures for monitoring (the controller's /metrics).
type Stats struct {
	DiskBytes     uint64 // bytes the database uses on disk: tables, WAL, blobs, manifests
	Compactions   int64  // compactions since the store was opened
	WriteStalls   int64  // write stalls since the store was opened (writes delayed by a compaction backlog)
	MemtableBytes uint64 // bytes allocated by memtables and large batches
}

// Metrics returns the database's current Stats. It is cheap enough to
// call on every scrape; a closed store returns zero Stats.
func (s *Store) Metrics() Stats {
	if !s.acquire() {
		return Stats{}
	}
	defer s.mu.RUnlock()
	m := s.db.Metrics()
	return Stats{
		DiskBytes:     m.DiskSpaceUsage(),
		Compactions:   m.Compact.Count,
		WriteStalls:   s.stalls.Load(),
		MemtableBytes: m.MemTable.Size,
	}
}

// stallCounter counts Pebble's write stalls, which its Metrics do not:
// they are only reported to an EventListener.
type stallCounter struct{ atomic.Int64 }

func (c *stallCounter) listener() *pebble.EventListener {
	return &pebble.EventListener{
		WriteStallBegin: func(pebble.WriteStallBeginInfo) { c.Add(1) },
	}
}
