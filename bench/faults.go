package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"time"

	"jobsuite/transport"
)

// faults measures how long a dead agent's attempt stays "running": a
// real agent runs a job, is killed with kill -9, and the time until the
// controller declares the attempt lost is read from the attempt's end.
// The lease runs out at most one lease after the agent's last heartbeat,
// which came at most a heartbeat interval (a third of the lease) before
// the kill, so the figure lies between two thirds of the lease and the
// lease; the row compares the slowest with the lease.
func (e *env) faults(ctx context.Context) {
	lease := e.sz.FaultLease
	name := fmt.Sprintf("lost-agent detection: agent kill -9 → attempt lost, lease %s, %d kills", lease, e.sz.FaultKills)
	c, err := e.startCluster(ctx, "faults", lease)
	if err != nil {
		e.fail("8a", name, err)
		return
	}
	defer c.close()
	var took []time.Duration
	for k := range e.sz.FaultKills {
		d, err := c.killAgentWhileRunning(ctx, k)
		if err != nil {
			e.fail("8a", name, err)
			return
		}
		took = append(took, d)
	}
	slices.Sort(took)
	worst := took[len(took)-1]
	e.add(Row{ID: "8a", Name: name, Value: worst.Seconds(), Unit: "s (slowest)",
		Detail: fmt.Sprintf("each: %s; a lease of %s, heartbeats every %s", durations(took), lease, lease/3),
		Limit:  lease.Seconds(), LimitUnit: "s", LimitName: "the lease TTL",
		Target: "≤ the lease + one heartbeat interval", Verdict: atMost(worst.Seconds()/lease.Seconds(), 4.0/3, "× the lease")})
}

// killAgentWhileRunning starts a real agent, runs a job on it, kills the
// agent and returns how long the controller took to declare the attempt
// lost.
func (c *cluster) killAgentWhileRunning(ctx context.Context, k int) (time.Duration, error) {
	base := filepath.Dir(c.ctlConfig().Data)
	name := agentName(1)
	p, err := startChild(ctx, childConfig{Mode: "agent", PKI: c.e.pki.dir, Data: filepath.Join(base, fmt.Sprintf("%s-%d", name, k)),
		Log: filepath.Join(base, name+".log"), LogLevel: c.e.cfg.LogLevel, Name: name,
		Controller: c.ctl.info.Agent, Slots: 1, Transport: string(transport.ModeQUIC)}, time.Minute)
	if err != nil {
		return 0, err
	}
	defer p.kill()
	if err := c.api.waitAgents(ctx, 1, time.Minute); err != nil {
		return 0, err
	}
	// It outlives its agent (its process group is left alone by a kill
	// -9 of the agent) but not by much.
	id, err := c.api.submit(ctx, []byte(`{"command":"sleep 20"}`))
	if err != nil {
		return 0, err
	}
	var r *jobRecord
	if err := poll(ctx, time.Minute, func() (bool, error) {
		recs, err := c.api.records(ctx, []uint64{id})
		r = recs[id]
		return err == nil && r != nil && len(r.Attempts) > 0 && r.Attempts[0].StartedAt != nil, err
	}); err != nil {
		return 0, fmt.Errorf("job %d did not start: %w", id, err)
	}
	// Kill at a different moment of the heartbeat cycle each time: from
	// one to two heartbeat intervals into the job.
	hb := c.ctl.cfg.LeaseTTL / 3
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(hb + hb*time.Duration(k)/time.Duration(max(c.e.sz.FaultKills, 1))):
	}
	p.kill()
	killed := time.Now()
	if err := poll(ctx, time.Minute, func() (bool, error) {
		recs, err := c.api.records(ctx, []uint64{id})
		r = recs[id]
		return err == nil && r != nil && r.Attempts[0].Outcome != "", err
	}); err != nil {
		return 0, fmt.Errorf("job %d's attempt was not declared lost: %w", id, err)
	}
	if a := r.Attempts[0]; a.Outcome != "lost" || a.FinishedAt == nil {
		return 0, fmt.Errorf("job %d's attempt ended %q, want lost", id, a.Outcome)
	}
	// Let the controller see the agent gone before the next one connects.
	if err := poll(ctx, time.Minute, func() (bool, error) {
		n, err := c.api.agentCount(ctx)
		return n == 0, err
	}); err != nil {
		return 0, err
	}
	return r.Attempts[0].FinishedAt.Sub(killed), nil
}

// poll calls cond every 10ms until it holds, fails or within passes.
func poll(ctx context.Context, within time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("not within %s", within)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// durations formats a list of durations in milliseconds.
func durations(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%.0f ms", math.Round(float64(d)/float64(time.Millisecond)))
	}
	return s
}
