package sched

import (
	"errors"
	"sync/atomic"
	"testing"

	"jobsuite/controller/store"
)

// While the disk has no room the committer holds its next batch — no
// error, nothing applied — and writes it once there is room again.
func TestCommitterWaitsForDisk(t *testing.T) {
	st := testStore(t)
	var room atomic.Bool
	asked := make(chan struct{}, 1)
	c := NewCommitter(st, CommitOptions{Writable: func() bool {
		select {
		case asked <- struct{}{}:
		default:
		}
		return room.Load()
	}})
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stop) }()

	j := &store.Job{ID: st.NextID(), Command: "true", State: store.Queued}
	b := c.Add(store.NewTransition(j, store.Event{Type: "submitted"}))
	<-asked
	<-asked // asked again: it is waiting, not done
	select {
	case <-b.done:
		t.Fatalf("the batch ended while the disk had no room: %v", b.err)
	default:
	}
	if _, err := st.Get(j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the job was written while the disk had no room: %v", err)
	}
	room.Store(true)
	if err := b.Wait(); err != nil {
		t.Fatalf("once there was room: %v", err)
	}
	if _, err := st.Get(j.ID); err != nil {
		t.Fatal(err)
	}

	// Stopping while it waits fails what it holds (and says why) rather
	// than hang.
	room.Store(false)
	b = c.Add(store.NewTransition(&store.Job{ID: st.NextID(), Command: "true", State: store.Queued}, store.Event{Type: "submitted"}))
	<-asked
	close(stop)
	if err := b.Wait(); !errors.Is(err, ErrDiskFull) {
		t.Errorf("a batch held at shutdown: %v, want ErrDiskFull", err)
	}
	if err := <-done; !errors.Is(err, ErrDiskFull) {
		t.Errorf("committer: %v, want ErrDiskFull", err)
	}
}
