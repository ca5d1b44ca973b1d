package controller

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"testing"

	"jobsuite/controller/store"
)

// memStore is a store in memory for scheduler tests: the scheduler reads
// it (jobReader), and its apply, given to a committer, writes what the
// commands say (as far as the scheduler reads it back) and records them.
type memStore struct {
	mu     sync.Mutex
	lastID uint64
	jobs   map[uint64]*store.Job
	keys   map[string]uint64
	ends   map[uint64]uint64 // end of each job's output
	cmds   []store.Command   // applied, in order
}

func newMemStore() *memStore {
	return &memStore{jobs: map[uint64]*store.Job{}, keys: map[string]uint64{}, ends: map[uint64]uint64{}}
}

// put stores j as it is.
func (m *memStore) put(j *store.Job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jobs[j.ID] = j
	m.lastID = max(m.lastID, j.ID)
}

func (m *memStore) NextID() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastID++
	return m.lastID
}

func (m *memStore) Get(id uint64) (*store.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j := m.jobs[id]; j != nil {
		return j, nil
	}
	return nil, store.ErrNotFound
}

func (m *memStore) IdempotencyKey(key string) (uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.keys[key]
	return id, ok, nil
}

func (m *memStore) Active() ([]*store.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*store.Job
	for _, j := range m.jobs {
		if !j.State.Terminal() {
			out = append(out, j)
		}
	}
	slices.SortFunc(out, func(a, b *store.Job) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (m *memStore) LogEnd(id uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ends[id], nil
}

// apply is a committer's apply: every batch is durable at once.
func (m *memStore) apply(cmds []store.Command) (syncer, []store.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range cmds {
		switch c := c.(type) {
		case *store.Transition:
			m.jobs[c.Job.ID] = c.Job
			if k := c.Job.IdempotencyKey; k != "" && c.Event.Seq == 0 {
				m.keys[k] = c.Job.ID
			}
		case *store.Output:
			m.ends[c.Job] = max(m.ends[c.Job], c.Chunk.Offset+uint64(len(c.Chunk.Data)))
		}
	}
	m.cmds = append(m.cmds, cmds...)
	return synced{}, make([]store.Result, len(cmds)), nil
}

// applied returns the commands applied so far.
func (m *memStore) applied() []store.Command {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.cmds)
}

// synced is a batch that is durable at once.
type synced struct{}

func (synced) Wait() error { return nil }

// TestEndedEntriesAreForgotten: a job that reaches a final state is kept
// in the scheduler's ended map until its batch is durable (so a cancel
// sees the final version), and is dropped by the next terminal
// transition once it is: the map does not grow with the jobs that ever
// finished.
func TestEndedEntriesAreForgotten(t *testing.T) {
	st := testStore(t)
	c := newCommitter(st)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.run(stop) }()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	s := newScheduler(testLog(t, "scheduler"), st, c, schedOptions{})

	const n = 50
	var ids []uint64
	for range n {
		j, _, err := s.submit(&store.Job{Command: "true", Priority: 50}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, pending, err := s.cancel(j.ID); err != nil || pending {
			t.Fatalf("cancel of queued job %d: pending %v, %v", j.ID, pending, err)
		}
		ids = append(ids, j.ID)
	}
	s.mu.Lock()
	nEnded, nQ := len(s.ended), len(s.endedQ)
	s.mu.Unlock()
	if nEnded > 1 || nQ > 1 {
		t.Errorf("after %d jobs ended one after another: %d ended entries, %d queued; want at most the last one", n, nEnded, nQ)
	}
	// A cancel of any of them still answers with its final state.
	for _, id := range []uint64{ids[0], ids[n-1]} {
		j, pending, err := s.cancel(id)
		if err != nil || pending || j.State != store.Cancelled {
			t.Errorf("repeated cancel of job %d: %v pending %v, %v", id, j, pending, err)
		}
	}
	if _, _, err := s.cancel(ids[n-1] + 1000); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancel of an unknown job: %v, want ErrNotFound", err)
	}
}
