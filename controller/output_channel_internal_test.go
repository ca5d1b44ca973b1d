package controller

import (
	"testing"

	"jobsuite/controller/hub"
	"jobsuite/controller/store"
)

// TestTruncateCutsHubTail: a round that ends an attempt cuts the job's
// log (store.TruncateLog); once the committer hands it over, the hub's
// in-memory copy of the newest output is cut too, so a log follower
// never reads from memory the bytes the store no longer holds, and the
// next attempt's output continues the tail from the cut.
func TestTruncateCutsHubTail(t *testing.T) {
	s := &Server{hub: hub.New()}
	_, unsubscribe, _ := s.hub.Subscribe(7, 0)
	defer unsubscribe()
	read := func(from uint64) (string, bool) {
		chunks, ok := s.hub.Read(7, from, 1<<10)
		var b []byte
		for _, c := range chunks {
			b = append(b, c.Data...)
		}
		return string(b), ok
	}
	out := func(off uint64, data string) *store.Output {
		return &store.Output{Job: 7, Chunk: store.Chunk{Offset: off, Stream: 1, Data: []byte(data)}}
	}
	s.applied([]store.Command{out(0, "hello "), out(6, "unacknowledged")}, nil)
	// Attempt 1 ends at 8, what a quorum held.
	s.applied([]store.Command{&store.TruncateLog{Job: 7, At: 8}}, nil)
	if got, ok := read(0); got != "hello un" || !ok {
		t.Fatalf("tail after the cut at 8: %q, %v; want %q", got, ok, "hello un")
	}
	if got, _ := read(10); got != "" {
		t.Fatalf("tail past the cut: %q, bytes the store no longer holds", got)
	}
	// Attempt 2 writes from 8 on.
	s.applied([]store.Command{out(8, "[attempt 2]")}, nil)
	if got, ok := read(0); got != "hello un[attempt 2]" || !ok {
		t.Fatalf("tail after the next attempt's output: %q, %v", got, ok)
	}
}
