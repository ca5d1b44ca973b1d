package sched

import (
	"container/heap"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// Fan-out (issue 17): one submission runs the job on every agent that
// matches a label selector at submit time. SubmitFanout creates, in one
// round, the parent (Job.Fanout set; it is never dispatched and stays
// running while a child is unfinished) and one child per chosen agent
// (Job.Parent, and Job.Agent pinning it to that agent). The first Batch
// children are queued, the others blocked in ID order.
//
// When a child ends, the round that ends it also changes the parent
// (round.parents gathers its next version while the round is built,
// finishParents writes it before the round is queued): the child is
// counted, the next blocked children are released so that at most
// Batch are unfinished and released at once, or — once failures
// (failed and timed-out children) reach MaxFailures — the rollout
// stops: every child not started yet (blocked or queued) is cancelled
// with the reason. When the last child ends, the parent gets its final
// state in the same round: completed if every child completed;
// cancelled if the parent was cancelled, or if no child failed or
// timed out but some were cancelled; failed otherwise. Since all of it
// is one committer batch, a crash keeps all or none of it, and Load
// finds the rollout where it was (loadParents only fills a batch a
// store written by hand could have left short).
//
// A pinned job (Job.Agent) is dispatched only to its agent: its queue
// class carries the agent's name under pinKey, which no label can
// spell, and only that agent's match set holds it. While its agent is
// not connected, a queued pinned job says so, and it fails once it has
// been queued with its agent away for Options.OfflineTimeout (default
// 10 minutes; measured from when it was queued, the agent's last
// disconnect, or the controller's start, whichever is latest).

// pinKey is the queue selector key of a pinned job's agent: label keys
// cannot hold a NUL byte, so no selector or agent label collides.
const pinKey = "\x00agent"

// DefaultOfflineTimeout is Options.OfflineTimeout's default.
const DefaultOfflineTimeout = 10 * time.Minute

// agentRecordEvery is how often a connected agent's durable record
// (store.Agent, for fan-out to agents not connected) is refreshed when
// nothing else about it changed.
const agentRecordEvery = 10 * time.Minute

// selectorOf is the queue selector of job j: its labels, plus its
// agent under pinKey when it is pinned.
func selectorOf(j *store.Job) map[string]string {
	if j.Agent() == "" {
		return j.Labels
	}
	m := make(map[string]string, len(j.Labels)+1)
	maps.Copy(m, j.Labels)
	m[pinKey] = j.Agent()
	return m
}

// matchSet is what a connected agent offers the queue: its labels and
// its name under pinKey.
func matchSet(name string, labels map[string]string) map[string]string {
	m := make(map[string]string, len(labels)+1)
	maps.Copy(m, labels)
	m[pinKey] = name
	return m
}

// Count is a fan-out's Batch or MaxFailures as submitted: N, or N
// percent of the children (rounded up, at least 1).
type Count struct {
	N       int
	Percent bool
}

// of resolves c against n children; 0 stays 0 (unset).
func (c Count) of(n int) int {
	if !c.Percent || c.N == 0 {
		return c.N
	}
	return max(1, (c.N*n+99)/100)
}

// FanoutSpec is a fan-out as submitted: whom to run on and how to roll
// out. The agents are chosen, and percentages resolved, at submit.
type FanoutSpec struct {
	Selector       map[string]string // empty: every agent
	IncludeOffline bool              // also agents known but not connected
	Batch          Count             // 0: all at once
	MaxFailures    Count             // 0: no limit
}

// SubmitFanout creates the fan-out of job j over the agents spec
// selects, in one round: the parent (j, whose ID, Fanout and state it
// sets) and one child per agent, by agent name. It returns the parent
// and its children once the round is durable; ErrNoAgents when no
// agent matches. A parent whose idempotency key names an existing job
// is not created: that job is returned, with created false and no
// children (the key is the parent's; the children have none).
func (s *Scheduler) SubmitFanout(j *store.Job, spec FanoutSpec, audit *store.AuditEntry) (parent *store.Job, children []*store.Job, created bool, err error) {
	var mine *pendingKey
	if k := j.IdempotencyKey; k != "" {
		s.mu.Lock()
		if p, ok := s.keys[k]; ok {
			s.mu.Unlock()
			<-p.ready
			if p.err != nil {
				return nil, nil, false, p.err
			}
			if p.b != nil {
				if err := p.b.Wait(); err != nil {
					return nil, nil, false, err
				}
			}
			return p.job, nil, false, nil
		}
		mine = &pendingKey{ready: make(chan struct{})}
		s.keys[k] = mine
		s.mu.Unlock()
		existing, err := s.keyed(k)
		if err != nil || existing != nil {
			s.mu.Lock()
			delete(s.keys, k)
			mine.job, mine.err = existing, err
			close(mine.ready)
			s.mu.Unlock()
			return existing, nil, false, err
		}
		defer func() {
			s.mu.Lock()
			if s.keys[k] == mine {
				delete(s.keys, k)
			}
			if parent == nil { // not created: later submits try again
				if err == nil {
					err = ErrShuttingDown
				}
				mine.err = err
				close(mine.ready)
			}
			s.mu.Unlock()
		}()
	}
	s.mu.Lock()
	hosts := s.chooseAgents(spec)
	s.mu.Unlock()
	if len(hosts) == 0 {
		what := "no agent is connected"
		if len(spec.Selector) > 0 {
			what = "no agent matches labels " + FormatLabels(spec.Selector)
			if !spec.IncludeOffline {
				what = "no connected agent matches labels " + FormatLabels(spec.Selector)
			}
		} else if spec.IncludeOffline {
			what = "no agent is known"
		}
		return nil, nil, false, fmt.Errorf("%w: %s", ErrNoAgents, what)
	}
	if err := s.disk.Room(recordSize(j) * (len(hosts) + 1)); err != nil {
		return nil, nil, false, err
	}

	s.mu.Lock()
	// Chosen again under the lock that creates them (the first choice
	// sized the disk check): the agent list is fixed here, before any
	// command is made.
	if hosts = s.chooseAgents(spec); len(hosts) == 0 {
		s.mu.Unlock()
		return nil, nil, false, fmt.Errorf("%w: the matching agents went away", ErrNoAgents)
	}
	n := len(hosts)
	now := s.clock.Now().UTC()
	j.ID = s.st.NextID()
	j.Orch().Fanout = &store.Fanout{
		Selector: spec.Selector, IncludeOffline: spec.IncludeOffline,
		Children: n, Batch: spec.Batch.of(n),
	}
	if j.Fanout().Batch >= n {
		j.Fanout().Batch = 0
	}
	if m := spec.MaxFailures.of(n); m > 0 {
		j.Fanout().MaxFailures = &m
	}
	j.Labels = nil
	j.State = store.Running
	j.CreatedAt, j.QueuedAt, j.StartedAt = now, now, now
	children = make([]*store.Job, n)
	for i, h := range hosts {
		c := j.Clone()
		c.ID = s.st.NextID()
		c.Orch().Fanout = nil
		c.IdempotencyKey = ""
		// The job's own notify URLs hear of the fan-out's start and end
		// (the parent's), not of each host's: its summary names them.
		// Controller-wide webhooks still hear of every job.
		c.Orch().Notify = nil
		c.Orch().Parent = j.ID
		c.Orch().Agent = h
		c.StartedAt = time.Time{}
		c.State = store.Queued
		if b := j.Fanout().Batch; b > 0 && i >= b {
			c.State = store.Blocked
			c.Reason = rolloutReason(j.Fanout().Batch, n, i-b+1)
		}
		children[i] = c
	}
	j.Fanout().FirstChild = children[0].ID
	released := batchOr(j.Fanout().Batch, n)
	j.Reason = summary(j.Fanout(), fanoutTally{queued: released, blocked: n - released})
	if audit != nil {
		audit.Target = "job " + strconv.FormatUint(j.ID, 10)
		audit.Detail = fmt.Sprintf("fan-out to %d agents", n)
		if audit.ID == 0 {
			audit = nil
		}
	}
	r := round{}
	msg := fmt.Sprintf("fan-out to %d agents (%s)", n, strings.Join(hosts, ", "))
	s.change(&r, nil, j, "submitted", msg, hclog.Info, audit)
	for _, c := range children {
		if c.State == store.Queued {
			c.Reason = s.whyQueued(c)
		}
		s.change(&r, nil, c, "submitted", "fan-out child of job "+strconv.FormatUint(j.ID, 10)+" on "+c.Agent(), hclog.Debug, nil)
	}
	b := s.commit(&r)
	if mine != nil {
		mine.job, mine.b = j, b
		close(mine.ready)
	}
	s.mu.Unlock()
	if err := b.Wait(); err != nil {
		return j, nil, false, err
	}
	return j, children, true, nil
}

func batchOr(b, n int) int {
	if b == 0 {
		return n
	}
	return b
}

// chooseAgents returns the names of the agents spec selects, sorted:
// the connected ones whose labels match, and with IncludeOffline the
// known ones not connected whose last labels matched. The caller holds
// s.mu.
func (s *Scheduler) chooseAgents(spec FanoutSpec) []string {
	var out []string
	for name, st := range s.agents {
		if matches(spec.Selector, st.labels) {
			out = append(out, name)
		}
	}
	if spec.IncludeOffline {
		for name, a := range s.known {
			if s.agents[name] == nil && matches(spec.Selector, a.Labels) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// rolloutReason is the reason of a blocked child, ahead children before
// it in the rollout's order.
func rolloutReason(batch, n, ahead int) string {
	return fmt.Sprintf("waiting for its turn in the rollout (%d of %d hosts at a time; %d ahead of it)", batch, n, ahead)
}

// fanoutTally counts a fan-out's children by where they are.
type fanoutTally struct {
	running, queued, blocked int
}

// summary says where a fan-out's children are: "12 completed, 1
// failed, 3 running".
func summary(f *store.Fanout, t fanoutTally) string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, strconv.Itoa(n)+" "+what)
		}
	}
	add(f.Completed, "completed")
	add(f.Failed, "failed")
	add(f.Timeout, "timed out")
	add(f.Cancelled, "cancelled")
	add(t.running, "running")
	add(t.queued, "queued")
	add(t.blocked, "waiting their turn")
	s := strings.Join(parts, ", ")
	if f.Stopped {
		s += "; rollout stopped"
	}
	return s
}

