package sched

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/clock"
	"jobsuite/controller/store"
	"jobsuite/internal/backoff"
	"jobsuite/protocol"
)

// Scheduler owns the live state: every non-terminal job's latest record,
// the queue, the delay index, the connected agents' books (registry.go)
// and the attempt leases (expiry.go). All of it sits behind one mutex,
// unexported, so only this package's files can take it; everyone else
// calls its methods. No store I/O happens under it: changes are queued
// to the Committer as commands, which writes them in the order they
// were queued; the store is read outside it. Every change of a job goes
// through transition, which keeps memory, indexes and store in step.
type Scheduler struct {
	log    hclog.Logger
	st     Reader
	c      *Committer
	opts   Options
	clock  clock.Clock
	jitter func() float64

	mu     sync.Mutex
	jobs   map[uint64]*store.Job // non-terminal jobs, latest version
	q      *queue
	delay  delayHeap
	agents map[string]*agentState // by name (registry.go)
	leases map[uint64]lease       // job ID → lease of its current attempt (expiry.go)
	expiry expiryHeap             // when leases and controller deadlines may run out
	keys   map[string]*pendingKey // idempotency keys being looked up or created
	logEnd map[uint64]uint64      // job ID → end of its stored output (active jobs that have output; none reads as 0)
	ended  map[uint64]ended       // jobs just finished, until their batch is durable
	endedQ []uint64               // the keys of ended in the order they ended
	// unfilled are the inherited attempts whose gap fill has not
	// completed (Options.OutputChannel; inherited.go), by job.
	unfilled map[uint64]*unfilled
	// dependents lists, under each unfinished job, the blocked jobs
	// that run after it (deps.go).
	dependents map[uint64][]uint64
	// Fan-out (fanout.go): the agents ever seen (their durable
	// records), the unfinished jobs pinned to each agent, when each
	// agent last disconnected, the away checks of queued pinned jobs,
	// and when Load ran.
	known     map[string]store.Agent
	pinned    map[string]map[uint64]struct{}
	goneAt    map[string]time.Time
	pins      pinHeap
	loadedAt  time.Time
	schedules map[string]*schedule // by name (schedules.go)
	timers    timerHeap            // when each schedule fires next
	rotate    int                  // round-robin start among agents
	wake      chan struct{}        // dispatcher doorbell
	// submitWaits: a submit's round waits for the dispatch loop's next
	// pass (submitWait), which kicks the committer once it has added
	// its dispatches, or when it has none (dispatch).
	submitWaits bool
	delayCh     chan struct{} // delay timer doorbell
	expiryCh    chan struct{} // expiry timer doorbell: an earlier entry
	metrics     Metrics       // counts transitions (SetMetrics); noMetrics until then
	disk        Disk          // dispatch pauses while it refuses growth
}

// ended is a job that reached a final state whose batch may not be
// durable yet.
type ended struct {
	job *store.Job
	b   *Batch
}

// pendingKey is an idempotency key a submit holds while it looks the
// key up in the store and, if it creates the job, until the job's batch
// is durable; a submit of the same key meanwhile waits for it and
// returns its job. ready is closed once job (and b, for a job being
// created) or err is set.
type pendingKey struct {
	ready chan struct{}
	job   *store.Job // the job holding the key: created by the holder, or stored
	b     *Batch     // the batch creating job; nil for a stored job
	err   error      // the lookup failed
}

// Options are the scheduler's settings (from controller.Config) and
// what it is given to run on.
type Options struct {
	LeaseTTL          time.Duration
	HeartbeatInterval time.Duration
	KillGrace         time.Duration
	BackoffBase       time.Duration
	BackoffMax        time.Duration
	Aging             time.Duration
	// OfflineTimeout is how long a queued job pinned to an agent (a
	// fan-out child) waits for its agent to connect before it fails;
	// 0 means DefaultOfflineTimeout.
	OfflineTimeout time.Duration
	MaxOutput      uint64 // stored output per attempt, sent in Dispatch; 0: no cap
	Disk           Disk   // dispatch pauses while it refuses growth; nil: no guard
	// Clock is the scheduler's time; nil means clock.Real. Every time the
	// scheduler puts in a command (event, attempt and chunk times,
	// NotBefore, lease deadlines) comes from it.
	Clock clock.Clock
	// Jitter returns a number in [0, 1) that spreads retry delays (see
	// backoff); nil means math/rand/v2's Float64.
	Jitter func() float64
	// Notify, if set, makes the webhook notifications of jobs that start
	// and end: their outbox entries are written in the round of the
	// transition, and handed back to it once that round is durable.
	Notify Notifier
	// OutputChannel: output does not go through the committer (a
	// cluster's output channel, controller/outchan, stores and
	// replicates it), so the scheduler counts an attempt's output only
	// as far as OutputDurable says a quorum holds it. That end is what
	// a lost or finished attempt records as LogBytes and where the next
	// attempt starts, and every round that ends an attempt carries a
	// store.TruncateLog at that end, which removes on every node the
	// bytes no quorum acknowledged. Output (the in-round path) must not
	// be used then.
	OutputChannel bool
}

// New returns a scheduler that reads st and writes through c. It holds
// nothing until Load.
func New(log hclog.Logger, st Reader, c *Committer, o Options) *Scheduler {
	clk, jitter, disk := o.Clock, o.Jitter, o.Disk
	if clk == nil {
		clk = clock.Real{}
	}
	if disk == nil {
		disk = noDisk{}
	}
	if jitter == nil {
		jitter = rand.Float64
	}
	return &Scheduler{
		log: log, st: st, c: c, opts: o, disk: disk, clock: clk, jitter: jitter, metrics: noMetrics{},
		jobs:       map[uint64]*store.Job{},
		q:          newQueue(o.Aging),
		agents:     map[string]*agentState{},
		leases:     map[uint64]lease{},
		keys:       map[string]*pendingKey{},
		logEnd:     map[uint64]uint64{},
		ended:      map[uint64]ended{},
		dependents: map[uint64][]uint64{},
		known:      map[string]store.Agent{},
		pinned:     map[string]map[uint64]struct{}{},
		goneAt:     map[string]time.Time{},
		schedules:  map[string]*schedule{},
		wake:       make(chan struct{}, 1),
		delayCh:    make(chan struct{}, 1),
		expiryCh:   make(chan struct{}, 1),
	}
}

