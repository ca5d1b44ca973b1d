package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Apply writes cmds as one Pebble batch, synced unless Options.NoSync,
// and returns each command's Result: either every command's writes are
// durable when it returns without error, or nothing was written. It is
// ApplyNoWait followed by Wait; concurrent callers share fsyncs.
func (s *Store) Apply(cmds ...Command) ([]Result, error) {
	p, err := s.ApplyNoWait(cmds...)
	if err != nil {
		return nil, err
	}
	if err := p.Wait(); err != nil {
		return nil, err
	}
	return p.Results(), nil
}

// ApplyNoWait is the one function that writes to the store. It applies
// cmds in order as one batch (see Command for what each decides and
// why the result is deterministic), writes the batch to the WAL and the
// memtable and returns without waiting for its fsync; Pending.Wait waits
// for it. Batches are applied one at a time, in call order, and each
// reads what the ones before it wrote: a later command sees an earlier
// one's effect, in the same batch or an earlier one. An fsync covers
// every batch written before it, so when one batch's Wait returns nil
// every batch ApplyNoWait returned earlier is durable too; several
// batches may be in flight, and Pebble groups their fsyncs.
//
// A batch is visible to readers (Get, List, Active, …) once ApplyNoWait
// returns, before it is durable: anything that tells the outside world
// a write is durable must wait for its Wait first, not infer it from a
// read. A batch of no commands, or of commands that all changed
// nothing, still writes a WAL record, so its Wait is a barrier: it
// returns once everything applied before is durable.
//
// A malformed command refuses the whole batch with ErrInvalid, and a
// failed read, encoding or write with its error; nothing is written
// then and there is nothing to wait for. Otherwise the caller must call
// Wait exactly once, from any goroutine: until then the batch holds the
// store open (Close waits for it).
func (s *Store) ApplyNoWait(cmds ...Command) (*Pending, error) {
	for i, c := range cmds {
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("store: apply: command %d: %w", i, err)
		}
	}
	if !s.acquire() {
		return nil, fmt.Errorf("store: apply: %w", ErrClosed)
	}
	p, err := s.apply(cmds)
	if err != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("store: apply: %w", err)
	}
	return p, nil
}

// Pending is a batch ApplyNoWait handed to Pebble: it is in the WAL and
// the memtable, and its fsync may still be running.
type Pending struct {
	s       *Store
	b       *pebble.Batch // awaiting SyncWait; nil without sync
	results []Result
	err     error
	done    bool
}

// Results returns the result of each command, in order. They are known
// once ApplyNoWait returns; they hold only if Wait returns nil.
func (p *Pending) Results() []Result { return p.results }

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
	p.s.mu.RUnlock()
	return p.err
}

// head is what apply keeps of a job's current record: the fields its
// index keys, its event count and its idempotency key derive from. A
// zero head (empty state) is a job that is not stored.
type head struct {
	state                       State
	priority                    int
	queued, notBefore, finished uint64 // Unix nanoseconds, as nanos encodes them
	events                      uint32
	key                         string // idempotency key
}

func headOf(j *Job) head {
	return head{
		state: j.State, priority: j.Priority,
		queued: nanos(j.QueuedAt), notBefore: nanos(j.NotBefore), finished: nanos(j.FinishedAt),
		events: j.Events, key: j.IdempotencyKey,
	}
}

// keys returns the index keys a job in this head occupies: its queue,
// delay or active key, its state key and its finished key, as far as its
// state has them. The first n are set. They are written into buf, so
// that a Transition, which computes the keys of two heads, allocates
// none (the key functions' own buffers stay on the stack).
func (h *head) keys(id uint64, buf *keyBuf) (keys [3][]byte, n int) {
	switch {
	case h.state == Queued:
		keys[n] = append(buf[n][:0], queueKeyAt(h.priority, h.queued, id)...)
		n++
	case h.state == Waiting:
		keys[n] = append(buf[n][:0], delayKeyAt(h.notBefore, id)...)
		n++
	case h.state.Active():
		keys[n] = append(buf[n][:0], activeKey(id)...)
		n++
	}
	if code, ok := stateCodes[h.state]; ok {
		keys[n] = append(buf[n][:0], stateIDKey(code, id)...)
		n++
	}
	if h.state.Terminal() {
		keys[n] = append(buf[n][:0], doneKeyAt(h.finished, id)...)
		n++
	}
	return keys, n
}

