package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// The output channel (controller/outchan, cluster mode unless
// Config.OutputInRaft): output travels beside raft, not in its rounds,
// so each node writes it to its own store with ReplicaOutput, and the
// rounds that end attempts carry a TruncateLog that cuts every node's
// copy of the job's log at the attempt's authoritative end.

// ErrNotYet is ReplicaOutput's result when the store does not hold the
// chunk's attempt yet: the round that dispatched it is not applied
// here. The caller waits for more rounds and applies it again.
var ErrNotYet = errors.New("attempt not applied yet")

// ErrStale is ReplicaOutput's result when nothing of the chunk belongs
// in the log any more: its attempt ended before the chunk's bytes, or
// the job is gone.
var ErrStale = errors.New("output of an ended attempt")

// ReplicaOutput stores a chunk of attempt Attempt's output that arrived
// on the output channel, at its offset in the job's log, after checking
// the job's record as this store holds it:
//   - no such attempt yet (the job unknown, or fewer attempts): nothing
//     is written, ErrNotYet;
//   - the attempt is the job's current one and has not ended: the chunk
//     is written;
//   - the attempt ended: only the part below its end (the next
//     attempt's LogStart, or the job's LogBytes for the last attempt)
//     is written; nothing, ErrStale, if no byte is below it.
//
// So a chunk can never land in a range that belongs to a later attempt,
// whatever order it and the rounds arrive in: the rounds that end
// attempts are applied through the same serialized apply path, and the
// TruncateLog in such a round removes what was written past the end
// before it. It is never carried in a round (it has no type number: it
// is node-local, decided by each node's own store) and must be applied
// in a batch of its own, since it reads the job's record from the
// store, not from earlier commands of its batch.
type ReplicaOutput struct {
	Job     uint64
	Attempt uint32
	Chunk   Chunk
}

func (o *ReplicaOutput) check() error {
	if o.Attempt == 0 {
		return fmt.Errorf("%w: job %d: replica output of attempt 0", ErrInvalid, o.Job)
	}
	return (&Output{Job: o.Job, Chunk: o.Chunk}).check()
}

func (o *ReplicaOutput) apply(r *round) (Result, error) {
	j, err := getJob(r.s.db, o.Job)
	if errors.Is(err, ErrNotFound) {
		if o.Job > r.s.stored {
			return Result{Err: fmt.Errorf("store: replica output of job %d: %w", o.Job, ErrNotYet)}, nil
		}
		return Result{Err: fmt.Errorf("store: replica output of job %d: %w: job not found", o.Job, ErrStale)}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("job %d: %w", o.Job, err)
	}
	n := int(o.Attempt)
	if n > len(j.Attempts) {
		return Result{Err: fmt.Errorf("store: replica output of job %d attempt %d: %w", o.Job, o.Attempt, ErrNotYet)}, nil
	}
	c := o.Chunk
	if end, ended := attemptEnd(j, n); ended {
		if c.Offset >= end {
			return Result{Err: fmt.Errorf("store: replica output of job %d attempt %d at %d: %w (it ended at %d)", o.Job, o.Attempt, c.Offset, ErrStale, end)}, nil
		}
		if c.Offset+uint64(len(c.Data)) > end {
			c.Data = c.Data[:end-c.Offset]
		}
	}
	return (&Output{Job: o.Job, Chunk: c}).apply(r)
}

// attemptEnd returns where attempt n (1-based) of j ended in the job's
// log, and false while it is the job's current, unfinished attempt.
func attemptEnd(j *Job, n int) (uint64, bool) {
	if n < len(j.Attempts) {
		return j.Attempts[n].LogStart, true
	}
	a := &j.Attempts[n-1]
	if a.Outcome == "" && !j.State.Terminal() {
		return 0, false
	}
	return j.LogBytes, true
}

// TruncateLog removes job Job's output at and beyond offset At: a round
// that ends an attempt whose output came on the output channel carries
// one with the attempt's LogBytes, so that bytes a node stored beyond
// what a quorum acknowledged (a deposed leader's, or a follower's that
// the leader never counted) are gone everywhere before the next attempt
// writes from At on. A chunk that straddles At is cut to end there. It
// is deterministic: what it removes is what this store holds past At,
// and ReplicaOutput never writes past an ended attempt's end afterwards.
//
// It also puts the job in this store's repair queue ("y" id → At): the
// job's output below At is final, and this node must check it for holes
// (it may have missed chunks) and fetch them from its peers. The queue
// is durable, written in the same batch as the round, so a node that
// stops before it repaired the job, or that installs a snapshot (which
// carries the queue of the node it came from), still finds the job: see
// PendingRepairs and RepairDone. An At of 0 leaves nothing to repair.
type TruncateLog struct {
	Job uint64
	At  uint64
}

func (c *TruncateLog) check() error { return nil }

func (c *TruncateLog) apply(r *round) (Result, error) {
	if end, ok := r.logEnd(c.Job); ok && end <= c.At {
		// Nothing stored at or past At (the store saw every write of
		// this job's log): no iterator. On the leader of row 9c it was
		// 13% of the CPU, seeking through every level for keys that a
		// job without output never had.
		c.queueRepair(r)
		return Result{}, nil
	}
	if err := c.cut(r); err != nil {
		return Result{}, err
	}
	if end, ok := r.logEnd(c.Job); ok {
		r.ends[c.Job] = min(end, c.At)
	}
	c.queueRepair(r)
	return Result{}, nil
}

