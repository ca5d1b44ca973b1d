package store

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// ApplyNoWait's batch is readable at once, its idempotency keys stay
// claimed until Wait, and a refused batch writes nothing and needs no
// Wait.
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
				p, err := s.ApplyNoWait(NewUpdate(nil, j, Event{Type: "submitted"}))
				if err != nil {
					t.Fatalf("ApplyNoWait %d: %v", i, err)
				}
				pending = append(pending, p)
				jobs = append(jobs, j)
				if _, err := s.Get(j.ID); err != nil {
					t.Fatalf("job %d not readable after ApplyNoWait: %v", j.ID, err)
				}
				s.idemMu.Lock()
				_, claimed := s.pending[j.IdempotencyKey]
				s.idemMu.Unlock()
				if !claimed {
					t.Fatalf("key %q not claimed while its batch is in flight", j.IdempotencyKey)
				}
			}

			dup := newJob(s, 0, t0)
			dup.IdempotencyKey = "keyc"
			if _, err := s.ApplyNoWait(NewUpdate(nil, dup, Event{})); !errors.Is(err, ErrExists) {
				t.Fatalf("create with an in-flight key = %v, want ErrExists", err)
			}
			if _, err := s.ApplyNoWait(Update{Next: &Job{}}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("invalid update = %v, want ErrInvalid", err)
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
			s.idemMu.Lock()
			left := len(s.pending)
			s.idemMu.Unlock()
			if left != 0 {
				t.Fatalf("%d keys still claimed after every Wait", left)
			}
			if _, err := s.ApplyNoWait(NewUpdate(nil, dup, Event{})); !errors.Is(err, ErrExists) {
				t.Fatalf("create with a stored key = %v, want ErrExists", err)
			}

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ApplyNoWait(NewUpdate(nil, newJob(s, 0, t0), Event{})); !errors.Is(err, ErrClosed) {
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

// An Update's audit entry is written in the job's batch; an entry
// without an ID refuses the whole batch.
func TestApplyWithAudit(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bad := newJob(s, 0, t0)
	u := NewUpdate(nil, bad, Event{Type: "submitted"})
	u.Audit = &AuditEntry{Action: "submit", Target: "job 1"}
	if err := s.Apply(u); !errors.Is(err, ErrInvalid) {
		t.Fatalf("audit entry without ID: %v, want ErrInvalid", err)
	}
	if _, err := s.Get(bad.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused batch wrote its job: %v", err)
	}
	j := newJob(s, 1, t0)
	u = NewUpdate(nil, j, Event{Type: "submitted"})
	u.Audit = &AuditEntry{ID: 42, Time: t0, Action: "submit", Target: "job 2", Who: "op"}
	if err := s.Apply(u); err != nil {
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
