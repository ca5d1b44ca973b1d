package store

import (
	"encoding/binary"
	"math"
	"time"
)

// Key prefixes; see doc.go for the full layout.
const (
	prefixVersion = 'v'
	prefixJob     = 'j'
	prefixQueue   = 'q'
	prefixDelay   = 'd'
	prefixActive  = 'a'
	prefixState   = 's'
	prefixDone    = 'f'
	prefixEvent   = 'e'
	prefixLog     = 'l'
	prefixIdem    = 'k'
	// prefixRepair holds the output channel's repair queue: node-local,
	// skipped by Dump (replica.go).
	prefixRepair = 'y'
)

var versionKey = []byte{prefixVersion}

func jobKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixJob
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

// queueKey orders the queue: priority descending, then QueuedAt, then ID.
func queueKey(j *Job) []byte { return queueKeyAt(j.Priority, nanos(j.QueuedAt), j.ID) }

func queueKeyAt(priority int, queuedAt, id uint64) []byte {
	k := make([]byte, 18)
	k[0] = prefixQueue
	k[1] = 255 - uint8(min(max(priority, 0), 255))
	binary.BigEndian.PutUint64(k[2:], queuedAt)
	binary.BigEndian.PutUint64(k[10:], id)
	return k
}

func delayKey(j *Job) []byte { return delayKeyAt(nanos(j.NotBefore), j.ID) }

func delayKeyAt(notBefore, id uint64) []byte {
	k := make([]byte, 17)
	k[0] = prefixDelay
	binary.BigEndian.PutUint64(k[1:], notBefore)
	binary.BigEndian.PutUint64(k[9:], id)
	return k
}

func activeKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixActive
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

// stateCodes gives each state its byte in the state index. Codes are only
// added, never reused.
var stateCodes = map[State]byte{
	Queued: 1, Waiting: 2, Dispatched: 3, Running: 4,
	Completed: 5, Failed: 6, Timeout: 7, Cancelled: 8,
	Blocked: 9,
}

// stateKey returns j's key in the state index, or nil for a state without
// a code.
func stateKey(j *Job) []byte {
	code, ok := stateCodes[j.State]
	if !ok {
		return nil
	}
	return stateIDKey(code, j.ID)
}

// stateIDKey returns the state index key of job id in the state with code.
func stateIDKey(code byte, id uint64) []byte {
	k := make([]byte, 10)
	k[0] = prefixState
	k[1] = code
	binary.BigEndian.PutUint64(k[2:], id)
	return k
}

// doneKey orders finished jobs by FinishedAt, then ID; nil for a job that
// has not finished.
func doneKey(j *Job) []byte {
	if !j.State.Terminal() {
		return nil
	}
	return doneKeyAt(nanos(j.FinishedAt), j.ID)
}

func doneKeyAt(finishedAt, id uint64) []byte {
	k := make([]byte, 17)
	k[0] = prefixDone
	binary.BigEndian.PutUint64(k[1:], finishedAt)
	binary.BigEndian.PutUint64(k[9:], id)
	return k
}

func eventKey(id uint64, seq uint32) []byte {
	k := make([]byte, 13)
	k[0] = prefixEvent
	binary.BigEndian.PutUint64(k[1:], id)
	binary.BigEndian.PutUint32(k[9:], seq)
	return k
}

func logKey(id, offset uint64) []byte {
	k := make([]byte, 17)
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], id)
	binary.BigEndian.PutUint64(k[9:], offset)
	return k
}

func repairKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixRepair
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

func idemKey(key string) []byte {
	return append([]byte{prefixIdem}, key...)
}

// indexKey returns the index key a job in its state occupies, or nil for
// states without an index (terminal ones).
func indexKey(j *Job) []byte {
	switch {
	case j.State == Queued:
		return queueKey(j)
	case j.State == Waiting:
		return delayKey(j)
	case j.State.Active():
		return activeKey(j.ID)
	}
	return nil
}

// nanos encodes t as unsigned Unix nanoseconds so that byte order is time
// order. The zero time and times before 1970 encode as 0; times past the
// int64 range (year 2262) as the maximum.
func nanos(t time.Time) uint64 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	if t.Unix() >= math.MaxInt64/int64(time.Second) {
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

// prefixEnd returns the smallest key greater than every key starting with
// p, or nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
