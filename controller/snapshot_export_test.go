package controller

// WaitSnapshot waits until no GET /operator/snapshot is in progress: its
// checkpoint is removed and its audit entry written.
func (s *Server) WaitSnapshot() {
	s.snapshotMu.Lock()
	defer s.snapshotMu.Unlock()
}
