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
	// MaxBatch is how many jobs one PruneJobs command removes at most; 0 or
	// less means DefaultPruneBatch.
	MaxBatch int
}

// Prune removes finished jobs — those in a terminal state, which never
// change again — that finished before o.FinishedBefore, and the ones that
// finished first beyond the newest o.KeepNewest. It walks the finished
// index in finish order (FinishedAt, then ID) and hands each group of at
// most o.MaxBatch jobs to apply as one PruneJobs command: Prune chooses,
// the command removes (and skips a job that is no longer there). apply
// is whatever writes the caller's commands — the controller's committer,
// or Apply — and must return once the command is applied, so that the
// next group's choice sees it.
//
// A fan-out's children go with their parent, never before it: a child
// whose parent is still stored is passed over (the parent finishes after
// its children, so it is found later), and a parent's group also names
// all its children, so `GET /jobs?parent=ID` keeps listing every child
// of a parent it can still show. Such a group may exceed o.MaxBatch by
// the parent's children.
//
// Each group takes the store only as long as one batch, so Prune may run
// beside other writers and Close. It returns how many jobs it removed;
// when ctx ends between groups it stops with ctx's error. Only one
// Prune runs at a time.
func (s *Store) Prune(ctx context.Context, o PruneOptions, apply func(Command) (Result, error)) (removed int, err error) {
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultPruneBatch
	}
	var from []byte // finished index key to resume at, past earlier groups' tombstones
	for {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("store: prune: %w", err)
		}
		ids, more, err := s.pruneCandidates(o, &from)
		if err != nil {
			return removed, fmt.Errorf("store: prune: %w", err)
		}
		if len(ids) > 0 {
			res, err := apply(&PruneJobs{IDs: ids})
			removed += res.N
			if err != nil {
				return removed, fmt.Errorf("store: prune: %w", err)
			}
		}
		if !more {
			return removed, nil
		}
	}
}

// pruneCandidates returns up to o.MaxBatch jobs to remove, starting at
// *from in the finished index, and moves *from past the entries it
// looked at. more reports that the group is full, so another may find
// more to remove.
func (s *Store) pruneCandidates(o PruneOptions, from *[]byte) (ids []uint64, more bool, err error) {
	if !s.acquire() {
		return nil, false, ErrClosed
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
		return nil, false, nil
	}
	lower := []byte{prefixDone}
	if *from != nil {
		lower = *from
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefixDone + 1}})
	if err != nil {
		return nil, false, err
	}
	var last []byte // last finished index key looked at
	for ok := it.First(); ok; ok = it.Next() {
		if len(ids) >= o.MaxBatch {
			more = true
			break
		}
		k := it.Key()
		if len(k) != 17 {
			continue
		}
		at := binary.BigEndian.Uint64(k[1:9])
		if !(byAge && at < cutoff) && excess <= 0 {
			break // every later entry finished later still
		}
		last = append(last[:0], k...)
		id := binary.BigEndian.Uint64(k[9:17])
		parent, first, children, err := s.family(id)
		if err != nil {
			_ = it.Close()
			return nil, false, err
		}
		if parent != 0 {
			if found, err := s.exists(jobKey(parent)); err != nil {
				_ = it.Close()
				return nil, false, err
			} else if found {
				continue // goes with its parent (it finishes after its children)
			}
		}
		ids = append(ids, id)
		excess--
		for c := first; c < first+uint64(children); c++ {
			ids = append(ids, c) // PruneJobs skips one that is not finished
			excess--
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, false, err
	}
	if last != nil {
		*from = append(last, 0) // the smallest key after last
	}
	return ids, more, nil
}

// family returns a finished job's place in a fan-out: its parent (0 when
// it is not a child), and for a parent its children, first to
// first+children-1. A job that is gone has none.
func (s *Store) family(id uint64) (parent, first uint64, children int, err error) {
	v, closer, err := s.db.Get(jobKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, 0, nil
	}
	if err != nil {
		return 0, 0, 0, err
	}
	defer closer.Close()
	j := new(Job)
	if !decodeJobFast(v, j, nil) {
		*j = Job{}
		if err := jsonDecodeJob(v, j); err != nil {
			return 0, 0, 0, fmt.Errorf("job %d: %w", id, err)
		}
	}
	if f := j.Fanout(); f != nil {
		first, children = f.FirstChild, f.Children
	}
	return j.Parent(), first, children, nil
}

// exists reports whether key is stored.
func (s *Store) exists(key []byte) (bool, error) {
	_, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}