// keyBuf holds the index keys of one head (head.keys): at most three,
// the longest a queue key of 18 bytes.
type keyBuf [3][18]byte

// indexKeys returns every index key j occupies.
func indexKeys(j *Job) [][]byte {
	h := headOf(j)
	keys, n := h.keys(j.ID, new(keyBuf))
	return keys[:n:n]
}

// round is the batch ApplyNoWait builds, and what it has changed so far:
// commands read through it, so a later command sees an earlier one's
// writes before they are in Pebble. It lives in the Store and is reused
// under applyMu.
type round struct {
	s  *Store
	b  *pebble.Batch
	sc scratch
	// jobs holds the head of every job this round wrote, removed (zero
	// head) or read from Pebble.
	jobs map[uint64]head
	// kv holds the small records (idempotency keys, tokens, revocations,
	// join tokens) this round wrote or deleted, by key.
	kv       map[string]kvEntry
	finished int64  // change of the finished jobs count
	lastID   uint64 // highest job ID this round created
	// moves are the jobs' state changes, for the state counts
	// (counts.go): from "" is a create, to "" a removal.
	moves []stateMove
	// ends are the log ends this round changed, of jobs whose end the
	// store knows (Store.logEnds); merged into it once the batch is
	// committed.
	ends map[uint64]uint64
}

// logEnd returns the end of job id's stored output as this round left
// it, if the store knows it.
func (r *round) logEnd(id uint64) (uint64, bool) {
	if e, ok := r.ends[id]; ok {
		return e, true
	}
	e, ok := r.s.logEnds[id]
	return e, ok
}

type stateMove struct{ from, to State }

// roundMapKeep is the size above which a round's maps are replaced
// rather than cleared for the next round.
const roundMapKeep = 256

type kvEntry struct {
	v   []byte
	del bool
}

// scratch holds the buffers apply encodes into.
type scratch struct {
	job, event, audit []byte
	old, next         keyBuf // a Transition's index keys, before and after
}

// apply applies cmds as one batch. The caller holds s.mu for reading; the
// returned Pending releases it in Wait.
func (s *Store) apply(cmds []Command) (*Pending, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	r := &s.round
	r.s = s
	r.b = s.db.NewBatch()
	// Clearing a map costs its capacity, which never shrinks: after a big
	// round (a batch submit), start the next with fresh maps instead.
	if len(r.jobs) > roundMapKeep {
		r.jobs = make(map[uint64]head)
	} else {
		clear(r.jobs)
	}
	if len(r.kv) > roundMapKeep {
		r.kv = make(map[string]kvEntry)
	} else {
		clear(r.kv)
	}
	if len(r.ends) > roundMapKeep {
		r.ends = make(map[uint64]uint64)
	} else {
		clear(r.ends)
	}
	r.finished, r.lastID, r.moves = 0, 0, r.moves[:0]
	p := &Pending{s: s, results: make([]Result, len(cmds))}
	var err error
	for i, c := range cmds {
		if p.results[i], err = c.apply(r); err != nil {
			_ = r.b.Close()
			return nil, fmt.Errorf("command %d: %w", i, err)
		}
	}
	if r.b.Empty() {
		// Still a WAL record, so that Wait waits for an fsync: a barrier.
		_ = r.b.LogData(nil, nil)
	}
	counting := s.counts.begin()
	defer s.counts.end()
	if s.write.Sync {
		err = s.db.ApplyNoSyncWait(r.b, s.write)
	} else {
		err = r.b.Commit(s.write)
	}
	if err != nil {
		_ = r.b.Close()
		return nil, err
	}
	if counting {
		for _, m := range r.moves {
			s.counts.add(m.from, m.to)
		}
	}
	if s.write.Sync {
		p.b = r.b
	} else {
		_ = r.b.Close()
	}
	r.b = nil
	for id, e := range r.ends {
		s.logEnds[id] = e
	}
	for id, h := range r.jobs {
		if h.state == "" || h.state.Terminal() {
			delete(s.live, id)
			delete(s.logEnds, id) // after the round's TruncateLog used it
		} else {
			s.live[id] = h
		}
	}
	s.finished.Add(r.finished)
	if r.lastID > s.stored {
		s.stored = r.lastID
		s.seeID(r.lastID)
	}
	return p, nil
}