// cut removes what the store holds of job c.Job's log at and past c.At.
func (c *TruncateLog) cut(r *round) error {
	prefix := logKey(c.Job, 0)[:9]
	// The chunk beginning before At may reach past it: cut it.
	it, err := r.s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	var cut []byte
	var cutKey []byte
	// Almost always nothing lies past At (the attempt's output was
	// acknowledged to its end): then no range deletion is written. One
	// per ended attempt would pile up tombstones that every later
	// iterator over the log keys wades through (row 9c, 100,000 jobs:
	// the leader's CPU per job tripled).
	beyond := c.At < math.MaxUint64 && it.SeekGE(logKey(c.Job, c.At))
	if c.At < math.MaxUint64 && it.SeekLT(logKey(c.Job, c.At)) {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		e, err := decodeLogEntry(it.Key(), v)
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("job %d: %w", c.Job, err)
		}
		if e.off+uint64(len(e.data)) > c.At {
			cutKey = append([]byte(nil), it.Key()...)
			keep := len(v) - len(e.data) + int(c.At-e.off)
			cut = append([]byte(nil), v[:keep]...)
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	if cutKey != nil {
		_ = r.b.Set(cutKey, cut, nil)
	}
	if beyond {
		if err := r.b.DeleteRange(logKey(c.Job, c.At), prefixEnd(prefix), nil); err != nil {
			return fmt.Errorf("job %d: truncate log: %w", c.Job, err)
		}
	}
	return nil
}

// queueRepair puts job c.Job in the repair queue up to c.At. The latest
// end of the job's log is the one to repair up to (ends only grow: the
// next attempt starts where this one ended).
func (c *TruncateLog) queueRepair(r *round) {
	if c.At == 0 {
		r.del(repairKey(c.Job))
	} else {
		r.set(repairKey(c.Job), binary.BigEndian.AppendUint64(nil, c.At))
	}
}

// RepairDone takes job Job out of this store's repair queue once the
// node holds every byte of its output below At: the key goes unless a
// later TruncateLog queued the job up to a larger end meanwhile (then
// Result.N is 0 and the job stays queued). Like ReplicaOutput it is
// node-local and never carried in a round: each node repairs its own
// copy, so the queue differs between nodes, and Dump leaves it out.
type RepairDone struct {
	Job uint64
	At  uint64
}

func (c *RepairDone) check() error { return nil }

func (c *RepairDone) apply(r *round) (Result, error) {
	k := repairKey(c.Job)
	v, ok, err := r.get(k)
	if err != nil {
		return Result{}, fmt.Errorf("job %d: repair queue: %w", c.Job, err)
	}
	if !ok {
		return Result{}, nil
	}
	if len(v) == 8 && binary.BigEndian.Uint64(v) > c.At {
		return Result{}, nil
	}
	r.del(k)
	return Result{N: 1}, nil
}

// PendingRepair is a job in this store's repair queue: its output below
// At is final, and this node has not yet checked that it holds all of it.
type PendingRepair struct {
	Job uint64
	At  uint64
}

// PendingRepairs returns the store's repair queue, by job ID (see
// TruncateLog and RepairDone). A node reads it when it starts and after
// it installed a snapshot.
func (s *Store) PendingRepairs() ([]PendingRepair, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: pending repairs: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	p := []byte{prefixRepair}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, fmt.Errorf("store: pending repairs: %w", err)
	}
	var out []PendingRepair
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 9 || len(v) != 8 {
			_ = it.Close()
			return nil, fmt.Errorf("store: pending repairs: malformed entry %q=%q", k, v)
		}
		out = append(out, PendingRepair{Job: binary.BigEndian.Uint64(k[1:]), At: binary.BigEndian.Uint64(v)})
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("store: pending repairs: %w", err)
	}
	return out, nil
}

// SyncOutput makes every batch applied so far durable with an fsync of
// the write-ahead log, even in a store opened with Options.NoSync (a
// cluster node's: its rounds are durable in the raft log, but output
// that came on the output channel is durable only here). The output
// channel's group syncer calls it before it counts chunks as synced.
func (s *Store) SyncOutput() error {
	if !s.acquire() {
		return fmt.Errorf("store: sync output: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: sync output: %w", err)
	}
	return nil
}

// LogHole returns the first range of [from, to) that job id's stored
// output does not cover, and false when it covers all of it. Output that
// came on the output channel may have holes on a node that missed some
// of it (it was down, or fell behind the leader's resend buffer): gap
// fill and repair fetch them from the other nodes.
func (s *Store) LogHole(id, from, to uint64) (start, end uint64, ok bool, err error) {
	if !s.acquire() {
		return 0, 0, false, fmt.Errorf("store: log hole of job %d: %w", id, ErrClosed)
	}
	defer s.mu.RUnlock()
	if from >= to {
		return 0, 0, false, nil
	}
	prefix := logKey(id, 0)[:9]
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, 0, false, fmt.Errorf("store: log hole of job %d: %w", id, err)
	}
	defer it.Close()
	pos := from
	ok2 := it.SeekLT(logKey(id, from+1))
	if !ok2 {
		ok2 = it.First()
	}
	for ; ok2 && pos < to; ok2 = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, 0, false, fmt.Errorf("store: log hole of job %d: %w", id, err)
		}
		e, err := decodeLogEntry(it.Key(), v)
		if err != nil {
			return 0, 0, false, fmt.Errorf("store: log hole of job %d: %w", id, err)
		}
		if e.off > pos {
			return pos, min(e.off, to), true, nil
		}
		pos = max(pos, e.off+uint64(len(e.data)))
	}
	if err := it.Error(); err != nil {
		return 0, 0, false, fmt.Errorf("store: log hole of job %d: %w", id, err)
	}
	if pos < to {
		return pos, to, true, nil
	}
	return 0, 0, false, nil
}
