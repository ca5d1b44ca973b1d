package controller

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// listServer is a Server with just a store holding 12 jobs: odd ones
// completed, every third labelled gpu=yes, all os=linux. It returns the
// IDs oldest first.
func listServer(t *testing.T) (*Server, []uint64) {
	t.Helper()
	st := testStore(t)
	var ids []uint64
	now := time.Now()
	for i := range 12 {
		j := &store.Job{ID: st.NextID(), Command: "true", State: store.Queued, CreatedAt: now, QueuedAt: now,
			Labels: map[string]string{"os": "linux"}}
		if i%3 == 0 {
			j.Labels["gpu"] = "yes"
		}
		if err := applyAll(st, store.NewTransition(j, store.Event{Type: "submitted"})); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			next := j.Clone()
			next.State, next.FinishedAt = store.Completed, now
			if err := applyAll(st, store.NewTransition(next, store.Event{Type: "finished"})); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, j.ID)
	}
	return &Server{log: testLog(t, "ctl"), st: st}, ids
}

// list calls handleList with query and returns the status, the job IDs
// of a 200 answer (or the error body's field) and X-Next-Cursor.
func list(t *testing.T, s *Server, query string) (code int, ids []uint64, field, next string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.handleList(rec, httptest.NewRequest("GET", "/jobs?"+query, nil), nil)
	if rec.Code != http.StatusOK {
		var e api.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("error answer %q: %v", rec.Body, err)
		}
		return rec.Code, nil, e.Field, rec.Header().Get("X-Next-Cursor")
	}
	var jobs []api.JobView // a bare array, as job_suite clients expect
	if err := json.Unmarshal(rec.Body.Bytes(), &jobs); err != nil {
		t.Fatalf("answer %q is not a job array: %v", rec.Body, err)
	}
	ids = []uint64{}
	for _, j := range jobs {
		ids = append(ids, j.JobID)
	}
	return rec.Code, ids, "", rec.Header().Get("X-Next-Cursor")
}

func TestListQuery(t *testing.T) {
	s, id := listServer(t)
	tests := map[string]struct {
		query    string
		want     []uint64
		wantNext bool
	}{
		"all":                   {"", []uint64{id[11], id[10], id[9], id[8], id[7], id[6], id[5], id[4], id[3], id[2], id[1], id[0]}, false},
		"status":                {"status=completed", []uint64{id[11], id[9], id[7], id[5], id[3], id[1]}, false},
		"label":                 {"label=gpu%3Dyes", []uint64{id[9], id[6], id[3], id[0]}, false},
		"two labels":            {"label=gpu%3Dyes&label=os%3Dlinux", []uint64{id[9], id[6], id[3], id[0]}, false},
		"same label twice":      {"label=gpu%3Dyes&label=gpu%3Dyes", []uint64{id[9], id[6], id[3], id[0]}, false},
		"status and label":      {"status=queued&label=gpu%3Dyes", []uint64{id[6], id[0]}, false},
		"empty label value":     {"label=gpu%3D", []uint64{}, false},
		"limit":                 {"status=completed&limit=2", []uint64{id[11], id[9]}, true},
		"limit, last page":      {"status=completed&limit=6", []uint64{id[11], id[9], id[7], id[5], id[3], id[1]}, false},
		"before (job_suite)":    {"before=" + strconv.FormatUint(id[3], 10), []uint64{id[2], id[1], id[0]}, false},
		"cursor":                {"cursor=" + store.EncodeCursor(id[3]) + "&status=completed", []uint64{id[1]}, false},
		"cursor and label":      {"cursor=" + store.EncodeCursor(id[9]) + "&label=gpu%3Dyes&limit=1", []uint64{id[6]}, true},
		"cursor before the end": {"cursor=" + store.EncodeCursor(id[0]), []uint64{}, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, got, field, next := list(t, s, tt.query)
			if code != http.StatusOK {
				t.Fatalf("status %d, field %q", code, field)
			}
			if !reflect.DeepEqual(got, tt.want) || (next != "") != tt.wantNext {
				t.Errorf("got %v, next %q; want %v, next given %v", got, next, tt.want, tt.wantNext)
			}
		})
	}
}

func TestListFollowsCursor(t *testing.T) {
	s, id := listServer(t)
	q := url.Values{"limit": {"1"}, "label": {"gpu=yes"}}
	var got []uint64
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("the cursor never ends")
		}
		code, ids, field, next := list(t, s, q.Encode())
		if code != http.StatusOK {
			t.Fatalf("status %d, field %q", code, field)
		}
		got = append(got, ids...)
		if next == "" {
			break
		}
		q.Set("cursor", next)
	}
	if want := []uint64{id[9], id[6], id[3], id[0]}; !reflect.DeepEqual(got, want) {
		t.Errorf("pages gave %v, want %v", got, want)
	}
}

func TestListBadQuery(t *testing.T) {
	s, _ := listServer(t)
	tests := map[string]struct{ query, field string }{
		"status":                {"status=paused", "status"},
		"limit":                 {"limit=0", "limit"},
		"before":                {"before=x", "before"},
		"label without value":   {"label=gpu", "label"},
		"label without key":     {"label=%3Dyes", "label"},
		"label key with space":  {"label=a+b%3Dc", "label"},
		"label twice, differs":  {"label=gpu%3Dyes&label=gpu%3Dno", "label"},
		"cursor":                {"cursor=12", "cursor"},
		"cursor, not base64":    {"cursor=%21%21", "cursor"},
		"cursor and before":     {"cursor=" + store.EncodeCursor(5) + "&before=5", "cursor"},
		"cursor of version two": {"cursor=AgAAAAAAAAAF", "cursor"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, _, field, _ := list(t, s, tt.query)
			if code != http.StatusBadRequest || field != tt.field {
				t.Errorf("status %d, field %q; want 400, %q", code, field, tt.field)
			}
		})
	}
}
