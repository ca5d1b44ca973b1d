package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// pruneFixture stores 10 finished jobs, job i finished at t0+i minutes in
// a rotating terminal state, and one job in each unfinished state, the
// unfinished ones oldest. Every job has an idempotency key, two events or
// more and two log chunks. It returns finished and unfinished jobs.
func pruneFixture(t *testing.T, s *Store) (finished, unfinished []*Job) {
	t.Helper()
	long := t0.Add(-24 * time.Hour) // long before every finished job
	mk := func(key string) *Job {
		j := newJob(s, 1, long)
		j.IdempotencyKey = key
		j = submit(t, s, j)
		for off, data := range map[uint64]string{0: "out ", 4: "put\n"} {
			if err := appendLog(s, j.ID, Chunk{Offset: off, Stream: 1, Data: []byte(data)}); err != nil {
				t.Fatal(err)
			}
		}
		return j
	}
	for _, st := range []State{Queued, Waiting, Dispatched, Running} {
		j := mk("unfinished-" + string(st))
		if st != Queued {
			// An unfinished job may carry a FinishedAt from an earlier
			// attempt; it must not matter.
			j = move(t, s, j, st, func(j *Job) { j.FinishedAt = long; j.NotBefore = long })
		}
		unfinished = append(unfinished, j)
	}
	terminal := []State{Completed, Failed, Timeout, Cancelled}
	// Finish in an order unlike ID order: finish order decides.
	order := []int{3, 0, 7, 1, 9, 2, 8, 4, 6, 5}
	finished = make([]*Job, 10)
	for _, i := range order {
		finished[i] = mk(fmt.Sprintf("finished-%d", i))
	}
	for i, j := range finished {
		finished[i] = move(t, s, move(t, s, j, Running, nil), terminal[i%4], func(j *Job) {
			j.FinishedAt = t0.Add(time.Duration(i) * time.Minute)
		})
	}
	return finished, unfinished
}

func TestPrune(t *testing.T) {
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	tests := map[string]struct {
		o    PruneOptions
		gone int // finished[:gone] are removed
	}{
		"nothing asked":        {PruneOptions{}, 0},
		"by age":               {PruneOptions{FinishedBefore: at(4)}, 4},
		"by age, exact time":   {PruneOptions{FinishedBefore: at(4).Add(1)}, 5},
		"by age, all":          {PruneOptions{FinishedBefore: at(60)}, 10},
		"by age, none":         {PruneOptions{FinishedBefore: at(-1)}, 0},
		"by age before 1970":   {PruneOptions{FinishedBefore: time.Unix(-5, 0)}, 0},
		"by count":             {PruneOptions{KeepNewest: 3}, 7},
		"by count, keep all":   {PruneOptions{KeepNewest: 10}, 0},
		"by count, above":      {PruneOptions{KeepNewest: 1000}, 0},
		"count off":            {PruneOptions{KeepNewest: -1}, 0},
		"age wins":             {PruneOptions{FinishedBefore: at(8), KeepNewest: 5}, 8},
		"count wins":           {PruneOptions{FinishedBefore: at(2), KeepNewest: 5}, 5},
		"batches of 1":         {PruneOptions{FinishedBefore: at(6), MaxBatch: 1}, 6},
		"batches of 3":         {PruneOptions{KeepNewest: 2, MaxBatch: 3}, 8},
		"batch as big as work": {PruneOptions{KeepNewest: 5, MaxBatch: 5}, 5},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openAt(t, dir)
			finished, unfinished := pruneFixture(t, s)
			events := countPrefix(t, s, prefixEvent)
			if n := s.FinishedJobs(); n != 10 {
				t.Fatalf("FinishedJobs before = %d, want 10", n)
			}
			removed, err := s.Prune(t.Context(), tt.o, prune(s))
			if err != nil {
				t.Fatal(err)
			}
			if removed != tt.gone {
				t.Errorf("removed %d, want %d", removed, tt.gone)
			}
			gone, kept := finished[:tt.gone], append(slices.Clone(finished[tt.gone:]), unfinished...)
			checkPruned(t, s, gone, kept)
			if n := s.FinishedJobs(); n != 10-tt.gone {
				t.Errorf("FinishedJobs = %d, want %d", n, 10-tt.gone)
			}
			evGone := 0
			for _, j := range gone {
				evGone += int(j.Events)
			}
			if n := countPrefix(t, s, prefixEvent); n != events-evGone {
				t.Errorf("%d event keys, want %d", n, events-evGone)
			}
			if n := countPrefix(t, s, prefixLog); n != 2*len(kept) {
				t.Errorf("%d log keys, want %d", n, 2*len(kept))
			}
			for p, want := range map[byte]int{prefixJob: len(kept), prefixState: len(kept), prefixDone: 10 - tt.gone, prefixIdem: len(kept)} {
				if n := countPrefix(t, s, p); n != want {
					t.Errorf("%d keys under %q, want %d", n, p, want)
				}
			}

			// Prune again changes nothing; the count survives a reopen.
			if n, err := s.Prune(t.Context(), tt.o, prune(s)); n != 0 || err != nil {
				t.Errorf("second Prune = %d, %v", n, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openAt(t, dir)
			if n := s.FinishedJobs(); n != 10-tt.gone {
				t.Errorf("FinishedJobs after reopen = %d, want %d", n, 10-tt.gone)
			}
			checkPruned(t, s, gone, kept)
		})
	}
}

