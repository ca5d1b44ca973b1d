package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// ApplyNoWait's batch is readable at once and decides idempotency keys
// in apply order, batches in flight included; a refused batch writes
// nothing and needs no Wait.
func TestApplyNoWait(t *testing.T) {
	for name, noSync := range map[string]bool{"sync": false, "nosync": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{Logger: testLogger(t), NoSync: noSync})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() }) // the store open at the end

			var pending []*Pending
			var jobs []*Job
			for i := range 5 {
				j := newJob(s, i, t0)
				j.IdempotencyKey = "key" + string(rune('a'+i))
				p, err := s.ApplyNoWait(NewTransition(j, Event{Type: "submitted"}))
				if err != nil {
					t.Fatalf("ApplyNoWait %d: %v", i, err)
				}
				if r := p.Results(); len(r) != 1 || r[0].Err != nil {
					t.Fatalf("ApplyNoWait %d: results %+v", i, r)
				}
				pending = append(pending, p)
				jobs = append(jobs, j)
				if _, err := s.Get(j.ID); err != nil {
					t.Fatalf("job %d not readable after ApplyNoWait: %v", j.ID, err)
				}
			}

			// A key whose batch is still in flight is taken.
			dup := newJob(s, 0, t0)
			dup.IdempotencyKey = "keyc"
			p, err := s.ApplyNoWait(NewTransition(dup, Event{}))
			if err != nil {
				t.Fatal(err)
			}
			if r := p.Results()[0]; !errors.Is(r.Err, ErrExists) || r.Owner != jobs[2].ID {
				t.Fatalf("create with an in-flight key: %+v, want ErrExists owned by job %d", r, jobs[2].ID)
			}
			pending = append(pending, p)
			if _, err := s.ApplyNoWait(&Transition{Job: &Job{}}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("invalid transition = %v, want ErrInvalid", err)
			}

			// Waiting out of order is allowed; each reports its own batch.
			for i := len(pending) - 1; i >= 0; i-- {
				if err := pending[i].Wait(); err != nil {
					t.Fatalf("Wait %d: %v", i, err)
				}
				if err := pending[i].Wait(); err != nil {
					t.Fatalf("second Wait %d: %v", i, err)
				}
			}
			if _, err := s.Get(dup.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the refused create was stored: %v", err)
			}

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ApplyNoWait(NewTransition(newJob(s, 0, t0), Event{})); !errors.Is(err, ErrClosed) {
				t.Fatalf("ApplyNoWait after Close = %v, want ErrClosed", err)
			}
			s, err = Open(dir, Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range jobs {
				got, err := s.Get(j.ID)
				if err != nil || got.IdempotencyKey != j.IdempotencyKey {
					t.Fatalf("job %d after reopening: %v, %v", j.ID, got, err)
				}
			}
		})
	}
}

