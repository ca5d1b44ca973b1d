package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
)

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: testWriter{t}})
}

// openAt opens a store in dir and closes it when the test ends.
func openAt(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func open(t testing.TB) *Store {
	t.Helper()
	return openAt(t, t.TempDir())
}

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

func newJob(s *Store, prio int, queuedAt time.Time) *Job {
	return &Job{
		ID:        s.NextID(),
		Name:      "job",
		Command:   "true",
		Priority:  prio,
		State:     Queued,
		CreatedAt: queuedAt,
		QueuedAt:  queuedAt,
	}
}

// submit creates j and returns it as stored.
func submit(t testing.TB, s *Store, j *Job) *Job {
	t.Helper()
	if err := applyAll(s, NewTransition(j, Event{Time: j.CreatedAt, Type: "submitted"})); err != nil {
		t.Fatalf("submit job %d: %v", j.ID, err)
	}
	return j
}

// move applies prev → state (after change, if any) and returns the new record.
func move(t testing.TB, s *Store, prev *Job, state State, change func(*Job)) *Job {
	t.Helper()
	next := prev.Clone()
	next.State = state
	if change != nil {
		change(next)
	}
	if err := applyAll(s, NewTransition(next, Event{Type: string(state)})); err != nil {
		t.Fatalf("move job %d %s → %s: %v", prev.ID, prev.State, state, err)
	}
	return next
}

// countPrefix counts raw keys under a one-byte prefix.
func countPrefix(t testing.TB, s *Store, p byte) int {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

func ids(jobs []*Job) []uint64 {
	out := []uint64{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

func TestGetRoundTrip(t *testing.T) {
	exit := 3
	tests := map[string]*Job{
		"minimal": {Name: "a", Command: "true", State: Queued, CreatedAt: t0, QueuedAt: t0},
		"every field": {
			Name: "b", Command: "echo", Params: "hi", Priority: 100, Timeout: time.Minute,
			Retries: 2, Logs: true, Cancellable: true,
			Labels: map[string]string{"os": "linux"}, Env: map[string]string{"A": "1"},
			Dir: "/tmp", IdempotencyKey: "key-b", BackoffBase: time.Second, BackoffMax: time.Hour,
			State: Failed, CreatedAt: t0, QueuedAt: t0, NotBefore: t0.Add(time.Second),
			StartedAt: t0.Add(2 * time.Second), FinishedAt: t0.Add(3 * time.Second),
			Attempts: []Attempt{{
				Number: 1, Agent: "w1", DispatchedAt: t0, StartedAt: t0, FinishedAt: t0,
				PID: 42, Outcome: "failed", ExitCode: &exit, Duration: time.Second, LogStart: 7,
			}},
			CancelRequested: true, Reason: "exit 3", LogBytes: 99,
		},
	}
	for name, job := range tests {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			job.ID = s.NextID()
			submit(t, s, job)
			if job.Events != 1 {
				t.Errorf("Apply left Next.Events = %d, want 1", job.Events)
			}
			got, err := s.Get(job.ID)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !reflect.DeepEqual(got, job) {
				t.Errorf("Get = %+v\nwant %+v", got, job)
			}
			evs, err := s.Events(job.ID)
			if err != nil {
				t.Fatalf("Events: %v", err)
			}
			want := []Event{{Seq: 0, Time: t0, Type: "submitted", State: job.State}}
			if !reflect.DeepEqual(evs, want) {
				t.Errorf("Events = %+v, want %+v", evs, want)
			}
		})
	}
}

func TestApplyAtomic(t *testing.T) {
	t.Run("many transitions in one batch", func(t *testing.T) {
		s := open(t)
		var cmds []Command
		var jobs []*Job
		for i := range 200 {
			j := newJob(s, i%101, t0.Add(time.Duration(i)))
			cmds = append(cmds, NewTransition(j, Event{Type: "submitted"}))
			jobs = append(jobs, j)
		}
		// The same job twice in one batch: create then dispatch.
		first := jobs[0]
		second := first.Clone()
		second.State = Dispatched
		dispatch := NewTransition(second, Event{Type: "dispatched"})
		cmds = append(cmds, dispatch)
		if err := applyAll(s, cmds...); err != nil {
			t.Fatal(err)
		}
		for i, j := range jobs {
			if _, err := s.Get(j.ID); err != nil {
				t.Fatalf("job %d: %v", i, err)
			}
		}
		if dispatch.Event.Seq != 1 || second.Events != 2 {
			t.Errorf("second transition: seq %d, events %d; want 1, 2", dispatch.Event.Seq, second.Events)
		}
		if evs, err := s.Events(first.ID); err != nil || len(evs) != 2 || evs[1].Type != "dispatched" {
			t.Errorf("events of the job updated twice: %+v, %v", evs, err)
		}
		if q, a := countPrefix(t, s, prefixQueue), countPrefix(t, s, prefixActive); q != 199 || a != 1 {
			t.Errorf("queue index %d, active index %d; want 199, 1", q, a)
		}
	})

	// A malformed command refuses the whole batch.
	invalid := map[string]Command{
		"no job":           &Transition{},
		"zero ID":          &Transition{Job: &Job{State: Queued, Events: 1}},
		"unnumbered":       &Transition{Job: &Job{ID: 1 << 40, State: Queued}},
		"empty chunk":      &Output{Job: 1},
		"token with no ID": &PutToken{Token: Token{Hash: []byte{1}}},
		"audit with no ID": &AppendAudit{},
	}
	for name, bad := range invalid {
		t.Run("nothing written on "+name, func(t *testing.T) {
			s := open(t)
			good := newJob(s, 1, t0)
			good.IdempotencyKey = "dup"
			_, err := s.Apply(NewTransition(good, Event{}), bad)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
			if _, err := s.Get(good.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get of the first transition: %v, want ErrNotFound", err)
			}
			if _, ok, _ := s.IdempotencyKey("dup"); ok {
				t.Error("idempotency key written")
			}
		})
	}
}

func TestIndexesFollowTransitions(t *testing.T) {
	type step struct {
		state  State
		change func(*Job)
	}
	retryAt := t0.Add(time.Minute)
	tests := map[string][]step{
		"run to completion":   {{Dispatched, nil}, {Running, nil}, {Completed, nil}},
		"cancel while queued": {{Cancelled, nil}},
		"retry after failure": {
			{Dispatched, nil}, {Running, nil}, {Failed, nil},
			{Waiting, func(j *Job) { j.NotBefore = retryAt }},
			{Queued, func(j *Job) { j.QueuedAt = retryAt; j.Priority = 7 }},
			{Dispatched, nil}, {Timeout, nil},
		},
		"lost attempt requeued":        {{Dispatched, nil}, {Queued, func(j *Job) { j.QueuedAt = t0.Add(time.Hour) }}},
		"priority change while queued": {{Queued, func(j *Job) { j.Priority = 90 }}, {Cancelled, nil}},
	}
	for name, steps := range tests {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			// A bystander in every index that must never be disturbed.
			other := submit(t, s, newJob(s, 50, t0))
			waiting := move(t, s, submit(t, s, newJob(s, 50, t0)), Waiting, func(j *Job) { j.NotBefore = t0 })
			running := move(t, s, submit(t, s, newJob(s, 50, t0)), Running, nil)

			j := submit(t, s, newJob(s, 50, t0.Add(time.Second)))
			check := func(j *Job) {
				t.Helper()
				stored, err := s.Get(j.ID)
				if err != nil {
					t.Fatal(err)
				}
				if stored.State != j.State || stored.Events != j.Events {
					t.Fatalf("stored %s/%d events, want %s/%d", stored.State, stored.Events, j.State, j.Events)
				}
				active, err := s.Active()
				if err != nil {
					t.Fatal(err)
				}
				byID := map[uint64]*Job{}
				for _, a := range active {
					if byID[a.ID] != nil {
						t.Fatalf("job %d listed twice by Active", a.ID)
					}
					byID[a.ID] = a
				}
				for _, b := range []*Job{other, waiting, running} {
					if byID[b.ID] == nil || byID[b.ID].State != b.State {
						t.Fatalf("bystander %d (%s) missing from Active", b.ID, b.State)
					}
				}
				want := map[State]int{Queued: 1, Waiting: 1, Dispatched: 0, Running: 1}
				if a, ok := byID[j.ID]; ok != (j.State == Queued || j.State == Waiting || j.State.Active()) {
					t.Fatalf("job in %s: listed by Active = %v", j.State, ok)
				} else if ok && a.State != j.State {
					t.Fatalf("Active has job in %s, want %s", a.State, j.State)
				}
				if _, ok := want[j.State]; ok {
					want[j.State]++
				}
				q, d, a := countPrefix(t, s, prefixQueue), countPrefix(t, s, prefixDelay), countPrefix(t, s, prefixActive)
				if q != want[Queued] || d != want[Waiting] || a != want[Dispatched]+want[Running] {
					t.Fatalf("in %s: index keys q=%d d=%d a=%d, want %d %d %d",
						j.State, q, d, a, want[Queued], want[Waiting], want[Dispatched]+want[Running])
				}
				done := 0
				if j.State.Terminal() {
					done = 1
				}
				if st, f, n := countPrefix(t, s, prefixState), countPrefix(t, s, prefixDone), s.FinishedJobs(); st != 4 || f != done || n != done {
					t.Fatalf("in %s: state index %d keys, finished index %d keys, FinishedJobs %d; want 4, %d, %d", j.State, st, f, n, done, done)
				}
				if got, _, err := s.List(ListOptions{State: j.State}); err != nil || len(got) == 0 || got[0].ID != j.ID {
					t.Fatalf("List(State: %s) = %v, %v; want job %d first", j.State, ids(got), err, j.ID)
				}
			}
			check(j)
			for _, st := range steps {
				j = move(t, s, j, st.state, st.change)
				check(j)
			}
			evs, err := s.Events(j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != len(steps)+1 {
				t.Fatalf("%d events, want %d", len(evs), len(steps)+1)
			}
			for i, e := range evs {
				if e.Seq != uint32(i) {
					t.Errorf("event %d has seq %d", i, e.Seq)
				}
				if i > 0 && e.State != steps[i-1].state {
					t.Errorf("event %d state %s, want %s", i, e.State, steps[i-1].state)
				}
			}
		})
	}
}

func TestActiveOrder(t *testing.T) {
	s := open(t)
	mk := func(prio int, at time.Duration) *Job { return submit(t, s, newJob(s, prio, t0.Add(at))) }
	low := mk(0, 0)
	high2 := mk(100, 2*time.Second)
	mid := mk(50, 0)
	high1 := mk(100, time.Second)
	highTie := mk(100, time.Second) // same QueuedAt as high1: ID breaks the tie
	run := move(t, s, mk(100, 0), Running, nil)
	late := move(t, s, mk(1, 0), Waiting, func(j *Job) { j.NotBefore = t0.Add(time.Hour) })
	soon := move(t, s, mk(1, 0), Waiting, func(j *Job) { j.NotBefore = t0.Add(time.Minute) })
	disp := move(t, s, mk(1, 0), Dispatched, nil)
	move(t, s, mk(100, 0), Completed, nil)
	negative := mk(-5, 0) // clamped to 0, after low by QueuedAt/ID
	ancient := submit(t, s, &Job{ID: s.NextID(), State: Queued, Priority: 0})

	got, err := s.Active()
	if err != nil {
		t.Fatal(err)
	}
	want := ids([]*Job{high1, highTie, high2, mid, ancient, low, negative, soon, late, run, disp})
	if !reflect.DeepEqual(ids(got), want) {
		t.Errorf("Active order %v, want %v", ids(got), want)
	}
}

func TestList(t *testing.T) {
	s := open(t)
	var all []uint64
	for i := range 10 {
		j := submit(t, s, newJob(s, 1, t0))
		if i%3 == 0 {
			move(t, s, j, Running, nil)
		}
		all = append(all, j.ID)
	}
	rev := func(in []uint64) []uint64 {
		out := []uint64{}
		for i := len(in) - 1; i >= 0; i-- {
			out = append(out, in[i])
		}
		return out
	}
	tests := map[string]struct {
		opts ListOptions
		want []uint64
	}{
		"all newest first": {ListOptions{}, rev(all)},
		"limit":            {ListOptions{Limit: 3}, rev(all)[:3]},
		"before":           {ListOptions{Before: all[5]}, rev(all[:5])},
		"before and limit": {ListOptions{Before: all[5], Limit: 2}, []uint64{all[4], all[3]}},
		"before first":     {ListOptions{Before: all[0]}, []uint64{}},
		"state":            {ListOptions{State: Running}, []uint64{all[9], all[6], all[3], all[0]}},
		"state and limit":  {ListOptions{State: Running, Limit: 2}, []uint64{all[9], all[6]}},
		"state and before": {ListOptions{State: Queued, Before: all[3]}, []uint64{all[2], all[1]}},
		"no match":         {ListOptions{State: Cancelled}, []uint64{}},
		"match":            {ListOptions{Match: func(j *Job) bool { return j.ID%2 == 0 }}, evens(rev(all))},
		"match and state":  {ListOptions{State: Running, Match: func(j *Job) bool { return j.ID != all[6] }}, []uint64{all[9], all[3], all[0]}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, _, err := s.List(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ids(got), tt.want) {
				t.Errorf("List(%+v) = %v, want %v", tt.opts, ids(got), tt.want)
			}
			for _, j := range got {
				if tt.opts.State != "" && j.State != tt.opts.State {
					t.Errorf("job %d in %s", j.ID, j.State)
				}
			}
		})
	}
}