// Load rebuilds memory from the store at start. Attempts that were out
// on agents get a fresh lease with a grace (restartGrace: one lease plus
// the agents' longest retry interval) to reconnect and claim them, after
// which they count as lost.
//
// With a deep queue this is most of the controller's start: the maps are
// sized once for all the jobs, queued jobs go into the queue in bulk, and
// logEnd gets entries only for jobs with output (a missing entry reads
// as 0, the end of no output). The Server creates its metrics first, so
// the jobs are counted here from the slice rather than from the map.
func (s *Scheduler) Load() error {
	jobs, err := s.st.Active()
	if err != nil {
		return err
	}
	// Output of a running attempt is in the store beyond the record's
	// LogBytes (set only when an attempt ends): read before the lock.
	// With the output channel, what this node stores beyond LogBytes may
	// be on no quorum: the running attempt's durable end is found again
	// by gap fill (OutputDurable), and until then it is its LogStart.
	ends := map[uint64]uint64{}
	held := make(map[uint64]bool, len(jobs))
	for _, j := range jobs {
		held[j.ID] = true
		if j.State.Active() && !s.opts.OutputChannel {
			if ends[j.ID], err = s.st.LogEnd(j.ID); err != nil {
				return err
			}
		}
	}
	// The dependencies of blocked jobs that ended (deps.go): their
	// states, read before the lock. One no longer stored is left out
	// and counts as ended well.
	var blocked []*store.Job
	deps := map[uint64]store.State{}
	for _, j := range jobs {
		if j.State != store.Blocked || j.Parent() != 0 {
			continue // a blocked fan-out child waits for its turn, not for jobs
		}
		blocked = append(blocked, j)
		for _, d := range j.After() {
			if _, done := deps[d]; held[d] || done {
				continue
			}
			if err := s.lookUp([]uint64{d}, deps); err != nil && !errors.Is(err, ErrNoDependency) {
				return err
			}
		}
	}
	scheds, err := s.st.Schedules()
	if err != nil {
		return err
	}
	known, err := s.st.Agents()
	if err != nil {
		return err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadSchedules(scheds)
	s.loadedAt = now.UTC()
	for _, a := range known {
		s.known[a.Name] = a
	}
	var parents []*store.Job
	if len(s.jobs) == 0 {
		s.jobs = make(map[uint64]*store.Job, len(jobs))
	}
	queued := make([]*store.Job, 0, len(jobs))
	n := 0
	for _, j := range jobs {
		before := len(s.jobs)
		s.jobs[j.ID] = j
		if len(s.jobs) == before {
			// Listed twice (a stale index entry): the same record.
			continue
		}
		jobs[n] = j
		n++
		if end := max(j.LogBytes, ends[j.ID]); end > 0 {
			s.logEnd[j.ID] = end
		}
		s.pin(j)
		if j.Fanout() != nil {
			parents = append(parents, j) // never dispatched: no attempt, no lease
			continue
		}
		switch j.State {
		case store.Queued:
			queued = append(queued, j)
		case store.Waiting:
			heap.Push(&s.delay, delayItem{id: j.ID, due: j.NotBefore})
		case store.Dispatched, store.Running:
			c := j.Current()
			s.setLease(j.ID, c.Number, now.Add(s.restartGrace()))
			s.setHardDeadline(j.ID, c.Number, c.DispatchedAt, j.Timeout)
			if s.opts.OutputChannel && c.Outcome == "" {
				s.holdFill(j.ID, c.Number) // inherited.go
			}
		}
	}
	jobs = jobs[:n]
	s.q.pushAll(queued)
	for _, j := range queued {
		s.watchPinned(j)
	}
	s.metrics.CountAll(slices.Values(jobs))
	s.loadBlocked(blocked, deps)
	s.loadParents(parents)
	s.log.Info("queue loaded", "queued", s.q.len(), "waiting", s.delay.Len(), "active", len(s.leases))
	return nil
}

func (s *Scheduler) KickDispatch() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) kickDelay() {
	select {
	case s.delayCh <- struct{}{}:
	default:
	}
}

// transition makes next the latest version of its job, keeps the
// in-memory indexes in step and queues the durable write. The caller
// holds s.mu and must not modify next afterwards.
func (s *Scheduler) transition(prev, next *store.Job, typ, msg string) *Batch {
	return s.submitTransition(prev, next, typ, msg, hclog.Info, nil)
}

// transitionWithin is transition for a change whose waiter can wait up
// to within for a round to ride (Committer.AddAllWithin); 0: at once.
func (s *Scheduler) transitionWithin(prev, next *store.Job, typ, msg string, within time.Duration) *Batch {
	if within <= 0 {
		return s.transition(prev, next, typ, msg)
	}
	r := round{}
	s.change(&r, prev, next, typ, msg, hclog.Info, nil)
	return s.commitWithin(&r, within)
}

// submitTransition is transition for submissions: with the level of its
// log line (a batch submit's jobs log at debug, the batch one info line)
// and an audit entry (if not nil) written in the same store batch. A job
// that reaches a final state settles the jobs blocked on it (deps.go) in
// the same round.
func (s *Scheduler) submitTransition(prev, next *store.Job, typ, msg string, level hclog.Level, audit *store.AuditEntry) *Batch {
	r := round{}
	s.change(&r, prev, next, typ, msg, level, audit)
	return s.commit(&r)
}

// round gathers the commands of changes that must be durable together
// (one committer batch: all or none survive a crash), and the jobs they
// finished.
type round struct {
	cmds  []store.Command
	ended []*store.Job
	// parents holds the next versions of the fan-out parents whose
	// children this round ends, written by finishParents (fanout.go);
	// parentOrder is the order they were first touched in, childMsgs
	// what happened to their children.
	parents     map[uint64]*store.Job
	parentOrder []uint64
	childMsgs   map[uint64][]string
	// notify are the outbox entries among cmds, for Options.Notify
	// once the batch is durable.
	notify []store.Delivery
}

