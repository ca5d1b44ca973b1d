package sched

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"jobsuite/controller/store"
)

// refQueue is the obviously correct model of queue: a plain map, sorted
// and filtered on every best().
type refQueue struct {
	items map[uint64]refItem
	aging int64 // as queue.aging: 0 for strict priority
}

type refItem struct {
	id       uint64
	priority int
	queuedAt int64
	selector map[string]string
}

func newRefQueue(aging int64) *refQueue { return &refQueue{items: map[uint64]refItem{}, aging: aging} }

func (r *refQueue) push(id uint64, priority int, queuedAt int64, sel map[string]string) {
	if _, ok := r.items[id]; ok {
		return
	}
	r.items[id] = refItem{id, priority, queuedAt, sel}
}

func (r *refQueue) remove(id uint64) bool {
	_, ok := r.items[id]
	delete(r.items, id)
	return ok
}

// refMatches is written independently of matches: every selector pair
// must be among the labels.
func refMatches(sel, labels map[string]string) bool {
	n := 0
	for k, lv := range labels {
		if v, ok := sel[k]; ok {
			if v != lv {
				return false
			}
			n++
		}
	}
	return n == len(sel)
}

func (r *refQueue) sorted(labels map[string]string) []refItem {
	var out []refItem
	for _, it := range r.items {
		if refMatches(it.selector, labels) {
			out = append(out, it)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if r.aging > 0 { // a point of priority per aging waited
			ka, kb := int64(a.priority)*r.aging-a.queuedAt, int64(b.priority)*r.aging-b.queuedAt
			if ka != kb {
				return ka > kb
			}
			return a.id < b.id
		}
		if a.priority != b.priority {
			return a.priority > b.priority
		}
		if a.queuedAt != b.queuedAt {
			return a.queuedAt < b.queuedAt
		}
		return a.id < b.id
	})
	return out
}

func (r *refQueue) best(labels map[string]string) uint64 {
	if s := r.sorted(labels); len(s) > 0 {
		return s[0].id
	}
	return 0
}

// Selectors jobs carry and label sets agents offer. nil and the empty
// map are the same class; values share keys so that some selectors
// contradict each other.
var (
	testSelectors = []map[string]string{
		nil,
		{},
		{"gpu": "true"},
		{"gpu": "false"},
		{"os": "linux"},
		{"gpu": "true", "os": "linux"},
		{"gpu": "true", "os": "linux", "zone": "a"},
		{"zone": "b"},
	}
	testLabels = []map[string]string{
		nil,
		{"gpu": "true"},
		{"gpu": "false", "os": "linux"},
		{"gpu": "true", "os": "linux"},
		{"gpu": "true", "os": "linux", "zone": "a"},
		{"os": "linux", "zone": "b"},
		{"os": "darwin"},
	}
)

// checkInvariants verifies the queue's internal bookkeeping: every item
// sits at its recorded heap index in its class, every class is a valid
// non-empty heap under its own selector key, and len matches the model.
func checkInvariants(t *testing.T, q *queue, ref *refQueue) {
	t.Helper()
	if q.len() != len(ref.items) {
		t.Fatalf("len = %d, model has %d", q.len(), len(ref.items))
	}
	n := 0
	for key, c := range q.classes {
		if c.h.Len() == 0 {
			t.Fatalf("class %q is empty but kept", key)
		}
		if selectorKey(c.selector) != key {
			t.Fatalf("class stored under %q has selector key %q", key, selectorKey(c.selector))
		}
		for i, it := range c.h {
			if it.index != i || it.class != c {
				t.Fatalf("item %d: index %d at heap position %d (class ok: %v)", it.id, it.index, i, it.class == c)
			}
			if q.items[it.id] != it {
				t.Fatalf("item %d in a heap but not in items", it.id)
			}
			if p := (i - 1) / 2; i > 0 && before(it, c.h[p]) {
				t.Fatalf("heap order broken in class %q at %d", key, i)
			}
			r, ok := ref.items[it.id]
			if !ok {
				t.Fatalf("item %d queued but not in the model", it.id)
			}
			if r.priority != it.priority || r.queuedAt != it.queuedAt || selectorKey(r.selector) != key {
				t.Fatalf("item %d = {%d %d %q}, model {%d %d %q}", it.id, it.priority, it.queuedAt, key, r.priority, r.queuedAt, selectorKey(r.selector))
			}
			n++
		}
	}
	if n != len(q.items) {
		t.Fatalf("%d items in heaps, %d in the index", n, len(q.items))
	}
}