// checkPruned checks that every trace of gone is removed and that kept
// is whole.
func checkPruned(t *testing.T, s *Store, gone, kept []*Job) {
	t.Helper()
	for _, j := range gone {
		if _, err := s.Get(j.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("removed job %d: Get = %v, want ErrNotFound", j.ID, err)
		}
		if _, err := s.Events(j.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("removed job %d: Events = %v, want ErrNotFound", j.ID, err)
		}
		if c, err := s.ReadLog(j.ID, 0, 0); len(c) != 0 || err != nil {
			t.Errorf("removed job %d: ReadLog = %s, %v", j.ID, show(c), err)
		}
		if _, ok, err := s.IdempotencyKey(j.IdempotencyKey); ok || err != nil {
			t.Errorf("removed job %d: key %q still taken (%v)", j.ID, j.IdempotencyKey, err)
		}
	}
	for _, j := range kept {
		got, err := s.Get(j.ID)
		if err != nil || got.State != j.State {
			t.Errorf("kept job %d: Get = %v, %v", j.ID, got, err)
			continue
		}
		if evs, err := s.Events(j.ID); err != nil || len(evs) != int(j.Events) {
			t.Errorf("kept job %d: %d events, %v; want %d", j.ID, len(evs), err, j.Events)
		}
		if c, err := s.ReadLog(j.ID, 0, 0); err != nil || len(c) != 2 {
			t.Errorf("kept job %d: ReadLog = %s, %v", j.ID, show(c), err)
		}
		if id, ok, err := s.IdempotencyKey(j.IdempotencyKey); !ok || id != j.ID || err != nil {
			t.Errorf("kept job %d: key %q → %d, %v, %v", j.ID, j.IdempotencyKey, id, ok, err)
		}
		if l, _, err := s.List(ListOptions{State: j.State, Limit: 1000}); err != nil || !slices.Contains(ids(l), j.ID) {
			t.Errorf("kept job %d missing from List(State: %s): %v, %v", j.ID, j.State, ids(l), err)
		}
	}
	active, err := s.Active()
	if err != nil {
		t.Fatal(err)
	}
	var wantActive []uint64
	for _, j := range kept {
		if !j.State.Terminal() {
			wantActive = append(wantActive, j.ID)
		}
	}
	slices.Sort(wantActive)
	gotActive := ids(active)
	slices.Sort(gotActive)
	if !reflect.DeepEqual(gotActive, wantActive) {
		t.Errorf("Active = %v, want %v", gotActive, wantActive)
	}
}

