package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"jobsuite/controller/snapshot"
	"jobsuite/controller/store"
)

// Options configures Open.
type Options struct {
	// Store is passed to store.Open for every store the FSM opens, with
	// NoSync forced on: the raft log is the write-ahead log.
	Store store.Options
	// Logger receives the FSM's log lines; nil discards them.
	Logger hclog.Logger
	// Fatal is called, once, when the FSM cannot apply an entry that the
	// rest of the cluster applies: the store failed (a Pebble error, a
	// full disk), or an entry holds a command type this build does not
	// know. Skipping the entry would make this node diverge; it must stop
	// and be restarted (it then replays the entry from its log). The
	// controller logs and exits; nil panics. After Fatal returns, the FSM
	// applies nothing more (every later entry's Response has ErrStopped).
	Fatal func(error)
	// Applied, if set, is called with the commands of each batch of
	// entries once they are applied, and with those of entries skipped
	// because the store held them already (raft's replay after a
	// restart): the output channel's repair hears of ended attempts
	// this way (its queue is also in the store, written by the
	// commands themselves, for what no replay brings back: entries
	// behind a snapshot). It runs on raft's apply path: it must not
	// block.
	Applied func(cmds []store.Command)
	// Restored, if set, is called once a snapshot replaced the store
	// (Restore: a follower installing the leader's snapshot, an
	// operator's restore), before any entry after it is applied: the
	// output channel's repair reads the new store's repair queue then,
	// since a snapshot brings no rounds to hear of. It runs on raft's
	// FSM goroutine: it must not block.
	Restored func()
}

// Response is what ApplyBatch returns for one log entry: an
// ApplyFuture's Response() on the node that proposed it.
type Response struct {
	// Results has one store.Result per command of the round, in order
	// (a command of an unknown ignorable type has none).
	Results []store.Result
	// Err is set when the entry applied nothing: its bytes are not a
	// round (store.ErrBadRound: every node refuses it alike, and the
	// applied index moves past it), or the FSM stopped (ErrStopped).
	Err error
	// Skipped says the entry was at or below the store's applied index
	// when it came: it was applied before a restart (or came with a
	// snapshot) and was not applied again. Results is nil then.
	Skipped bool
}

// FSM is a raft.BatchingFSM over a store.Store. Each raft log entry of
// type LogCommand is one round of commands (store.EncodeRound);
// ApplyBatch applies all the entries raft hands it as one Pebble batch,
// with the last entry's index and term (store.SetApplied) in the same
// batch, so the store and its applied index never disagree, and entries
// at or below that index are skipped: a replay after a restart applies
// nothing twice. Snapshot and Restore use Pebble checkpoints
// (snapshot.go).
//
// The FSM owns its directory: a symlink "store" naming the live store's
// directory "store-NNNNNN", which Restore replaces by an atomic rename.
type FSM struct {
	dir   string
	opts  store.Options
	log   hclog.Logger
	fatal func(error)
	// onApplied is Options.Applied, onRestored Options.Restored.
	onApplied  func(cmds []store.Command)
	onRestored func()

	// mu: Restore holds it to swap the store; ApplyBatch, Snapshot and
	// Store hold it for reading.
	mu      sync.RWMutex
	st      *store.Store
	gen     int  // NNNNNN of the live store's directory
	closed  bool // after Close
	stopped error

	applied atomic.Uint64
	term    atomic.Uint64
	// advanced is closed and replaced whenever applied moves (WaitApplied).
	advMu    sync.Mutex
	advanced chan struct{}

	// Counters, for tests and metrics.
	entriesApplied atomic.Uint64 // LogCommand entries applied
	entriesSkipped atomic.Uint64 // entries at or below the applied index
	restores       atomic.Uint64 // snapshots restored
	checkpoints    atomic.Uint64 // names snapshot checkpoint directories
}

var (
	_ raft.BatchingFSM = (*FSM)(nil)
)

const (
	liveLink    = "store"
	storePrefix = "store-"
	cpPrefix    = "checkpoint-"
	tmpSuffix   = ".tmp"
)

func storeDirName(gen int) string { return fmt.Sprintf("%s%06d", storePrefix, gen) }

