package store

import (
	"errors"
	"maps"
	"testing"
	"time"
)

// logString reads job id's whole log as one string.
func logString(t *testing.T, s *Store, id uint64) string {
	t.Helper()
	chunks, err := s.ReadLog(id, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, c := range chunks {
		b = append(b, c.Data...)
	}
	return string(b)
}

// TestReplicaOutputGate: a chunk that came on the output channel is
// written only once its attempt is in the store, whole while the
// attempt runs, and only below the end once it ended — never into the
// next attempt's range.
func TestReplicaOutputGate(t *testing.T) {
	now := time.Unix(1_700_000_000, 0).UTC()
	s := open(t)
	j := submit(t, s, newJob(s, 0, now))
	chunk := func(off uint64, data string) Chunk {
		return Chunk{Offset: off, Stream: 1, Data: []byte(data), Time: now}
	}

	// Attempt 1 is not recorded yet: not yet.
	if err := applyErr(s, &ReplicaOutput{Job: j.ID, Attempt: 1, Chunk: chunk(0, "abc")}); !errors.Is(err, ErrNotYet) {
		t.Fatalf("before the dispatch: %v, want ErrNotYet", err)
	}
	// A job not stored yet at all: not yet either.
	if err := applyErr(s, &ReplicaOutput{Job: j.ID + 100, Attempt: 1, Chunk: chunk(0, "abc")}); !errors.Is(err, ErrNotYet) {
		t.Fatalf("unknown job: %v, want ErrNotYet", err)
	}
	if got := logString(t, s, j.ID); got != "" {
		t.Fatalf("log after refused chunks = %q", got)
	}
	j = move(t, s, j, Running, func(n *Job) { n.Attempts = append(n.Attempts, Attempt{Number: 1, Agent: "a"}) })
	if err := applyErr(s, &ReplicaOutput{Job: j.ID, Attempt: 1, Chunk: chunk(0, "hello ")}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(s, &ReplicaOutput{Job: j.ID, Attempt: 1, Chunk: chunk(6, "world")}); err != nil {
		t.Fatal(err)
	}
	// Attempt 1 is lost at 8 bytes (what a quorum held); attempt 2 starts there.
	j = move(t, s, j, Running, func(n *Job) {
		n.LogBytes = 8
		n.Attempts[0].Outcome = OutcomeLost
		n.Attempts[0].OutputBytes = 8
		n.Attempts = append(n.Attempts, Attempt{Number: 2, Agent: "b", LogStart: 8})
	})
	if err := applyErr(s, &TruncateLog{Job: j.ID, At: 8}); err != nil {
		t.Fatal(err)
	}
	if got := logString(t, s, j.ID); got != "hello wo" {
		t.Fatalf("log after truncating at 8 = %q, want %q", got, "hello wo")
	}
	tests := map[string]struct {
		attempt uint32
		chunk   Chunk
		want    error
	}{
		"late chunk of the lost attempt, past its end": {1, chunk(11, "!!"), ErrStale},
		"late chunk of the lost attempt, at its end":   {1, chunk(8, "rl"), ErrStale},
		"late chunk straddling the end is cut":         {1, chunk(6, "wo#"), nil},
		"the next attempt's first chunk":               {2, chunk(8, "XY"), nil},
		"an attempt not dispatched yet":                {3, chunk(10, "zz"), ErrNotYet},
	}
	for _, name := range []string{
		"late chunk of the lost attempt, past its end",
		"late chunk of the lost attempt, at its end",
		"late chunk straddling the end is cut",
		"the next attempt's first chunk",
		"an attempt not dispatched yet",
	} {
		tt := tests[name]
		err := applyErr(s, &ReplicaOutput{Job: j.ID, Attempt: tt.attempt, Chunk: tt.chunk})
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", name, err, tt.want)
		}
	}
	if got, want := logString(t, s, j.ID), "hello woXY"; got != want {
		t.Fatalf("log = %q, want %q", got, want)
	}
	// The job ends with attempt 2 at 10: a chunk of attempt 2 past it is cut.
	j = move(t, s, j, Completed, func(n *Job) {
		n.LogBytes = 10
		n.Attempts[1].Outcome = OutcomeCompleted
	})
	if err := applyErr(s, &ReplicaOutput{Job: j.ID, Attempt: 2, Chunk: chunk(10, "late")}); !errors.Is(err, ErrStale) {
		t.Fatalf("chunk past the finished attempt's end: %v, want ErrStale", err)
	}
	if got, want := logString(t, s, j.ID), "hello woXY"; got != want {
		t.Fatalf("log = %q, want %q", got, want)
	}
}

// TestTruncateLog: what lies at or past At goes, a chunk across At is
// cut there, other jobs' logs stay, and it travels in a round.
func TestTruncateLog(t *testing.T) {
	tests := map[string]struct {
		at   uint64
		want string
	}{
		"at a chunk boundary": {6, "hello "},
		"inside a chunk":      {8, "hello wo"},
		"at the end":          {13, "hello world!\n"},
		"past the end":        {100, "hello world!\n"},
		"at zero":             {0, ""},
		"inside the first":    {2, "he"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			for _, id := range []uint64{6, 7, 8} {
				for _, c := range []Chunk{{Offset: 0, Stream: 1, Data: []byte("hello ")}, {Offset: 6, Stream: 2, Data: []byte("world")}, {Offset: 11, Stream: 1, Data: []byte("!\n")}} {
					if err := appendLog(s, id, c); err != nil {
						t.Fatal(err)
					}
				}
			}
			round, err := EncodeRound([]Command{&TruncateLog{Job: 7, At: tt.at}})
			if err != nil {
				t.Fatal(err)
			}
			cmds, err := DecodeRound(round)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Apply(cmds...); err != nil {
				t.Fatal(err)
			}
			if got := logString(t, s, 7); got != tt.want {
				t.Errorf("log = %q, want %q", got, tt.want)
			}
			end, err := s.LogEnd(7)
			if err != nil {
				t.Fatal(err)
			}
			if end != uint64(len(tt.want)) {
				t.Errorf("LogEnd = %d, want %d", end, len(tt.want))
			}
			for _, id := range []uint64{6, 8} {
				if got := logString(t, s, id); got != "hello world!\n" {
					t.Errorf("job %d's log = %q: touched", id, got)
				}
			}
		})
	}
}

