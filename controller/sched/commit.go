package sched

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"jobsuite/controller/store"
)

// Committer is the controller's single writer: every durable change is a
// store.Command queued here, and the committer writes what is queued as
// one synced store batch per round (store.ApplyNoWait), in the order it
// was queued. It is the seam a replicated log will sit behind (controller/doc.go).
//
// The scheduler changes its in-memory state first, under its lock, and
// queues the matching command here in the same order; it never holds
// its lock across a disk write, and concurrent transitions share an
// fsync (group commit). Whatever must only happen once a change is
// durable — answering the client, sending a Dispatch to an agent,
// acknowledging a result or output — waits on the batch holding it.
// Output chunks ride in the rounds like everything else: a job stream
// queues each chunk and acknowledges it (LogAck) once its round is
// durable, so a stream costs no fsync of its own. A command nobody
// waits for (AddLazy: a job's start) starts no round at all; it rides
// the next one, within lazyWait.
//
// Two goroutines form a pipeline. The applier takes everything queued so
// far as one batch and hands it to the store with ApplyNoWait, which
// writes it to the WAL and the memtable and returns without waiting for
// the fsync; the applier then starts on the next batch while that one
// syncs, so a command queued during a sync waits for its own fsync,
// not for the one in flight and then its own. Up to maxInFlight batches
// may be in flight at once; Pebble groups their fsyncs. The syncer waits
// for each batch's fsync in the order the batches were applied and only
// then releases its waiters, so batches become done strictly in order:
// a waiter of one batch may rely on every earlier batch being durable.
// (The WAL is written in that order and an fsync covers everything
// before it, so a later batch cannot be durable without the earlier.)
//
// A batch is visible to store readers (GET /jobs/:id, lists, the log
// follower) from ApplyNoWait on, before it is durable. That is
// acceptable: a read acknowledges nothing — the in-memory scheduler state
// that the API and the hub serve is ahead of disk the same way, and
// Pebble already published a synced batch to readers before its fsync
// ended when one batch was applied at a time. A crash can therefore
// forget a state a reader saw, never one a waiter was told is durable.
// Code that acknowledges durability from a store read waits for a
// Barrier first (see Server.recorded in controller/agents.go).
//
// A failed batch (store error or fsync error) is fatal: memory is then
// ahead of disk, so the controller stops (Run returns the error) rather
// than serve a state it cannot persist. So is a job transition or an
// Output chunk the store refuses (its Result has an error): the
// scheduler counted it done, so its memory and the store disagree. Every
// later batch fails with the same error, including those already handed
// to Pebble, and later adds fail at once. On restart the store is the
// truth. Other commands' results (a token that is not there, a join
// token used up) go back to their waiter.
type Committer struct {
	// apply hands a batch to the store without waiting for its fsync
	// (store.ApplyNoWait) and returns each command's result; tests
	// replace it.
	apply    func([]store.Command) (syncer, []store.Result, error)
	applied  func([]store.Command, []store.Result) // CommitOptions.Applied
	log      Log                                   // CommitOptions.Log; nil: apply
	writable func() bool                           // CommitOptions.Writable

	mu     sync.Mutex
	open   *Batch
	failed error
	kick   chan struct{}
	// The open batch's due time (queueWithin) is kept by a timer the
	// queuing goroutine arms itself, so that queuing a command that can
	// wait wakes nobody: armed is when it fires (zero: not armed), and
	// its callback signals due to the applier.
	timer   *time.Timer
	armed   time.Time
	due     chan struct{}
	stopped bool
	wakes   atomic.Int64 // times the applier woke (tests)

	inflight chan *Batch   // applied, waiting for their fsync, in order
	broken   chan struct{} // closed when failed is set
}

// syncer waits for an applied batch to become durable (store.Pending).
type syncer interface{ Wait() error }