// evens keeps the even IDs of ids.
func evens(ids []uint64) []uint64 {
	out := []uint64{}
	for _, id := range ids {
		if id%2 == 0 {
			out = append(out, id)
		}
	}
	return out
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if id := s.NextID(); id != 1 {
		t.Fatalf("first NextID = %d, want 1", id)
	}
	q := newJob(s, 10, t0)
	q.IdempotencyKey = "k1"
	q = submit(t, s, q)
	r := move(t, s, submit(t, s, newJob(s, 10, t0)), Running, nil)
	if err := appendLog(s, r.ID, Chunk{Offset: 0, Stream: 1, Data: []byte("hello ")}); err != nil {
		t.Fatal(err)
	}
	if err := appendLog(s, r.ID, Chunk{Offset: 6, Stream: 2, Data: []byte("world")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, dir)
	if id := s.NextID(); id <= r.ID {
		t.Errorf("NextID after reopen = %d, want > %d", id, r.ID)
	}
	for _, want := range []*Job{q, r} {
		got, err := s.Get(want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("job %d after reopen = %+v, want %+v", want.ID, got, want)
		}
	}
	if evs, err := s.Events(r.ID); err != nil || len(evs) != 2 {
		t.Errorf("events after reopen: %d, %v; want 2", len(evs), err)
	}
	active, err := s.Active()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(active), []uint64{q.ID, r.ID}) {
		t.Errorf("Active after reopen = %v", ids(active))
	}
	if id, ok, err := s.IdempotencyKey("k1"); err != nil || !ok || id != q.ID {
		t.Errorf("IdempotencyKey after reopen = %d, %v, %v", id, ok, err)
	}
	chunks, err := s.ReadLog(r.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Chunk{{Offset: 0, Stream: 1, Data: []byte("hello ")}, {Offset: 6, Stream: 2, Data: []byte("world")}}
	if !reflect.DeepEqual(chunks, want) {
		t.Errorf("ReadLog after reopen = %s", show(chunks))
	}
}

func TestSchema(t *testing.T) {
	tests := map[string]func(db *pebble.DB) error{
		"newer version": func(db *pebble.DB) error {
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], SchemaVersion+1)
			return db.Set(versionKey, v[:], pebble.Sync)
		},
		"version 1": func(db *pebble.DB) error {
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], 1)
			return db.Set(versionKey, v[:], pebble.Sync)
		},
		"malformed version": func(db *pebble.DB) error { return db.Set(versionKey, []byte("x"), pebble.Sync) },
		"data without version": func(db *pebble.DB) error {
			return db.Set([]byte("something else"), nil, pebble.Sync)
		},
	}
	for name, prepare := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log: hclog.NewNullLogger()}})
			if err != nil {
				t.Fatal(err)
			}
			if err := prepare(db); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, Options{Logger: testLogger(t)})
			if !errors.Is(err, ErrSchema) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open = %v, want ErrSchema", err)
			}
			t.Log(err)
		})
	}
}

