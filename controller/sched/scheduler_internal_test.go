package sched

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"jobsuite/controller/store"
)

// memStore is a store in memory for scheduler tests: the scheduler reads
// it (Reader), and its apply, given to a committer, writes what the
// commands say (as far as the scheduler reads it back) and records them.
type memStore struct {
	mu     sync.Mutex
	lastID uint64
	jobs   map[uint64]*store.Job
	keys   map[string]uint64
	ends   map[uint64]uint64 // end of each job's output
	cmds   []store.Command   // applied, in order
	rounds [][]store.Command // applied, batch by batch
	scheds map[string]store.Schedule
	agents map[string]store.Agent
	keyErr error // IdempotencyKey fails with it
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
	if m.keyErr != nil {
		return 0, false, m.keyErr
	}
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

func (m *memStore) Schedules() ([]store.Schedule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Schedule
	for _, sc := range m.scheds {
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b store.Schedule) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *memStore) Agents() ([]store.Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Agent
	for _, a := range m.agents {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b store.Agent) int { return cmp.Compare(a.Name, b.Name) })
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
		case *store.PutSchedule:
			if m.scheds == nil {
				m.scheds = map[string]store.Schedule{}
			}
			m.scheds[c.Schedule.Name] = c.Schedule
		case *store.DeleteSchedule:
			delete(m.scheds, c.Name)
		case *store.PutAgent:
			if m.agents == nil {
				m.agents = map[string]store.Agent{}
			}
			m.agents[c.Agent.Name] = c.Agent
		case *store.Output:
			m.ends[c.Job] = max(m.ends[c.Job], c.Chunk.Offset+uint64(len(c.Chunk.Data)))
		}
	}
	m.cmds = append(m.cmds, cmds...)
	m.rounds = append(m.rounds, slices.Clone(cmds))
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
	c := NewCommitter(st, CommitOptions{})
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stop) }()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	s := New(testLog(t, "scheduler"), st, c, Options{})

	const n = 50
	var ids []uint64
	for range n {
		j, _, err := s.Submit(&store.Job{Command: "true", Priority: 50}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, pending, err := s.Cancel(j.ID); err != nil || pending {
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
		j, pending, err := s.Cancel(id)
		if err != nil || pending || j.State != store.Cancelled {
			t.Errorf("repeated cancel of job %d: %v pending %v, %v", id, j, pending, err)
		}
	}
	if _, _, err := s.Cancel(ids[n-1] + 1000); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancel of an unknown job: %v, want ErrNotFound", err)
	}
}

// memScheduler is a scheduler over a memStore, with its committer
// running until the test ends.
func memScheduler(t *testing.T, o Options) (*Scheduler, *memStore) {
	t.Helper()
	return memSchedulerOver(t, newMemStore(), o)
}

// memSchedulerOver is memScheduler over ms (a restart over its store).
func memSchedulerOver(t *testing.T, ms *memStore, o Options) (*Scheduler, *memStore) {
	t.Helper()
	c := NewCommitter(nil, CommitOptions{})
	c.apply = ms.apply
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stop) }()
	t.Cleanup(func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return New(testLog(t, "scheduler"), ms, c, o), ms
}

