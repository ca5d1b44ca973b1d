package sched

import (
	"slices"
	"strings"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// The scheduler's registry of connected agents: for each agent session,
// what it may be sent (credits, draining) and which attempts it holds.
// The sessions themselves (Session; the controller's agentConn) carry
// the connection and never scheduler state; everything here is guarded
// by Scheduler.mu and touched only by the scheduler's methods.

// agentState is the scheduler's book of one connected agent session.
type agentState struct {
	conn     Session
	labels   map[string]string // conn.Labels(), read once
	match    map[string]string // labels and the name under pinKey: what the queue matches (fanout.go)
	slots    int               // conn.Slots(), read once
	credits  int
	draining bool
	stopping bool              // it drains itself (it is shutting down): no undrain
	running  map[uint64]uint32 // job ID → attempt
	lastSeen time.Time
	// earlyRelease: the agent grants an attempt's slot when its process
	// ends, before the FinishAck (protocol.FeatureEarlyRelease), so its
	// results may wait a little for a shared fsync (resultWait).
	earlyRelease bool
	// returned: the attempts (job ID → attempt) whose slot came back
	// with their result on this session (SlotReturned), kept while the
	// agent's heartbeats still list them: the agent lists such an attempt
	// as running, not ended, until it has the FinishAck, since its
	// heartbeat is not ordered with the result (Heartbeat).
	returned map[uint64]uint32
}

// resultWait bounds how long a job's result waits for a round to ride
// before starting its own, when its agent has freed the slot already:
// results of several agents then share one fsync, and at low rates a
// result rides the round of the next submit and its dispatch (one fsync
// per job instead of two from 100 jobs/s up; at 2 ms it rode only from
// 500/s). The FinishAck comes that much later at most, well within the
// agent's own wait before it syncs the result itself (50 ms). Store
// readers and watchers may see the job end that much later; a job
// waiting on it is not held up (its dispatch starts the round at once).
const resultWait = 10 * time.Millisecond

// featured is a Session that says which protocol features its agent
// announced (the controller's agentConn); sessions that do not say
// announced none.
type featured interface {
	Features() protocol.Features
}

// free is how many more attempts the agent may be sent: it granted the
// credits and has the slots.
func (a *agentState) free() int {
	if a.draining {
		return 0
	}
	return min(a.credits, a.slots-len(a.running))
}

// state returns the book of session a, or nil if a is not the agent's
// current session (it was replaced or has ended). The caller holds s.mu.
func (s *Scheduler) state(a Session) *agentState {
	if st := s.agents[a.Name()]; st != nil && st.conn == a {
		return st
	}
	return nil
}

// Register adds a connected agent, replacing an older session of the
// same name, and reconciles the attempts it says it runs with ours.
func (s *Scheduler) Register(a Session, running []protocol.AttemptRef) {
	name := a.Name()
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.agents[name]; old != nil {
		old.conn.Log().Warn("agent reconnected; closing its previous session")
		old.conn.Close("replaced by a new session of the same agent")
	}
	now := s.clock.Now()
	st := &agentState{conn: a, labels: a.Labels(), slots: a.Slots(), running: map[uint64]uint32{}, lastSeen: now}
	if f, ok := a.(featured); ok {
		st.earlyRelease = f.Features().Has(protocol.FeatureEarlyRelease)
	}
	st.match = matchSet(name, st.labels)
	s.agents[name] = st
	s.rememberAgent(name, st.labels, st.slots, now)
	for _, ref := range running {
		if j := s.current(ref.JobID, ref.Attempt, name); j != nil {
			st.running[ref.JobID] = ref.Attempt
			s.setLease(ref.JobID, ref.Attempt, now.Add(s.opts.LeaseTTL))
			continue
		}
		a.Send(&protocol.Cancel{JobID: ref.JobID, Attempt: ref.Attempt, Reason: "attempt is no longer current"})
	}
	s.KickDispatch()
}

// Unregister forgets session a when it ends.
func (s *Scheduler) Unregister(a Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state(a) != nil {
		delete(s.agents, a.Name())
		s.agentGone(a.Name())
	}
	// Its attempts keep their leases: the agent may reconnect and claim
	// them; otherwise they expire and count as lost.
}

// Drain stops dispatching to agent name; its running jobs go on. It
// reports whether the agent is connected.
func (s *Scheduler) Drain(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.agents[name]
	if st == nil {
		return false
	}
	st.draining = true
	st.credits = 0
	return true
}

// Credit adds n credits the agent granted on session a.
func (s *Scheduler) Credit(a Session, n int) {
	s.mu.Lock()
	st := s.state(a)
	if st == nil || st.draining {
		s.mu.Unlock()
		return
	}
	// Credits are the agent's word on its free slots. They are not
	// clamped by our view of what it runs (that view can briefly hold an
	// attempt the agent already dropped, and a clamped credit would be
	// lost for good); dispatch checks both credits and slots instead.
	st.credits = min(st.credits+n, st.slots)
	s.mu.Unlock()
	s.KickDispatch()
}

// SlotReturned adds the credit that a result returned: the agent
// announced protocol.FeatureCreditWithResult, and the Finished of the
// attempt (id, attempt), which the scheduler accepted, says its slot
// comes back with it (its process ended on session a; no Credit was
// sent for it). The job stream calls it after Finished. Nothing is
// added when a is no longer the agent's current session (the next
// session's first Credit counted the slot) or while it drains; the
// attempt is remembered either way, for the heartbeats (Heartbeat).
func (s *Scheduler) SlotReturned(a Session, id uint64, attempt uint32) {
	s.mu.Lock()
	st := s.state(a)
	if st == nil {
		s.mu.Unlock()
		return
	}
	if st.returned == nil {
		st.returned = map[uint64]uint32{}
	}
	if at, ok := st.returned[id]; ok && at == attempt {
		s.mu.Unlock()
		return // counted once (a result is accepted once; this is a guard)
	}
	st.returned[id] = attempt
	if st.draining {
		s.mu.Unlock()
		return
	}
	st.credits = min(st.credits+1, st.slots)
	s.mu.Unlock()
	s.KickDispatch()
}

// Heartbeat renews the leases of the attempts the agent lists and
// resynchronises its credits. Credits are deltas and a delta can be lost
// (a credit sent on a session that died, an attempt dropped on one side
// only); the heartbeat says what the agent holds, so the free slots are
// slots minus everything it holds or has been sent but not yet seen
// (our attempts on it that it does not list). An attempt it lists as
// ended holds no slot: its process is gone and its Credit went out
// before this heartbeat. Credits it sends after this heartbeat come
// after it on the stream and add to the result. An attempt whose slot
// returns with its result (SlotReturned) is listed as running until the
// agent has the FinishAck, since the result travels on its own stream,
// unordered with the heartbeat: it holds a slot here until its result
// has returned the slot (then the credit SlotReturned added is counted
// in the heartbeat's), and its result adds the credit after. A heartbeat
// on a session that was replaced renews leases (the agent is alive) and
// nothing else.
func (s *Scheduler) Heartbeat(a Session, running, ended []protocol.AttemptRef) {
	name := a.Name()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	st := s.state(a)
	if st != nil {
		st.lastSeen = now
	}
	listed := make(map[uint64]bool, len(running))
	done := make(map[uint64]bool, len(ended))
	for _, ref := range ended {
		done[ref.JobID] = true
	}
	if st != nil {
		for _, ref := range running {
			if at, ok := st.returned[ref.JobID]; ok && at == ref.Attempt {
				done[ref.JobID] = true // its result returned the slot: it holds none
			}
		}
	}
	held := map[uint64]bool{}
	for _, ref := range running {
		listed[ref.JobID] = true
		if !done[ref.JobID] {
			held[ref.JobID] = true
		}
		if s.current(ref.JobID, ref.Attempt, name) != nil {
			s.setLease(ref.JobID, ref.Attempt, now.Add(s.opts.LeaseTTL))
			continue
		}
		if !done[ref.JobID] { // an ended attempt has nothing left to stop
			a.Send(&protocol.Cancel{JobID: ref.JobID, Attempt: ref.Attempt, Reason: "attempt is no longer current"})
		}
	}
	if st == nil {
		return
	}
	for id := range st.returned {
		if !listed[id] { // the agent has its FinishAck: no heartbeat lists it again
			delete(st.returned, id)
		}
	}
	if st.draining {
		return
	}
	for id := range st.running {
		if !listed[id] {
			held[id] = true
		}
	}
	free := max(st.slots-len(held), 0)
	if free != st.credits {
		a.Log().Debug("credits resynchronised from heartbeat", "had", st.credits, "now", free)
		st.credits = free
		s.KickDispatch()
	}
}

// Agent is the scheduler's view of one connected agent: its session and
// its book. The controller turns it into what the API shows.
type Agent struct {
	Session   Session
	Credits   int       // what it may be sent now (0 while draining)
	Running   int       // attempts it holds
	Jobs      []uint64  // the jobs of those attempts, ascending (Agents and Agent only)
	Draining  bool      // it gets no new jobs
	DrainedBy string    // "agent" (it is stopping), "operator", or "" (not draining)
	LastSeen  time.Time // its last heartbeat (or its hello)
}

// Capacity sums up the connected agents' slots.
type Capacity struct {
	Agents   int // connected
	Draining int // of them, draining
	Slots    int // all their slots
	Used     int // slots holding an attempt
	Free     int // slots free for one, on agents not draining
}

// Agents describes the connected agents, by name.
func (s *Scheduler) Agents() []Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Agent, 0, len(s.agents))
	for _, st := range s.agents {
		out = append(out, st.agent(true))
	}
	slices.SortFunc(out, func(a, b Agent) int { return strings.Compare(a.Session.Name(), b.Session.Name()) })
	return out
}

