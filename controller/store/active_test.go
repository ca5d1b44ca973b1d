package store

import (
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// TestActiveMany checks Active against the order the indexes define on
// more jobs than one decoding chunk, with priorities that make the
// queue order differ from the ID order, gaps of finished jobs between
// the records it reads, records the fast decoder hands to encoding/json
// (an unknown field), and an index entry whose record is in another
// state (skipped).
func TestActiveMany(t *testing.T) {
	s := open(t)
	var queued, waiting, running []*Job
	for i := range 3*activeChunkJobs + 17 {
		j := submit(t, s, newJob(s, []int{0, 50, 100}[i%3], t0.Add(time.Duration(i%7)*time.Second)))
		switch {
		case i%11 == 0:
			move(t, s, j, Completed, func(j *Job) { j.FinishedAt = t0 })
		case i%13 == 0:
			waiting = append(waiting, move(t, s, j, Waiting, func(j *Job) { j.NotBefore = t0.Add(time.Duration(1000-i) * time.Second) }))
		case i%17 == 0:
			running = append(running, move(t, s, j, Running, nil))
		default:
			queued = append(queued, j)
		}
	}
	// A record with a field this build does not know, as a newer release
	// might write: the fast decoder refuses it, encoding/json ignores it.
	odd := queued[5]
	raw, closer, err := s.db.Get(jobKey(odd.ID))
	if err != nil {
		t.Fatal(err)
	}
	v := append([]byte(`{"from_the_future":[1,{"x":null}],`), raw[1:]...)
	closer.Close()
	if err := s.db.Set(jobKey(odd.ID), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	// A stray queue entry for a running job: skipped.
	stray := queueKey(&Job{ID: running[0].ID, Priority: 100})
	if err := s.db.Set(stray, nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}

	sortBy := func(js []*Job, key func(*Job) []byte) []uint64 {
		byKey := map[string]uint64{}
		var keys []string
		for _, j := range js {
			k := string(key(j))
			byKey[k] = j.ID
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var ids []uint64
		for _, k := range keys {
			ids = append(ids, byKey[k])
		}
		return ids
	}
	want := sortBy(queued, queueKey)
	want = append(want, sortBy(waiting, delayKey)...)
	want = append(want, sortBy(running, func(j *Job) []byte { return activeKey(j.ID) })...)

	got, err := s.Active()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(got), want) {
		t.Fatalf("Active order:\n got %v\nwant %v", ids(got), want)
	}
	for _, j := range got {
		stored, err := s.Get(j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(j, stored) {
			t.Fatalf("job %d: Active gave %+v, Get %+v", j.ID, j, stored)
		}
	}
}

// TestActiveMissingRecord checks an index entry without its record
// fails Active with ErrNotFound, as the point lookups did.
func TestActiveMissingRecord(t *testing.T) {
	s := open(t)
	for range 10 {
		submit(t, s, newJob(s, 50, t0))
	}
	k := make([]byte, 9)
	k[0] = prefixActive
	binary.BigEndian.PutUint64(k[1:], 999)
	if err := s.db.Set(k, nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Active(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Active with a dangling index entry: %v, want ErrNotFound", err)
	}
}

// TestFinishedCountAfterReopen checks the background count of the
// finished index: a job finished right after Open (before the count can
// have run) is counted once, and a store closed at once after Open
// closes cleanly.
func TestFinishedCountAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var last *Job
	for i := range 500 {
		j := submit(t, s, newJob(s, 50, t0))
		if i < 400 {
			move(t, s, j, Completed, func(j *Job) { j.FinishedAt = t0 })
		} else {
			last = j
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Closed straight after opening: Close waits for the count.
	s, err = Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, dir)
	move(t, s, last, Failed, func(j *Job) { j.FinishedAt = t0 })
	if n := s.FinishedJobs(); n != 401 {
		t.Fatalf("FinishedJobs = %d after reopening with 400 and finishing one, want 401", n)
	}
}
