package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
)

// SchemaVersion is the layout version written under the "v" key. See
// doc.go for what bumps it.
const SchemaVersion uint32 = 2

// Options configures Open.
type Options struct {
	// Logger receives the store's and Pebble's log lines; nil discards them.
	Logger hclog.Logger
	// NoSync commits without fsync. For tests and benchmarks only: a crash
	// may lose acknowledged writes.
	NoSync bool
}

// Store is the controller's durable state in one Pebble database. All
// methods are safe for concurrent use; after Close they return ErrClosed.
type Store struct {
	db    *pebble.DB
	log   hclog.Logger
	write *pebble.WriteOptions // pebble.Sync, or pebble.NoSync with Options.NoSync

	nextID   atomic.Uint64 // last ID handed out (or seen)
	finished atomic.Int64  // entries in the finished index: stored jobs in a terminal state
	// counted is closed once finished holds the count Open started in
	// the background (countFinished); until then it holds only the
	// changes made since Open.
	counted chan struct{}

	// pruneMu serializes Prune calls, so two never remove (and count) the
	// same job.
	pruneMu sync.Mutex

	// mu guards closed; every operation holds it for reading so Close
	// waits for operations in flight instead of pulling the database
	// from under them (Pebble panics on use after close).
	mu     sync.RWMutex
	closed bool

	// idemMu guards pending: idempotency keys of creates being committed,
	// so two concurrent creates cannot both claim the same key.
	idemMu  sync.Mutex
	pending map[string]struct{}

	stalls *stallCounter // write stalls, for Metrics
}

// Open opens (creating if needed) the store in dir. A directory written
// with a different schema version is refused with ErrSchema.
func Open(dir string, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	logger = logger.Named("store")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	stalls := new(stallCounter)
	db, err := pebble.Open(dir, &pebble.Options{
		MemTableSize:  64 << 20,
		Logger:        pebbleLogger{log: logger.Named("pebble")},
		EventListener: stalls.listener(),
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{
		db:      db,
		log:     logger,
		write:   pebble.Sync,
		pending: make(map[string]struct{}),
		stalls:  stalls,
	}
	if opts.NoSync {
		s.write = pebble.NoSync
	}
	if err := s.checkSchema(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	last, err := s.lastJobID()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s.nextID.Store(last)
	// Counting the finished index is a scan of every finished job's key
	// (a million at the controller's default retention), so it runs in
	// the background, on a snapshot taken before any write: Apply's and
	// Prune's changes from now on add to the count. FinishedJobs and
	// Prune wait for it; Close waits for it through the read lock taken
	// here on its behalf.
	s.counted = make(chan struct{})
	snap := db.NewSnapshot()
	s.mu.RLock()
	go s.countFinished(snap)
	logger.Debug("opened", "dir", dir, "schema", SchemaVersion, "last_job", last, "no_sync", opts.NoSync)
	return s, nil
}

// countFinished adds the finished index's entries in snap to s.finished
// and closes s.counted. It releases the read lock Open took for it.
func (s *Store) countFinished(snap *pebble.Snapshot) {
	defer s.mu.RUnlock()
	defer close(s.counted)
	n, err := countKeys(snap, prefixDone)
	if cerr := snap.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Counting low only makes Prune keep more than KeepNewest.
		s.log.Error("counting finished jobs failed; retention by count may keep more than it should until a restart", "error", err)
	}
	s.finished.Add(int64(n))
	s.log.Debug("finished jobs counted", "finished_jobs", n)
}

// checkSchema reads the schema version key, writing it into an empty
// database.
func (s *Store) checkSchema() error {
	v, closer, err := s.db.Get(versionKey)
	if errors.Is(err, pebble.ErrNotFound) {
		empty, err := s.empty()
		if err != nil {
			return err
		}
		if !empty {
			return fmt.Errorf("%w: the directory holds data but no schema version; point the controller at an empty directory or a jobsuite data directory", ErrSchema)
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], SchemaVersion)
		return s.db.Set(versionKey, b[:], pebble.Sync)
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	if len(v) != 4 {
		return fmt.Errorf("%w: malformed version key (%d bytes)", ErrSchema, len(v))
	}
	if got := binary.BigEndian.Uint32(v); got != SchemaVersion {
		return fmt.Errorf("%w: data has schema version %d, this build reads version %d; run the jobsuite release that wrote it", ErrSchema, got, SchemaVersion)
	}
	return nil
}

func (s *Store) empty() (bool, error) {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return false, err
	}
	valid := it.First()
	return !valid, errors.Join(it.Error(), it.Close())
}

func (s *Store) lastJobID() (uint64, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixJob},
		UpperBound: []byte{prefixJob + 1},
	})
	if err != nil {
		return 0, err
	}
	var id uint64
	if it.Last() {
		id = binary.BigEndian.Uint64(it.Key()[1:])
	}
	return id, errors.Join(it.Error(), it.Close())
}