// TestQueueProperty drives the queue and the model with the same random
// operations and compares every answer, with strict priority and with
// aging (queue times are small integers, so an aging of 5 lets a job
// that waited 5 units longer beat one a point above it).
func TestQueueProperty(t *testing.T) {
	for seed := range uint64(20) {
		aging := []int64{0, 5}[seed%2]
		t.Run(fmt.Sprintf("seed=%d/aging=%d", seed, aging), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
			q, ref := newQueue(time.Duration(aging)), newRefQueue(aging)
			var nextID uint64
			priorities := []int{0, 25, 50, 50, 75, 100} // few values: many ties
			for step := range 2000 {
				switch op := rng.IntN(10); {
				case op < 4: // push a new job
					nextID++
					p := priorities[rng.IntN(len(priorities))]
					at := int64(rng.IntN(20)) // few values: FIFO ties broken by ID
					sel := testSelectors[rng.IntN(len(testSelectors))]
					q.push(nextID, p, at, sel)
					ref.push(nextID, p, at, sel)
				case op == 4 && nextID > 0: // push an ID already known: ignored if queued
					id := 1 + rng.Uint64N(nextID)
					p, at := rng.IntN(101), int64(rng.IntN(20))
					sel := testSelectors[rng.IntN(len(testSelectors))]
					q.push(id, p, at, sel)
					ref.push(id, p, at, sel)
				case op < 7 && nextID > 0: // remove a random ID, present or not
					id := rng.Uint64N(nextID + 2)
					if got, want := q.remove(id), ref.remove(id); got != want {
						t.Fatalf("step %d: remove(%d) = %v, want %v", step, id, got, want)
					}
				default: // an agent takes its best job, as dispatch does
					labels := testLabels[rng.IntN(len(testLabels))]
					got, want := q.best(labels), ref.best(labels)
					if got != want {
						t.Fatalf("step %d: best(%v) = %d, want %d (candidates %v)", step, labels, got, want, ref.sorted(labels))
					}
					if got != 0 && rng.IntN(3) > 0 {
						if !q.remove(got) || !ref.remove(got) {
							t.Fatalf("step %d: removing best %d failed", step, got)
						}
					}
				}
				for range 4 { // contains agrees for a few IDs
					id := rng.Uint64N(nextID + 2)
					_, want := ref.items[id]
					if q.contains(id) != want {
						t.Fatalf("step %d: contains(%d) = %v, want %v", step, id, !want, want)
					}
				}
				if step%16 == 0 {
					checkInvariants(t, q, ref)
				}
			}
			checkInvariants(t, q, ref)
			// Draining with an agent that matches everything gives the
			// full model order for the matching jobs, then nothing.
			all := map[string]string{"gpu": "true", "os": "linux", "zone": "a"}
			for _, want := range ref.sorted(all) {
				if got := q.best(all); got != want.id {
					t.Fatalf("drain: best = %d, want %d", got, want.id)
				}
				q.remove(want.id)
				ref.remove(want.id)
			}
			if got := q.best(all); got != 0 {
				t.Fatalf("drained queue still offers job %d", got)
			}
			checkInvariants(t, q, ref)
		})
	}
}

func TestQueueOrder(t *testing.T) {
	q := newQueue(0)
	// id, priority, queuedAt
	for _, j := range [][3]int{{1, 50, 10}, {2, 75, 20}, {3, 50, 5}, {4, 75, 20}, {5, 0, 1}, {6, 100, 30}, {7, 50, 5}} {
		q.push(uint64(j[0]), j[1], int64(j[2]), nil)
	}
	want := []uint64{6, 2, 4, 3, 7, 1, 5} // priority desc, queuedAt asc, ID asc
	for i, id := range want {
		if got := q.best(nil); got != id {
			t.Fatalf("pick %d: best = %d, want %d", i, got, id)
		}
		if !q.remove(id) {
			t.Fatalf("remove(%d) = false", id)
		}
	}
	if q.len() != 0 || q.best(nil) != 0 || len(q.classes) != 0 {
		t.Fatalf("queue not empty: len %d, classes %d", q.len(), len(q.classes))
	}
}

func TestQueueSelectorClasses(t *testing.T) {
	q := newQueue(0)
	q.push(1, 50, 1, map[string]string{"gpu": "true"})
	q.push(2, 50, 2, nil)
	q.push(3, 90, 3, map[string]string{"gpu": "true", "os": "linux"})
	q.push(4, 10, 4, map[string]string{}) // same class as nil
	q.push(5, 99, 5, map[string]string{"os": "linux", "gpu": "true"})
	if len(q.classes) != 3 {
		t.Fatalf("%d classes, want 3 (none, gpu, gpu+os): %q", len(q.classes), classKeys(q))
	}
	tests := map[string]struct {
		labels map[string]string
		want   uint64
	}{
		"no labels take unlabelled jobs only":   {nil, 2},
		"gpu agent takes gpu before older none": {map[string]string{"gpu": "true"}, 1},
		"gpu+linux agent takes the highest":     {map[string]string{"gpu": "true", "os": "linux", "x": "y"}, 5},
		"wrong value matches nothing labelled":  {map[string]string{"gpu": "false", "os": "linux"}, 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := q.best(tc.labels); got != tc.want {
				t.Errorf("best(%v) = %d, want %d", tc.labels, got, tc.want)
			}
		})
	}
	// Emptying a class drops it; the others stay.
	q.remove(3)
	q.remove(5)
	if len(q.classes) != 2 {
		t.Fatalf("classes after emptying gpu+os: %q", classKeys(q))
	}
	if got := q.best(map[string]string{"gpu": "true", "os": "linux"}); got != 1 {
		t.Fatalf("gpu+os agent gets %d, want 1 (gpu, priority 50, queued first)", got)
	}
}