// commit queues r's commands as one batch and keeps its finished jobs
// at hand until it is durable. The caller holds s.mu.
func (s *Scheduler) commit(r *round) *Batch { return s.commitWithin(r, 0) }

// commitWithin is commit for a round that may wait up to within for a
// round to ride (Committer.AddAllWithin); 0: a round of its own at
// once. Every round goes through here: the fan-out parents it changes
// are written into it and its outbox entries handed on once durable.
// The caller holds s.mu.
func (s *Scheduler) commitWithin(r *round, within time.Duration) *Batch {
	s.finishParents(r)
	var b *Batch
	switch {
	case within > 0:
		b, _ = s.c.AddAllWithin(within, r.cmds...)
	case len(r.cmds) == 1:
		b = s.c.Add(r.cmds[0])
	default:
		b, _ = s.c.AddAll(r.cmds...)
	}
	s.remember(r, b)
	if len(r.notify) > 0 {
		ds, n := r.notify, s.opts.Notify
		go func() {
			if b.Wait() == nil {
				n.Queued(ds...)
			}
		}()
	}
	return b
}

// remember keeps r's finished jobs at hand until b, the batch holding
// r, is durable. The caller holds s.mu.
func (s *Scheduler) remember(r *round, b *Batch) {
	for _, j := range r.ended {
		// Until the batch is durable the store still has the previous
		// version; keep the final one at hand for cancel.
		s.forgetEnded()
		s.ended[j.ID] = ended{job: j, b: b}
		s.endedQ = append(s.endedQ, j.ID)
	}
}

// change makes next the latest version of its job, keeps the in-memory
// indexes in step and adds the durable write to r; a job reaching a
// final state adds the decisions of the jobs blocked on it. The caller
// holds s.mu and must not modify next afterwards.
func (s *Scheduler) change(r *round, prev, next *store.Job, typ, msg string, level hclog.Level, audit *store.AuditEntry) {
	ev := store.Event{
		Time:    s.clock.Now().UTC(),
		Type:    typ,
		State:   next.State,
		Message: msg,
	}
	if a := next.Current(); a != nil {
		ev.Attempt = a.Number
		ev.Agent = a.Agent
	}
	tr := store.NewTransition(next, ev)
	tr.Audit = audit

	id := next.ID
	if prev != nil && prev.State == store.Queued && next.State != store.Queued {
		s.q.remove(id)
	}
	if next.State == store.Queued && (prev == nil || prev.State != store.Queued) {
		s.q.push(id, next.Priority, next.QueuedAt.UnixNano(), selectorOf(next))
		s.watchPinned(next)
		s.KickDispatch()
	}
	s.pin(next)
	if next.State == store.Waiting && (prev == nil || prev.State != store.Waiting) {
		heap.Push(&s.delay, delayItem{id: id, due: next.NotBefore})
		s.kickDelay()
	}
	if !next.State.Active() {
		delete(s.leases, id)
	}
	if next.State.Terminal() {
		delete(s.jobs, id)
		delete(s.logEnd, id)
	} else {
		s.jobs[id] = next
	}

	if s.log.GetLevel() <= level {
		s.log.Log(level, logMessage(typ), "job", id, "state", stateValue(next.State), "attempt", ev.Attempt, "agent", ev.Agent, "msg", msg)
	}
	s.metrics.Transition(prev, next)
	r.cmds = append(r.cmds, tr)
	if s.opts.OutputChannel && endsAttempt(prev, next) {
		// Bytes past the attempt's durable end that some node stored
		// (a chunk no quorum acknowledged) go on every node, before the
		// next attempt writes there.
		r.cmds = append(r.cmds, &store.TruncateLog{Job: id, At: next.LogBytes})
	}
	s.notifyOf(r, prev, next, ev.Time)
	if next.State.Terminal() {
		r.ended = append(r.ended, next)
		s.settle(r, next)
		if next.Parent() != 0 {
			s.childEnded(r, next)
		}
	}
}

// logMessage is the log line of a transition of type typ: "job " + typ,
// a constant for the frequent types (a string built per line is an
// allocation per transition).
func logMessage(typ string) string {
	switch typ {
	case "submitted":
		return "job submitted"
	case "dispatched":
		return "job dispatched"
	case "started":
		return "job started"
	case "finished":
		return "job finished"
	}
	return "job " + typ
}

// stateValue is st as a log value: a string (hclog formats a named
// string type through reflection), boxed without allocating for the
// states there are (a string made an interface allocates unless it is a
// constant).
func stateValue(st store.State) any {
	switch st {
	case store.Queued:
		return string(store.Queued)
	case store.Waiting:
		return string(store.Waiting)
	case store.Dispatched:
		return string(store.Dispatched)
	case store.Running:
		return string(store.Running)
	case store.Completed:
		return string(store.Completed)
	case store.Failed:
		return string(store.Failed)
	case store.Timeout:
		return string(store.Timeout)
	case store.Cancelled:
		return string(store.Cancelled)
	case store.Blocked:
		return string(store.Blocked)
	}
	return string(st)
}

// notifyOf adds to r the outbox entries of next's start or end, if the
// Notifier wants any. The caller holds s.mu.
func (s *Scheduler) notifyOf(r *round, prev, next *store.Job, now time.Time) {
	if s.opts.Notify == nil {
		return
	}
	var event string
	switch {
	case next.State.Terminal():
		event = EventFinished
	case next.State == store.Running && (prev == nil || prev.State != store.Running):
		event = EventStarted
	default:
		return
	}
	for _, d := range s.opts.Notify.Deliveries(next, event, now) {
		r.cmds = append(r.cmds, &store.PutDelivery{Delivery: d})
		r.notify = append(r.notify, d)
	}
}

// forgetEnded drops the ended entries whose batch is durable, oldest
// first. Batches become durable in order, so it stops at the first one
// that is not; an entry kept a little longer is harmless (it holds the
// job's final version). Called under s.mu by each terminal transition,
// which keeps the map as small as the batches in flight without a
// goroutine per finished job.
func (s *Scheduler) forgetEnded() {
	n := 0
	for _, id := range s.endedQ {
		if e, ok := s.ended[id]; ok {
			if !e.b.finished() {
				break
			}
			delete(s.ended, id)
		}
		n++
	}
	s.endedQ = s.endedQ[n:]
}

