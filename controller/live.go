package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"jobsuite/api"
	"jobsuite/protocol"
)

// errNoAnswer: the agent did not answer a status request in time.
var errNoAnswer = errors.New("agent did not answer in time")

// askStatus asks the agent about an attempt and waits for the answer
// until ctx is done.
func (a *agentConn) askStatus(ctx context.Context, id uint64, attempt uint32) (*protocol.StatusReply, error) {
	a.statusMu.Lock()
	if a.statusWait == nil {
		a.statusWait = map[uint64]chan *protocol.StatusReply{}
	}
	a.statusSeq++
	seq := a.statusSeq
	ch := make(chan *protocol.StatusReply, 1)
	a.statusWait[seq] = ch
	a.statusMu.Unlock()
	defer func() {
		a.statusMu.Lock()
		delete(a.statusWait, seq)
		a.statusMu.Unlock()
	}()
	if !a.trySend(&protocol.StatusRequest{Seq: seq, JobID: id, Attempt: attempt}) {
		return nil, errors.New("agent is busy; try again")
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, errNoAnswer
	case <-a.sess.Done():
		return nil, errors.New("agent disconnected")
	}
}

func (a *agentConn) deliverStatus(r *protocol.StatusReply) {
	a.statusMu.Lock()
	ch := a.statusWait[r.Seq]
	a.statusMu.Unlock()
	if ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}

// live asks the agent running job id for its live state, waiting at
// most wait.
func (s *Server) live(ctx context.Context, id uint64, wait time.Duration) *api.LiveView {
	agent, attempt, a, active := s.sched.Holder(id)
	switch {
	case !active:
		return &api.LiveView{Stale: true, Error: "the job is not running"}
	case a == nil:
		return &api.LiveView{Stale: true, Agent: agent, Attempt: attempt, Error: fmt.Sprintf("agent %s is not connected", agent)}
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	r, err := conn(a).askStatus(ctx, id, attempt)
	if err != nil {
		return &api.LiveView{Stale: true, Agent: agent, Attempt: attempt, Error: fmt.Sprintf("%v (waited %s)", err, wait)}
	}
	if !r.Found {
		return &api.LiveView{Stale: true, Agent: agent, Attempt: attempt, Error: "the agent does not hold this attempt"}
	}
	return &api.LiveView{
		Agent: agent, Attempt: attempt, PID: r.PID, Elapsed: r.Elapsed.Seconds(),
		UserCPU: r.UserCPU.Seconds(), SystemCPU: r.SystemCPU.Seconds(), RSS: r.RSS,
		Processes: r.Processes, OutputBytes: r.OutputBytes, LastLine: r.LastLine,
	}
}