// Open opens the FSM in dir, creating it if needed. It first undoes
// whatever an interrupted Restore or Snapshot left (any store directory
// the "store" link does not name, half-received snapshots, checkpoints
// not yet released), then opens the live store and reads its applied
// index: raft's replay skips every entry up to it.
func Open(dir string, opts Options) (*FSM, error) {
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	f := &FSM{
		dir:        dir,
		opts:       opts.Store,
		log:        logger.Named("fsm"),
		fatal:      opts.Fatal,
		onApplied:  opts.Applied,
		onRestored: opts.Restored,
		advanced:   make(chan struct{}),
	}
	f.opts.NoSync = true
	if f.fatal == nil {
		f.fatal = func(err error) { panic(fmt.Sprintf("cluster: FSM cannot go on: %v", err)) }
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: open %s: %w", dir, err)
	}
	gen, err := f.recover()
	if err != nil {
		return nil, fmt.Errorf("cluster: open %s: %w", dir, err)
	}
	if gen == 0 {
		// A new FSM. The store exists before the link names it, so the
		// link never names a directory that is not a store (recover
		// removes an unlinked one).
		gen = 1
	}
	st, err := store.Open(filepath.Join(dir, storeDirName(gen)), f.opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: open %s: %w", dir, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, liveLink)); errors.Is(err, os.ErrNotExist) {
		if err := f.link(gen); err != nil {
			_ = st.Close()
			return nil, fmt.Errorf("cluster: open %s: %w", dir, err)
		}
	}
	index, term, err := st.Applied()
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("cluster: open %s: %w", dir, err)
	}
	f.st, f.gen = st, gen
	f.applied.Store(index)
	f.term.Store(term)
	f.log.Debug("opened", "dir", dir, "store", storeDirName(gen), "onAppliedindex", index, "onAppliedterm", term)
	return f, nil
}

// recover reads the live link and removes every other store directory,
// half-received snapshot and checkpoint. It returns the live store's
// generation, or 0 if there is no link yet (a new FSM).
func (f *FSM) recover() (int, error) {
	gen := 0
	target, err := os.Readlink(filepath.Join(f.dir, liveLink))
	switch {
	case err == nil:
		n, ok := strings.CutPrefix(target, storePrefix)
		if gen, err = strconv.Atoi(n); !ok || err != nil || gen <= 0 || target != storeDirName(gen) {
			return 0, fmt.Errorf("the %q link names %q, not a store directory", liveLink, target)
		}
		// Never open an empty store in place of a missing one: the node
		// would believe it applied nothing.
		if _, err := os.Stat(filepath.Join(f.dir, target)); err != nil {
			return 0, fmt.Errorf("the live store %s: %w", target, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return 0, err
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		name := e.Name()
		if name == liveLink || (gen > 0 && name == storeDirName(gen)) {
			continue
		}
		if strings.HasPrefix(name, storePrefix) || strings.HasPrefix(name, cpPrefix) || name == liveLink+tmpSuffix {
			f.log.Info("removing what an interrupted restore or snapshot left", "path", name)
			if err := os.RemoveAll(filepath.Join(f.dir, name)); err != nil {
				return 0, err
			}
		}
	}
	return gen, nil
}

// link points the live link at generation gen: a new link under a
// temporary name renamed over the old one (atomic), then the directory
// synced.
func (f *FSM) link(gen int) error {
	tmp := filepath.Join(f.dir, liveLink+tmpSuffix)
	_ = os.Remove(tmp)
	if err := os.Symlink(storeDirName(gen), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(f.dir, liveLink)); err != nil {
		return err
	}
	return snapshot.SyncDir(f.dir)
}

// Store returns the live store. Restore may close it and put another in
// its place at any time: use it for one operation, get it again for the
// next, and on store.ErrClosed get it again and retry once.
func (f *FSM) Store() *store.Store {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st
}

// ApplyOutput applies node-local output commands (the output channel's
// store.ReplicaOutput) to the live store, under the lock Restore swaps
// the store with: a chunk is written either to the store a restore
// replaces, before the restore carries that store's output of running
// attempts over (carryOutput), or to the new one — never lost between.
func (f *FSM) ApplyOutput(cmds ...store.Command) ([]store.Result, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Apply(cmds...)
}

// Applied returns the last raft log index (and its term) whose entry the
// store holds.
func (f *FSM) Applied() (index, term uint64) { return f.applied.Load(), f.term.Load() }

// WaitApplied waits until the applied index reaches index, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.advMu.Lock()
		ch := f.advanced
		f.advMu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cluster: waiting for applied index %d (at %d): %w", index, f.applied.Load(), ctx.Err())
		}
	}
}

// setApplied publishes a new applied index and wakes WaitApplied.
func (f *FSM) setApplied(index, term uint64) {
	f.applied.Store(index)
	f.term.Store(term)
	f.advMu.Lock()
	close(f.advanced)
	f.advanced = make(chan struct{})
	f.advMu.Unlock()
}

// Stats are the FSM's counters since Open.
type Stats struct {
	Applied  uint64 // LogCommand entries applied
	Skipped  uint64 // entries skipped: at or below the applied index
	Restores uint64 // snapshots restored
}

// Stats returns the FSM's counters.
func (f *FSM) Stats() Stats {
	return Stats{Applied: f.entriesApplied.Load(), Skipped: f.entriesSkipped.Load(), Restores: f.restores.Load()}
}

// Close closes the live store. Raft must be shut down first.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if err := f.st.Close(); err != nil {
		return fmt.Errorf("cluster: close: %w", err)
	}
	return nil
}