// tally counts the unfinished children of fan-out f in memory. The
// caller holds s.mu.
func (s *Scheduler) tally(f *store.Fanout) fanoutTally {
	var t fanoutTally
	for id := f.FirstChild; id < f.FirstChild+uint64(f.Children); id++ {
		c := s.jobs[id]
		if c == nil {
			continue
		}
		switch c.State {
		case store.Dispatched, store.Running:
			t.running++
		case store.Queued, store.Waiting:
			t.queued++
		case store.Blocked:
			t.blocked++
		}
	}
	return t
}

func failures(f *store.Fanout) int { return f.Failed + f.Timeout }

func endedCount(f *store.Fanout) int { return f.Completed + f.Failed + f.Timeout + f.Cancelled }

// childEnded counts child, which has just reached a final state in r,
// in the next version of its parent that r gathers. The caller holds
// s.mu.
func (s *Scheduler) childEnded(r *round, child *store.Job) {
	p := r.parents[child.Parent()]
	if p == nil {
		prev := s.jobs[child.Parent()]
		if prev == nil || prev.Fanout() == nil {
			return // the parent ended (a store written by hand)
		}
		p = prev.Clone()
		if r.parents == nil {
			r.parents = map[uint64]*store.Job{}
		}
		r.parents[child.Parent()] = p
		r.parentOrder = append(r.parentOrder, child.Parent())
	}
	f := p.Fanout()
	switch child.State {
	case store.Completed:
		f.Completed++
	case store.Failed:
		f.Failed++
	case store.Timeout:
		f.Timeout++
	case store.Cancelled:
		f.Cancelled++
	}
	r.note(child.Parent(), fmt.Sprintf("job %d on %s %s", child.ID, child.Agent(), child.State))
}

