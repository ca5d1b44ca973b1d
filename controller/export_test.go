package controller

import (
	"context"

	"jobsuite/controller/store"
)

// RecordRounds makes s hand every round of commands its committer
// applied, and the results the store decided, to fn, in order, from the
// applier goroutine. Call it before Run.
func (s *Server) RecordRounds(fn func(cmds []store.Command, results []store.Result)) {
	s.rounds = fn
}

// PruneNow runs one retention pass at once, as the retention loop does
// on its timer.
func (s *Server) PruneNow(ctx context.Context) {
	s.retention().pass(ctx, s.clock.Now())
}