// TestSchemaUpgrade opens a version 2 directory — jobs and untimed log
// chunks as the release before chunk times wrote them — and checks that
// it is read as it is, marked version 3, and written on in the new form.
func TestSchemaUpgrade(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log: hclog.NewNullLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], 2)
	// A job record as version 2 wrote it (no output or tty field).
	rec := []byte(`{"id":1,"name":"n","command":"echo hi","priority":50,"retries":0,"logs":true,"cancellable":true,"state":"completed","created_at":"2026-01-02T03:04:05Z","queued_at":"2026-01-02T03:04:05Z","attempts":[{"number":1,"agent":"a","dispatched_at":"2026-01-02T03:04:05Z","log_start":0,"output_bytes":3}],"log_bytes":3,"events":0}`)
	for _, kv := range [][2][]byte{
		{versionKey, v[:]},
		{jobKey(1), rec},
		{logKey(1, 0), []byte("\x02hi\n")},
	} {
		if err := db.Set(kv[0], kv[1], pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open of a version 2 directory: %v", err)
	}
	j, err := s.Get(1)
	if err != nil || j.Command != "echo hi" || j.Output != "" || j.TTY != nil || j.Attempts[0].OutputBytes != 3 {
		t.Fatalf("Get = %+v, %v", j, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)
	if err := appendLog(s, 1, Chunk{Offset: 3, Stream: 1, Data: []byte("more\n"), Time: at}); err != nil {
		t.Fatal(err)
	}
	chunks, err := s.ReadLog(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Chunk{{Offset: 0, Stream: 2, Data: []byte("hi\n")}, {Offset: 3, Stream: 1, Data: []byte("more\n"), Time: at}}
	if !reflect.DeepEqual(chunks, want) {
		t.Fatalf("ReadLog = %s", show(chunks))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log: hclog.NewNullLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, closer, err := db.Get(versionKey)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	if n := binary.BigEndian.Uint32(got); n != SchemaVersion || SchemaVersion != 3 {
		t.Errorf("schema version after Open: %d, want 3", n)
	}
}

func TestIdempotencyKey(t *testing.T) {
	s := open(t)
	j := newJob(s, 1, t0)
	j.IdempotencyKey = "abc"
	submit(t, s, j)
	tests := map[string]struct {
		key string
		id  uint64
		ok  bool
	}{
		"known":   {"abc", j.ID, true},
		"unknown": {"abd", 0, false},
		"empty":   {"", 0, false},
		"prefix":  {"ab", 0, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			id, ok, err := s.IdempotencyKey(tt.key)
			if err != nil || id != tt.id || ok != tt.ok {
				t.Errorf("IdempotencyKey(%q) = %d, %v, %v; want %d, %v", tt.key, id, ok, err, tt.id, tt.ok)
			}
		})
	}
	t.Run("transitions keep the key", func(t *testing.T) {
		move(t, s, j, Cancelled, nil)
		if id, ok, _ := s.IdempotencyKey("abc"); !ok || id != j.ID {
			t.Errorf("key lost after transition: %d, %v", id, ok)
		}
	})
	t.Run("second create refused", func(t *testing.T) {
		dup := newJob(s, 1, t0)
		dup.IdempotencyKey = "abc"
		err := applyAll(s, NewTransition(dup, Event{}))
		if !errors.Is(err, ErrExists) {
			t.Fatalf("Apply = %v, want ErrExists", err)
		}
		if _, err := s.Get(dup.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("refused job stored: %v", err)
		}
	})
	t.Run("concurrent creates: one wins", func(t *testing.T) {
		var wg sync.WaitGroup
		wins := make(chan uint64, 16)
		for range 16 {
			wg.Go(func() {
				j := newJob(s, 1, t0)
				j.IdempotencyKey = "race"
				err := applyAll(s, NewTransition(j, Event{}))
				switch {
				case err == nil:
					wins <- j.ID
				case !errors.Is(err, ErrExists):
					t.Errorf("Apply: %v", err)
				}
			})
		}
		wg.Wait()
		close(wins)
		var won []uint64
		for id := range wins {
			won = append(won, id)
		}
		if len(won) != 1 {
			t.Fatalf("%d creates won, want 1", len(won))
		}
		if id, ok, _ := s.IdempotencyKey("race"); !ok || id != won[0] {
			t.Errorf("key points at %d, winner %d", id, won[0])
		}
	})
}

func TestConcurrentApply(t *testing.T) {
	s := open(t)
	const workers, perWorker = 32, 10
	var wg sync.WaitGroup
	created := make([][]*Job, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				j := newJob(s, w%5, time.Now())
				if err := applyAll(s, NewTransition(j, Event{Type: "submitted"})); err != nil {
					t.Errorf("create: %v", err)
					return
				}
				if i%2 == 0 {
					next := j.Clone()
					next.State = Running
					if err := applyAll(s, NewTransition(next, Event{Type: "started"})); err != nil {
						t.Errorf("start: %v", err)
						return
					}
					j = next
				}
				created[w] = append(created[w], j)
			}
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for _, jobs := range created {
		for _, j := range jobs {
			if seen[j.ID] {
				t.Fatalf("NextID returned %d twice", j.ID)
			}
			seen[j.ID] = true
			got, err := s.Get(j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != j.State || got.Events != j.Events {
				t.Errorf("job %d: %s/%d, want %s/%d", j.ID, got.State, got.Events, j.State, j.Events)
			}
		}
	}
	if len(seen) != workers*perWorker {
		t.Fatalf("%d jobs, want %d", len(seen), workers*perWorker)
	}
	active, err := s.Active()
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != workers*perWorker {
		t.Errorf("Active has %d jobs, want %d", len(active), workers*perWorker)
	}
	all, _, err := s.List(ListOptions{Limit: 1000})
	if err != nil || len(all) != workers*perWorker {
		t.Errorf("List: %d jobs, %v", len(all), err)
	}
}

func TestNotFound(t *testing.T) {
	s := open(t)
	tests := map[string]func() error{
		"Get":    func() error { _, err := s.Get(12345); return err },
		"Events": func() error { _, err := s.Events(12345); return err },
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			err := call()
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if want := "store: "; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
				t.Errorf("error %q lacks the store prefix", err)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	j := submit(t, s, newJob(s, 1, t0))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]func() error{
		"Apply":          func() error { return applyAll(s, NewTransition(newJob(s, 1, t0), Event{})) },
		"Get":            func() error { _, err := s.Get(j.ID); return err },
		"List":           func() error { _, _, err := s.List(ListOptions{}); return err },
		"Prune":          func() error { _, err := s.Prune(t.Context(), PruneOptions{KeepNewest: 1}, prune(s)); return err },
		"Events":         func() error { _, err := s.Events(j.ID); return err },
		"Output":         func() error { return appendLog(s, j.ID, Chunk{Data: []byte("x")}) },
		"Sync":           s.Sync,
		"ReadLog":        func() error { _, err := s.ReadLog(j.ID, 0, 0); return err },
		"Active":         func() error { _, err := s.Active(); return err },
		"IdempotencyKey": func() error { _, _, err := s.IdempotencyKey("k"); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, ErrClosed) {
				t.Errorf("err = %v, want ErrClosed", err)
			}
		})
	}
}

// Close waits for the operations in flight and fails the later ones with
// ErrClosed, never pulling the database from under them. The writers are
// all running (each has applied and read at least once) before Close is
// called, so Close meets operations in progress.
func TestCloseDuringUse(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	running := make(chan struct{}, writers)
	applied := make([]int, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for {
				err := applyAll(s, NewTransition(newJob(s, 1, t0), Event{}))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Apply: %v", err)
					return
				}
				if _, err := s.Active(); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Active: %v", err)
					return
				}
				if applied[w]++; applied[w] == 1 {
					running <- struct{}{}
				}
			}
		})
	}
	for range writers {
		select {
		case <-running:
		case <-time.After(30 * time.Second): // a deadlock guard, not a timing
			t.Fatal("the writers did not all get going")
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for w, n := range applied {
		if n == 0 {
			t.Errorf("writer %d applied nothing before Close", w)
		}
	}
	if err := applyAll(s, NewTransition(newJob(s, 1, t0), Event{})); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
}

func TestOutputRejects(t *testing.T) {
	s := open(t)
	tests := map[string]Chunk{
		"nil data":   {Offset: 0},
		"empty data": {Offset: 5, Data: []byte{}},
		"overflow":   {Offset: 1<<64 - 1, Data: []byte("xy")},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			if err := appendLog(s, 1, c); !errors.Is(err, ErrInvalid) {
				t.Errorf("Output = %v, want ErrInvalid", err)
			}
		})
	}
}

func ExampleStore_ReadLog() {
	dir, _ := os.MkdirTemp("", "store-example")
	defer os.RemoveAll(dir)
	s, _ := Open(dir, Options{NoSync: true})
	defer s.Close()
	_, _ = s.Apply(
		&Output{Job: 1, Chunk: Chunk{Offset: 0, Stream: 1, Data: []byte("hello ")}},
		&Output{Job: 1, Chunk: Chunk{Offset: 6, Stream: 1, Data: []byte("world\n")}},
	)
	chunks, _ := s.ReadLog(1, 3, 0)
	for _, c := range chunks {
		fmt.Printf("%d %q\n", c.Offset, c.Data)
	}
	// Output:
	// 3 "lo "
	// 6 "world\n"
}
