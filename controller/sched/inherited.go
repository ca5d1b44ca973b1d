package sched

// Inherited attempts (Options.OutputChannel). An attempt running when
// the scheduler loads was dispatched by an earlier leader, whose output
// channel a quorum may have acknowledged bytes of that this node lacks.
// Its durable end is unknown until the term's gap fill has asked a
// quorum (outchan.Leader.Fill), and until then the scheduler counts it
// at what the fill's chunks made durable so far — possibly short of
// bytes the agent had been acknowledged. So nothing that records such
// an attempt's end runs before the fill did: a lease that runs out, the
// controller's deadline of a job with a timeout, a revoked agent's
// attempts (LoseAttempts) each wait for Filled, which performs them
// then, at the full end. While the fill fails (no quorum answers, a
// peer cannot be read) nothing can be committed anyway: raft needs the
// same quorum. An agent that reports on the attempt opens its job
// stream first, and the stream is taken only after the fill
// (controller/output_channel.go), so a result never waits here.

// unfilled is an inherited attempt whose gap fill has not completed,
// and the ends that wait for it.
type unfilled struct {
	attempt uint32
	lease   bool   // its lease ran out
	hard    bool   // the controller's deadline passed
	lose    string // LoseAttempts' reason
}

// holdFill marks job id's current attempt as inherited (Load, with the
// output channel). The caller holds s.mu.
func (s *Scheduler) holdFill(id uint64, attempt uint32) {
	if s.unfilled == nil {
		s.unfilled = map[uint64]*unfilled{}
	}
	s.unfilled[id] = &unfilled{attempt: attempt}
}

// waiting returns attempt's hold if it is an inherited attempt whose
// fill has not completed. The caller holds s.mu.
func (s *Scheduler) waiting(id uint64, attempt uint32) *unfilled {
	u := s.unfilled[id]
	if u == nil || u.attempt != attempt {
		return nil
	}
	return u
}

// Filled records that the gap fill of job id's inherited attempt found
// its durable end (end, an offset in the job's log; OutputDurable is
// told), and performs the ends that waited for it: a lease that ran
// out is checked again now (a heartbeat since may have renewed it), the
// controller's deadline and a revoked agent's loss are recorded. It
// returns what OutputDurable returns.
func (s *Scheduler) Filled(id uint64, attempt uint32, end uint64) (durable uint64, ok bool) {
	durable, ok = s.OutputDurable(id, attempt, end)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.waiting(id, attempt)
	if u == nil {
		return durable, ok
	}
	delete(s.unfilled, id)
	j := s.jobs[id]
	if !ok || j == nil {
		return durable, ok
	}
	now := s.clock.Now()
	switch {
	case u.lose != "":
		s.loseAttempt(j, u.lose)
		return durable, false
	case u.hard:
		s.pushExpiry(expiryItem{due: now, id: id, attempt: attempt, hard: true})
	case u.lease:
		l := s.leases[id]
		l.queued = now
		s.leases[id] = l
		s.pushExpiry(expiryItem{due: now, id: id, attempt: attempt})
	}
	return durable, ok
}

// FillWaiting returns how many inherited attempts have an end (a lease
// run out, a deadline passed, a revoked agent) waiting for their gap
// fill.
func (s *Scheduler) FillWaiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, u := range s.unfilled {
		if u.lease || u.hard || u.lose != "" {
			n++
		}
	}
	return n
}

// DurableEnd returns where job id's output that readers may be served
// ends, while the scheduler holds the job with the output channel: the
// quorum-durable end of its running attempt (bytes past it may be lost
// with the attempt and cut from the log), or the recorded end of an
// attempt that ended whose round may not be applied yet. ok is false
// when the scheduler does not hold the job (it ended and its round is
// applied: the stored log is final) or without the output channel.
func (s *Scheduler) DurableEnd(id uint64) (end uint64, ok bool) {
	if !s.opts.OutputChannel {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		end = max(s.logEnd[id], j.LogBytes)
		if c := j.Current(); c != nil {
			end = max(end, c.LogStart)
		}
		return end, true
	}
	if e, held := s.ended[id]; held {
		return e.job.LogBytes, true
	}
	return 0, false
}