// Agent describes the connected agent name.
func (s *Scheduler) Agent(name string) (Agent, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.agents[name]
	if st == nil {
		return Agent{}, false
	}
	return st.agent(true), true
}

// agent describes a, with its jobs if asked. The caller holds s.mu.
func (a *agentState) agent(withJobs bool) Agent {
	var jobs []uint64
	if withJobs {
		jobs = make([]uint64, 0, len(a.running))
		for id := range a.running {
			jobs = append(jobs, id)
		}
		slices.Sort(jobs)
	}
	return Agent{
		Session: a.conn, Credits: a.credits, Running: len(a.running), Jobs: jobs,
		Draining: a.draining, DrainedBy: drainedBy(a), LastSeen: a.lastSeen,
	}
}

// Capacity sums up the connected agents' slots: those holding an
// attempt, and those free for one (a draining agent's count as
// neither). With each, it also describes every agent (without Jobs),
// in no particular order, for the per-agent metrics.
func (s *Scheduler) Capacity(each bool) (Capacity, []Agent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c Capacity
	var agents []Agent
	for _, st := range s.agents {
		if each {
			agents = append(agents, st.agent(false))
		}
		c.Agents++
		c.Slots += st.slots
		c.Used += len(st.running)
		if st.draining {
			c.Draining++
		} else {
			c.Free += max(st.slots-len(st.running), 0)
		}
	}
	return c, agents
}

