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
	// NoSync commits without fsync: a crash may lose the newest batches.
	// For tests and benchmarks, and for a store behind a replicated log
	// that is its write-ahead log (controller/cluster), where a lost
	// batch is applied again from the log after the applied index
	// (SetApplied) written in the same batch.
	NoSync bool
}

// Store is the controller's durable state in one Pebble database. All
// methods are safe for concurrent use; after Close they return ErrClosed.
type Store struct {
	dir   string
	db    *pebble.DB
	log   hclog.Logger
	write *pebble.WriteOptions // pebble.Sync, or pebble.NoSync with Options.NoSync

	nextID   atomic.Uint64 // last ID handed out (or seen)
	finished atomic.Int64  // entries in the finished index: stored jobs in a terminal state
	// counted is closed once finished holds the count Open started in
	// the background (countFinished); until then it holds only the
	// changes made since Open.
	counted chan struct{}

	// pruneMu serializes Prune calls, so two never choose the same jobs.
	pruneMu sync.Mutex

	// applyMu serializes ApplyNoWait: a batch is built from what the
	// batches before it wrote. It guards round, live and stored.
	applyMu sync.Mutex
	round   round
	// live is the head of every unfinished job apply wrote (or read)
	// since Open: what a Transition needs of the current record, without
	// reading it. It holds exactly what the store holds for those jobs.
	live map[uint64]head
	// logEnds is, for unfinished jobs created since Open, the end of
	// the output this store holds (every write of a job's log goes
	// through apply): a TruncateLog at or past it has nothing to cut and
	// skips its iterator (round.logEnd). Jobs created before Open, or
	// carried in by a restore, are not in it: their truncation reads.
	logEnds map[uint64]uint64
	// stored is at least the highest job ID ever stored: a job with a
	// higher ID does not exist, which a create need not read to know.
	stored uint64

	// mu guards closed; every operation holds it for reading so Close
	// waits for operations in flight instead of pulling the database
	// from under them (Pebble panics on use after close).
	mu     sync.RWMutex
	closed bool

	// secretMu serializes Secret's read-or-create.
	secretMu sync.Mutex

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
	if isLocked(err) {
		// Pebble's LOCK file: "resource temporarily unavailable" says little.
		return nil, fmt.Errorf("store: open %s: %w: another process (a controller or 'jobsuite dev') holds its LOCK file; stop it, or use another data directory", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{
		dir:     dir,
		db:      db,
		log:     logger,
		write:   pebble.Sync,
		live:    map[uint64]head{},
		logEnds: map[uint64]uint64{},
		round:   round{jobs: map[uint64]head{}, kv: map[string]kvEntry{}, ends: map[uint64]uint64{}},
		stalls:  stalls,
	}
	if opts.NoSync {
		s.write = pebble.NoSync
	}
	if err := s.checkSchema(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err := s.migrateSecrets(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	last, err := s.lastJobID()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s.nextID.Store(last)
	s.stored = last
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

// Dump calls fn with every key and its value, in key order, read from
// one snapshot: the whole state that commands make (the node-local
// secrets are files, not keys), byte for byte, except the output
// repair queue ("y"), which each node of a cluster empties on its own
// (RepairDone). fn must not keep k or v past its return; an error from
// fn stops the walk and is returned. Tests compare stores with it.
func (s *Store) Dump(fn func(k, v []byte) error) error {
	if !s.acquire() {
		return fmt.Errorf("store: dump: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(nil)
	if err != nil {
		return fmt.Errorf("store: dump: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); len(k) > 0 && k[0] == prefixRepair {
			continue
		}
		v, err := it.ValueAndErr()
		if err == nil {
			err = fn(it.Key(), v)
		}
		if err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("store: dump: %w", err)
	}
	return nil
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
		if err := decodeEvent(it.Value(), &e); err != nil {
			_ = it.Close()
			return nil, err
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