// Log is a replicated log the committer writes through instead of the
// store (cluster mode: one raft entry per round, controller/cluster).
// Propose hands a round over without waiting for it; the round's
// results are known only once it is committed and applied, which its
// Proposal's Wait returns. Proposals must complete in the order they
// were proposed, as the store's fsyncs do, so that a waiter of one
// round may still rely on every earlier round being durable.
//
// starts lists where each group of commands queued together (Add, or
// AddAll's commands) begins: a Log that splits a large round into
// several entries splits only there, so a group — a schedule's firing
// with its job, a dependency's decision — is applied whole or not at
// all, as in one store batch.
type Log interface {
	Propose(cmds []store.Command, starts []int) (Proposal, error)
}

// Proposal is a round a Log accepted.
type Proposal interface {
	// Wait blocks until the round is committed and applied and returns
	// one result per command, in order. An error means the round's
	// outcome is unknown (it may still commit under another leader) or
	// it failed.
	Wait() ([]store.Result, error)
}

// lateResults is a syncer whose results come with the wait (a
// Proposal), not with the apply.
type lateResults struct{ p Proposal }

func (l lateResults) Wait() error { panic("sched: lateResults waited without results") }

// maxInFlight bounds the batches applied but not yet released: the one
// the syncer waits on, maxInFlight-2 queued for it, and the one the
// applier has just applied and waits to queue. Beyond that, commands
// gather into the next batch. Deeper pipelines measured no faster
// (BenchmarkCommitter): they only made the batches smaller.
const maxInFlight = 4

// maxInFlightLog is maxInFlight for a replicated Log: raft writes and
// sends every entry queued at once together (one disk write, one
// AppendEntries per follower, up to 64 entries), so more rounds in
// flight share more of a quorum round trip (the design note's starting
// point, to tune with the cluster bench rows).
const maxInFlightLog = 8

// Batch is a group of commands that become durable together.
type Batch struct {
	cmds    []store.Command
	starts  []int          // where each group queued together begins (Log)
	due     time.Time      // applied by then, if no kick comes first (queueWithin); zero: no wait
	results []store.Result // set once applied
	pending syncer         // set once applied
	done    chan struct{}
	err     error
}

// Wait blocks until the batch is durable and returns the commit error.
func (b *Batch) Wait() error {
	<-b.done
	return b.err
}

// Results returns the result of each command, in the order queued
// (AddAll's index gives a caller's first); valid once Wait returned nil.
func (b *Batch) Results() []store.Result {
	<-b.done
	return b.results
}

// Err returns the commit error of a batch that is done, without
// waiting; nil while it is not done yet.
func (b *Batch) Err() error {
	if !b.finished() {
		return nil
	}
	return b.err
}

// finished reports whether b's commit has finished, without waiting.
func (b *Batch) finished() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// CommitOptions are what a Committer tells and asks around it.
type CommitOptions struct {
	// Applied, if set, is called with each batch the store applied and
	// the results it decided, in order, from the applier goroutine,
	// before the batch is durable: the hub hears of output here, once
	// readers can read it. It is not called for a batch that failed.
	Applied func(cmds []store.Command, results []store.Result)
	// Writable, if set, says whether the disk has room for a write;
	// while it says no, the next batch waits (the controller's disk
	// guard) instead of failing the store. It is asked once per batch.
	Writable func() bool
	// Log, if set, is where rounds go instead of the store (cluster
	// mode). Its rounds' results come when they are committed, so
	// Applied is called then, from the goroutine that waits for them,
	// still in round order.
	Log Log
}