// Configuration returns the membership configuration the store holds
// (the last configuration entry applied, or a restored snapshot's) and
// the index of the entry that set it; ok is false if it holds none.
func (f *FSM) Configuration() (c raft.Configuration, index uint64, ok bool, err error) {
	data, index, err := f.Store().Configuration()
	if err != nil || data == nil {
		return c, 0, false, err
	}
	if c, err = decodeConfiguration(data); err != nil {
		return c, 0, false, fmt.Errorf("cluster: the store's configuration: %w", err)
	}
	return c, index, true, nil
}

// decodeConfiguration is raft.DecodeConfiguration, which panics on bytes
// it cannot read, with an error instead.
func decodeConfiguration(b []byte) (c raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed: %v", r)
		}
	}()
	return raft.DecodeConfiguration(b), nil
}

// Apply applies one entry; raft calls ApplyBatch instead.
func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies the entries raft committed (LogCommand and
// LogConfiguration, in log order) and returns a *Response for each
// (nil for a configuration entry). Every round of the entries above the
// applied index, and each configuration (store.SetConfiguration), goes
// into one store batch, followed by SetApplied with the last entry's
// index and term; entries at or below it are skipped.
// The batch is not synced (Options.Store.NoSync): raft's log holds the
// entries, and a batch lost in a crash comes back from it.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	f.mu.RLock()
	defer f.mu.RUnlock()
	resp := make([]any, len(logs))
	if f.stopped != nil || f.closed {
		err := f.stopped
		if err == nil {
			err = ErrClosed
		}
		for i := range resp {
			resp[i] = &Response{Err: err}
		}
		return resp
	}
	type span struct{ entry, start, n int }
	var (
		cmds            []store.Command
		spans           []span
		lastIdx, lastTm uint64
		applied         = f.applied.Load()
	)
	var replayed []store.Command // Options.Applied: the skipped entries' commands
	for i, l := range logs {
		if l.Index <= applied {
			f.entriesSkipped.Add(1)
			if l.Type == raft.LogCommand {
				resp[i] = &Response{Skipped: true}
				if f.onApplied != nil {
					if round, err := store.DecodeRound(l.Data); err == nil {
						replayed = append(replayed, round...)
					}
				}
			}
			continue
		}
		lastIdx, lastTm = l.Index, l.Term
		if l.Type == raft.LogConfiguration {
			// The membership goes into the store with the entries
			// around it ("zc"): the store says which servers it is
			// the state of.
			cmds = append(cmds, &store.SetConfiguration{Index: l.Index, Data: l.Data})
			continue
		}
		if l.Type != raft.LogCommand {
			continue
		}
		round, err := store.DecodeRound(l.Data)
		if errors.Is(err, store.ErrUnknownCommand) {
			f.stop(fmt.Errorf("entry %d: %w (written by a newer release: upgrade this node)", l.Index, err))
			return f.stoppedResponses(resp)
		}
		if err != nil {
			// The same bytes fail the same way on every node: refuse the
			// entry, move past it.
			f.log.Error("refusing a log entry that is not a round", "index", l.Index, "error", err)
			resp[i] = &Response{Err: err}
			continue
		}
		spans = append(spans, span{i, len(cmds), len(round)})
		cmds = append(cmds, round...)
	}
	if len(replayed) > 0 {
		f.onApplied(replayed)
	}
	if lastIdx == 0 {
		return resp
	}
	cmds = append(cmds, &store.SetApplied{Index: lastIdx, Term: lastTm})
	p, err := f.st.ApplyNoWait(cmds...)
	if err == nil {
		err = p.Wait()
	}
	if err != nil {
		f.stop(fmt.Errorf("applying entries %d-%d: %w", logs[0].Index, lastIdx, err))
		return f.stoppedResponses(resp)
	}
	results := p.Results()
	for _, s := range spans {
		resp[s.entry] = &Response{Results: results[s.start : s.start+s.n : s.start+s.n]}
	}
	f.entriesApplied.Add(uint64(len(spans)))
	f.setApplied(lastIdx, lastTm)
	if f.onApplied != nil {
		f.onApplied(cmds)
	}
	return resp
}

// stoppedResponses fills every response with the stop's error (ErrStopped).
func (f *FSM) stoppedResponses(resp []any) []any {
	for i := range resp {
		resp[i] = &Response{Err: f.stopped}
	}
	return resp
}

// stop records err, stops applying and calls Fatal. The caller holds
// f.mu for reading; stopped is only written by the FSM goroutine.
func (f *FSM) stop(err error) {
	f.stopped = fmt.Errorf("%w: %v", ErrStopped, err)
	f.log.Error("the FSM cannot apply an entry the cluster applies; this node must stop", "error", err)
	f.fatal(err)
}