func TestLogHole(t *testing.T) {
	s := open(t)
	for _, c := range []Chunk{{Offset: 0, Stream: 1, Data: []byte("0123")}, {Offset: 4, Stream: 1, Data: []byte("45")}, {Offset: 10, Stream: 1, Data: []byte("abcd")}, {Offset: 12, Stream: 1, Data: []byte("cdef")}} {
		if err := appendLog(s, 7, c); err != nil {
			t.Fatal(err)
		}
	}
	type hole struct {
		start, end uint64
		ok         bool
	}
	tests := map[string]struct {
		from, to uint64
		want     hole
	}{
		"covered prefix":        {0, 6, hole{}},
		"the hole":              {0, 20, hole{6, 10, true}},
		"inside the hole":       {7, 9, hole{7, 9, true}},
		"from inside a chunk":   {2, 11, hole{6, 10, true}},
		"overlapping chunks":    {10, 16, hole{}},
		"past the end":          {10, 20, hole{16, 20, true}},
		"empty range":           {5, 5, hole{}},
		"another job, all hole": {0, 3, hole{}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			id := uint64(7)
			if name == "another job, all hole" {
				id = 8
				tt.want = hole{0, 3, true}
			}
			start, end, ok, err := s.LogHole(id, tt.from, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			if got := (hole{start, end, ok}); got != tt.want {
				t.Errorf("LogHole(%d, %d, %d) = %+v, want %+v", id, tt.from, tt.to, got, tt.want)
			}
		})
	}
}