// Submit queues a new job (POST /jobs). With an idempotency key already
// used, it returns the existing job and created=false. audit, if not
// nil, is written with the job (its Target becomes "job ID"); it is not
// written when no job is created.
func (s *Scheduler) Submit(j *store.Job, audit *store.AuditEntry) (job *store.Job, created bool, err error) {
	subs, err := s.submitJobs([]*store.Job{j}, audit, false)
	if err != nil {
		return nil, false, err
	}
	return subs[0].Job, subs[0].Created, nil
}

// SubmitBatch queues jobs in order (POST /jobs/batch), as submitJobs,
// and says what became of each.
func (s *Scheduler) SubmitBatch(jobs []*store.Job, audit *store.AuditEntry) ([]Submission, error) {
	return s.submitJobs(jobs, audit, true)
}

// Submission is what became of one job of a submit: the job created, or
// the one its idempotency key already named.
type Submission struct {
	Job     *store.Job
	Created bool
}

// submitJobs is the one submit path. It queues the new jobs in order,
// under one hold of the lock, and waits for the store batch holding the
// last of them: batches are applied in order, so all are durable when
// it returns. A job whose idempotency key names an existing job — stored,
// or being submitted concurrently — is not created; its submission
// names that job. Keys must be distinct within jobs (decodeBatch checks
// it); a repeat would name the first.
//
// Keys are looked up in the store outside the lock: first each key not
// already held is reserved in s.keys, so that no other submit can create
// a job with it meanwhile (it waits for this one instead), then looked
// up, then the jobs are created and the reservations resolved. A stored
// key whose job is gone (retention removed it between the two reads)
// is free again. Lookups happen before anything is queued, so an error
// leaves nothing behind.
//
// audit, if not nil and stamped, is written with the last job created.
// A single submit (isBatch false) names it "job ID" and logs the job at
// info; a batch names the range, says "batch of N" and logs one info
// line for all, its jobs at debug.
func (s *Scheduler) submitJobs(jobs []*store.Job, audit *store.AuditEntry, isBatch bool) ([]Submission, error) {
	size := 0
	for _, j := range jobs {
		size += recordSize(j)
	}
	if err := s.disk.Room(size); err != nil {
		return nil, err
	}
	// The states of the dependencies the scheduler does not hold
	// (deps.go); a missing one fails the submission before anything
	// is reserved.
	known := map[uint64]store.State{}
	if err := s.depsBefore(jobs, known); err != nil {
		return nil, err
	}
	out := make([]Submission, len(jobs))
	// By index into jobs; nil until a job has a key (most have none).
	var (
		others   map[int]*pendingKey // another submit's key
		mine     map[int]*pendingKey // a key reserved here
		existing map[int]*store.Job  // the stored job a reserved key names
	)
	s.mu.Lock()
	for i, j := range jobs {
		k := j.IdempotencyKey
		if k == "" {
			continue
		}
		if others == nil {
			others, mine = map[int]*pendingKey{}, map[int]*pendingKey{}
		}
		if p, ok := s.keys[k]; ok {
			others[i] = p
			continue
		}
		p := &pendingKey{ready: make(chan struct{})}
		s.keys[k] = p
		mine[i] = p
	}
	s.mu.Unlock()

	var lookupErr error
	for i := range mine {
		j, err := s.keyed(jobs[i].IdempotencyKey)
		if err != nil {
			lookupErr = err
			break
		}
		if j != nil {
			if existing == nil {
				existing = map[int]*store.Job{}
			}
			existing[i] = j
		}
	}

	s.mu.Lock()
	for lookupErr == nil {
		miss := s.unsettled(jobs, known)
		if len(miss) == 0 {
			break
		}
		s.mu.Unlock()
		lookupErr = s.lookUp(miss, known)
		s.mu.Lock()
	}
	if lookupErr != nil {
		for i, p := range mine {
			delete(s.keys, jobs[i].IdempotencyKey)
			p.err = lookupErr
			close(p.ready)
		}
		s.mu.Unlock()
		return nil, lookupErr
	}
	// IDs first, so the audit entry can name them before the batch is
	// queued (the committer may encode it at once).
	var created []int // indexes of the jobs to create
	for i, j := range jobs {
		if others[i] == nil && existing[i] == nil {
			j.ID = s.st.NextID()
			created = append(created, i)
		}
	}
	var stored *store.AuditEntry // written with the last job created
	if n := len(created); n > 0 {
		first, lastID := jobs[created[0]].ID, jobs[created[n-1]].ID
		if audit != nil {
			audit.Target = "job " + strconv.FormatUint(first, 10)
			if isBatch {
				if n > 1 {
					audit.Target = fmt.Sprintf("jobs %d-%d", first, lastID)
				}
				audit.Detail = fmt.Sprintf("batch of %d", n)
			}
			if audit.ID != 0 {
				stored = audit
			}
		}
		if isBatch {
			// One line for the batch; the jobs' own lines are at debug.
			s.log.Info("jobs submitted", "count", n, "first_job", first, "last_job", lastID)
		}
	}
	level := hclog.Info
	if isBatch {
		level = hclog.Debug
	}
	now := s.clock.Now().UTC()
	free := s.freeSlot()
	var last *Batch
	for k, i := range created {
		j := jobs[i]
		j.CreatedAt = now
		j.QueuedAt = now
		msg := s.admit(j, known)
		var a *store.AuditEntry
		if k == len(created)-1 {
			a = stored
		}
		// A job queued while a slot is free is about to be dispatched:
		// its round waits for the dispatch loop (woken by change) to add
		// the dispatch, so that the submit and the dispatch share one
		// fsync instead of taking one each. The 201 and the Dispatch
		// both wait for that round, as they did for their own.
		var within time.Duration
		if free && j.State == store.Queued {
			within = submitWait
			s.submitWaits = true
		}
		r := round{}
		s.change(&r, nil, j, "submitted", msg, level, a)
		last = s.commitWithin(&r, within)
		out[i] = Submission{Job: j, Created: true}
		if p := mine[i]; p != nil {
			p.job, p.b = j, last
		}
	}
	for i, p := range mine {
		if j := existing[i]; j != nil {
			// Stored: later submits find it in the store themselves.
			delete(s.keys, jobs[i].IdempotencyKey)
			p.job = j
		}
		close(p.ready)
	}
	s.mu.Unlock()

	var err error
	if last != nil {
		err = last.Wait()
	}
	if len(created) > 0 && len(mine) > 0 {
		s.mu.Lock()
		for i, p := range mine {
			if s.keys[jobs[i].IdempotencyKey] == p {
				delete(s.keys, jobs[i].IdempotencyKey)
			}
		}
		s.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	for i, p := range others {
		<-p.ready
		if p.err != nil {
			return nil, p.err
		}
		if p.b != nil {
			if err := p.b.Wait(); err != nil {
				return nil, err
			}
		}
		out[i] = Submission{Job: p.job}
	}
	for i, j := range existing {
		out[i] = Submission{Job: j}
	}
	return out, nil
}

// submitWait bounds how long a submit's round waits for the dispatch
// loop to add the job's dispatch to it (submitJobs): the loop runs at
// once unless it is busy, and kicks the committer when it is done.
const submitWait = 2 * time.Millisecond

// freeSlot reports whether some agent could be sent a job now. The
// caller holds s.mu.
func (s *Scheduler) freeSlot() bool {
	for _, st := range s.agents {
		if st.free() > 0 {
			return true
		}
	}
	return false
}

// keyed returns the stored job holding idempotency key k, or nil if the
// key is free: not stored, or its job already removed by retention (the
// key goes with it).
func (s *Scheduler) keyed(k string) (*store.Job, error) {
	id, ok, err := s.st.IdempotencyKey(k)
	if err != nil || !ok {
		return nil, err
	}
	j, err := s.st.Get(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return j, err
}

// recordSize estimates what storing a new job takes: its fields, the
// record's JSON around them, its index keys and its first event.
func recordSize(j *store.Job) int {
	n := 1024 + len(j.Name) + len(j.Command) + len(j.Params) + len(j.Dir) + len(j.IdempotencyKey)
	for k, v := range j.Env {
		n += len(k) + len(v) + 8
	}
	for k, v := range j.Labels {
		n += len(k) + len(v) + 8
	}
	return n
}

// whyQueued says why a queued job is waiting, for humans. The caller
// holds s.mu.
func (s *Scheduler) whyQueued(j *store.Job) string {
	if !s.disk.Accepting() {
		return "dispatch is paused: the controller's disk is nearly full (jobs resume when space is freed)"
	}
	if j.Agent() != "" {
		switch st := s.agents[j.Agent()]; {
		case st == nil:
			return fmt.Sprintf("agent %s is not connected (the job fails if it has not connected by %s)", j.Agent(), s.awayDeadline(j).Format(time.RFC3339))
		case st.draining:
			return "agent " + j.Agent() + " is draining"
		}
		return "waiting for a free slot on agent " + j.Agent()
	}
	if len(j.Labels) == 0 {
		if len(s.agents) == 0 {
			return "waiting for an agent to connect"
		}
		return "waiting for a free slot"
	}
	for _, a := range s.agents {
		if matches(j.Labels, a.labels) {
			return "waiting for a free slot on an agent matching " + FormatLabels(j.Labels)
		}
	}
	return "no connected agent matches labels " + FormatLabels(j.Labels)
}

// FormatLabels writes labels as the API and the logs show them:
// key=value pairs by key, comma-separated.
func FormatLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// Reason returns the live explanation for a job's state, or "" to use
// the stored one.
func (s *Scheduler) Reason(j *store.Job) string {
	if s == nil { // no scheduler (a follower's stale read): the stored one
		return ""
	}
	switch j.State {
	case store.Queued:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.whyQueued(j)
	case store.Blocked:
		s.mu.Lock()
		defer s.mu.Unlock()
		if j.Parent() != 0 {
			return s.fanoutNow(j)
		}
		return s.blockedNow(j)
	case store.Running:
		if j.Fanout() != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.fanoutNow(j)
		}
	}
	return ""
}

// DispatchLoop hands queued jobs to agents with free slots whenever
// something changes (a job queued, credits granted).
//
// It does not wait for a round's assignments to become durable before
// the next round: a sender goroutine waits for each round's batch, in
// order, and then sends its Dispatch messages, so jobs queued while a
// round syncs are assigned (and start syncing) at once, and agents still
// receive Dispatches in assignment order.
func (s *Scheduler) DispatchLoop(ctx context.Context) {
	sends := make(chan dispatchRound, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range sends {
			if err := r.b.Wait(); err != nil {
				continue // the committer failed; Run is stopping
			}
			for _, o := range r.out {
				o.a.Send(o.m)
			}
		}
	}()
	defer func() {
		close(sends)
		<-done
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		r, ok := s.dispatch()
		if ok {
			sends <- r // waits only when 256 rounds are still syncing
		} else if r.kick {
			// A submit's round waited for this pass, which added nothing
			// to it: start it now.
			s.c.Kick()
		}
	}
}

// dispatchRound is one round's Dispatch messages, to be sent once the
// batch holding its assignments is durable.
type dispatchRound struct {
	b   *Batch
	out []outgoing
	// kick: nothing was assigned, but a submit's round waits for this
	// pass (submitWaits), so the committer must be kicked.
	kick bool
}

type outgoing struct {
	a Session
	m protocol.Message
}

// dispatch assigns as many jobs as agents have credits for, strictly by
// priority, spreading work round-robin across agents. It returns the
// round's Dispatch messages, which must go out only once its batch is
// durable, and false when nothing was assigned.
func (s *Scheduler) dispatch() (dispatchRound, bool) {
	if !s.disk.Accepting() {
		return dispatchRound{}, false // disk.watch kicks us when space is back
	}
	s.mu.Lock()
	kick := s.submitWaits
	s.submitWaits = false
	if s.q.len() == 0 { // before the scan over every agent: credits alone wake us too
		s.mu.Unlock()
		return dispatchRound{kick: kick}, false
	}
	names := make([]string, 0, len(s.agents))
	for n, st := range s.agents {
		if st.free() > 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 || s.q.len() == 0 {
		s.mu.Unlock()
		return dispatchRound{kick: kick}, false
	}
	sort.Strings(names)
	s.rotate++
	start := s.rotate % len(names)
	var out []outgoing
	var last *Batch
	now := s.clock.Now().UTC()
	for progress := true; progress; {
		progress = false
		for i := range names {
			name := names[(start+i)%len(names)]
			st := s.agents[name]
			if st == nil || st.free() <= 0 {
				continue
			}
			id := s.q.best(st.match)
			if id == 0 {
				continue
			}
			prev := s.jobs[id]
			next := prev.Clone()
			n := uint32(len(next.Attempts) + 1)
			next.Attempts = append(next.Attempts, store.Attempt{
				Number: n, Agent: name, DispatchedAt: now, LogStart: s.logEnd[id], QueuedAt: prev.QueuedAt,
			})
			next.State = store.Dispatched
			next.Reason = ""
			last = s.transition(prev, next, "dispatched", "")
			st.credits--
			st.running[id] = n
			s.setLease(id, n, now.Add(s.opts.LeaseTTL))
			s.setHardDeadline(id, n, now, next.Timeout)
			out = append(out, outgoing{st.conn, s.dispatchMsg(next)})
			progress = true
		}
	}
	s.mu.Unlock()
	if last == nil {
		return dispatchRound{kick: kick}, false
	}
	return dispatchRound{b: last, out: out}, true
}

func (s *Scheduler) dispatchMsg(j *store.Job) *protocol.Dispatch {
	cmd := j.Command
	if j.Params != "" {
		cmd += " " + j.Params
	}
	env := make([]string, 0, len(j.Env))
	for k, v := range j.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return &protocol.Dispatch{
		JobID:       j.ID,
		Attempt:     j.Current().Number,
		Name:        j.Name,
		Command:     cmd,
		Env:         env,
		Dir:         j.Dir,
		Timeout:     j.Timeout,
		KillGrace:   s.opts.KillGrace,
		CaptureLogs: j.Logs,
		MaxOutput:   s.opts.MaxOutput,
		Output:      outputMode(j),
		TTY:         ttyMode(j),
	}
}

// outputMode is how an agent captures j's output: one pipe unless j
// asked for its streams apart.
func outputMode(j *store.Job) protocol.OutputMode {
	if j.Output == store.OutputSplit {
		return protocol.OutputSplit
	}
	return protocol.OutputOrdered
}

// ttyMode is whether j runs on a pseudo-terminal: as it asked, else as
// its agent is configured.
func ttyMode(j *store.Job) protocol.TTYMode {
	switch {
	case j.TTY == nil:
		return protocol.TTYDefault
	case *j.TTY:
		return protocol.TTYOn
	}
	return protocol.TTYOff
}

// Snapshot returns a copy of the scheduler's latest version of job id
// (ahead of the store's until its batch is durable), with attempts of
// its own, or nil for a job it no longer holds (finished, and durable:
// the store's record is final). Maps are shared: read them only. A nil
// scheduler (a follower's stale read) holds none.
func (s *Scheduler) Snapshot(id uint64) *store.Job {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		j = s.ended[id].job
	}
	if j == nil {
		return nil
	}
	c := *j
	c.Attempts = slices.Clone(j.Attempts)
	return &c
}

// Holder returns the agent holding job id's current attempt, and its
// session if it is connected; active is false if the job has no attempt
// in progress.
func (s *Scheduler) Holder(id uint64) (agent string, attempt uint32, a Session, active bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil || !j.State.Active() {
		return "", 0, nil, false
	}
	c := j.Current()
	if c == nil {
		return "", 0, nil, false // a fan-out parent runs no attempt
	}
	if st := s.agents[c.Agent]; st != nil {
		a = st.conn
	}
	return c.Agent, c.Number, a, true
}

// StreamStart returns where attempt of job id on agent begins in the
// job's log and where the output stored for it so far ends; ok is false
// if it is not the job's current attempt on agent.
func (s *Scheduler) StreamStart(id uint64, attempt uint32, agent string) (logStart, end uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.current(id, attempt, agent)
	if j == nil {
		return 0, 0, false
	}
	return j.Current().LogStart, s.logEnd[id], true
}

// Output queues a chunk of attempt's output (data, which the store and
// the hub keep: the caller must not modify it) at from, its offset in
// the attempt's output, and returns the batch that will hold it. The
// attempt must be job id's current one on agent (ErrStaleAttempt).
//
// This is where fencing meets the no-I/O rule. Once an attempt is lost
// and retried, the next attempt owns the log from the lost one's end
// on, so no chunk of the lost attempt may be stored after the loss.
// The check and the queueing happen under s.mu, and so does every
// transition that ends an attempt: whichever of a chunk and a loss
// takes the lock first is queued to the committer first, and the
// committer applies commands in the order they were queued. So the
// store holds the chunk before the record of the loss (whose LogBytes,
// read from logEnd under the same lock, counts it), or not at all —
// without a write under the lock.
func (s *Scheduler) Output(agent string, id uint64, attempt uint32, from uint64, stream uint8, data []byte) (*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.current(id, attempt, agent)
	if j == nil {
		return nil, fmt.Errorf("%w: job %d attempt %d is no longer current on agent %s", ErrStaleAttempt, id, attempt, agent)
	}
	off := j.Current().LogStart + from
	b := s.c.Add(&store.Output{Job: id, Chunk: store.Chunk{Offset: off, Stream: stream, Data: data, Time: s.clock.Now()}})
	s.logEnd[id] = off + uint64(len(data))
	s.metrics.LogBytes(len(data))
	return b, nil
}

// endsAttempt reports whether next ends prev's open attempt.
func endsAttempt(prev, next *store.Job) bool {
	if prev == nil || !prev.State.Active() {
		return false
	}
	a := prev.Current()
	if a == nil || a.Outcome != "" {
		return false
	}
	return !next.State.Active() || next.Attempts[a.Number-1].Outcome != ""
}

// OutputDurable records that attempt of job id has output up to end (an
// offset in the job's log) on a quorum of the cluster (Options.
// OutputChannel), and returns the attempt's durable end as the
// scheduler now counts it. ok is false if attempt is not the job's
// current attempt any more: the end it was given is then ignored, since
// the attempt's LogBytes is decided. The end never moves back.
func (s *Scheduler) OutputDurable(id uint64, attempt uint32, end uint64) (durable uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil || !j.State.Active() {
		return 0, false
	}
	c := j.Current()
	if c == nil || c.Number != attempt || c.Outcome != "" {
		return 0, false
	}
	if have := max(s.logEnd[id], c.LogStart); end > have {
		s.metrics.LogBytes(int(end - have))
		s.logEnd[id] = end
	}
	return max(s.logEnd[id], c.LogStart), true
}

// SetMetrics hooks m into the scheduler: it counts the jobs held now and
// every transition from then on.
func (s *Scheduler) SetMetrics(m Metrics) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m.CountAll(maps.Values(s.jobs))
	s.metrics = m
}

