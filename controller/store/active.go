package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// Active returns every job the scheduler must hold in memory, read through
// the indexes: Queued jobs in queue order (priority descending, then
// QueuedAt, then ID), then Waiting jobs by NotBefore, then Dispatched and
// Running jobs by ID, then Blocked jobs by ID.
func (s *Store) Active() ([]*Job, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: active jobs: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	jobs, err := s.active()
	if err != nil {
		return nil, fmt.Errorf("store: active jobs: %w", err)
	}
	return jobs, nil
}

// activeIndexes are the indexes Active reads, in the order it returns
// their jobs, with the states a record found through each must be in.
var activeIndexes = []struct {
	lower, upper []byte // the index's key range
	match        func(State) bool
}{
	{[]byte{prefixQueue}, []byte{prefixQueue + 1}, func(st State) bool { return st == Queued }},
	{[]byte{prefixDelay}, []byte{prefixDelay + 1}, func(st State) bool { return st == Waiting }},
	{[]byte{prefixActive}, []byte{prefixActive + 1}, State.Active},
	// Blocked jobs have no index of their own: the state index's range.
	{[]byte{prefixState, stateCodes[Blocked]}, []byte{prefixState, stateCodes[Blocked] + 1}, func(st State) bool { return st == Blocked }},
}

// activeRef is one index entry: the job it names, where it stands in
// Active's answer, and which index named it.
type activeRef struct {
	id  uint64
	pos int32
	idx uint8 // into activeIndexes
}

// activeChunk is a run of job records, copied out of the iterator, for a
// decoding worker.
type activeChunk struct {
	buf  []byte  // the records back to back
	ends []int32 // end of each record in buf
	refs []activeRef
}

const activeChunkJobs = 256

// activeMaxSteps is how many records readRecords steps over with Next before
// it seeks instead.
const activeMaxSteps = 8

// active reads the indexes and then the records they name. A point Get
// per index entry costs an index and data block lookup each (and the
// queue order is not the key order of the records), so instead:
//
//  1. the q, d and a indexes and the state index's blocked range are
//     scanned for keys only, collecting the
//     job IDs in the order Active returns them;
//  2. the IDs are sorted and the records read with one iterator over
//     "j", stepping with Next over the few records between two it
//     needs and seeking forward past longer gaps (a queue of jobs
//     submitted one after another is a contiguous run of "j");
//  3. the records are decoded by GOMAXPROCS workers into their places
//     in the answer, with the fast decoder (decodeJobFast) and
//     encoding/json for the records it does not take.
//
// Everything is read from one snapshot.
func (s *Store) active() ([]*Job, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()

	var refs []activeRef
	for i, idx := range activeIndexes {
		it, err := snap.NewIter(&pebble.IterOptions{
			LowerBound: idx.lower,
			UpperBound: idx.upper,
		})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			k := it.Key()
			if len(k) < 9 {
				_ = it.Close()
				return nil, fmt.Errorf("index %q: malformed key %x", idx.lower, k)
			}
			refs = append(refs, activeRef{id: binary.BigEndian.Uint64(k[len(k)-8:]), pos: int32(len(refs)), idx: uint8(i)})
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return nil, err
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	jobs := make([]*Job, len(refs))
	// Queue order is mostly ID order already; pdqsort finds the runs.
	slices.SortFunc(refs, func(a, b activeRef) int { return cmp.Compare(a.id, b.id) })

	var (
		failed   atomic.Bool
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		failed.Store(true)
	}
	var skipped atomic.Int64 // index entries whose record disagrees

	work := make(chan *activeChunk, 4)
	free := make(chan *activeChunk, 8)
	var wg sync.WaitGroup
	workers := max(1, runtime.GOMAXPROCS(0))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := newInterner()
			for c := range work {
				start := int32(0)
				for i, ref := range c.refs {
					if failed.Load() {
						break
					}
					v := c.buf[start:c.ends[i]]
					start = c.ends[i]
					j := new(Job)
					if !decodeJobFast(v, j, in) {
						*j = Job{}
						if err := jsonDecodeJob(v, j); err != nil {
							fail(fmt.Errorf("index %q: job %d: %w", activeIndexes[ref.idx].lower, ref.id, err))
							break
						}
					}
					if !activeIndexes[ref.idx].match(j.State) {
						// Cannot happen while Apply is the only writer;
						// the job record is the truth.
						s.log.Warn("index entry disagrees with job record, skipping", "index", string(activeIndexes[ref.idx].lower), "job", ref.id, "state", j.State)
						skipped.Add(1)
						continue
					}
					jobs[ref.pos] = j
				}
				select {
				case free <- c:
				default:
				}
			}
		}()
	}

	readErr := s.readRecords(snap, refs, work, free, &failed)
	close(work)
	wg.Wait()
	if readErr != nil {
		return nil, readErr
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if skipped.Load() > 0 {
		jobs = slices.DeleteFunc(jobs, func(j *Job) bool { return j == nil })
	}
	return jobs, nil
}

// readRecords reads the records of refs (sorted by ID) with one forward
// iterator and hands them to the workers in chunks.
func (s *Store) readRecords(snap *pebble.Snapshot, refs []activeRef, work chan<- *activeChunk, free chan *activeChunk, failed *atomic.Bool) error {
	it, err := snap.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixJob},
		UpperBound: []byte{prefixJob + 1},
	})
	if err != nil {
		return err
	}
	newChunk := func() *activeChunk {
		select {
		case c := <-free:
			c.buf, c.ends, c.refs = c.buf[:0], c.ends[:0], c.refs[:0]
			return c
		default:
			return &activeChunk{ends: make([]int32, 0, activeChunkJobs), refs: make([]activeRef, 0, activeChunkJobs)}
		}
	}
	c := newChunk()
	key := make([]byte, 9)
	key[0] = prefixJob
	for _, ref := range refs {
		if failed.Load() {
			break
		}
		binary.BigEndian.PutUint64(key[1:], ref.id)
		// The records of a queue are mostly a contiguous run of "j":
		// step forward a few keys before seeking.
		for range activeMaxSteps {
			if !it.Valid() || bytes.Compare(it.Key(), key) >= 0 {
				break
			}
			it.Next()
		}
		if !it.Valid() || !bytes.Equal(it.Key(), key) {
			it.SeekGE(key)
		}
		if !it.Valid() || !bytes.Equal(it.Key(), key) {
			if err := it.Error(); err != nil {
				_ = it.Close()
				return err
			}
			_ = it.Close()
			return fmt.Errorf("index %q: job %d: %w", activeIndexes[ref.idx].lower, ref.id, ErrNotFound)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("index %q: job %d: %w", activeIndexes[ref.idx].lower, ref.id, err)
		}
		c.buf = append(c.buf, v...)
		c.ends = append(c.ends, int32(len(c.buf)))
		c.refs = append(c.refs, ref)
		if len(c.refs) == activeChunkJobs {
			work <- c
			c = newChunk()
		}
	}
	if len(c.refs) > 0 {
		work <- c
	}
	return errors.Join(it.Error(), it.Close())
}
