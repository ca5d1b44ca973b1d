package controller

import (
	"sort"
	"time"

	"jobsuite/api"
	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// The scheduler's registry of connected agents: for each agent session,
// what it may be sent (credits, draining) and which attempts it holds.
// The sessions themselves (agentConn, agents.go) carry the connection
// and never scheduler state; everything here is guarded by scheduler.mu
// and touched only by the scheduler's methods.

// agentState is the scheduler's book of one connected agent session.
type agentState struct {
	conn     *agentConn
	credits  int
	draining bool
	stopping bool              // it drains itself (it is shutting down): no undrain
	running  map[uint64]uint32 // job ID → attempt
	lastSeen time.Time
}

// free is how many more attempts the agent may be sent: it granted the
// credits and has the slots.
func (a *agentState) free() int {
	if a.draining {
		return 0
	}
	return min(a.credits, a.conn.slots-len(a.running))
}

// state returns the book of session a, or nil if a is not the agent's
// current session (it was replaced or has ended). The caller holds s.mu.
func (s *scheduler) state(a *agentConn) *agentState {
	if st := s.agents[a.name]; st != nil && st.conn == a {
		return st
	}
	return nil
}

// register adds a connected agent, replacing an older session of the
// same name, and reconciles the attempts it says it runs with ours.
func (s *scheduler) register(a *agentConn, running []protocol.AttemptRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.agents[a.name]; old != nil {
		old.conn.log.Warn("agent reconnected; closing its previous session")
		old.conn.close("replaced by a new session of the same agent")
	}
	now := s.clock.Now()
	st := &agentState{conn: a, running: map[uint64]uint32{}, lastSeen: now}
	s.agents[a.name] = st
	for _, ref := range running {
		if j := s.current(ref.JobID, ref.Attempt, a.name); j != nil {
			st.running[ref.JobID] = ref.Attempt
			s.setLease(ref.JobID, ref.Attempt, now.Add(s.opts.LeaseTTL))
			continue
		}
		a.send(&protocol.Cancel{JobID: ref.JobID, Attempt: ref.Attempt, Reason: "attempt is no longer current"})
	}
	s.kickDispatch()
}

// unregister forgets session a when it ends.
func (s *scheduler) unregister(a *agentConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state(a) != nil {
		delete(s.agents, a.name)
	}
	// Its attempts keep their leases: the agent may reconnect and claim
	// them; otherwise they expire and count as lost.
}

// drain stops dispatching to agent name; its running jobs go on. It
// reports whether the agent is connected.
func (s *scheduler) drain(name string) bool {
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

// credit adds n credits the agent granted on session a.
func (s *scheduler) credit(a *agentConn, n int) {
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
	st.credits = min(st.credits+n, a.slots)
	s.mu.Unlock()
	s.kickDispatch()
}

// heartbeat renews the leases of the attempts the agent lists and
// resynchronises its credits. Credits are deltas and a delta can be lost
// (a credit sent on a session that died, an attempt dropped on one side
// only); the heartbeat says what the agent holds, so the free slots are
// slots minus everything it holds or has been sent but not yet seen
// (our attempts on it that it does not list). An attempt it lists as
// ended holds no slot: its process is gone and its Credit went out
// before this heartbeat. Credits it sends after this heartbeat come
// after it on the stream and add to the result. A heartbeat on a session
// that was replaced renews leases (the agent is alive) and nothing else.
func (s *scheduler) heartbeat(a *agentConn, running, ended []protocol.AttemptRef) {
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
	held := map[uint64]bool{}
	for _, ref := range running {
		listed[ref.JobID] = true
		if !done[ref.JobID] {
			held[ref.JobID] = true
		}
		if s.current(ref.JobID, ref.Attempt, a.name) != nil {
			s.setLease(ref.JobID, ref.Attempt, now.Add(s.opts.LeaseTTL))
			continue
		}
		if !done[ref.JobID] { // an ended attempt has nothing left to stop
			a.send(&protocol.Cancel{JobID: ref.JobID, Attempt: ref.Attempt, Reason: "attempt is no longer current"})
		}
	}
	if st == nil || st.draining {
		return
	}
	for id := range st.running {
		if !listed[id] {
			held[id] = true
		}
	}
	free := max(a.slots-len(held), 0)
	if free != st.credits {
		a.log.Debug("credits resynchronised from heartbeat", "had", st.credits, "now", free)
		st.credits = free
		s.kickDispatch()
	}
}

// agentList describes the connected agents, by name.
func (s *scheduler) agentList() []api.AgentInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.AgentInfo, 0, len(s.agents))
	for _, st := range s.agents {
		a := st.conn
		jobs := make([]uint64, 0, len(st.running))
		for id := range st.running {
			jobs = append(jobs, id)
		}
		sort.Slice(jobs, func(i, j int) bool { return jobs[i] < jobs[j] })
		labels := a.labels
		if labels == nil {
			labels = map[string]string{}
		}
		out = append(out, api.AgentInfo{
			Name: a.name, Labels: labels, Slots: a.slots, Running: len(st.running),
			Credits: st.credits, Draining: st.draining, Transport: a.transport, Address: a.addr, Version: a.version,
			ConnectedAt: a.connected, LastSeen: st.lastSeen, Jobs: jobs, DrainedBy: drainedBy(st),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// agentLoad sums the connected agents' slots: those holding an attempt,
// and those free for one (a draining agent's count as neither). With
// sample, it also describes each agent for the per-agent metrics.
func (s *scheduler) agentLoad(sample bool) (agents, used, free int, each []agentSample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.agents {
		a := st.conn
		if sample {
			each = append(each, agentSample{name: a.name, version: a.version, transport: a.transport,
				slots: a.slots, running: len(st.running), drained: st.draining, heartbeat: st.lastSeen})
		}
		agents++
		used += len(st.running)
		if !st.draining {
			free += max(a.slots-len(st.running), 0)
		}
	}
	return agents, used, free, each
}

// slotStats sums up the connected agents.
func (s *scheduler) slotStats() api.AgentStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out api.AgentStats
	for _, st := range s.agents {
		slots := st.conn.slots
		out.Connected++
		out.Slots += slots
		out.SlotsUsed += len(st.running)
		if st.draining {
			out.Draining++
		} else {
			out.SlotsFree += max(slots-len(st.running), 0)
		}
	}
	return out
}

// stopping records that agent a drains itself: it is shutting down.
func (s *scheduler) stopping(a *agentConn) {
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

// undrain lets a drained agent take jobs again: its free slots count as
// credits at once (its next heartbeat corrects them). found is false
// when no agent of that name is connected; err is errStopping for an
// agent that is shutting down.
func (s *scheduler) undrain(name string) (found bool, err error) {
	s.mu.Lock()
	a := s.agents[name]
	if a == nil {
		s.mu.Unlock()
		return false, nil
	}
	if a.stopping {
		s.mu.Unlock()
		return true, errStopping
	}
	kick := a.draining
	a.draining = false
	a.credits = max(a.conn.slots-len(a.running), 0)
	s.mu.Unlock()
	if kick {
		s.kickDispatch()
	}
	return true, nil
}

// agentInfo returns the connected agent name as the API shows it.
func (s *scheduler) agentInfo(name string) (api.AgentInfo, bool) {
	for _, a := range s.agentList() {
		if a.Name == name {
			return a, true
		}
	}
	return api.AgentInfo{}, false
}

// outputSoFar is how many bytes of output job j has stored. A record's
// LogBytes is set when an attempt ends; while one runs, the scheduler
// knows the end of what it stored. A nil scheduler (tests of the
// handlers alone) reports the record's.
func (s *scheduler) outputSoFar(j *store.Job) uint64 {
	if s == nil || j.State.Terminal() {
		return j.LogBytes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.logEnd[j.ID], j.LogBytes)
}

// session returns agent name's current session, or nil.
func (s *scheduler) session(name string) *agentConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.agents[name]; st != nil {
		return st.conn
	}
	return nil
}

// sessions returns the connected agents' sessions.
func (s *scheduler) sessions() []*agentConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*agentConn, 0, len(s.agents))
	for _, st := range s.agents {
		out = append(out, st.conn)
	}
	return out
}

// loseAttempts ends every attempt session a holds as lost, for why (a
// revoked certificate: the agent will not be let back in to report on
// them), and returns the jobs and the batch to wait on before saying
// so; nil if there were none.
func (s *scheduler) loseAttempts(a *agentConn, why string) ([]uint64, *batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(a)
	if st == nil {
		return nil, nil
	}
	var lost []uint64
	var last *batch
	for id, attempt := range st.running {
		if j := s.current(id, attempt, a.name); j != nil {
			last = s.loseAttempt(j, why)
			lost = append(lost, id)
		}
	}
	return lost, last
}

// closeAgents closes every agent session.
func (s *scheduler) closeAgents(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.agents {
		st.conn.close(reason)
	}
}

// closeSilent closes the sessions of agents not heard from for a lease.
// Their attempts run out on their own leases.
func (s *scheduler) closeSilent(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.agents {
		if now.Sub(st.lastSeen) > s.opts.LeaseTTL {
			s.log.Warn("agent missed heartbeats; closing its session", "agent", st.conn.name, "last_seen", st.lastSeen)
			st.conn.close("missed heartbeats for " + s.opts.LeaseTTL.String())
		}
	}
}