// job returns the head of job id's current record: as this round left
// it, as apply last wrote it (s.live holds every unfinished job written
// since Open), or as stored.
func (r *round) job(id uint64) (head, error) {
	if h, ok := r.jobs[id]; ok {
		return h, nil
	}
	if h, ok := r.s.live[id]; ok {
		return h, nil
	}
	if id > r.s.stored {
		return head{}, nil // above every job ever stored: there is none
	}
	v, closer, err := r.s.db.Get(jobKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return head{}, nil
	}
	if err != nil {
		return head{}, err
	}
	j := new(Job)
	if !decodeJobFast(v, j, nil) {
		*j = Job{}
		err = jsonDecodeJob(v, j)
	}
	_ = closer.Close()
	if err != nil {
		return head{}, fmt.Errorf("job %d: %w", id, err)
	}
	h := headOf(j)
	r.jobs[id] = h
	return h, nil
}

// get returns the value of a small record as this round sees it.
func (r *round) get(key []byte) ([]byte, bool, error) {
	if e, ok := r.kv[string(key)]; ok {
		return e.v, !e.del, nil
	}
	v, closer, err := r.s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v = bytes.Clone(v)
	_ = closer.Close()
	return v, true, nil
}

// set writes a small record.
func (r *round) set(key, v []byte) {
	_ = r.b.Set(key, v, nil) // cannot fail on an open batch; copies
	r.kv[string(key)] = kvEntry{v: v}
}

// del deletes a small record.
func (r *round) del(key []byte) {
	_ = r.b.Delete(key, nil)
	r.kv[string(key)] = kvEntry{del: true}
}

// setJSON writes v as JSON under key (encoding/json writes maps with
// sorted keys: the same value always gives the same bytes).
func (r *round) setJSON(key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.set(key, data)
	return nil
}

// scan calls fn with every small record whose key starts with prefix, in
// key order, as this round sees them.
func (r *round) scan(prefix []byte, fn func(k, v []byte) error) error {
	found := map[string][]byte{}
	it, err := r.s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		found[string(it.Key())] = bytes.Clone(it.Value())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	for k, e := range r.kv {
		if !bytes.HasPrefix([]byte(k), prefix) {
			continue
		}
		if e.del {
			delete(found, k)
		} else {
			found[k] = e.v
		}
	}
	keys := make([]string, 0, len(found))
	for k := range found {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn([]byte(k), found[k]); err != nil {
			return err
		}
	}
	return nil
}