// NewCommitter returns a committer that writes to st; Run runs it.
// (st is not used when o.Log is set.)
func NewCommitter(st *store.Store, o CommitOptions) *Committer {
	c := &Committer{
		applied:  o.Applied,
		writable: o.Writable,
		apply: func(cmds []store.Command) (syncer, []store.Result, error) {
			p, err := st.ApplyNoWait(cmds...)
			if err != nil {
				return nil, nil, err
			}
			return p, p.Results(), nil
		},
		kick:     make(chan struct{}, 1),
		due:      make(chan struct{}, 1),
		inflight: make(chan *Batch, maxInFlight-2),
		broken:   make(chan struct{}),
	}
	c.timer = time.AfterFunc(time.Hour, func() {
		select {
		case c.due <- struct{}{}:
		default:
		}
	})
	c.timer.Stop()
	c.log = o.Log
	if c.log != nil {
		c.inflight = make(chan *Batch, maxInFlightLog-2)
	}
	return c
}

// Add queues one command and returns the batch it will be written in.
func (c *Committer) Add(cmd store.Command) *Batch {
	b, _ := c.queue(cmd)
	return b
}

// AddLazy queues one command that need not be durable before anything
// is acted on, so it starts no round of its own: it rides the next round
// something else starts, and at the latest one starts lazyWait after it
// was queued. Its place in the apply order is where it was queued, as
// with Add; nobody waits for it (it returns nothing to wait on), and a
// crash may lose it — whoever queues one must be able to make it again
// (a job's "started": the agent sends Started again on every job stream,
// and a result ends a dispatched attempt as it ends a running one).
func (c *Committer) AddLazy(cmd store.Command) {
	c.queueWithin(lazyWait, cmd)
}

// AddAllWithin is AddAll for commands whose waiter can wait a little:
// they start no round at once, but ride the next round something else
// starts or, at the latest, one started d after they were queued. A
// job's result uses it (resultWait), so that the results of several
// agents arriving close together share one fsync instead of each
// starting its own when the committer is idle.
func (c *Committer) AddAllWithin(d time.Duration, cmds ...store.Command) (*Batch, int) {
	return c.queueWithin(d, cmds...)
}

// Kick starts a round for what is queued, as Add does, without adding
// anything: for whoever a queueWithin waited on (the dispatch loop, for
// a submit's round: Scheduler.submitJobs).
func (c *Committer) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// lazyWait bounds how long a lazy command waits for a round to ride: a
// store reader (GET /jobs/:id, lists by state) sees the change at most
// this late. Under load the next round comes far sooner.
const lazyWait = 50 * time.Millisecond

// Do queues one command, waits until it is durable and returns its
// result.
func (c *Committer) Do(cmd store.Command) (store.Result, error) {
	b, i := c.queue(cmd)
	if err := b.Wait(); err != nil {
		return store.Result{}, err
	}
	return b.results[i], nil
}

// DoContext is Do that stops waiting when ctx ends (the command may
// still be applied later): for waiters that must not hold a shutdown.
func (c *Committer) DoContext(ctx context.Context, cmd store.Command) (store.Result, error) {
	b, i := c.queue(cmd)
	select {
	case <-b.done:
	case <-ctx.Done():
		return store.Result{}, ctx.Err()
	}
	if b.err != nil {
		return store.Result{}, b.err
	}
	return b.results[i], nil
}

// AddAll queues cmds to be written in one batch, all of them durable or
// none (one round: a replicated log carries it as one entry), and
// returns the batch and the place of cmds[0] in it.
func (c *Committer) AddAll(cmds ...store.Command) (*Batch, int) {
	return c.queue(cmds...)
}

// Barrier returns a batch that is done once everything queued before it
// is durable. It adds no command: it is the batch being filled, or an
// empty one, which the store makes a barrier (store.ApplyNoWait).
func (c *Committer) Barrier() *Batch {
	b, _ := c.queue(nil)
	return b
}

