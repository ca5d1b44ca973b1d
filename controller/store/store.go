package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
)

// SchemaVersion is the layout version written under the "v" key. See
// doc.go for what bumps it.
const SchemaVersion uint32 = 3

// upgradable lists the older schema versions Open upgrades in place by
// rewriting the "v" key alone, their data being readable as it is.
var upgradable = map[uint32]bool{2: true}

// Options configures Open.
type Options struct {
	// Logger receives the store's and Pebble's log lines; nil discards them.
	Logger hclog.Logger
	// MemTableSize is the size of Pebble's memtable, and so about the
	// size of each of its log files and of a flush; 0 means 64 MiB. A
	// small disk wants a small one (the controller sizes it to the disk).
	MemTableSize uint64
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

	// secretMu serializes Secret's read-or-create.
	secretMu sync.Mutex

	// idemMu guards pending: idempotency keys of creates being committed,
	// so two concurrent creates cannot both claim the same key.
	idemMu  sync.Mutex
	pending map[string]struct{}

	stalls *stallCounter // write stalls, for Metrics

	counts stateCounts // jobs per state, once StateCounts was called (counts.go)
}

// Open opens (creating if needed) the store in dir. A directory written
// with a schema version this build cannot read is refused with ErrSchema;
// one it reads as it is (version 2) is marked as SchemaVersion, so that
// a release that would misread what this one writes refuses it.
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
	memTable := opts.MemTableSize
	if memTable == 0 {
		memTable = 64 << 20
	}
	db, err := pebble.Open(dir, &pebble.Options{
		MemTableSize: memTable,
		// Transitions rewrite job records all over the "j" range, so each L0
		// compaction rewrites most of the base level. Twice Pebble's
		// default L0 depth before compacting (4) halves those rewrites
		// (about a third less compaction CPU in the capacity benchmark),
		// for up to 8 L0 sublevels to merge on reads and their obsolete
		// versions on disk a little longer; writes stall at 24, not 12.
		L0CompactionThreshold: 8,
		L0StopWritesThreshold: 24,
		Logger:                pebbleLogger{log: logger.Named("pebble")},
		EventListener:         stalls.listener(),
	})
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		// Pebble's LOCK file: "resource temporarily unavailable" says little.
		return nil, fmt.Errorf("store: open %s: %w: another process (a controller or 'jobsuite dev') holds its LOCK file; stop it, or use another data directory", dir, ErrLocked)
	}
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
	got := binary.BigEndian.Uint32(v)
	if got == SchemaVersion {
		return nil
	}
	if !upgradable[got] {
		return fmt.Errorf("%w: data has schema version %d, this build reads version %d; run the jobsuite release that wrote it", ErrSchema, got, SchemaVersion)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], SchemaVersion)
	if err := s.db.Set(versionKey, b[:], pebble.Sync); err != nil {
		return fmt.Errorf("upgrading schema version %d to %d: %w", got, SchemaVersion, err)
	}
	s.log.Info("schema upgraded in place; earlier releases can no longer open this directory", "from", got, "to", SchemaVersion)
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
// so many goroutines may call Apply at once. Apply is ApplyNoWait followed
// by Wait.
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
	p, err := s.ApplyNoWait(updates...)
	if err != nil {
		return err
	}
	return p.Wait()
}

// Pending is a batch ApplyNoWait handed to Pebble: it is in the WAL and
// the memtable, and its fsync may still be running. Wait reports whether
// it became durable.
type Pending struct {
	s    *Store
	b    *pebble.Batch // awaiting SyncWait; nil without sync
	keys []string      // idempotency keys claimed until Wait
	err  error
	done bool
}

// ApplyNoWait does what Apply does but returns once the batch is written
// to the WAL and applied to the memtable, without waiting for its fsync;
// Pending.Wait waits for it. Batches enter the WAL in call order, and an
// fsync covers everything written before it, so when one batch's Wait
// returns nil every batch ApplyNoWait returned earlier is durable too.
// Several batches may be in flight: Pebble groups their fsyncs.
//
// The batch is visible to readers (Get, List, Active, …) as soon as
// ApplyNoWait returns, before it is durable — as with Apply, whose batch
// Pebble publishes to readers before its fsync ends. Anything that tells
// the outside world a write is durable must wait for the write's own
// Wait (or call Sync) first, not infer it from a read. The idempotency
// keys the batch claims stay claimed until Wait returns, so no other
// create can take them in between.
//
// The caller must call Wait exactly once, from any goroutine: until then
// the batch holds the store open (Close waits for it). A non-nil error
// means nothing was written and there is nothing to wait for.
func (s *Store) ApplyNoWait(updates ...Update) (*Pending, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: apply: %w", ErrClosed)
	}
	p, err := s.apply(updates)
	if err != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("store: apply: %w", err)
	}
	return p, nil
}

// Wait waits until the batch is durable (synced; at once with
// Options.NoSync) and returns the sync error, if any. A sync error means
// the batch may be lost; the store should not be written further. Calls
// after the first return the first call's result.
func (p *Pending) Wait() error {
	if p.done {
		return p.err
	}
	p.done = true
	if p.b != nil {
		if err := p.b.SyncWait(); err != nil {
			p.err = fmt.Errorf("store: apply: sync: %w", err)
		}
		_ = p.b.Close()
		p.b = nil
	}
	if len(p.keys) > 0 {
		p.s.unclaim(p.keys)
	}
	p.s.mu.RUnlock()
	return p.err
}