// finishParents writes the parents r changed: the rollout moves on
// (or stops), and a parent whose children have all ended gets its
// final state. The caller holds s.mu.
func (s *Scheduler) finishParents(r *round) {
	for i := 0; i < len(r.parentOrder); i++ {
		id := r.parentOrder[i]
		p := r.parents[id]
		if p == nil {
			continue
		}
		s.advance(r, p)
		delete(r.parents, id)
		prev := s.jobs[id]
		if prev == nil {
			continue
		}
		f := p.Fanout()
		t := s.tally(f)
		msg := strings.Join(r.childMsgs[id], "; ")
		delete(r.childMsgs, id)
		typ := "rollout"
		if endedCount(f) >= f.Children {
			typ = "finished"
			p.FinishedAt = s.clock.Now().UTC()
			switch {
			case p.CancelRequested:
				p.State = store.Cancelled
			case f.Completed == f.Children:
				p.State = store.Completed
			case failures(f) == 0:
				p.State = store.Cancelled
			default:
				p.State = store.Failed
			}
		}
		p.Reason = summary(f, t)
		if msg != "" {
			msg += ": " + p.Reason
		} else {
			msg = p.Reason
		}
		s.change(r, prev, p, typ, msg, hclog.Info, nil)
	}
	r.parentOrder = r.parentOrder[:0]
}

