package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// defaultReadLog is ReadLog's byte budget when max <= 0.
const defaultReadLog = 1 << 20

// A chunk of output is stored in one of two forms (doc.go, key layout),
// told apart by the length of the key, so that neither can be mistaken
// for the other whatever bytes the value holds:
//
//	"l" id(8) offset(8)            stream(1) data            untimed: before chunk times
//	"l" id(8) offset(8) format(1)  stream(1) time(8) data    format 1: with the time
//
// Output commands write format 1; both are read. time is Unix nanoseconds,
// big-endian (0: unknown).
const (
	logKeyLen      = 17
	logKeyTimedLen = logKeyLen + 1
	logFormatTimed = 1
	logTimedHeader = 1 + 8 // stream, time
)

// timedLogKey is the key of a chunk stored with its time.
func timedLogKey(id, offset uint64) []byte {
	return append(logKey(id, offset), logFormatTimed)
}

// logEntry is one stored chunk as it is in the store: Data aliases the
// value.
type logEntry struct {
	off    uint64
	stream uint8
	time   time.Time
	data   []byte
}

// decodeLogEntry reads a stored chunk of either form. A key or value
// that fits neither is malformed.
func decodeLogEntry(k, v []byte) (logEntry, error) {
	var e logEntry
	switch {
	case len(k) == logKeyLen:
		if len(v) < 2 {
			return e, fmt.Errorf("chunk at offset %d: malformed value (%d bytes)", binary.BigEndian.Uint64(k[9:]), len(v))
		}
		e.stream, e.data = v[0], v[1:]
	case len(k) == logKeyTimedLen && k[logKeyLen] == logFormatTimed:
		if len(v) < logTimedHeader+1 {
			return e, fmt.Errorf("chunk at offset %d: malformed value (%d bytes)", binary.BigEndian.Uint64(k[9:]), len(v))
		}
		e.stream, e.data = v[0], v[logTimedHeader:]
		if ns := binary.BigEndian.Uint64(v[1:]); ns != 0 && ns <= math.MaxInt64 {
			e.time = time.Unix(0, int64(ns)).UTC()
		}
	default:
		return e, fmt.Errorf("malformed chunk key %x", k)
	}
	e.off = binary.BigEndian.Uint64(k[9:17])
	return e, nil
}

// Sync makes every batch applied so far durable. It writes nothing but
// a WAL record; with Options.NoSync it only orders writes.
func (s *Store) Sync() error {
	if !s.acquire() {
		return fmt.Errorf("store: sync: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	if err := s.db.LogData(nil, s.write); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

// ReadLog returns job id's output from offset from on, in offset order:
// the chunk containing from is trimmed to start exactly at from, and
// later chunks follow until about max bytes (max <= 0 means 1 MiB) are
// returned; the last chunk is cut so the total never exceeds max. Bytes
// stored twice by overlapping chunks are returned once. Reading at or past
// the end returns no chunks and no error, as does an unknown job. The
// returned Data are copies the caller may keep. Each chunk has the Time
// it was stored with (zero for chunks stored before times were kept); a
// chunk cut at from keeps its time.
func (s *Store) ReadLog(id uint64, from uint64, max int) ([]Chunk, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: read log of job %d: %w", id, ErrClosed)
	}
	defer s.mu.RUnlock()
	chunks, err := s.readLog(id, from, max)
	if err != nil {
		return nil, fmt.Errorf("store: read log of job %d: %w", id, err)
	}
	return chunks, nil
}

func (s *Store) readLog(id, from uint64, limit int) ([]Chunk, error) {
	if limit <= 0 {
		limit = defaultReadLog
	}
	prefix := logKey(id, 0)[:9]
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	// Start at the last chunk beginning at or before from: it may
	// contain from. If there is none, start at the first chunk.
	var ok bool
	if from == math.MaxUint64 {
		ok = it.Last()
	} else {
		ok = it.SeekLT(logKey(id, from+1))
	}
	if !ok {
		ok = it.First()
	}
	var (
		chunks []Chunk
		pos    = from // first byte not yet returned
		total  int
	)
	for ; ok && total < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		e, err := decodeLogEntry(it.Key(), v)
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		off, data := e.off, e.data
		end := off + uint64(len(data))
		if end <= pos {
			continue // entirely before from, or covered by an earlier chunk
		}
		if off < pos {
			data = data[pos-off:]
			off = pos
		}
		if n := limit - total; len(data) > n {
			data = data[:n]
		}
		chunks = append(chunks, Chunk{Offset: off, Stream: e.stream, Data: append([]byte(nil), data...), Time: e.time})
		total += len(data)
		pos = off + uint64(len(data))
	}
	return chunks, errors.Join(it.Error(), it.Close())
}