// queueWithin adds cmds to the open batch without starting a round: the
// batch is applied by d from now at the latest (AddLazy, AddAllWithin).
func (c *Committer) queueWithin(d time.Duration, cmds ...store.Command) (*Batch, int) {
	c.mu.Lock()
	b := c.openBatch()
	if b == nil {
		c.mu.Unlock()
		b := &Batch{done: make(chan struct{}), err: c.err()}
		close(b.done)
		return b, 0
	}
	i := len(b.cmds)
	for _, cmd := range cmds {
		if cmd != nil {
			b.cmds = append(b.cmds, cmd)
		}
	}
	if len(b.cmds) > i {
		b.starts = append(b.starts, i)
	}
	due := time.Now().Add(d)
	if b.due.IsZero() || due.Before(b.due) {
		b.due = due
		c.armLocked(due)
	}
	c.mu.Unlock()
	return b, i
}

// armLocked makes the timer fire at due, unless it already fires by
// then. The caller holds c.mu.
func (c *Committer) armLocked(due time.Time) {
	if !c.armed.IsZero() && !due.Before(c.armed) {
		return
	}
	c.armed = due
	c.timer.Reset(time.Until(due))
}

// disarmLocked stops the timer. The caller holds c.mu.
func (c *Committer) disarmLocked() {
	if !c.armed.IsZero() {
		c.timer.Stop()
		c.armed = time.Time{}
	}
}

// openBatch returns the batch being filled, making one if needed; nil
// once the committer failed or stopped. The caller holds c.mu.
func (c *Committer) openBatch() *Batch {
	if c.failed != nil || c.stopped {
		return nil
	}
	if c.open == nil {
		c.open = &Batch{done: make(chan struct{})}
	}
	return c.open
}

// queue adds cmds (nil ones are skipped) to the open batch and returns
// the batch and the first one's place in it.
func (c *Committer) queue(cmds ...store.Command) (*Batch, int) {
	c.mu.Lock()
	b := c.openBatch()
	if b == nil {
		c.mu.Unlock()
		b := &Batch{done: make(chan struct{}), err: c.err()}
		close(b.done)
		return b, 0
	}
	i := len(b.cmds)
	for _, cmd := range cmds {
		if cmd != nil {
			b.cmds = append(b.cmds, cmd)
		}
	}
	if len(b.cmds) > i {
		b.starts = append(b.starts, i) // a group a Log may not split
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return b, i
}

func (c *Committer) err() error {
	if c.failed != nil {
		return c.failed
	}
	return ErrShuttingDown
}

// fail records the first error; later adds fail with it.
func (c *Committer) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = err
		close(c.broken)
	}
}

// Run applies batches until stop is closed, then flushes what is queued,
// waits until every applied batch is synced and returns. It returns the
// first store error, at once (after the batches in flight are released).
func (c *Committer) Run(stop <-chan struct{}) error {
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		c.syncLoop()
	}()
	c.applyLoop(stop)
	// Whatever is still open will not be applied: stopped (or failed)
	// makes it fail in order behind the batches in flight.
	c.mu.Lock()
	c.stopped = true
	b := c.open
	c.open = nil
	c.mu.Unlock()
	if b != nil {
		b.err = c.currentErr()
		c.inflight <- b
	}
	close(c.inflight)
	<-synced
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// currentErr returns err, taking c.mu.
func (c *Committer) currentErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err()
}

// applyLoop hands batches to the store until stop is closed (after a
// final flush) or a batch fails. A batch holding only commands that
// can wait (queueWithin) is handed over at its due time, unless a kick
// comes first; the timer for the earliest due time is armed by whoever
// queues (armLocked), and disarmed when a kick takes the batch.
func (c *Committer) applyLoop(stop <-chan struct{}) {
	defer func() {
		c.mu.Lock()
		c.disarmLocked()
		c.mu.Unlock()
	}()
	for {
		select {
		case <-c.kick:
			c.wakes.Add(1)
			if !c.flush(false, stop) {
				return
			}
		case <-c.due:
			c.wakes.Add(1)
			// The batch it was armed for may have gone with a kick; the
			// one open now may be due later.
			c.mu.Lock()
			c.armed = time.Time{}
			var due time.Time
			if c.open != nil {
				due = c.open.due
			}
			later := !due.IsZero() && time.Until(due) > 0
			if later {
				c.armLocked(due)
			}
			c.mu.Unlock()
			if due.IsZero() || later {
				continue
			}
			if !c.flush(false, stop) {
				return
			}
		case <-stop:
			c.flush(true, nil)
			return
		case <-c.broken:
			return
		}
	}
}