// scratch holds the buffers apply encodes into, reused across calls.
type scratch struct {
	job, event []byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// apply writes updates without waiting for their fsync. The caller holds
// s.mu for reading; the returned Pending releases it in Wait.
func (s *Store) apply(updates []Update) (*Pending, error) {
	p := &Pending{s: s}
	if len(updates) == 0 {
		return p, nil
	}
	var keys []string // idempotency keys claimed by this batch
	for i, u := range updates {
		switch {
		case u.Next == nil:
			return nil, fmt.Errorf("update %d: %w: Next is nil", i, ErrInvalid)
		case u.Next.ID == 0:
			return nil, fmt.Errorf("update %d: %w: job ID 0", i, ErrInvalid)
		case u.Prev != nil && u.Prev.ID != u.Next.ID:
			return nil, fmt.Errorf("update %d: %w: Prev.ID %d != Next.ID %d", i, ErrInvalid, u.Prev.ID, u.Next.ID)
		}
		if u.Prev == nil && u.Next.IdempotencyKey != "" {
			keys = append(keys, u.Next.IdempotencyKey)
		}
	}
	if len(keys) > 0 {
		if err := s.claim(keys); err != nil {
			return nil, err
		}
	}
	add, counted := s.counts.begin()
	defer counted()
	b, err := s.build(updates)
	if err == nil {
		if s.write.Sync {
			err = s.db.ApplyNoSyncWait(b, s.write)
		} else {
			err = b.Commit(s.write)
		}
	}
	if err != nil {
		if b != nil {
			_ = b.Close()
		}
		if len(keys) > 0 {
			s.unclaim(keys)
		}
		return nil, err
	}
	if s.write.Sync {
		p.b = b
	} else {
		_ = b.Close()
	}
	p.keys = keys
	for _, u := range updates {
		var was State
		if u.Prev != nil {
			was = u.Prev.State
		}
		add(was, u.Next.State)
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
	return p, nil
}

// build encodes updates into a new batch. On error it returns the batch
// (to close) or nil.
func (s *Store) build(updates []Update) (*pebble.Batch, error) {
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	b := s.db.NewBatch()
	for i := range updates {
		u := &updates[i]
		next := u.Next
		if u.Event.State == "" {
			u.Event.State = next.State
		}
		var err error
		if sc.job, err = appendJob(sc.job[:0], next); err != nil {
			return b, fmt.Errorf("job %d: encode: %w", next.ID, err)
		}
		if sc.event, err = appendEvent(sc.event[:0], &u.Event); err != nil {
			return b, fmt.Errorf("job %d: encode event: %w", next.ID, err)
		}
		// Batch operations cannot fail on an open, uncommitted batch;
		// Set copies key and value.
		_ = b.Set(jobKey(next.ID), sc.job, nil)
		_ = b.Set(eventKey(next.ID, u.Event.Seq), sc.event, nil)
		// A key both versions occupy (the active key from dispatched to
		// running, the state key when only a field changes) stays as it
		// is: deleting and setting it again would end the same.
		var old [3][]byte
		var nOld int
		if u.Prev != nil {
			old, nOld = indexKeyArray(u.Prev)
		} else if next.IdempotencyKey != "" {
			var id [8]byte
			binary.BigEndian.PutUint64(id[:], next.ID)
			_ = b.Set(idemKey(next.IdempotencyKey), id[:], nil)
		}
		keys, n := indexKeyArray(next)
		for _, k := range old[:nOld] {
			if !slices.ContainsFunc(keys[:n], func(nk []byte) bool { return bytes.Equal(k, nk) }) {
				_ = b.Delete(k, nil)
			}
		}
		for _, k := range keys[:n] {
			if !slices.ContainsFunc(old[:nOld], func(ok []byte) bool { return bytes.Equal(k, ok) }) {
				_ = b.Set(k, nil, nil)
			}
		}
		if a := u.Audit; a != nil {
			if a.ID == 0 {
				return b, fmt.Errorf("job %d: %w: audit entry ID 0", next.ID, ErrInvalid)
			}
			v, err := json.Marshal(a)
			if err != nil {
				return b, fmt.Errorf("job %d: encode audit entry: %w", next.ID, err)
			}
			_ = b.Set(auditKey(a.ID), v, nil)
		}
	}
	return b, nil
}

// indexKeys returns every index key j occupies: its queue, delay or
// active key, its state key and its finished key, as far as its state
// has them.
func indexKeys(j *Job) [][]byte {
	keys, n := indexKeyArray(j)
	return keys[:n:n]
}

// indexKeyArray is indexKeys without allocating the slice: the first n
// of keys are set.
func indexKeyArray(j *Job) (keys [3][]byte, n int) {
	for _, k := range [3][]byte{indexKey(j), stateKey(j), doneKey(j)} {
		if k != nil {
			keys[n] = k
			n++
		}
	}
	return keys, n
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