// current returns job id if attempt is its current attempt on agent.
// The caller holds s.mu.
func (s *Scheduler) current(id uint64, attempt uint32, agent string) *store.Job {
	j := s.jobs[id]
	if j == nil || !j.State.Active() {
		return nil
	}
	c := j.Current()
	if c == nil || c.Number != attempt || c.Agent != agent {
		return nil
	}
	return j
}

// Started records that an attempt's process runs.
func (s *Scheduler) Started(agent string, id uint64, attempt uint32, m *protocol.Started) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.current(id, attempt, agent)
	if prev == nil {
		return fmt.Errorf("%w: job %d attempt %d", ErrStaleAttempt, id, attempt)
	}
	if prev.State == store.Running {
		return nil
	}
	next := prev.Clone()
	next.State = store.Running
	at := m.StartedAt.UTC()
	if at.IsZero() {
		at = s.clock.Now().UTC()
	}
	c := next.Current()
	c.StartedAt = at
	c.PID = m.PID
	if next.StartedAt.IsZero() {
		next.StartedAt = at
	}
	// Nothing is acted on once a start is durable, so it starts no
	// round (and no fsync) of its own: it rides the next one (AddLazy).
	// A crash that loses it loses nothing: the agent sends Started again
	// on the job stream it opens to the next controller, and a result
	// ends a Dispatched attempt as it ends a Running one.
	r := round{}
	s.change(&r, prev, next, "started", "pid "+strconv.FormatUint(uint64(m.PID), 10), hclog.Info, nil)
	// As Committer.AddLazy, through commitWithin so that a webhook's
	// "started" outbox entry is handed on once durable.
	s.commitWithin(&r, lazyWait)
	return nil
}

