package store

import (
	"errors"
	"testing"
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