// countKeys counts the keys starting with prefix p in snap.
func countKeys(snap *pebble.Snapshot, p byte) (int, error) {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
	if err != nil {
		return 0, err
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n, errors.Join(it.Error(), it.Close())
}

// FinishedJobs returns how many jobs in a terminal state are stored: the
// number Prune's KeepNewest is compared with.
func (s *Store) FinishedJobs() int {
	<-s.counted
	return int(s.finished.Load())
}

// Close closes the database, waiting for operations in flight. It is
// idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// acquire holds the store open for one operation; release with
// s.mu.RUnlock.
func (s *Store) acquire() bool {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return false
	}
	return true
}

// NextID returns a new job ID. IDs start at 1, increase monotonically and
// continue after the highest job stored when the store was opened.
func (s *Store) NextID() uint64 {
	return s.nextID.Add(1)
}

// seeID makes sure NextID never hands out id again.
func (s *Store) seeID(id uint64) {
	for {
		cur := s.nextID.Load()
		if cur >= id || s.nextID.CompareAndSwap(cur, id) {
			return
		}
	}
}

// Apply commits updates as one Pebble batch, synced unless Options.NoSync:
// either all of them are durable when it returns nil, or none is applied.
// Concurrent callers share fsyncs (Pebble's commit pipeline groups them),
// so many goroutines may call Apply at once.
//
// For each update, in order, Apply:
//   - writes Next's record and appends Event to its history under
//     Event.Seq. The caller numbers events: it sets Event.Seq to the
//     job's previous Events count and Next.Events to one more, before
//     calling Apply. Apply never modifies Next, so callers may publish
//     Next to other goroutines before it is written;
//   - sets Event.State to Next.State if it is empty;
//   - moves the job between the queue, delay and active indexes, the
//     state index and the finished index: the keys derived from Prev's
//     fields are deleted, then Next's are written;
//   - for a create (Prev == nil), claims Next.IdempotencyKey if set; a key
//     already taken fails the whole Apply with ErrExists.
//
// Next is required and Prev, if set, must have the same ID; otherwise
// Apply returns ErrInvalid without writing anything.
func (s *Store) Apply(updates ...Update) error {
	if !s.acquire() {
		return fmt.Errorf("store: apply: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	if err := s.apply(updates); err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	return nil
}

func (s *Store) apply(updates []Update) error {
	if len(updates) == 0 {
		return nil
	}
	var keys []string // idempotency keys claimed by this batch
	for i, u := range updates {
		switch {
		case u.Next == nil:
			return fmt.Errorf("update %d: %w: Next is nil", i, ErrInvalid)
		case u.Next.ID == 0:
			return fmt.Errorf("update %d: %w: job ID 0", i, ErrInvalid)
		case u.Prev != nil && u.Prev.ID != u.Next.ID:
			return fmt.Errorf("update %d: %w: Prev.ID %d != Next.ID %d", i, ErrInvalid, u.Prev.ID, u.Next.ID)
		}
		if u.Prev == nil && u.Next.IdempotencyKey != "" {
			keys = append(keys, u.Next.IdempotencyKey)
		}
	}
	if len(keys) > 0 {
		if err := s.claim(keys); err != nil {
			return err
		}
		defer s.unclaim(keys)
	}

	b := s.db.NewBatch()
	defer b.Close()
	for i := range updates {
		u := &updates[i]
		next := u.Next
		if u.Event.State == "" {
			u.Event.State = next.State
		}
		job, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("job %d: encode: %w", next.ID, err)
		}
		ev, err := json.Marshal(&u.Event)
		if err != nil {
			return fmt.Errorf("job %d: encode event: %w", next.ID, err)
		}
		// Batch operations cannot fail on an open, uncommitted batch.
		_ = b.Set(jobKey(next.ID), job, nil)
		_ = b.Set(eventKey(next.ID, u.Event.Seq), ev, nil)
		if u.Prev != nil {
			for _, k := range indexKeys(u.Prev) {
				_ = b.Delete(k, nil)
			}
		} else if next.IdempotencyKey != "" {
			var id [8]byte
			binary.BigEndian.PutUint64(id[:], next.ID)
			_ = b.Set(idemKey(next.IdempotencyKey), id[:], nil)
		}
		for _, k := range indexKeys(next) {
			_ = b.Set(k, nil, nil)
		}
	}
	if err := b.Commit(s.write); err != nil {
		return err
	}
	for _, u := range updates {
		wasDone := u.Prev != nil && u.Prev.State.Terminal()
		switch isDone := u.Next.State.Terminal(); {
		case isDone && !wasDone:
			s.finished.Add(1)
		case wasDone && !isDone:
			s.finished.Add(-1)
		}
		if u.Prev == nil {
			s.seeID(u.Next.ID)
		}
	}
	return nil
}

// indexKeys returns every index key j occupies: its queue, delay or
// active key, its state key and its finished key, as far as its state
// has them.
func indexKeys(j *Job) [][]byte {
	keys := make([][]byte, 0, 3)
	for _, k := range [][]byte{indexKey(j), stateKey(j), doneKey(j)} {
		if k != nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// claim reserves idempotency keys for a create, failing with ErrExists if
// one is stored or being committed by another Apply.
func (s *Store) claim(keys []string) error {
	s.idemMu.Lock()
	defer s.idemMu.Unlock()
	for i, k := range keys {
		_, busy := s.pending[k]
		if !busy {
			for _, prev := range keys[:i] {
				busy = busy || prev == k
			}
		}
		if busy {
			return fmt.Errorf("%w: %q is being used by another submit", ErrExists, k)
		}
	}
	for _, k := range keys {
		id, ok, err := s.idempotencyKey(k)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%w: %q belongs to job %d", ErrExists, k, id)
		}
	}
	for _, k := range keys {
		s.pending[k] = struct{}{}
	}
	return nil
}

func (s *Store) unclaim(keys []string) {
	s.idemMu.Lock()
	defer s.idemMu.Unlock()
	for _, k := range keys {
		delete(s.pending, k)
	}
}

// Get returns job id, or ErrNotFound.
func (s *Store) Get(id uint64) (*Job, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: get job %d: %w", id, ErrClosed)
	}
	defer s.mu.RUnlock()
	j, err := getJob(s.db, id)
	if err != nil {
		return nil, fmt.Errorf("store: get job %d: %w", id, err)
	}
	return j, nil
}

// getter is a pebble.DB or a pebble.Snapshot.
type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func getJob(r getter, id uint64) (*Job, error) {
	v, closer, err := r.Get(jobKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return decodeJob(v)
}

func decodeJob(v []byte) (*Job, error) {
	j := new(Job)
	if err := json.Unmarshal(v, j); err != nil {
		return nil, fmt.Errorf("decode job: %w", err)
	}
	return j, nil
}

// Events returns job id's history in order, or ErrNotFound if the job is
// unknown.
func (s *Store) Events(id uint64) ([]Event, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: events of job %d: %w", id, ErrClosed)
	}
	defer s.mu.RUnlock()
	evs, err := s.events(id)
	if err != nil {
		return nil, fmt.Errorf("store: events of job %d: %w", id, err)
	}
	return evs, nil
}

func (s *Store) events(id uint64) ([]Event, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	if _, closer, err := snap.Get(jobKey(id)); errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, err
	} else {
		closer.Close()
	}
	prefix := eventKey(id, 0)[:9]
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	var evs []Event
	for ok := it.First(); ok; ok = it.Next() {
		var e Event
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("decode event: %w", err)
		}
		evs = append(evs, e)
	}
	return evs, errors.Join(it.Error(), it.Close())
}

// IdempotencyKey returns the ID of the job created with key, if any.
func (s *Store) IdempotencyKey(key string) (uint64, bool, error) {
	if !s.acquire() {
		return 0, false, fmt.Errorf("store: idempotency key: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	id, ok, err := s.idempotencyKey(key)
	if err != nil {
		return 0, false, fmt.Errorf("store: idempotency key: %w", err)
	}
	return id, ok, nil
}

func (s *Store) idempotencyKey(key string) (uint64, bool, error) {
	if key == "" {
		return 0, false, nil
	}
	v, closer, err := s.db.Get(idemKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("key %q: malformed value (%d bytes)", key, len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}