func TestPruneFreesIdempotencyKey(t *testing.T) {
	s := open(t)
	first := newJob(s, 1, t0)
	first.IdempotencyKey = "deploy-42"
	move(t, s, submit(t, s, first), Completed, func(j *Job) { j.FinishedAt = t0 })

	again := newJob(s, 1, t0)
	again.IdempotencyKey = "deploy-42"
	if err := applyAll(s, NewTransition(again, Event{})); !errors.Is(err, ErrExists) {
		t.Fatalf("submit with a taken key = %v, want ErrExists", err)
	}
	if n, err := s.Prune(t.Context(), PruneOptions{FinishedBefore: t0.Add(time.Second)}, prune(s)); n != 1 || err != nil {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	again = newJob(s, 1, t0)
	again.IdempotencyKey = "deploy-42"
	submit(t, s, again)
	if id, ok, err := s.IdempotencyKey("deploy-42"); !ok || id != again.ID || err != nil {
		t.Errorf("key → %d, %v, %v; want job %d", id, ok, err, again.ID)
	}
}

func TestPruneCancelled(t *testing.T) {
	s := open(t)
	finished, _ := pruneFixture(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n, err := s.Prune(ctx, PruneOptions{KeepNewest: 1}, prune(s))
	if n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Prune = %d, %v; want 0, context.Canceled", n, err)
	}
	if _, err := s.Get(finished[0].ID); err != nil {
		t.Errorf("job removed after all: %v", err)
	}
}

// TestPruneConcurrent prunes while jobs are submitted, run and finished
// and listed: no unfinished job loses anything, and the finished count
// stays exact.
func TestPruneConcurrent(t *testing.T) {
	s := open(t)
	const workers, perWorker, keep = 4, 150, 20
	stop := make(chan struct{})
	var pruned sync.WaitGroup
	pruned.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Prune(t.Context(), PruneOptions{KeepNewest: keep, MaxBatch: 7}, prune(s)); err != nil {
				t.Errorf("Prune: %v", err)
				return
			}
			if _, _, err := s.List(ListOptions{State: Completed, Limit: 10}); err != nil {
				t.Errorf("List: %v", err)
				return
			}
		}
	})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		running []*Job
	)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				j := newJob(s, 1, t0)
				j.IdempotencyKey = fmt.Sprintf("w%d-%d", w, i)
				if err := applyAll(s, NewTransition(j, Event{Type: "submitted"})); err != nil {
					t.Errorf("submit: %v", err)
					return
				}
				next := j.Clone()
				next.State = Running
				if err := applyAll(s, NewTransition(next, Event{})); err != nil {
					t.Errorf("run: %v", err)
					return
				}
				if err := appendLog(s, j.ID, Chunk{Data: []byte("x")}); err != nil {
					t.Errorf("append: %v", err)
					return
				}
				if i%5 == 0 {
					mu.Lock()
					running = append(running, next)
					mu.Unlock()
					continue
				}
				done := next.Clone()
				done.State = Completed
				done.FinishedAt = time.Now()
				if err := applyAll(s, NewTransition(done, Event{})); err != nil {
					t.Errorf("finish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	pruned.Wait()
	if _, err := s.Prune(t.Context(), PruneOptions{KeepNewest: keep}, prune(s)); err != nil {
		t.Fatal(err)
	}
	if n, f := s.FinishedJobs(), countPrefix(t, s, prefixDone); n != keep || f != keep {
		t.Errorf("FinishedJobs %d, finished index %d keys; want %d", n, f, keep)
	}
	if n := countPrefix(t, s, prefixJob); n != keep+len(running) {
		t.Errorf("%d jobs stored, want %d", n, keep+len(running))
	}
	for _, j := range running {
		if got, err := s.Get(j.ID); err != nil || got.State != Running {
			t.Fatalf("running job %d: %v, %v", j.ID, got, err)
		}
		if c, err := s.ReadLog(j.ID, 0, 0); err != nil || len(c) != 1 {
			t.Fatalf("running job %d lost its output: %s, %v", j.ID, show(c), err)
		}
	}
}

// TestPruneFanoutFamily: a fan-out's children go with their parent and
// never before it, whichever limit asks, while a lone job finished
// among them goes on its own; a child whose parent is gone goes alone.
func TestPruneFanoutFamily(t *testing.T) {
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	tests := map[string]struct {
		o       PruneOptions
		parents int  // how many of the two parents are removed, with their children
		lone    bool // the lone job finished at minute 1 is removed
	}{
		"by age, before the first parent": {PruneOptions{FinishedBefore: at(5)}, 0, true},
		"by age, the first parent":        {PruneOptions{FinishedBefore: at(6)}, 1, true},
		"by age, all":                     {PruneOptions{FinishedBefore: at(60)}, 2, true},
		"by count, keep the newest 4":     {PruneOptions{KeepNewest: 4}, 1, true},
		"by count, keep only the newest":  {PruneOptions{KeepNewest: 1}, 2, true},
		"batches of 1":                    {PruneOptions{FinishedBefore: at(60), MaxBatch: 1}, 2, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			finish := func(j *Job, min int) *Job {
				return move(t, s, move(t, s, j, Running, nil), Completed, func(j *Job) { j.FinishedAt = at(min) })
			}
			// Two fan-outs of two children each: children finish at
			// minutes 0, 2 (parent at 5) and 3, 4 (parent at 7); a lone
			// job at minute 1.
			family := func(first, second, parentAt int) []*Job {
				p := newJob(s, 1, t0)
				c1, c2 := newJob(s, 1, t0), newJob(s, 1, t0)
				p.Orch().Fanout = &Fanout{FirstChild: c1.ID, Children: 2}
				c1.Orch().Parent, c2.Orch().Parent = p.ID, p.ID
				p, c1, c2 = submit(t, s, p), submit(t, s, c1), submit(t, s, c2)
				c1, c2 = finish(c1, first), finish(c2, second)
				return []*Job{finish(p, parentAt), c1, c2}
			}
			a := family(0, 2, 5)
			lone := finish(submit(t, s, newJob(s, 1, t0)), 1)
			b := family(3, 4, 7)
			var gone, kept []*Job
			for i, f := range [][]*Job{a, b} {
				if i < tt.parents {
					gone = append(gone, f...)
				} else {
					kept = append(kept, f...)
				}
			}
			if tt.lone {
				gone = append(gone, lone)
			} else {
				kept = append(kept, lone)
			}
			removed, err := s.Prune(t.Context(), tt.o, prune(s))
			if err != nil {
				t.Fatal(err)
			}
			if removed != len(gone) {
				t.Errorf("removed %d, want %d", removed, len(gone))
			}
			checkGone(t, s, gone, kept)
		})
	}

	t.Run("orphan child", func(t *testing.T) {
		s := open(t)
		c := newJob(s, 1, t0)
		c.Orch().Parent = 12345 // never stored, as after its parent was removed
		c = move(t, s, move(t, s, submit(t, s, c), Running, nil), Failed, func(j *Job) { j.FinishedAt = at(1) })
		if n, err := s.Prune(t.Context(), PruneOptions{FinishedBefore: at(2)}, prune(s)); n != 1 || err != nil {
			t.Fatalf("Prune = %d, %v; want the orphan removed", n, err)
		}
		checkGone(t, s, []*Job{c}, nil)
	})
}

// checkGone checks that the jobs of gone are not stored and those of
// kept are.
func checkGone(t *testing.T, s *Store, gone, kept []*Job) {
	t.Helper()
	for _, j := range gone {
		if _, err := s.Get(j.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("job %d (parent %d): Get = %v, want ErrNotFound", j.ID, j.Parent(), err)
		}
	}
	for _, j := range kept {
		if _, err := s.Get(j.ID); err != nil {
			t.Errorf("job %d (parent %d) was removed: %v", j.ID, j.Parent(), err)
		}
	}
}