// A Transition's audit entry is written in the job's batch; an entry
// without an ID refuses the whole batch.
func TestApplyWithAudit(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bad := newJob(s, 0, t0)
	tr := NewTransition(bad, Event{Type: "submitted"})
	tr.Audit = &AuditEntry{Action: "submit", Target: "job 1"}
	if err := applyAll(s, tr); !errors.Is(err, ErrInvalid) {
		t.Fatalf("audit entry without ID: %v, want ErrInvalid", err)
	}
	if _, err := s.Get(bad.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused batch wrote its job: %v", err)
	}
	j := newJob(s, 1, t0)
	tr = NewTransition(j, Event{Type: "submitted"})
	tr.Audit = &AuditEntry{ID: 42, Time: t0, Action: "submit", Target: "job 2", Who: "op"}
	if err := applyAll(s, tr); err != nil {
		t.Fatal(err)
	}
	got, err := s.Audit(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != 42 || got[0].Target != "job 2" || got[0].Who != "op" {
		t.Fatalf("audit entries %+v, want the one written with the job", got)
	}
}

// A transition is decided on the stored record, read by the store, not
// on what its maker believed: creates of a stored job, updates of a
// missing one and updates out of sequence change nothing and say why,
// and a later command of a batch sees an earlier one's effect.
func TestTransitionReadsTheStoredRecord(t *testing.T) {
	s := open(t)
	j := submit(t, s, newJob(s, 1, t0))

	again := j.Clone()
	again.Events = 0
	missing := newJob(s, 1, t0)
	missing.Events = 3
	skipped := j.Clone()
	skipped.Events++ // as if a transition had been lost in between
	for name, tr := range map[string]*Transition{
		"create of a stored job":  NewTransition(again, Event{Type: "submitted"}),
		"update of a missing job": NewTransition(missing, Event{Type: "dispatched"}),
		"update out of sequence":  NewTransition(skipped, Event{Type: "dispatched"}),
	} {
		t.Run(name, func(t *testing.T) {
			before := dump(t, s)
			res, err := s.Apply(tr)
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Err == nil {
				t.Fatal("applied")
			}
			if !errors.Is(res[0].Err, ErrConflict) && !errors.Is(res[0].Err, ErrNotFound) {
				t.Errorf("result %v, want ErrConflict or ErrNotFound", res[0].Err)
			}
			if after := dump(t, s); !maps.Equal(before, after) {
				t.Error("the refused transition changed the store")
			}
		})
	}

	t.Run("a batch sees its own writes", func(t *testing.T) {
		k := newJob(s, 1, t0)
		k.IdempotencyKey = "same"
		create := NewTransition(k, Event{Type: "submitted"})
		running := k.Clone()
		running.State = Running
		start := NewTransition(running, Event{Type: "started"})
		done := running.Clone()
		done.State, done.FinishedAt = Completed, t0
		finish := NewTransition(done, Event{Type: "finished"})
		k2 := newJob(s, 1, t0)
		k2.IdempotencyKey = "same"
		k2again := k2.Clone()
		res, err := s.Apply(
			create,
			NewTransition(k2, Event{Type: "submitted"}), // the key is taken by now
			start, finish,
			&PruneJobs{IDs: []uint64{k.ID}}, // finished by now: removed, key freed
			NewTransition(k2again, Event{Type: "submitted"}),
		)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[1].Err, ErrExists) || res[1].Owner != k.ID {
			t.Errorf("second create with the key: %+v, want ErrExists owned by %d", res[1], k.ID)
		}
		if res[4].N != 1 {
			t.Errorf("prune removed %d jobs, want 1", res[4].N)
		}
		if res[5].Err != nil {
			t.Errorf("create after the key was freed: %v", res[5].Err)
		}
		if id, ok, _ := s.IdempotencyKey("same"); !ok || id != k2.ID {
			t.Errorf("key held by %d, %v; want %d", id, ok, k2.ID)
		}
		if _, err := s.Get(k.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("pruned job: %v", err)
		}
		if n := countPrefix(t, s, prefixDone); n != 0 {
			t.Errorf("%d finished index keys, want 0", n)
		}
	})
}

// After a reopen the store's memory of unfinished jobs is empty: a
// transition reads the record from Pebble and decides as before.
func TestTransitionAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	j := submit(t, s, newJob(s, 1, t0))
	j = move(t, s, j, Waiting, func(j *Job) { j.NotBefore = t0.Add(time.Minute) })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	j = move(t, s, j, Queued, func(j *Job) { j.QueuedAt = t0.Add(time.Minute) })
	if q, d := countPrefix(t, s, prefixQueue), countPrefix(t, s, prefixDelay); q != 1 || d != 0 {
		t.Fatalf("after reopen and requeue: %d queue, %d delay keys; want 1, 0", q, d)
	}
	stale := j.Clone()
	stale.Events-- // the version before
	if res, err := s.Apply(NewTransition(stale, Event{})); err != nil || !errors.Is(res[0].Err, ErrConflict) {
		t.Fatalf("stale transition: %+v, %v; want ErrConflict", res, err)
	}
}

