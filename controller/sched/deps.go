package sched

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// Dependencies between jobs (issue 17): a job submitted with After runs
// only once the jobs it names ended — all completed, or in any way with
// AfterAny. Every job it names must exist when it is submitted, and IDs
// only grow, so a job can only depend on older jobs: a cycle is
// impossible by construction and no graph is searched.
//
// A job whose dependencies have all ended when it is submitted is
// decided at once (queued, or cancelled); otherwise it is blocked, and
// s.dependents lists it under each dependency not yet ended. When a job
// reaches a final state, change calls settle in the same round: each
// job blocked on it is cancelled ("dependency 12 failed") unless
// AfterAny, or queued once none of its dependencies is left unfinished.
// Its decision is in the same committer batch as the end it follows
// from, so a crash keeps both or neither. Load rebuilds s.dependents
// from the blocked jobs.

// blockedReason says what a blocked job waits for.
func blockedReason(pending []uint64) string {
	if len(pending) == 1 {
		return "waiting for job " + strconv.FormatUint(pending[0], 10)
	}
	parts := make([]string, len(pending))
	for i, id := range pending {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return "waiting for jobs " + strings.Join(parts, ", ")
}

// endedHow words how a dependency that did not complete ended.
func endedHow(st store.State) string {
	switch st {
	case store.Failed:
		return "failed"
	case store.Timeout:
		return "timed out"
	case store.Cancelled:
		return "was cancelled"
	}
	return string(st)
}

// verdict is where job j's dependencies stand, state giving each
// dependency's state (live: not ended). failed is the first dependency
// that ended otherwise than completed (only without AfterAny); pending
// the ones not ended, in order.
func verdict(j *store.Job, state func(uint64) (st store.State, live bool)) (failed uint64, how store.State, pending []uint64) {
	for _, d := range j.After() {
		st, live := state(d)
		switch {
		case live:
			pending = append(pending, d)
		case st != store.Completed && !j.AfterAny() && failed == 0:
			failed, how = d, st
		}
	}
	return failed, how, pending
}

// stateOf is a verdict's state function for the scheduler's memory:
// a dependency it holds is live; one that just ended has its final
// state in s.ended or known; any other ended earlier, and (it is not
// held, nor known to have failed) did not decide against the job when
// it ended: it counts as completed. The caller holds s.mu.
func (s *Scheduler) stateOf(known map[uint64]store.State) func(uint64) (store.State, bool) {
	return func(d uint64) (store.State, bool) {
		if j := s.jobs[d]; j != nil {
			return j.State, true
		}
		if e, ok := s.ended[d]; ok {
			return e.job.State, false
		}
		if st, ok := known[d]; ok {
			return st, !st.Terminal()
		}
		return store.Completed, false
	}
}

// settle decides the jobs blocked on dep, which has just ended, in r.
// The caller holds s.mu.
func (s *Scheduler) settle(r *round, dep *store.Job) {
	ids := s.dependents[dep.ID]
	if ids == nil {
		return
	}
	delete(s.dependents, dep.ID)
	state := s.stateOf(map[uint64]store.State{dep.ID: dep.State})
	for _, id := range ids {
		prev := s.jobs[id]
		if prev == nil || prev.State != store.Blocked {
			continue // cancelled meanwhile
		}
		s.decide(r, prev, state)
	}
}

// decide moves blocked job prev on once its dependencies allow: it is
// cancelled when one did not complete (unless AfterAny), queued when
// none is left unfinished, and stays blocked otherwise. The caller
// holds s.mu.
func (s *Scheduler) decide(r *round, prev *store.Job, state func(uint64) (store.State, bool)) {
	failed, how, pending := verdict(prev, state)
	switch {
	case failed != 0:
		next := prev.Clone()
		next.State = store.Cancelled
		next.FinishedAt = s.clock.Now().UTC()
		next.Reason = "dependency " + strconv.FormatUint(failed, 10) + " " + endedHow(how)
		s.change(r, prev, next, "cancelled", next.Reason, hclog.Info, nil)
	case len(pending) == 0:
		next := prev.Clone()
		next.State = store.Queued
		next.QueuedAt = s.clock.Now().UTC()
		next.Reason = s.whyQueued(next)
		s.change(r, prev, next, "released", "the jobs it runs after ended", hclog.Info, nil)
	}
}

// block registers blocked job j under each dependency in pending. The
// caller holds s.mu.
func (s *Scheduler) block(j *store.Job, pending []uint64) {
	for _, d := range pending {
		if !slices.Contains(s.dependents[d], j.ID) {
			s.dependents[d] = append(s.dependents[d], j.ID)
		}
	}
}

// depsBefore looks up the dependencies of jobs that the scheduler does
// not hold, outside the lock: their states go into known. One that does
// not exist fails the submission (ErrNoDependency); so does one not
// older than its dependent.
func (s *Scheduler) depsBefore(jobs []*store.Job, known map[uint64]store.State) error {
	var ids []uint64
	s.mu.Lock()
	for _, j := range jobs {
		for _, d := range j.After() {
			if d == 0 {
				s.mu.Unlock()
				return fmt.Errorf("%w: job 0", ErrNoDependency)
			}
			if s.jobs[d] != nil {
				continue
			}
			if e, ok := s.ended[d]; ok {
				known[d] = e.job.State
				continue
			}
			if _, ok := known[d]; !ok {
				ids = append(ids, d)
			}
		}
	}
	s.mu.Unlock()
	return s.lookUp(ids, known)
}

// lookUp reads the states of jobs ids from the store into known.
func (s *Scheduler) lookUp(ids []uint64, known map[uint64]store.State) error {
	for _, d := range ids {
		j, err := s.st.Get(d)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: job %d", ErrNoDependency, d)
		}
		if err != nil {
			return err
		}
		known[d] = j.State
	}
	return nil
}

