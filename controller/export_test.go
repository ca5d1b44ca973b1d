package controller

import (
	"context"

	"jobsuite/controller/store"
)

// RecordRounds makes s hand every round of commands its committer
// writes, and the results the store decided, to fn, in order, from the
// applier goroutine. Call it before Run.
func (s *Server) RecordRounds(fn func(cmds []store.Command, results []store.Result)) {
	apply := s.c.apply
	s.c.apply = func(cmds []store.Command) (syncer, []store.Result, error) {
		p, res, err := apply(cmds)
		if err == nil {
			fn(cmds, res)
		}
		return p, res, err
	}
}

// PruneNow runs one retention pass at once, as the retention loop does
// on its timer.
func (s *Server) PruneNow(ctx context.Context) {
	s.retention().pass(ctx, s.clock.Now())
}