// dump returns every key and value of the store.
func dump(t testing.TB, s *Store) map[string]string {
	t.Helper()
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for ok := it.First(); ok; ok = it.Next() {
		out[string(it.Key())] = string(it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// After every transition a job occupies exactly the index keys its
// record derives, also when Prev and Next share some (Apply then leaves
// those alone).
func TestApplyIndexKeysExact(t *testing.T) {
	s := open(t)
	j := submit(t, s, newJob(s, 50, t0))
	occupied := func() []string {
		var got []string
		for _, p := range []byte{prefixQueue, prefixDelay, prefixActive, prefixState, prefixDone} {
			it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
			if err != nil {
				t.Fatal(err)
			}
			for ok := it.First(); ok; ok = it.Next() {
				if k := it.Key(); binary.BigEndian.Uint64(k[len(k)-8:]) == j.ID {
					got = append(got, string(k))
				}
			}
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
		}
		slices.Sort(got)
		return got
	}
	steps := []struct {
		state  State
		change func(*Job)
	}{
		{Queued, func(j *Job) { j.Reason = "still waiting" }}, // every key shared
		{Queued, func(j *Job) { j.Priority = 90 }},            // state key shared
		{Dispatched, nil},
		{Running, nil}, // active key shared
		{Running, func(j *Job) { j.CancelRequested = true }},
		{Waiting, func(j *Job) { j.NotBefore = t0.Add(time.Minute) }},
		{Queued, func(j *Job) { j.QueuedAt = t0.Add(time.Minute) }},
		{Cancelled, func(j *Job) { j.FinishedAt = t0.Add(time.Hour) }},
		{Cancelled, func(j *Job) { j.Reason = "again" }}, // state and finished keys shared
	}
	for i, st := range steps {
		j = move(t, s, j, st.state, st.change)
		var want []string
		for _, k := range indexKeys(j) {
			want = append(want, string(k))
		}
		slices.Sort(want)
		if got := occupied(); !slices.Equal(got, want) {
			t.Fatalf("step %d (%s): job %d occupies %q, want %q", i, st.state, j.ID, got, want)
		}
	}
}

// A Transition computes the index keys of the job's head before and
// after; they go into the round's buffers, not into fresh slices (three
// transitions per job in a burn-down: 12–14 allocations per job before).
// The keys are the key functions' own.
func TestHeadKeysAllocateNothing(t *testing.T) {
	const id = 1234
	at := uint64(t0.UnixNano())
	tests := map[State][][]byte{
		Queued:     {queueKeyAt(60, at, id), stateIDKey(stateCodes[Queued], id)},
		Waiting:    {delayKeyAt(at+1, id), stateIDKey(stateCodes[Waiting], id)},
		Dispatched: {activeKey(id), stateIDKey(stateCodes[Dispatched], id)},
		Running:    {activeKey(id), stateIDKey(stateCodes[Running], id)},
		Completed:  {stateIDKey(stateCodes[Completed], id), doneKeyAt(at+2, id)},
		Blocked:    {stateIDKey(stateCodes[Blocked], id)},
	}
	for state, want := range tests {
		t.Run(string(state), func(t *testing.T) {
			h := head{state: state, priority: 60, queued: at, notBefore: at + 1, finished: at + 2}
			var buf keyBuf
			keys, n := h.keys(id, &buf)
			if n != len(want) {
				t.Fatalf("%d keys, want %d", n, len(want))
			}
			for i := range want {
				if !bytes.Equal(keys[i], want[i]) {
					t.Errorf("key %d: %x, want %x", i, keys[i], want[i])
				}
			}
			if allocs := testing.AllocsPerRun(100, func() { keys, n = h.keys(id, &buf) }); allocs != 0 {
				t.Errorf("%v allocations per head.keys, want 0", allocs)
			}
		})
	}
}