// One submit path for POST /jobs and POST /jobs/batch: idempotency keys
// held by a concurrent submit, stored, or stored for a job retention
// has removed, the same for a single job as for a batch.
func TestSubmitIdempotencyKeys(t *testing.T) {
	submitOne := func(s *Scheduler, j *store.Job) (*store.Job, bool, error) { return s.Submit(j, nil) }
	submitBatchOf1 := func(s *Scheduler, j *store.Job) (*store.Job, bool, error) {
		subs, err := s.submitJobs([]*store.Job{j}, nil, true)
		if err != nil {
			return nil, false, err
		}
		return subs[0].Job, subs[0].Created, nil
	}
	for name, submit := range map[string]func(*Scheduler, *store.Job) (*store.Job, bool, error){
		"single": submitOne, "batch": submitBatchOf1,
	} {
		t.Run(name, func(t *testing.T) {
			s, ms := memScheduler(t, Options{})
			keyed := func(k string) *store.Job { return &store.Job{Command: "true", IdempotencyKey: k} }

			first, created, err := submit(s, keyed("a"))
			if err != nil || !created {
				t.Fatalf("first submit: created %v, %v", created, err)
			}
			again, created, err := submit(s, keyed("a"))
			if err != nil || created || again.ID != first.ID {
				t.Fatalf("repeat: job %v created %v, %v; want job %d, not created", again, created, err, first.ID)
			}

			// Concurrent submits of one key: one job.
			var wg sync.WaitGroup
			ids := make([]uint64, 16)
			for i := range ids {
				wg.Go(func() {
					j, _, err := submit(s, keyed("b"))
					if err != nil {
						t.Error(err)
						return
					}
					ids[i] = j.ID
				})
			}
			wg.Wait()
			for _, id := range ids {
				if id != ids[0] {
					t.Fatalf("concurrent submits of one key got jobs %v", ids)
				}
			}

			// The stored key names a job retention removed: free again.
			ms.mu.Lock()
			delete(ms.jobs, first.ID)
			ms.mu.Unlock()
			fresh, created, err := submit(s, keyed("a"))
			if err != nil || !created || fresh.ID == first.ID {
				t.Fatalf("key of a removed job: job %v created %v, %v; want a new job", fresh, created, err)
			}

			// A failed lookup queues nothing and holds no key.
			ms.mu.Lock()
			ms.keyErr = errors.New("disk on fire")
			ms.mu.Unlock()
			n := len(ms.applied())
			if _, _, err := submit(s, keyed("c")); err == nil {
				t.Fatal("submit with a failing lookup succeeded")
			}
			if got := len(ms.applied()); got != n {
				t.Errorf("%d commands queued by a failed submit", got-n)
			}
			ms.mu.Lock()
			ms.keyErr = nil
			ms.mu.Unlock()
			if _, created, err := submit(s, keyed("c")); err != nil || !created {
				t.Fatalf("submit after the failure: created %v, %v", created, err)
			}
			s.mu.Lock()
			held := len(s.keys)
			s.mu.Unlock()
			if held != 0 {
				t.Errorf("%d keys still held after every submit returned", held)
			}
		})
	}
}

// A batch names a stored job for its key, creates the rest in order and
// writes its audit entry with the last job created.
func TestSubmitBatchMixed(t *testing.T) {
	s, ms := memScheduler(t, Options{})
	old, _, err := s.Submit(&store.Job{Command: "true", IdempotencyKey: "k"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	audit := &store.AuditEntry{ID: 99, Action: "submit"}
	items, err := s.SubmitBatch([]*store.Job{
		{Command: "one"}, {Command: "true", IdempotencyKey: "k"}, {Command: "two"},
	}, audit)
	if err != nil {
		t.Fatal(err)
	}
	if items[1].Job.ID != old.ID || items[1].Created || !items[0].Created || !items[2].Created || items[2].Job.ID != items[0].Job.ID+1 {
		t.Fatalf("items %+v; want new, job %d not created, new", items, old.ID)
	}
	if want := fmt.Sprintf("jobs %d-%d", items[0].Job.ID, items[2].Job.ID); audit.Target != want || audit.Detail != "batch of 2" {
		t.Errorf("audit target %q, detail %q; want %q, batch of 2", audit.Target, audit.Detail, want)
	}
	var withAudit []uint64
	for _, c := range ms.applied() {
		if tr, ok := c.(*store.Transition); ok && tr.Audit != nil {
			withAudit = append(withAudit, tr.Job.ID)
		}
	}
	if len(withAudit) != 1 || withAudit[0] != items[2].Job.ID {
		t.Errorf("audit entry written with jobs %v, want with %d", withAudit, items[2].Job.ID)
	}
}