// idemOwner returns the job holding idempotency key k, if any.
func (r *round) idemOwner(k string) (uint64, bool, error) {
	v, ok, err := r.get(idemKey(k))
	if err != nil || !ok {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("idempotency key %q: malformed value (%d bytes)", k, len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

func (t *Transition) apply(r *round) (Result, error) {
	next := t.Job
	id := next.ID
	cur, err := r.job(id)
	if err != nil {
		return Result{}, err
	}
	create := t.Event.Seq == 0
	switch {
	case create && cur.state != "":
		return Result{Err: fmt.Errorf("store: create job %d: %w: it exists", id, ErrConflict)}, nil
	case !create && cur.state == "":
		return Result{Err: fmt.Errorf("store: update job %d: %w", id, ErrNotFound)}, nil
	case !create && cur.events != t.Event.Seq:
		return Result{Err: fmt.Errorf("store: update job %d: %w: event %d of a record counting %d", id, ErrConflict, t.Event.Seq, cur.events)}, nil
	}
	if create && next.IdempotencyKey != "" {
		owner, taken, err := r.idemOwner(next.IdempotencyKey)
		if err != nil {
			return Result{}, err
		}
		if taken {
			return Result{Err: fmt.Errorf("store: create job %d: %w: %q belongs to job %d", id, ErrExists, next.IdempotencyKey, owner), Owner: owner}, nil
		}
	}

	sc := &r.sc
	ev := t.Event
	if ev.State == "" {
		ev.State = next.State
	}
	if sc.job, err = appendJob(sc.job[:0], next); err != nil {
		return Result{}, fmt.Errorf("job %d: encode: %w", id, err)
	}
	if sc.event, err = appendEvent(sc.event[:0], &ev); err != nil {
		return Result{}, fmt.Errorf("job %d: encode event: %w", id, err)
	}
	var audit []byte
	if t.Audit != nil {
		if sc.audit, err = appendAudit(sc.audit[:0], t.Audit); err != nil {
			return Result{}, fmt.Errorf("job %d: encode audit entry: %w", id, err)
		}
		audit = sc.audit
	}
	b := r.b
	// Batch operations cannot fail on an open, uncommitted batch; Set
	// copies key and value.
	_ = b.Set(jobKey(id), sc.job, nil)
	_ = b.Set(eventKey(id, ev.Seq), sc.event, nil)
	// A key both versions occupy (the active key from dispatched to
	// running, the state key when only a field changes) stays as it is:
	// deleting and setting it again would end the same.
	nh := headOf(next)
	old, nOld := cur.keys(id, &sc.old)
	keys, n := nh.keys(id, &sc.next)
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
	if create && next.IdempotencyKey != "" {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], id)
		r.set(idemKey(next.IdempotencyKey), v[:])
	}
	if audit != nil {
		_ = b.Set(auditKey(t.Audit.ID), audit, nil)
	}
	switch wasDone, isDone := cur.state.Terminal(), next.State.Terminal(); {
	case isDone && !wasDone:
		r.finished++
	case wasDone && !isDone:
		r.finished--
	}
	if cur.state != next.State {
		r.moves = append(r.moves, stateMove{cur.state, next.State})
	}
	r.jobs[id] = nh
	if create {
		r.lastID = max(r.lastID, id)
		r.ends[id] = 0 // a new job's log is empty
	}
	return Result{}, nil
}

func (o *Output) apply(r *round) (Result, error) {
	c := &o.Chunk
	// Build the value in the batch itself rather than copying it twice.
	op := r.b.SetDeferred(logKeyTimedLen, logTimedHeader+len(c.Data))
	copy(op.Key, timedLogKey(o.Job, c.Offset))
	op.Value[0] = c.Stream
	binary.BigEndian.PutUint64(op.Value[1:], nanos(c.Time))
	copy(op.Value[logTimedHeader:], c.Data)
	if err := op.Finish(); err != nil {
		return Result{}, fmt.Errorf("job %d: output: %w", o.Job, err)
	}
	if e, ok := r.logEnd(o.Job); ok {
		r.ends[o.Job] = max(e, c.Offset+uint64(len(c.Data)))
	}
	return Result{}, nil
}

func (c *PutToken) apply(r *round) (Result, error) {
	return Result{}, r.setJSON(tokenKey(c.Token.ID), &c.Token)
}

func (c *DeleteToken) apply(r *round) (Result, error) {
	return r.deleteRecord(tokenKey(c.ID), "token "+c.ID)
}

func (c *PutRevocation) apply(r *round) (Result, error) {
	return Result{}, r.setJSON(revokedKey(c.Revocation.ID()), &c.Revocation)
}

func (c *DeleteRevocation) apply(r *round) (Result, error) {
	return r.deleteRecord(revokedKey(c.ID), "revocation "+c.ID)
}

// deleteRecord deletes the small record under key, or reports
// ErrNotFound.
func (r *round) deleteRecord(key []byte, what string) (Result, error) {
	_, ok, err := r.get(key)
	if err != nil {
		return Result{}, err
	}
	if !ok {
		return Result{Err: fmt.Errorf("store: delete %s: %w", what, ErrNotFound)}, nil
	}
	r.del(key)
	return Result{}, nil
}

func (c *CreateJoinToken) apply(r *round) (Result, error) {
	key := joinKey(c.Token.Hash)
	if _, ok, err := r.get(key); err != nil {
		return Result{}, err
	} else if ok {
		return Result{Err: fmt.Errorf("store: create join token %s: %w", c.Token.ID(), ErrExists)}, nil
	}
	return Result{}, r.setJSON(key, &c.Token)
}

func (c *UseJoinToken) apply(r *round) (Result, error) {
	if len(c.Hash) == 0 {
		return Result{Err: fmt.Errorf("store: use join token: %w", ErrNotFound)}, nil
	}
	key := joinKey(c.Hash)
	v, ok, err := r.get(key)
	if err != nil {
		return Result{}, err
	}
	if !ok {
		return Result{Err: fmt.Errorf("store: use join token: %w", ErrNotFound)}, nil
	}
	var t JoinToken
	if err := json.Unmarshal(v, &t); err != nil {
		return Result{}, fmt.Errorf("join token: %w", err)
	}
	switch {
	case !c.Now.Before(t.ExpiresAt):
		return Result{JoinToken: &t, Err: fmt.Errorf("store: use join token %s: %w", t.ID(), ErrTokenExpired)}, nil
	case t.UsesLeft <= 0:
		return Result{JoinToken: &t, Err: fmt.Errorf("store: use join token %s: %w", t.ID(), ErrTokenUsedUp)}, nil
	}
	t.UsesLeft--
	t.Enrolled = append(t.Enrolled, c.Agent)
	if err := r.setJSON(key, &t); err != nil {
		return Result{}, err
	}
	return Result{JoinToken: &t}, nil
}

func (c *DeleteJoinToken) apply(r *round) (Result, error) {
	notFound := Result{Err: fmt.Errorf("store: delete join token %q: %w", c.ID, ErrNotFound)}
	b, err := hex.DecodeString(c.ID)
	if err != nil || len(b) != JoinTokenIDBytes {
		return notFound, nil
	}
	var found []JoinToken
	err = r.scan(joinKey(b), func(k, v []byte) error {
		var t JoinToken
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("join token %x: %w", k[1:], err)
		}
		found = append(found, t)
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	if len(found) == 0 {
		return notFound, nil
	}
	for _, t := range found {
		r.del(joinKey(t.Hash))
	}
	return Result{JoinToken: &found[0]}, nil
}

func (c *PruneJoinTokens) apply(r *round) (Result, error) {
	var old [][]byte
	err := r.scan([]byte{prefixJoin}, func(k, v []byte) error {
		var t JoinToken
		if err := json.Unmarshal(v, &t); err == nil && t.ExpiresAt.Before(c.Before) {
			old = append(old, k)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	for _, k := range old {
		r.del(k)
	}
	return Result{N: len(old)}, nil
}

func (c *AppendAudit) apply(r *round) (Result, error) {
	v, err := appendAudit(r.sc.audit[:0], &c.Entry)
	if err != nil {
		return Result{}, fmt.Errorf("audit entry: %w", err)
	}
	r.sc.audit = v
	_ = r.b.Set(auditKey(c.Entry.ID), v, nil)
	return Result{}, nil
}

func (c *PruneAudit) apply(r *round) (Result, error) {
	_ = r.b.DeleteRange(auditKey(0), auditKey(nanos(c.Before)), nil)
	return Result{}, nil
}

func (c *PruneJobs) apply(r *round) (Result, error) {
	n := 0
	for _, id := range c.IDs {
		cur, err := r.job(id)
		if err != nil {
			return Result{}, err
		}
		if !cur.state.Terminal() {
			continue // not stored, or not finished: never removed
		}
		b := r.b
		_ = b.Delete(jobKey(id), nil)
		var kb keyBuf
		keys, nk := cur.keys(id, &kb)
		for _, k := range keys[:nk] {
			_ = b.Delete(k, nil)
		}
		events := eventKey(id, 0)[:9]
		_ = b.DeleteRange(events, prefixEnd(events), nil)
		logs := logKey(id, 0)[:9]
		_ = b.DeleteRange(logs, prefixEnd(logs), nil)
		r.del(repairKey(id)) // nothing left to repair
		if cur.key != "" {
			// The key is the job's unless something is badly wrong; never
			// free another job's key.
			owner, ok, err := r.idemOwner(cur.key)
			if err != nil {
				return Result{}, err
			}
			if ok && owner == id {
				r.del(idemKey(cur.key))
			}
		}
		r.moves = append(r.moves, stateMove{cur.state, ""})
		r.jobs[id] = head{}
		r.finished--
		n++
	}
	return Result{N: n}, nil
}
