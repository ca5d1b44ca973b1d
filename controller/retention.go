package controller

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

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
// It runs outside the scheduler lock: the store removes only jobs whose
// stored state is terminal, and a terminal job never changes again, so
// no job the scheduler holds can be touched. Removal goes in batches of
// store.DefaultPruneBatch jobs, each one synced write, so the committer's
// writes interleave with it.
func (s *Server) retentionLoop(ctx context.Context) {
	retention{
		st:         s.st,
		log:        s.log.Named("retention"),
		retainFor:  s.cfg.RetainFor,
		retainJobs: s.cfg.RetainJobs,
	}.run(ctx)
}

// pruner is what retention needs of the store.
type pruner interface {
	Prune(ctx context.Context, o store.PruneOptions) (int, error)
	FinishedJobs() int
}

// retention removes finished jobs on a timer.
type retention struct {
	st         pruner
	log        hclog.Logger
	retainFor  time.Duration // negative: no age limit
	retainJobs int           // negative: no count limit
}

// run makes a pass retentionDelay after it starts and every
// retentionInterval after the end of the previous one, until ctx is done.
func (r retention) run(ctx context.Context) {
	t := time.NewTimer(retentionDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.pass(ctx, time.Now())
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
	n, err := r.st.Prune(ctx, o)
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
