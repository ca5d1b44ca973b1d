package store

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Defaults of ListOptions.
const (
	DefaultListLimit = 100
	// DefaultListScan bounds the records one List call examines, so a
	// filter that matches few jobs cannot make one call read the whole
	// store. A call that hits it returns what it found with a cursor to
	// continue from.
	DefaultListScan = 100_000
)

// ListOptions selects jobs for List.
type ListOptions struct {
	State  State             // only jobs in this state (read through the state index); "" for all
	Labels map[string]string // only jobs whose Labels hold every one of these pairs; nil for all
	Limit  int               // at most this many jobs; 0 (or less) means DefaultListLimit
	Before uint64            // only IDs below Before; 0 starts at the newest job
	Scan   int               // examine at most this many records; 0 (or less) means DefaultListScan
	// Match, when set, keeps only the jobs it returns true for (applied
	// after State and Labels, to each record read).
	Match func(*Job) bool
}

// List returns jobs newest first (descending ID) and next, the Before of
// the following page, or 0 when no job below the page matches.
//
// With State set, List walks that state's index, so it reads only jobs in
// that state; otherwise it walks every job record. The Labels filter is
// applied to each job read. At most Scan records are examined: a call
// that reaches that bound returns the jobs found so far (possibly none)
// and a non-zero next, so a caller following next until it is 0 sees
// every match exactly once. Pages are stable: jobs never change ID, and
// new jobs get higher IDs than every page already returned, so they
// appear only on a fresh first page.
func (s *Store) List(o ListOptions) (jobs []*Job, next uint64, err error) {
	if !s.acquire() {
		return nil, 0, fmt.Errorf("store: list: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	jobs, next, err = s.list(o)
	if err != nil {
		return nil, 0, fmt.Errorf("store: list: %w", err)
	}
	return jobs, next, nil
}

func (s *Store) list(o ListOptions) ([]*Job, uint64, error) {
	if o.Limit <= 0 {
		o.Limit = DefaultListLimit
	}
	if o.Scan <= 0 {
		o.Scan = DefaultListScan
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()

	// Walk either the state index or the job records, newest first.
	var (
		opts   pebble.IterOptions
		record func(it *pebble.Iterator) (uint64, *Job, error)
	)
	if o.State != "" {
		code, ok := stateCodes[o.State]
		if !ok {
			return nil, 0, fmt.Errorf("%w: unknown state %q", ErrInvalid, o.State)
		}
		opts.LowerBound = stateIDKey(code, 0)
		opts.UpperBound = prefixEnd(opts.LowerBound[:2])
		if o.Before > 0 {
			opts.UpperBound = stateIDKey(code, o.Before)
		}
		record = func(it *pebble.Iterator) (uint64, *Job, error) {
			id := binary.BigEndian.Uint64(it.Key()[2:])
			j, err := getJob(snap, id)
			switch {
			case errors.Is(err, ErrNotFound):
				s.log.Warn("state index entry without a job record, skipping", "state", o.State, "job", id)
				return id, nil, nil
			case err != nil:
				return id, nil, fmt.Errorf("job %d: %w", id, err)
			case j.State != o.State:
				// Cannot happen while Apply is the only writer; the job
				// record is the truth.
				s.log.Warn("state index entry disagrees with job record, skipping", "index", o.State, "job", id, "state", j.State)
				return id, nil, nil
			}
			return id, j, nil
		}
	} else {
		opts.LowerBound = []byte{prefixJob}
		opts.UpperBound = []byte{prefixJob + 1}
		if o.Before > 0 {
			opts.UpperBound = jobKey(o.Before)
		}
		record = func(it *pebble.Iterator) (uint64, *Job, error) {
			id := binary.BigEndian.Uint64(it.Key()[1:])
			v, err := it.ValueAndErr()
			if err != nil {
				return id, nil, err
			}
			j, err := decodeJob(v)
			if err != nil {
				return id, nil, fmt.Errorf("job %d: %w", id, err)
			}
			return id, j, nil
		}
	}
	it, err := snap.NewIter(&opts)
	if err != nil {
		return nil, 0, err
	}

	var (
		jobs    []*Job
		next    uint64
		scanned int
		last    uint64 // ID of the last record examined
	)
	for ok := it.Last(); ok; ok = it.Prev() {
		if scanned == o.Scan {
			next = last // there is more to examine below last
			break
		}
		scanned++
		id, j, err := record(it)
		if err != nil {
			_ = it.Close()
			return nil, 0, err
		}
		last = id
		if j == nil || !hasLabels(j, o.Labels) || o.Match != nil && !o.Match(j) {
			continue
		}
		if len(jobs) == o.Limit {
			// One match past the page: there is a next page.
			next = jobs[len(jobs)-1].ID
			break
		}
		jobs = append(jobs, j)
	}
	return jobs, next, errors.Join(it.Error(), it.Close())
}

// hasLabels reports whether j's labels hold every pair of want.
func hasLabels(j *Job, want map[string]string) bool {
	for k, v := range want {
		if got, ok := j.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// cursorVersion is the first byte of an encoded cursor; a new encoding
// gets a new version.
const cursorVersion = 1

// cursorLen is the length of an encoded cursor: 9 bytes in base64.
const cursorLen = 12

// EncodeCursor returns the opaque page token for List's next (Before) id:
// URL-safe base64 without padding of a version byte and the id.
func EncodeCursor(before uint64) string {
	var b [9]byte
	b[0] = cursorVersion
	binary.BigEndian.PutUint64(b[1:], before)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// DecodeCursor returns the Before id of a token made by EncodeCursor, or
// an error wrapping ErrInvalid.
func DecodeCursor(c string) (uint64, error) {
	// The decoder skips newlines; the length check keeps a cursor to
	// exactly one spelling.
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(c) != cursorLen || len(b) != 9 || b[0] != cursorVersion {
		return 0, fmt.Errorf("store: decode cursor: %w: %q is not a page cursor", ErrInvalid, c)
	}
	id := binary.BigEndian.Uint64(b[1:])
	if id == 0 {
		return 0, fmt.Errorf("store: decode cursor: %w: %q is not a page cursor", ErrInvalid, c)
	}
	return id, nil
}