// advance moves fan-out p's rollout on: it stops once failures reach
// MaxFailures (cancelling every child not started), else releases
// blocked children while fewer than Batch are released and
// unfinished. Children cancelled here are counted in p. The caller
// holds s.mu.
func (s *Scheduler) advance(r *round, p *store.Job) {
	f := p.Fanout()
	if m := f.MaxFailures; m != nil && !f.Stopped && failures(f) >= *m {
		f.Stopped = true
		s.stopRollout(r, p, fmt.Sprintf("rollout stopped: %d failures reached max_failures %d", failures(f), *m))
		return
	}
	if f.Stopped || f.Batch == 0 {
		return
	}
	t := s.tally(f)
	free := f.Batch - t.running - t.queued
	for id := f.FirstChild; free > 0 && id < f.FirstChild+uint64(f.Children); id++ {
		c := s.jobs[id]
		if c == nil || c.State != store.Blocked {
			continue
		}
		next := c.Clone()
		next.State = store.Queued
		next.QueuedAt = s.clock.Now().UTC()
		next.Reason = s.whyQueued(next)
		s.change(r, c, next, "released", "its turn in the rollout came", hclog.Info, nil)
		free--
	}
}

// stopRollout cancels every child of p not started yet (blocked,
// queued or waiting to retry), for why. The caller holds s.mu.
func (s *Scheduler) stopRollout(r *round, p *store.Job, why string) {
	f := p.Fanout()
	for id := f.FirstChild; id < f.FirstChild+uint64(f.Children); id++ {
		c := s.jobs[id]
		if c == nil {
			continue
		}
		switch c.State {
		case store.Blocked, store.Queued, store.Waiting:
			next := c.Clone()
			next.State = store.Cancelled
			next.FinishedAt = s.clock.Now().UTC()
			next.Reason = why
			s.change(r, c, next, "cancelled", why, hclog.Info, nil)
		}
	}
}

// cancelFanout cancels fan-out parent prev: the rollout stops, every
// child not started is cancelled at once and every running one is
// asked to stop (sends lists the Cancel messages to send once the
// round is durable). The parent ends once its last child has. The
// caller holds s.mu.
func (s *Scheduler) cancelFanout(r *round, prev *store.Job) (sends []outgoing) {
	p := prev.Clone()
	p.CancelRequested = true
	p.Fanout().Stopped = true
	if r.parents == nil {
		r.parents = map[uint64]*store.Job{}
	}
	r.parents[p.ID] = p
	r.parentOrder = append(r.parentOrder, p.ID)
	s.stopRollout(r, p, "cancelled with its fan-out (job "+strconv.FormatUint(p.ID, 10)+")")
	f := p.Fanout()
	for id := f.FirstChild; id < f.FirstChild+uint64(f.Children); id++ {
		c := s.jobs[id]
		if c == nil || !c.State.Active() || c.CancelRequested || !c.Cancellable {
			continue
		}
		next := c.Clone()
		next.CancelRequested = true
		next.Reason = "cancel requested with its fan-out; waiting for the agent to stop it"
		s.change(r, c, next, "cancel_requested", "", hclog.Info, nil)
		cur := next.Current()
		if st := s.agents[cur.Agent]; st != nil {
			sends = append(sends, outgoing{st.conn, cancelMsg(id, cur.Number)})
		}
	}
	r.note(p.ID, "cancel requested")
	return sends
}