// Finished records the end of an attempt and returns the batch to wait
// on before acknowledging it.
func (s *Scheduler) Finished(agent string, id uint64, attempt uint32, f *protocol.Finished) (*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.current(id, attempt, agent)
	if prev == nil {
		return nil, fmt.Errorf("%w: job %d attempt %d", ErrStaleAttempt, id, attempt)
	}
	var within time.Duration
	if st := s.agents[agent]; st != nil {
		if st.earlyRelease {
			// Its slot is free already (the agent granted it when the
			// process ended): the FinishAck may wait a little for other
			// results, to share their fsync.
			within = resultWait
		}
		delete(st.running, id)
		if st.free() > 0 {
			// The agent grants the slot when the process ends, so its
			// Credit may have come before this report, while the slot
			// still counted.
			s.KickDispatch()
		}
	}
	next := prev.Clone()
	c := next.Current()
	c.FinishedAt = s.clock.Now().UTC()
	code := int(f.ExitCode)
	if f.ExitCode >= 0 {
		c.ExitCode = &code
	}
	c.Signal = f.Signal
	c.Error = f.Error
	c.Duration = f.Duration
	c.UserCPU = f.UserCPU
	c.SystemCPU = f.SystemCPU
	c.MaxRSS = f.MaxRSS
	next.LogBytes = s.logEnd[id]
	c.OutputBytes = next.LogBytes - c.LogStart
	outcome := store.OutcomeFailed
	switch f.Outcome {
	case protocol.OutcomeCompleted:
		outcome = store.OutcomeCompleted
	case protocol.OutcomeTimeout:
		outcome = store.OutcomeTimeout
	case protocol.OutcomeCancelled:
		outcome = store.OutcomeCancelled
	}
	return s.endAttempt(prev, next, outcome, describe(f), within), nil
}

