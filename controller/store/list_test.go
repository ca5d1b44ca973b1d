package store

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// listFixture stores 30 jobs: every 4th completed, the one after it
// running, the rest queued; even jobs labelled team=a, odd team=b, every
// 3rd gpu=yes. It returns them oldest first.
func listFixture(t *testing.T, s *Store) []*Job {
	t.Helper()
	var jobs []*Job
	for i := range 30 {
		j := newJob(s, 1, t0)
		j.Labels = map[string]string{"team": "b"}
		if i%2 == 0 {
			j.Labels["team"] = "a"
		}
		if i%3 == 0 {
			j.Labels["gpu"] = "yes"
		}
		j = submit(t, s, j)
		switch i % 4 {
		case 0:
			j = move(t, s, j, Completed, func(j *Job) { j.FinishedAt = t0 })
		case 1:
			j = move(t, s, j, Running, nil)
		}
		jobs = append(jobs, j)
	}
	return jobs
}

// want returns the IDs of jobs matching o's State and Labels, newest first.
func want(jobs []*Job, o ListOptions) []uint64 {
	out := []uint64{}
	for i := len(jobs) - 1; i >= 0; i-- {
		j := jobs[i]
		if (o.State == "" || j.State == o.State) && hasLabels(j, o.Labels) {
			out = append(out, j.ID)
		}
	}
	return out
}

func TestListFilters(t *testing.T) {
	s := open(t)
	jobs := listFixture(t, s)
	tests := map[string]ListOptions{
		"state":                {State: Completed},
		"terminal state":       {State: Running},
		"label":                {Labels: map[string]string{"team": "a"}},
		"two labels":           {Labels: map[string]string{"team": "a", "gpu": "yes"}},
		"state and label":      {State: Queued, Labels: map[string]string{"gpu": "yes"}},
		"label no match":       {Labels: map[string]string{"team": "c"}},
		"missing label":        {Labels: map[string]string{"zone": ""}},
		"state no match":       {State: Cancelled},
		"state, label, before": {State: Queued, Labels: map[string]string{"team": "b"}, Before: jobs[20].ID},
	}
	for name, o := range tests {
		t.Run(name, func(t *testing.T) {
			got, next, err := s.List(o)
			if err != nil {
				t.Fatal(err)
			}
			w := want(jobs, o)
			if o.Before > 0 {
				w = slices.DeleteFunc(w, func(id uint64) bool { return id >= o.Before })
			}
			if !reflect.DeepEqual(ids(got), w) || next != 0 {
				t.Errorf("List(%+v) = %v, next %d; want %v, next 0", o, ids(got), next, w)
			}
		})
	}
}

// TestListPages follows next through every filter, page size and scan
// bound: each match is returned exactly once, in order, pages never
// exceed the limit, and a last page says so.
func TestListPages(t *testing.T) {
	s := open(t)
	jobs := listFixture(t, s)
	filters := map[string]ListOptions{
		"all":             {},
		"state":           {State: Queued},
		"label":           {Labels: map[string]string{"gpu": "yes"}},
		"state and label": {State: Completed, Labels: map[string]string{"team": "a"}},
		"nothing":         {Labels: map[string]string{"team": "z"}},
	}
	for name, f := range filters {
		for _, limit := range []int{1, 3, 7, 100} {
			for _, scan := range []int{0, 1, 2, 5} {
				t.Run(fmt.Sprintf("%s/limit %d/scan %d", name, limit, scan), func(t *testing.T) {
					o := f
					o.Limit, o.Scan = limit, scan
					w := want(jobs, o)
					got := []uint64{}
					for calls := 0; ; calls++ {
						if calls > 100 {
							t.Fatal("next never reached 0")
						}
						page, next, err := s.List(o)
						if err != nil {
							t.Fatal(err)
						}
						if len(page) > limit {
							t.Fatalf("page of %d jobs, limit %d", len(page), limit)
						}
						got = append(got, ids(page)...)
						if next == 0 {
							break
						}
						if o.Before != 0 && next >= o.Before {
							t.Fatalf("next %d does not move below %d", next, o.Before)
						}
						o.Before = next
					}
					if !reflect.DeepEqual(got, w) {
						t.Errorf("pages gave %v, want %v", got, w)
					}
				})
			}
		}
	}
}

