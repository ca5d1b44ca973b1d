package sched

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// Attempts end on time, not on a tick: every running attempt has an
// entry in the scheduler's expiry heap at the moment it may run out, and
// one timer waits for the earliest. Two things run out:
//
//   - the lease, renewed by every heartbeat that lists the attempt. A
//     renewal only moves the deadline in the leases map; the heap entry
//     stays where it was, and when it comes due the live deadline
//     decides: past, the attempt is lost; still ahead, the entry goes
//     back in at that deadline. So a heartbeat costs no heap work, an
//     attempt at most one wake-up per lease, and a silent agent's
//     attempts are lost when their lease ends — at most one lease after
//     its last heartbeat, not a sweep period later.
//   - the controller's deadline for a job with a timeout (timeout + kill
//     grace + lease after the dispatch): the backstop for an agent that
//     heartbeats but does not stop the job.
//
// A lease set earlier than its queued entry (a heartbeat after a
// restart, whose grace is longer than one lease) gets an entry of its
// own; the later one is dropped when it comes due (its due no longer
// matches lease.queued).

// lease is the lease of a job's current attempt.
type lease struct {
	deadline time.Time // when it runs out unless renewed
	queued   time.Time // due of its entry in the expiry heap
}

// expiryItem is one heap entry: a lease (hard false) or a controller
// deadline (hard true) of one attempt.
type expiryItem struct {
	due     time.Time
	id      uint64
	attempt uint32
	hard    bool
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// setLease gives job id's current attempt a lease until deadline. The
// caller holds s.mu.
func (s *Scheduler) setLease(id uint64, attempt uint32, deadline time.Time) {
	l, ok := s.leases[id]
	l.deadline = deadline
	if !ok || deadline.Before(l.queued) {
		l.queued = deadline
		s.pushExpiry(expiryItem{due: deadline, id: id, attempt: attempt})
	}
	s.leases[id] = l
}

// setHardDeadline queues the controller's deadline of an attempt of a
// job with a timeout. The caller holds s.mu.
func (s *Scheduler) setHardDeadline(id uint64, attempt uint32, dispatched time.Time, timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	s.pushExpiry(expiryItem{due: dispatched.Add(timeout + s.opts.KillGrace + s.opts.LeaseTTL), id: id, attempt: attempt, hard: true})
}

func (s *Scheduler) pushExpiry(it expiryItem) {
	earliest := s.expiry.Len() == 0 || it.due.Before(s.expiry[0].due)
	heap.Push(&s.expiry, it)
	if earliest {
		select {
		case s.expiryCh <- struct{}{}:
		default:
		}
	}
}

// ExpiryLoop ends attempts whose lease or deadline has passed, each when
// it passes, and closes the sessions of agents that went silent.
func (s *Scheduler) ExpiryLoop(ctx context.Context) {
	t := s.clock.NewTimer(time.Hour)
	defer t.Stop()
	every := max(s.opts.LeaseTTL/4, 50*time.Millisecond)
	silence := s.clock.NewTimer(every)
	defer silence.Stop()
	for {
		now := s.clock.Now()
		wait := time.Hour
		if next := s.expire(now); !next.IsZero() {
			wait = next.Sub(now)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-s.expiryCh:
		case now := <-silence.C():
			s.closeSilent(now)
			silence.Reset(every)
		}
	}
}

// expire handles every heap entry due at now and returns when the next
// one is due (zero if none).
func (s *Scheduler) expire(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.expiry.Len() > 0 && !s.expiry[0].due.After(now) {
		it := heap.Pop(&s.expiry).(expiryItem)
		j := s.jobs[it.id]
		if j == nil || !j.State.Active() || j.Current().Number != it.attempt {
			continue // the attempt ended (or was superseded) meanwhile
		}
		c := j.Current()
		if it.hard {
			if u := s.waiting(it.id, it.attempt); u != nil {
				u.hard = true // recorded once the gap fill is (inherited.go)
				continue
			}
			// The agent enforces the timeout; this is the backstop for an
			// agent that heartbeats but does not stop the job.
			next := j.Clone()
			next.LogBytes = s.logEnd[it.id]
			nc := next.Current()
			nc.OutputBytes = next.LogBytes - nc.LogStart
			nc.Error = fmt.Sprintf("agent %s did not end the job %s after its timeout; the controller's deadline passed", c.Agent, s.opts.KillGrace+s.opts.LeaseTTL)
			if st := s.agents[c.Agent]; st != nil {
				delete(st.running, it.id)
				st.conn.Send(&protocol.Cancel{JobID: it.id, Attempt: c.Number, Reason: "timeout (controller deadline)"})
			}
			s.endAttempt(j, next, store.OutcomeTimeout, nc.Error, 0)
			continue
		}
		l, ok := s.leases[it.id]
		if !ok || !l.queued.Equal(it.due) {
			continue // a stale entry: the lease has an earlier one
		}
		if l.deadline.After(now) { // renewed since the entry was queued
			l.queued = l.deadline
			s.leases[it.id] = l
			heap.Push(&s.expiry, expiryItem{due: l.deadline, id: it.id, attempt: it.attempt})
			continue
		}
		if u := s.waiting(it.id, it.attempt); u != nil {
			u.lease = true // checked again once the gap fill is (inherited.go)
			continue
		}
		s.loseAttempt(j, fmt.Sprintf("agent %s did not renew the lease within %s", c.Agent, s.opts.LeaseTTL))
		if st := s.agents[c.Agent]; st != nil {
			st.conn.Send(&protocol.Cancel{JobID: it.id, Attempt: c.Number, Reason: "lease expired"})
		}
	}
	if s.expiry.Len() == 0 {
		return time.Time{}
	}
	return s.expiry[0].due
}

// StartServing gives the attempts load found running their restart
// grace from now, when agents can first reach the controller: opening the
// store and loading a deep queue take time that must not count against
// it. Run calls it before it accepts the first agent session.
func (s *Scheduler) StartServing(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.leases {
		if j := s.jobs[id]; j != nil && j.State.Active() {
			s.setLease(id, j.Current().Number, now.Add(s.restartGrace()))
		}
	}
}

// restartGrace is how long an attempt that was running when the
// controller started may go unclaimed before it counts as lost: one
// lease plus the longest wait of an agent that holds attempts between
// two reconnect tries (a quarter of the lease: agent.Agent), so an agent
// that was backing off while the controller was down is back in time.
// With the default lease of 15s that is 18.75s.
func (s *Scheduler) restartGrace() time.Duration {
	return s.opts.LeaseTTL + s.opts.LeaseTTL/4
}