func describe(f *protocol.Finished) string {
	switch {
	case f.Error != "":
		return f.Error
	case f.Signal != "":
		return "killed by " + f.Signal
	default:
		return "exit code " + strconv.FormatInt(int64(f.ExitCode), 10)
	}
}

// endAttempt closes next's current attempt with outcome and decides what
// follows: done, a retry after backoff, or a final failure. The caller
// holds s.mu.
//
// within is how long the round may wait for another to ride
// (transitionWithin): a result whose agent has freed its slot already.
func (s *Scheduler) endAttempt(prev, next *store.Job, outcome store.Outcome, msg string, within time.Duration) *Batch {
	c := next.Current()
	c.Outcome = outcome
	if c.FinishedAt.IsZero() {
		c.FinishedAt = s.clock.Now().UTC()
	}
	now := s.clock.Now().UTC()
	switch {
	case outcome == store.OutcomeCompleted:
		next.State = store.Completed
	case outcome == store.OutcomeCancelled || next.CancelRequested:
		next.State = store.Cancelled
		if outcome != "cancelled" {
			// The attempt ended otherwise while a cancel was pending: say
			// both ("attempt 1 failed: cancelled: exit code 1"), but not
			// "cancelled: cancelled: killed by SIGTERM".
			msg = "cancelled: " + msg
		}
	case len(next.Attempts) <= next.Retries:
		next.State = store.Waiting
		wait := s.backoff(next, len(next.Attempts))
		next.NotBefore = now.Add(wait)
		next.Reason = fmt.Sprintf("attempt %d %s (%s); retry %d of %d in %s",
			c.Number, outcome, msg, len(next.Attempts), next.Retries, wait.Round(time.Millisecond))
		return s.transitionWithin(prev, next, "retry", next.Reason, within)
	case outcome == store.OutcomeTimeout:
		next.State = store.Timeout
	default:
		next.State = store.Failed
	}
	next.FinishedAt = now
	next.Reason = "attempt " + strconv.FormatUint(uint64(c.Number), 10) + " " + string(outcome) + ": " + msg
	return s.transitionWithin(prev, next, "finished", next.Reason, within)
}