// Stopping records that agent a drains itself: it is shutting down.
func (s *Scheduler) Stopping(a Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.state(a); st != nil {
		st.stopping, st.draining, st.credits = true, true, 0
	}
}

// drainedBy says who drained a: "agent", "operator" or "" (not
// draining). The caller holds s.mu.
func drainedBy(a *agentState) string {
	switch {
	case !a.draining:
		return ""
	case a.stopping:
		return "agent"
	}
	return "operator"
}

// Undrain lets a drained agent take jobs again: its free slots count as
// credits at once (its next heartbeat corrects them). found is false
// when no agent of that name is connected; err is ErrStopping for an
// agent that is shutting down.
func (s *Scheduler) Undrain(name string) (found bool, err error) {
	s.mu.Lock()
	a := s.agents[name]
	if a == nil {
		s.mu.Unlock()
		return false, nil
	}
	if a.stopping {
		s.mu.Unlock()
		return true, ErrStopping
	}
	kick := a.draining
	a.draining = false
	a.credits = max(a.slots-len(a.running), 0)
	s.mu.Unlock()
	if kick {
		s.KickDispatch()
	}
	return true, nil
}

// OutputSoFar is how many bytes of output job j has stored. A record's
// LogBytes is set when an attempt ends; while one runs, the scheduler
// knows the end of what it stored. A nil scheduler (tests of the
// handlers alone) reports the record's.
func (s *Scheduler) OutputSoFar(j *store.Job) uint64 {
	if s == nil || j.State.Terminal() {
		return j.LogBytes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.logEnd[j.ID], j.LogBytes)
}

// Session returns agent name's current session, or nil.
func (s *Scheduler) Session(name string) Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.agents[name]; st != nil {
		return st.conn
	}
	return nil
}

// Sessions returns the connected agents' sessions.
func (s *Scheduler) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Session, 0, len(s.agents))
	for _, st := range s.agents {
		out = append(out, st.conn)
	}
	return out
}

// LoseAttempts ends every attempt session a holds as lost, for why (a
// revoked certificate: the agent will not be let back in to report on
// them), and returns the jobs and the batch to wait on before saying
// so; nil if there were none. An inherited attempt whose gap fill has
// not completed is lost once it has (inherited.go), and not listed.
func (s *Scheduler) LoseAttempts(a Session, why string) ([]uint64, *Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(a)
	if st == nil {
		return nil, nil
	}
	var lost []uint64
	var last *Batch
	for id, attempt := range st.running {
		if j := s.current(id, attempt, a.Name()); j != nil {
			if u := s.waiting(id, attempt); u != nil {
				u.lose = why // recorded once the gap fill is (inherited.go)
				delete(st.running, id)
				continue
			}
			last = s.loseAttempt(j, why)
			lost = append(lost, id)
		}
	}
	return lost, last
}

// CloseAgents closes every agent session.
func (s *Scheduler) CloseAgents(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.agents {
		st.conn.Close(reason)
	}
}

// closeSilent closes the sessions of agents not heard from for a lease.
// Their attempts run out on their own leases.
func (s *Scheduler) closeSilent(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.agents {
		if now.Sub(st.lastSeen) > s.opts.LeaseTTL {
			s.log.Warn("agent missed heartbeats; closing its session", "agent", st.conn.Name(), "last_seen", st.lastSeen)
			st.conn.Close("missed heartbeats for " + s.opts.LeaseTTL.String())
		}
	}
}