func classKeys(q *queue) []string {
	var ks []string
	for k := range q.classes {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestQueueRemoveAbsentAndDuplicatePush(t *testing.T) {
	q := newQueue(0)
	if q.remove(42) {
		t.Fatal("remove from an empty queue reported success")
	}
	q.push(7, 50, 1, nil)
	q.push(7, 100, 0, map[string]string{"gpu": "true"}) // already queued: left as is
	if q.len() != 1 || len(q.classes) != 1 {
		t.Fatalf("duplicate push changed the queue: len %d, classes %q", q.len(), classKeys(q))
	}
	if got := q.best(nil); got != 7 {
		t.Fatalf("duplicate push moved job 7 out of the unlabelled class: best(nil) = %d", got)
	}
	if q.remove(8) {
		t.Fatal("remove(8) of an absent job reported success")
	}
	if !q.remove(7) || q.remove(7) {
		t.Fatal("remove(7) twice: want true, then false")
	}
	if q.len() != 0 || len(q.classes) != 0 || q.contains(7) {
		t.Fatalf("queue not empty after removing its only job")
	}
	// Pushed again after removal, the job is queued afresh.
	q.push(7, 10, 2, nil)
	if !q.contains(7) || q.best(nil) != 7 {
		t.Fatal("job 7 pushed again is not queued")
	}
}

// TestQueueSelectorKeyInjective: distinct selectors must never share a
// class, or jobs would be matched against another job's selector.
func TestQueueSelectorKeyInjective(t *testing.T) {
	a := map[string]string{"a": "x\x00b=y"} // label values are free text
	b := map[string]string{"a": "x", "b": "y"}
	if selectorKey(a) == selectorKey(b) {
		t.Errorf("selectorKey(%q) == selectorKey(%q): jobs with either selector share one class and are matched against the first one's selector", a, b)
	}
	q := newQueue(0)
	q.push(1, 50, 1, a)
	q.push(2, 50, 2, b)
	if got := q.best(b); got != 2 {
		t.Errorf("agent labelled %v gets job %d, want 2", b, got)
	}
}

// TestQueueAging: with aging, a long-waiting low-priority job overtakes
// newer high-priority ones, once it has waited (high-low)·aging longer.
func TestQueueAging(t *testing.T) {
	const minute = int64(time.Minute)
	tests := map[string]struct {
		aging time.Duration
		want  uint64
	}{
		"strict priority":        {0, 2},
		"aging, not long enough": {time.Hour, 2},
		"aging, waited enough":   {time.Minute, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			q := newQueue(tc.aging)
			q.push(1, 25, 0, nil)         // low, queued at t=0
			q.push(2, 75, 60*minute, nil) // high, queued an hour later
			if got := q.best(nil); got != tc.want {
				t.Errorf("best = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestQueuePushAll checks the bulk push of load against the model: a
// queue already holding some jobs, a batch in random order with IDs
// repeated and already queued, more items than one block; then every
// answer of best while the queue drains.
func TestQueuePushAll(t *testing.T) {
	for seed := range uint64(10) {
		aging := []int64{0, 5}[seed%2]
		t.Run(fmt.Sprintf("seed=%d/aging=%d", seed, aging), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			q, ref := newQueue(time.Duration(aging)), newRefQueue(aging)
			priorities := []int{0, 25, 50, 50, 75, 100}
			mk := func(id uint64) *store.Job {
				return &store.Job{ID: id, Priority: priorities[rng.IntN(len(priorities))],
					QueuedAt: time.Unix(0, int64(rng.IntN(20))), Labels: testSelectors[rng.IntN(len(testSelectors))]}
			}
			if seed%3 != 0 { // start non-empty
				for id := uint64(1); id <= 20; id++ {
					j := mk(id)
					q.push(j.ID, j.Priority, j.QueuedAt.UnixNano(), j.Labels)
					ref.push(j.ID, j.Priority, j.QueuedAt.UnixNano(), j.Labels)
				}
			}
			var batch []*store.Job
			for range 3*itemBlock + rng.IntN(itemBlock) {
				batch = append(batch, mk(1+rng.Uint64N(4*itemBlock)))
			}
			q.pushAll(batch)
			for _, j := range batch {
				ref.push(j.ID, j.Priority, j.QueuedAt.UnixNano(), j.Labels)
			}
			checkInvariants(t, q, ref)
			for step := 0; q.len() > 0; step++ {
				labels := testLabels[rng.IntN(len(testLabels))]
				if step%7 == 0 {
					labels = map[string]string{"gpu": "true", "os": "linux", "zone": "a"}
				}
				got, want := q.best(labels), ref.best(labels)
				if got != want {
					t.Fatalf("step %d: best(%v) = %d, want %d", step, labels, got, want)
				}
				if got == 0 {
					// Whatever is left fits no agent of these labels: take any.
					for id := range ref.items {
						got = id
						break
					}
				}
				if !q.remove(got) || !ref.remove(got) {
					t.Fatalf("step %d: removing %d failed", step, got)
				}
				if step%50 == 0 {
					checkInvariants(t, q, ref)
				}
			}
		})
	}
}