// unsettled returns the dependencies of jobs that are neither held nor
// known to have ended: they ended, and their end became durable (so it
// left s.ended), between depsBefore and now; the caller reads them
// again. The caller holds s.mu.
func (s *Scheduler) unsettled(jobs []*store.Job, known map[uint64]store.State) []uint64 {
	var out []uint64
	for _, j := range jobs {
		for _, d := range j.After() {
			if s.jobs[d] != nil {
				continue
			}
			if _, ok := s.ended[d]; ok {
				continue
			}
			if st, ok := known[d]; ok && st.Terminal() {
				continue
			}
			out = append(out, d)
		}
	}
	return out
}

// admit sets a new job's state from its dependencies: queued without
// any (or once all ended as it needs), cancelled at once when one did
// not complete (unless AfterAny), else blocked and registered. It
// returns the event's message. The caller holds s.mu and has set the
// job's times.
func (s *Scheduler) admit(j *store.Job, known map[uint64]store.State) string {
	j.State = store.Queued
	if len(j.After()) == 0 {
		j.Reason = s.whyQueued(j)
		return ""
	}
	failed, how, pending := verdict(j, s.stateOf(known))
	switch {
	case failed != 0:
		j.State = store.Cancelled
		j.FinishedAt = j.CreatedAt
		j.Reason = "dependency " + strconv.FormatUint(failed, 10) + " " + endedHow(how)
		return j.Reason
	case len(pending) > 0:
		j.State = store.Blocked
		j.Reason = blockedReason(pending)
		s.block(j, pending)
		return j.Reason
	}
	j.Reason = s.whyQueued(j)
	return "the jobs it runs after had ended"
}

// loadBlocked is Load's part for blocked jobs: each is registered under
// its dependencies still held, and one whose dependencies have all
// ended (their end and its decision were not in one round: a store
// written before they were) is decided now. known holds the states of
// the dependencies not held, read from the store. The caller holds
// s.mu.
func (s *Scheduler) loadBlocked(blocked []*store.Job, known map[uint64]store.State) {
	var r round
	state := s.stateOf(known)
	for _, j := range blocked {
		if cur := s.jobs[j.ID]; cur != j || j.State != store.Blocked {
			continue // listed twice, and decided
		}
		failed, _, pending := verdict(j, state)
		if failed != 0 || len(pending) == 0 {
			s.decide(&r, j, state)
			continue
		}
		s.block(j, pending)
	}
	if len(r.cmds) > 0 {
		s.commit(&r)
	}
}

// blockedNow is the live reason of blocked job j: the dependencies it
// still waits for. The caller holds s.mu.
func (s *Scheduler) blockedNow(j *store.Job) string {
	var pending []uint64
	for _, d := range j.After() {
		if s.jobs[d] != nil {
			pending = append(pending, d)
		}
	}
	if len(pending) == 0 {
		return ""
	}
	return blockedReason(pending)
}