func TestListNext(t *testing.T) {
	s := open(t)
	jobs := listFixture(t, s) // 8 completed: jobs 0, 4, ..., 28
	tests := map[string]struct {
		o        ListOptions
		n        int
		wantNext uint64
	}{
		"exactly limit matches": {ListOptions{State: Completed, Limit: 8}, 8, 0},
		"one more match":        {ListOptions{State: Completed, Limit: 7}, 7, jobs[4].ID},
		"scan bound reached":    {ListOptions{Labels: map[string]string{"gpu": "yes"}, Scan: 4}, 1, jobs[26].ID},
		"scan bound, no match":  {ListOptions{Labels: map[string]string{"team": "z"}, Scan: 10}, 0, jobs[20].ID},
		"scan bound at the end": {ListOptions{Scan: 30}, 30, 0},
		"no records left":       {ListOptions{Before: jobs[0].ID, Scan: 1}, 0, 0},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, next, err := s.List(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.n || next != tt.wantNext {
				t.Errorf("List(%+v) = %v, next %d; want %d jobs, next %d", tt.o, ids(got), next, tt.n, tt.wantNext)
			}
		})
	}
}

func TestListStable(t *testing.T) {
	s := open(t)
	jobs := listFixture(t, s)
	o := ListOptions{State: Queued, Limit: 4}
	first, next, err := s.List(o)
	if err != nil || next == 0 {
		t.Fatalf("first page %v, next %d, %v", ids(first), next, err)
	}
	// Between pages: new queued jobs arrive, a listed job and an unlisted
	// one leave the queue.
	for range 5 {
		submit(t, s, newJob(s, 1, t0))
	}
	move(t, s, first[0], Dispatched, nil)
	gone := jobs[2] // queued, older than the first page
	move(t, s, gone, Cancelled, nil)

	seen := map[uint64]bool{}
	for _, j := range first {
		seen[j.ID] = true
	}
	for o.Before = next; o.Before != 0; o.Before = next {
		var page []*Job
		page, next, err = s.List(o)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page {
			if seen[j.ID] || j.ID >= first[len(first)-1].ID || j.ID == gone.ID || j.State != Queued {
				t.Fatalf("job %d (%s) on a later page", j.ID, j.State)
			}
			seen[j.ID] = true
		}
	}
	for _, j := range jobs {
		if j.State == Queued && j.ID != gone.ID && !seen[j.ID] {
			t.Errorf("queued job %d never listed", j.ID)
		}
	}
}

func TestListUnknownState(t *testing.T) {
	s := open(t)
	if _, _, err := s.List(ListOptions{State: "paused"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("err = %v, want ErrInvalid", err)
	}
}

func TestCursor(t *testing.T) {
	for _, id := range []uint64{1, 2, 255, 1 << 40, 1<<64 - 1} {
		c := EncodeCursor(id)
		got, err := DecodeCursor(c)
		if err != nil || got != id {
			t.Errorf("DecodeCursor(EncodeCursor(%d)) = %d, %v", id, got, err)
		}
	}
	bad := map[string]string{
		"empty":        "",
		"not base64":   "!!!!",
		"padded":       EncodeCursor(5) + "=",
		"short":        "AQ",
		"long":         EncodeCursor(5) + "AA",
		"version":      "AgAAAAAAAAAF",
		"id 0":         EncodeCursor(0),
		"plain job id": "12",
		"newline":      EncodeCursor(5)[:11] + "\n",
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			if id, err := DecodeCursor(c); !errors.Is(err, ErrInvalid) {
				t.Errorf("DecodeCursor(%q) = %d, %v; want ErrInvalid", c, id, err)
			}
		})
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(EncodeCursor(42))
	f.Add("")
	f.Add("AQAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, c string) {
		id, err := DecodeCursor(c)
		if err != nil {
			return
		}
		if id == 0 || EncodeCursor(id) != c {
			t.Fatalf("DecodeCursor(%q) = %d, which encodes as %q", c, id, EncodeCursor(id))
		}
	})
}