// fanoutNow is the live reason of a fan-out parent or of a blocked
// child. The caller holds s.mu.
func (s *Scheduler) fanoutNow(j *store.Job) string {
	if j.Fanout() != nil {
		cur := s.jobs[j.ID]
		if cur == nil || cur.Fanout() == nil {
			return ""
		}
		return summary(cur.Fanout(), s.tally(cur.Fanout()))
	}
	p := s.jobs[j.Parent()]
	if p == nil || p.Fanout() == nil {
		return ""
	}
	ahead := 1
	for id := p.Fanout().FirstChild; id < j.ID; id++ {
		if c := s.jobs[id]; c != nil && c.State == store.Blocked {
			ahead++
		}
	}
	return rolloutReason(p.Fanout().Batch, p.Fanout().Children, ahead)
}

// Children returns the latest versions the scheduler holds of the
// children of fan-out parent p (nil for one it no longer holds: read
// the store).
func (s *Scheduler) Children(p *store.Job) []*store.Job {
	if p.Fanout() == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*store.Job, p.Fanout().Children)
	for i := range out {
		id := p.Fanout().FirstChild + uint64(i)
		j := s.jobs[id]
		if j == nil {
			j = s.ended[id].job
		}
		if j != nil {
			c := *j
			c.Attempts = slices.Clone(j.Attempts)
			out[i] = &c
		}
	}
	return out
}

// loadParents is Load's part for fan-outs: a rollout that a store
// written without the one-round guarantee left short of its batch, or
// ended without its parent, moves on. The caller holds s.mu.
func (s *Scheduler) loadParents(parents []*store.Job) {
	var r round
	for _, p := range parents {
		if s.jobs[p.ID] != p || !s.stuck(p.Fanout()) {
			continue
		}
		if r.parents == nil {
			r.parents = map[uint64]*store.Job{}
		}
		r.parents[p.ID] = p.Clone()
		r.parentOrder = append(r.parentOrder, p.ID)
	}
	if len(r.parentOrder) > 0 {
		s.commit(&r)
	}
}

// stuck reports whether fan-out f's rollout should move on without a
// child ending: all children ended, failures reached MaxFailures
// without the rollout stopping, or fewer than Batch children released
// while some wait their turn. The caller holds s.mu.
func (s *Scheduler) stuck(f *store.Fanout) bool {
	if endedCount(f) >= f.Children {
		return true
	}
	if m := f.MaxFailures; m != nil && !f.Stopped && failures(f) >= *m {
		return true
	}
	if f.Stopped || f.Batch == 0 {
		return false
	}
	t := s.tally(f)
	return t.blocked > 0 && t.running+t.queued < f.Batch
}

// Pinned jobs waiting for an agent that is not connected.

// pinItem is when pinned job id is next checked for its agent.
type pinItem struct {
	id  uint64
	due time.Time
}

type pinHeap []pinItem