// TestRepairQueue: a TruncateLog queues its job for an output repair up
// to its At, durably and in the same batch; the latest end wins; a
// RepairDone for an older end leaves the job queued, one for the end
// queued takes it out; PruneJobs takes a pruned job out; the queue
// survives a reopen and Dump leaves it out.
func TestRepairQueue(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pending := func(s *Store) map[uint64]uint64 {
		t.Helper()
		p, err := s.PendingRepairs()
		if err != nil {
			t.Fatal(err)
		}
		m := map[uint64]uint64{}
		for _, r := range p {
			m[r.Job] = r.At
		}
		return m
	}
	dumped := func(s *Store) string {
		var b []byte
		if err := s.Dump(func(k, v []byte) error { b = append(append(b, k...), v...); return nil }); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := dumped(s)
	// Two ends of job 5 in one batch, one of job 6, one of job 7 at 0.
	if _, err := s.Apply(&TruncateLog{Job: 5, At: 10}, &TruncateLog{Job: 5, At: 30}, &TruncateLog{Job: 6, At: 4}, &TruncateLog{Job: 7, At: 0}); err != nil {
		t.Fatal(err)
	}
	if got, want := pending(s), map[uint64]uint64{5: 30, 6: 4}; !maps.Equal(got, want) {
		t.Fatalf("queue after the ends = %v, want %v", got, want)
	}
	if got := dumped(s); got != before {
		t.Errorf("Dump shows the repair queue: %q, was %q", got, before)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	if got, want := pending(s), map[uint64]uint64{5: 30, 6: 4}; !maps.Equal(got, want) {
		t.Fatalf("queue after a reopen = %v, want %v", got, want)
	}

	tests := map[string]struct {
		cmd  Command
		n    int
		want map[uint64]uint64
	}{
		"repaired below an older end: stays": {&RepairDone{Job: 5, At: 10}, 0, map[uint64]uint64{5: 30, 6: 4}},
		"repaired up to the end: goes":       {&RepairDone{Job: 5, At: 30}, 1, map[uint64]uint64{6: 4}},
		"a job not queued":                   {&RepairDone{Job: 9, At: 1}, 0, map[uint64]uint64{6: 4}},
		"a later end queues again":           {&TruncateLog{Job: 5, At: 40}, 0, map[uint64]uint64{5: 40, 6: 4}},
		"an end at 0 takes it out":           {&TruncateLog{Job: 5, At: 0}, 0, map[uint64]uint64{6: 4}},
	}
	for _, name := range []string{
		"repaired below an older end: stays",
		"repaired up to the end: goes",
		"a job not queued",
		"a later end queues again",
		"an end at 0 takes it out",
	} {
		tt := tests[name]
		res, err := s.Apply(tt.cmd)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res[0].N != tt.n || res[0].Err != nil {
			t.Errorf("%s: result %+v, want N %d", name, res[0], tt.n)
		}
		if got := pending(s); !maps.Equal(got, tt.want) {
			t.Errorf("%s: queue = %v, want %v", name, got, tt.want)
		}
	}

	// A finished job that is pruned leaves the queue.
	now := time.Unix(1_700_000_000, 0).UTC()
	j := submit(t, s, newJob(s, 0, now))
	j = move(t, s, j, Completed, func(n *Job) {
		n.LogBytes = 3
		n.FinishedAt = now
		n.Attempts = append(n.Attempts, Attempt{Number: 1, Agent: "a", Outcome: OutcomeCompleted})
	})
	if err := applyErr(s, &TruncateLog{Job: j.ID, At: 3}); err != nil {
		t.Fatal(err)
	}
	if got := pending(s)[j.ID]; got != 3 {
		t.Fatalf("job %d queued up to %d, want 3", j.ID, got)
	}
	if err := applyErr(s, &PruneJobs{IDs: []uint64{j.ID}}); err != nil {
		t.Fatal(err)
	}
	if got, want := pending(s), map[uint64]uint64{6: 4}; !maps.Equal(got, want) {
		t.Errorf("queue after the prune = %v, want %v", got, want)
	}
}

// TestTruncateLogKnownEnd: for a job created since Open the store knows
// its log's end and a TruncateLog at or past it reads nothing; the end
// follows every write (a chunk written after a cut moves it again), and
// a store opened anew knows no end and reads. Each step's log is what a
// store that always reads would hold.
func TestTruncateLogKnownEnd(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	j := submit(t, s, newJob(s, 0, t0))
	step := func(s *Store, name string, cmd Command, want string) {
		t.Helper()
		if err := applyErr(s, cmd); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := logString(t, s, j.ID); got != want {
			t.Fatalf("%s: log %q, want %q", name, got, want)
		}
	}
	for _, c := range []Chunk{{Offset: 0, Stream: 1, Data: []byte("hello ")}, {Offset: 6, Stream: 2, Data: []byte("world")}, {Offset: 11, Stream: 1, Data: []byte("!\n")}} {
		step(s, "append", &Output{Job: j.ID, Chunk: c}, "hello world!\n"[:c.Offset+uint64(len(c.Data))])
	}
	if e, ok := s.logEnds[j.ID]; !ok || e != 13 {
		t.Fatalf("known end %d (%v), want 13", e, ok)
	}
	step(s, "cut inside a chunk", &TruncateLog{Job: j.ID, At: 8}, "hello wo")
	step(s, "again at the end (known: no read)", &TruncateLog{Job: j.ID, At: 8}, "hello wo")
	step(s, "append after the cut", &Output{Job: j.ID, Chunk: Chunk{Offset: 8, Stream: 1, Data: []byte("XY")}}, "hello woXY")
	step(s, "cut inside the new chunk", &TruncateLog{Job: j.ID, At: 9}, "hello woX")
	step(s, "past the end", &TruncateLog{Job: j.ID, At: 100}, "hello woX")
	if err := applyErr(s, &Output{Job: j.ID, Chunk: Chunk{Offset: 9, Stream: 1, Data: []byte("Z!")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir)
	if _, ok := s2.logEnds[j.ID]; ok {
		t.Fatal("a store opened anew knows the end of a job created before")
	}
	step(s2, "cut after reopening (unknown: reads)", &TruncateLog{Job: j.ID, At: 10}, "hello woXZ")
}
