package controller

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/clock"
	"jobsuite/controller/store"
)

// Retention timing: the first pass runs retentionDelay after start, so a
// restart does not compete with agents reconnecting, then one every
// retentionInterval.
const (
	retentionDelay    = 10 * time.Second
	retentionInterval = time.Minute
)

// retentionLoop removes finished jobs past Config.RetainFor or beyond
// Config.RetainJobs, in the background, until ctx is done.
//
// It runs outside the scheduler lock: it chooses finished jobs from the
// store and removes them with store.PruneJobs commands through the
// committer, up to store.DefaultPruneBatch jobs each, so they take their
// place among the other writes. A PruneJobs removes only jobs whose
// stored state is terminal when it applies, and a terminal job never
// changes again, so no job the scheduler holds can be touched.
func (s *Server) retentionLoop(ctx context.Context) { s.retention().run(ctx) }

// retention is the Server's retention, as configured.
func (s *Server) retention() retention {
	return retention{
		st:         s.st,
		apply:      s.c.Do,
		clock:      s.clock,
		log:        s.log.Named("retention"),
		retainFor:  s.cfg.RetainFor,
		retainJobs: s.cfg.RetainJobs,
	}
}

// pruner is what retention needs of the store.
type pruner interface {
	Prune(ctx context.Context, o store.PruneOptions, apply func(store.Command) (store.Result, error)) (int, error)
	FinishedJobs() int
}

// retention removes finished jobs on a timer.
type retention struct {
	st         pruner
	apply      func(store.Command) (store.Result, error) // the committer's Do
	clock      clock.Clock                               // nil: clock.Real
	log        hclog.Logger
	retainFor  time.Duration // negative: no age limit
	retainJobs int           // negative: no count limit
}

// run makes a pass retentionDelay after it starts and every
// retentionInterval after the end of the previous one, until ctx is done.
func (r retention) run(ctx context.Context) {
	clk := r.clock
	if clk == nil {
		clk = clock.Real{}
	}
	t := clk.NewTimer(retentionDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		r.pass(ctx, clk.Now())
		t.Reset(retentionInterval)
	}
}

// pass removes what is due as of now.
func (r retention) pass(ctx context.Context, now time.Time) {
	o, ok := pruneOptions(r.retainFor, r.retainJobs, now)
	if !ok {
		return
	}
	start := time.Now()
	n, err := r.st.Prune(ctx, o, r.apply)
	if n > 0 {
		r.log.Info("removed finished jobs", "jobs", n, "kept", r.st.FinishedJobs(), "took", time.Since(start).Round(time.Millisecond))
	}
	if err != nil && ctx.Err() == nil {
		r.log.Error("removing finished jobs failed; retrying at the next pass", "error", err)
	}
}

// pruneOptions turns the retention settings into store.PruneOptions; ok
// is false when both limits are off (negative). Zero values are taken as
// off too: Config.setDefaults has replaced them before a Server runs.
func pruneOptions(retainFor time.Duration, retainJobs int, now time.Time) (o store.PruneOptions, ok bool) {
	if retainFor > 0 {
		o.FinishedBefore = now.Add(-retainFor)
	}
	if retainJobs > 0 {
		o.KeepNewest = retainJobs
	}
	return o, retainFor > 0 || retainJobs > 0
}