func (h pinHeap) Len() int           { return len(h) }
func (h pinHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h pinHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *pinHeap) Push(x any)        { *h = append(*h, x.(pinItem)) }
func (h *pinHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// offlineTimeout is how long a queued pinned job waits for its agent.
func (s *Scheduler) offlineTimeout() time.Duration {
	if s.opts.OfflineTimeout > 0 {
		return s.opts.OfflineTimeout
	}
	return DefaultOfflineTimeout
}

// awayDeadline is when queued pinned job j fails if its agent stays
// away. The caller holds s.mu.
func (s *Scheduler) awayDeadline(j *store.Job) time.Time {
	since := j.QueuedAt
	if g := s.goneAt[j.Agent()]; g.After(since) {
		since = g
	}
	if s.loadedAt.After(since) {
		since = s.loadedAt
	}
	return since.Add(s.offlineTimeout())
}

// watchPinned arms the away check of queued pinned job j if its agent
// is not connected. The caller holds s.mu.
func (s *Scheduler) watchPinned(j *store.Job) {
	if j.Agent() == "" || j.State != store.Queued || s.agents[j.Agent()] != nil {
		return
	}
	heap.Push(&s.pins, pinItem{id: j.ID, due: s.awayDeadline(j)})
	s.kickDelay()
}

// agentGone arms the away checks of the queued jobs pinned to agent
// name, which has just disconnected. The caller holds s.mu.
func (s *Scheduler) agentGone(name string) {
	s.goneAt[name] = s.clock.Now().UTC()
	for id := range s.pinned[name] {
		if j := s.jobs[id]; j != nil {
			s.watchPinned(j)
		}
	}
}

// pin keeps s.pinned in step with pinned job next. The caller holds
// s.mu.
func (s *Scheduler) pin(next *store.Job) {
	if next.Agent() == "" {
		return
	}
	if next.State.Terminal() {
		if m := s.pinned[next.Agent()]; m != nil {
			delete(m, next.ID)
			if len(m) == 0 {
				delete(s.pinned, next.Agent())
			}
		}
		return
	}
	m := s.pinned[next.Agent()]
	if m == nil {
		m = map[uint64]struct{}{}
		s.pinned[next.Agent()] = m
	}
	m[next.ID] = struct{}{}
}

// failAway fails the queued pinned jobs whose agent stayed away past
// their deadline and returns when the next check is due (zero if none).
func (s *Scheduler) failAway(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.pins.Len() > 0 && !s.pins[0].due.After(now) {
		it := heap.Pop(&s.pins).(pinItem)
		j := s.jobs[it.id]
		if j == nil || j.State != store.Queued || s.agents[j.Agent()] != nil {
			continue // it ran, ended, or its agent is back (agentGone re-arms it)
		}
		if due := s.awayDeadline(j); due.After(now) {
			heap.Push(&s.pins, pinItem{id: j.ID, due: due})
			continue
		}
		next := j.Clone()
		next.State = store.Failed
		next.FinishedAt = now.UTC()
		next.Reason = fmt.Sprintf("agent %s did not connect within %s", j.Agent(), s.offlineTimeout())
		s.transition(j, next, "finished", next.Reason)
	}
	if s.pins.Len() == 0 {
		return time.Time{}
	}
	return s.pins[0].due
}

// rememberAgent refreshes the durable record of agent a (store.Agent) when
// it is new, its labels or slots changed, or it was last written
// agentRecordEvery ago. The caller holds s.mu.
func (s *Scheduler) rememberAgent(name string, labels map[string]string, slots int, now time.Time) {
	k, ok := s.known[name]
	if ok && maps.Equal(k.Labels, labels) && k.Slots == slots && now.Sub(k.LastSeen) < agentRecordEvery {
		return
	}
	a := store.Agent{Name: name, Labels: maps.Clone(labels), Slots: slots, FirstSeen: now.UTC(), LastSeen: now.UTC()}
	if ok {
		a.FirstSeen = k.FirstSeen
	}
	s.known[name] = a
	s.c.Add(&store.PutAgent{Agent: a})
}

// note adds what happened to fan-out parent's child to the message of
// the parent's event in r.
func (r *round) note(parent uint64, msg string) {
	if r.childMsgs == nil {
		r.childMsgs = map[uint64][]string{}
	}
	r.childMsgs[parent] = append(r.childMsgs[parent], msg)
}

func cancelMsg(id uint64, attempt uint32) *protocol.Cancel {
	return &protocol.Cancel{JobID: id, Attempt: attempt, Reason: "cancelled by user"}
}
