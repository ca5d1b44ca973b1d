package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// DefaultPruneBatch is PruneOptions.MaxBatch when it is 0.
const DefaultPruneBatch = 1000

// PruneOptions selects the finished jobs Prune removes. The zero value
// removes nothing.
type PruneOptions struct {
	// FinishedBefore removes jobs that finished before it. The zero time
	// turns the age limit off.
	FinishedBefore time.Time
	// KeepNewest removes the jobs that finished first while more than
	// KeepNewest finished jobs are stored. 0 or less turns the count
	// limit off.
	KeepNewest int
	// MaxBatch is how many jobs one synced batch removes at most; 0 or
	// less means DefaultPruneBatch.
	MaxBatch int
}

// Prune removes finished jobs — those in a terminal state, which never
// change again — that finished before o.FinishedBefore, and the ones that
// finished first beyond the newest o.KeepNewest. It walks the finished
// index in finish order (FinishedAt, then ID). Removing a job deletes its
// record, events, output, index entries and idempotency key, so the key
// may be used again.
//
// Jobs are removed in synced batches of at most o.MaxBatch, each taking
// the store only as long as one batch, so Prune may run beside Apply and
// Close. It returns how many jobs it removed; when ctx ends between
// batches it stops with ctx's error. Only one Prune runs at a time.
//
// Output appended (AppendLog) for a job after it was removed is stored
// again under its ID; the controller accepts output only for attempts in
// progress, so that takes a job removed while one of its attempts was
// still streaming.
func (s *Store) Prune(ctx context.Context, o PruneOptions) (removed int, err error) {
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultPruneBatch
	}
	var from []byte // finished index key to resume at, past earlier batches' tombstones
	for {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("store: prune: %w", err)
		}
		n, more, err := s.pruneBatch(o, &from)
		removed += n
		if err != nil {
			return removed, fmt.Errorf("store: prune: %w", err)
		}
		if !more {
			return removed, nil
		}
	}
}

// pruneBatch removes up to o.MaxBatch jobs, starting at *from in the
// finished index, and moves *from past the entries it looked at. more
// reports that the batch was full, so another may find more to remove.
func (s *Store) pruneBatch(o PruneOptions, from *[]byte) (n int, more bool, err error) {
	if !s.acquire() {
		return 0, false, ErrClosed
	}
	defer s.mu.RUnlock()

	byAge := !o.FinishedBefore.IsZero()
	cutoff := nanos(o.FinishedBefore)
	excess := 0
	if o.KeepNewest > 0 {
		<-s.counted // Open's count of the finished index
		excess = int(s.finished.Load()) - o.KeepNewest
	}
	if (!byAge || cutoff == 0) && excess <= 0 {
		return 0, false, nil
	}

	snap := s.db.NewSnapshot()
	defer snap.Close()
	lower := []byte{prefixDone}
	if *from != nil {
		lower = *from
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefixDone + 1}})
	if err != nil {
		return 0, false, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	var (
		stale   int     // finished index entries without a job record
		last    []byte  // last finished index key looked at
		removed []State // the states of the jobs removed, for the state counts
	)
	for ok := it.First(); ok; ok = it.Next() {
		if n == o.MaxBatch {
			more = true
			break
		}
		k := it.Key()
		at := binary.BigEndian.Uint64(k[1:9])
		id := binary.BigEndian.Uint64(k[9:17])
		if !(byAge && at < cutoff) && excess <= 0 {
			break // every later entry finished later still
		}
		last = append(last[:0], k...)
		j, err := getJob(snap, id)
		if errors.Is(err, ErrNotFound) {
			// Cannot happen while Apply and Prune are the only writers.
			s.log.Warn("finished index entry without a job record, removing it", "job", id)
			_ = b.Delete(k, nil)
			stale++
			continue
		}
		if err != nil {
			_ = it.Close()
			return 0, false, fmt.Errorf("job %d: %w", id, err)
		}
		if !j.State.Terminal() {
			// Cannot happen either; the record is the truth, and a job
			// not finished is never removed.
			s.log.Warn("finished index entry disagrees with job record, skipping", "job", id, "state", j.State)
			continue
		}
		if err := deleteJob(b, snap, j); err != nil {
			_ = it.Close()
			return 0, false, fmt.Errorf("job %d: %w", id, err)
		}
		removed = append(removed, j.State)
		n++
		excess--
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, false, err
	}
	if n+stale == 0 {
		return 0, false, nil
	}
	add, counted := s.counts.begin()
	defer counted()
	if err := b.Commit(s.write); err != nil {
		return 0, false, err
	}
	for _, st := range removed {
		add(st, "")
	}
	s.finished.Add(-int64(n + stale))
	if last != nil {
		*from = append(last, 0) // the smallest key after last
	}
	return n, more, nil
}

// deleteJob adds the removal of finished job j, as read from snap, to b.
func deleteJob(b *pebble.Batch, snap *pebble.Snapshot, j *Job) error {
	_ = b.Delete(jobKey(j.ID), nil)
	for _, k := range indexKeys(j) {
		_ = b.Delete(k, nil)
	}
	events := eventKey(j.ID, 0)[:9]
	_ = b.DeleteRange(events, prefixEnd(events), nil)
	logs := logKey(j.ID, 0)[:9]
	_ = b.DeleteRange(logs, prefixEnd(logs), nil)
	if j.IdempotencyKey == "" {
		return nil
	}
	// The key is j's unless something is badly wrong; never free another
	// job's key. No create can claim it before this batch commits: it
	// finds the key taken.
	v, closer, err := snap.Get(idemKey(j.IdempotencyKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	owner := len(v) == 8 && binary.BigEndian.Uint64(v) == j.ID
	_ = closer.Close()
	if owner {
		_ = b.Delete(idemKey(j.IdempotencyKey), nil)
	}
	return nil
}
