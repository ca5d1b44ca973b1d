// Package store is the controller's durable state: jobs, their queue and
// delay indexes, event history, captured output and idempotency keys, in
// one Pebble database. It is the only package that imports Pebble;
// callers declare the small interface they need.
//
// Every state transition is one Update (Prev → Next plus an Event), and
// Apply commits any number of them in a single synced batch: the job
// record, the index entries derived from Prev.State and Next.State, and
// the event change together or not at all, so a crash never leaves a job
// in two states or an acknowledged job missing. Concurrent Apply calls
// share fsyncs through Pebble's commit pipeline. Log chunks are written
// without sync and become durable with the next synced write.
//
// # Key layout
//
// Keys start with one prefix byte. Integers are fixed-width big-endian so
// that byte order equals numeric order; times are Unix nanoseconds as
// uint64 (the zero time and times before 1970 encode as 0).
//
//	key                                          value
//	"v"                                          schema version, uint32
//	"j" id(8)                                    Job as JSON
//	"q" (255-priority)(1) queuedAt(8) id(8)      empty: queue index, Queued jobs in
//	                                             dispatch order (priority desc, FIFO, ID)
//	"d" notBefore(8) id(8)                       empty: delay index, Waiting jobs
//	"a" id(8)                                    empty: Dispatched and Running jobs
//	"e" id(8) seq(4)                             Event as JSON; seq counts from 0
//	"l" id(8) offset(8)                          stream(1) + output bytes starting at offset
//	"k" idempotency key (raw bytes)              job id(8)
//
// Priority is clamped to 0..255 in the queue key. A job's index key is
// derived from its record (State, Priority, QueuedAt, NotBefore, ID), which
// is why Apply needs Prev: it deletes the key Prev occupied. ReadLog finds
// the chunk containing an offset with SeekLT on "l" id (offset+1).
//
// # Schema version
//
// Open writes SchemaVersion under "v" in an empty database and refuses,
// with ErrSchema, a database holding another version or data without a
// version. Bump SchemaVersion when existing data would be misread: a
// prefix changes meaning, a key or value encoding changes, an index is
// added that old data lacks (unless Open backfills it), or a JSON field
// changes type or meaning. Adding optional JSON fields to Job or Event, or
// a new prefix that old data simply does not have yet, does not need a
// bump.
package store