// backoff is the wait before retry n (1-based): base·2^(n-1), capped,
// with ±20% jitter so retries of many jobs do not arrive in lockstep.
func (s *Scheduler) backoff(j *store.Job, n int) time.Duration {
	base, max := s.opts.BackoffBase, s.opts.BackoffMax
	if j.BackoffBase > 0 {
		base = j.BackoffBase
	}
	if j.BackoffMax > 0 {
		max = j.BackoffMax
	}
	return backoff.Policy{Base: base, Max: max, Down: 0.2, Up: 0.2}.Delay(n, s.jitter())
}

// Cancel cancels job id. Queued and waiting jobs end at once; a running
// job's agent is told to kill it and the job ends when the agent
// confirms. It returns the job as it is now and whether the job was
// still running (the cancellation is pending).
func (s *Scheduler) Cancel(id uint64) (*store.Job, bool, error) {
	s.mu.Lock()
	prev := s.jobs[id]
	if prev == nil {
		if e, ok := s.ended[id]; ok {
			s.mu.Unlock()
			if err := e.b.Wait(); err != nil {
				return nil, false, err
			}
			if e.job.State == store.Cancelled {
				return e.job, false, nil
			}
			return e.job, false, fmt.Errorf("%w: job %d already %s", ErrFinished, id, e.job.State)
		}
		s.mu.Unlock()
		j, err := s.st.Get(id)
		if err != nil {
			return nil, false, err
		}
		if j.State == store.Cancelled {
			return j, false, nil
		}
		return j, false, fmt.Errorf("%w: job %d already %s", ErrFinished, id, j.State)
	}
	switch prev.State {
	case store.Queued, store.Waiting, store.Blocked:
		next := prev.Clone()
		next.State = store.Cancelled
		next.CancelRequested = true
		next.FinishedAt = s.clock.Now().UTC()
		next.Reason = "cancelled before it ran"
		switch prev.State {
		case store.Waiting:
			next.Reason = "cancelled while waiting to retry"
		case store.Blocked:
			next.Reason = "cancelled while waiting for the jobs it runs after"
		}
		b := s.transition(prev, next, "cancelled", next.Reason)
		s.mu.Unlock()
		return next, false, b.Wait()
	}
	if prev.Fanout() != nil {
		if prev.CancelRequested {
			s.mu.Unlock()
			return prev, true, nil
		}
		r := round{}
		sends := s.cancelFanout(&r, prev)
		b := s.commit(&r)
		cur := s.jobs[id]
		if cur == nil {
			cur = s.ended[id].job
		}
		s.mu.Unlock()
		if err := b.Wait(); err != nil {
			return nil, false, err
		}
		for _, o := range sends {
			o.a.Send(o.m)
		}
		return cur, !cur.State.Terminal(), nil
	}
	// Dispatched or running.
	if !prev.Cancellable {
		s.mu.Unlock()
		return prev, true, fmt.Errorf("%w: job %d", ErrNotCancellable, id)
	}
	if prev.CancelRequested {
		s.mu.Unlock()
		return prev, true, nil
	}
	next := prev.Clone()
	next.CancelRequested = true
	next.Reason = "cancel requested; waiting for the agent to stop it"
	cur := next.Current()
	b := s.transition(prev, next, "cancel_requested", "")
	var a Session
	if st := s.agents[cur.Agent]; st != nil {
		a = st.conn
	}
	s.mu.Unlock()
	if err := b.Wait(); err != nil {
		return nil, false, err
	}
	if a != nil {
		a.Send(&protocol.Cancel{JobID: id, Attempt: cur.Number, Reason: "cancelled by user"})
	}
	return next, true, nil
}

// loseAttempt ends an attempt whose agent is gone or silent. The caller
// holds s.mu.
func (s *Scheduler) loseAttempt(j *store.Job, why string) *Batch {
	next := j.Clone()
	next.LogBytes = s.logEnd[j.ID]
	c := next.Current()
	c.Error = why
	c.OutputBytes = next.LogBytes - c.LogStart
	if st := s.agents[c.Agent]; st != nil {
		delete(st.running, j.ID)
	}
	return s.endAttempt(j, next, store.OutcomeLost, why, 0)
}

// DelayLoop moves waiting jobs back into the queue when they are due,
// and fires the schedules due (schedules.go).
func (s *Scheduler) DelayLoop(ctx context.Context) {
	t := s.clock.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := s.clock.Now()
		wait := time.Hour
		if next := s.requeueDue(now); !next.IsZero() {
			wait = next.Sub(now)
		}
		if next := s.fireDue(now); !next.IsZero() {
			wait = min(wait, next.Sub(now))
		}
		if next := s.failAway(now); !next.IsZero() {
			wait = min(wait, next.Sub(now))
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-s.delayCh:
			t.Stop()
		}
	}
}

// requeueDue puts the waiting jobs due at now back into the queue and
// returns when the next one is due (zero if none waits).
func (s *Scheduler) requeueDue(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.delay.Len() > 0 && !s.delay[0].due.After(now) {
		it := heap.Pop(&s.delay).(delayItem)
		prev := s.jobs[it.id]
		if prev == nil || prev.State != store.Waiting || !prev.NotBefore.Equal(it.due) {
			continue // cancelled or superseded
		}
		next := prev.Clone()
		next.State = store.Queued
		next.QueuedAt = now.UTC()
		next.NotBefore = time.Time{}
		next.Reason = s.whyQueued(next)
		s.transition(prev, next, "requeued", "retry due")
	}
	if s.delay.Len() == 0 {
		return time.Time{}
	}
	return s.delay[0].due
}

type delayItem struct {
	id  uint64
	due time.Time
}

type delayHeap []delayItem

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h delayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)        { *h = append(*h, x.(delayItem)) }
func (h *delayHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