// flush applies the open batch without waiting for its fsync and queues
// it for the syncer. With final set, later adds fail at once instead of
// waiting for a flush that will never come. It reports false once the
// committer failed. While the disk has no room it waits, until stop is
// closed; then the batch fails (ErrDiskFull) and so does the committer.
func (c *Committer) flush(final bool, stop <-chan struct{}) bool {
	if !c.waitWritable(stop) {
		c.fail(ErrDiskFull)
	}
	c.mu.Lock()
	b := c.open
	c.open = nil
	c.disarmLocked() // whatever it was armed for goes now
	if final {
		c.stopped = true
	}
	failed := c.failed
	c.mu.Unlock()
	if b == nil {
		return failed == nil
	}
	if failed != nil {
		b.err = failed
	} else {
		if c.log != nil {
			var p Proposal
			if p, b.err = c.log.Propose(b.cmds, b.starts); b.err == nil {
				b.pending = lateResults{p}
			}
		} else {
			b.pending, b.results, b.err = c.apply(b.cmds)
		}
		if _, late := b.pending.(lateResults); b.err == nil && !late {
			c.decided(b)
		}
	}
	ok := b.err == nil
	if !ok {
		c.fail(b.err)
	}
	c.inflight <- b // blocks while the pipeline is full; the syncer owns b now
	return ok
}

// diskWait is how often a committer waiting for disk space looks again.
const diskWait = 250 * time.Millisecond

// waitWritable waits while the disk has no room for a write. It reports
// false if stop was closed first (a nil stop: it does not wait).
func (c *Committer) waitWritable(stop <-chan struct{}) bool {
	if c.writable == nil || c.writable() {
		return true
	}
	if stop == nil {
		return false
	}
	t := time.NewTicker(diskWait)
	defer t.Stop()
	for !c.writable() {
		select {
		case <-stop:
			return false
		case <-t.C:
		}
	}
	return true
}

// syncLoop waits for each applied batch's fsync, in order, and releases
// its waiters. After a failure every later batch fails with that error.
func (c *Committer) syncLoop() {
	var failed error
	for b := range c.inflight {
		if l, late := b.pending.(lateResults); late && b.err == nil && failed == nil {
			// A replicated round: its results came with its commit.
			if b.results, b.err = l.p.Wait(); b.err == nil {
				c.decided(b)
			}
		} else if b.pending != nil && !late {
			if err := b.pending.Wait(); err != nil && b.err == nil {
				b.err = err
			}
		}
		switch {
		case failed != nil:
			b.err = failed
		case b.err != nil:
			failed = b.err
			c.fail(failed)
		}
		close(b.done)
	}
}

// decided takes a batch whose results are known: a refused job
// transition or output chunk fails it (refused), and Applied hears of
// it otherwise.
func (c *Committer) decided(b *Batch) {
	b.err = refused(b.cmds, b.results)
	if b.err == nil && c.applied != nil {
		c.applied(b.cmds, b.results)
	}
}

// refused returns an error for the first job transition, output chunk or
// schedule change the store refused: the scheduler counted it done, so
// memory and store disagree (ErrDiverged).
func refused(cmds []store.Command, results []store.Result) error {
	for i, r := range results {
		if r.Err == nil {
			continue
		}
		switch cmds[i].(type) {
		case *store.Transition, *store.Output, *store.PutSchedule, *store.DeleteSchedule:
			return fmt.Errorf("%w: %w", ErrDiverged, r.Err)
		}
	}
	return nil
}
