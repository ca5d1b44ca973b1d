package controller

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// writeJobJSON writes the bytes writeJSON writes, for every shape of
// view it covers, and hands the others to writeJSON.
func TestJobJSON(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 17, 4, 5, 123456789, time.UTC)
	zoned := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -7*3600-30*60))
	yes, no, code, dur := true, false, 3, 1e-7
	fresh := func() api.JobView {
		return viewJob(&store.Job{ID: 12, Name: "true", Command: "true", Priority: 50, State: store.Queued, Logs: true,
			Cancellable: true, CreatedAt: t0, QueuedAt: t0}, "")
	}
	tests := map[string]struct {
		mod      func(v *api.JobView)
		fallback bool // writeJSON's path
	}{
		"a fresh job":     {mod: func(*api.JobView) {}},
		"a numeric prio":  {mod: func(v *api.JobView) { v.Priority, v.PriorityValue = 33, 33 }},
		"a negative exit": {mod: func(v *api.JobView) { v.ExitCode = &code; *v.ExitCode = -1 }},
		"no queued_at":    {mod: func(v *api.JobView) { v.QueuedAt = nil }},
		"escaped strings": {mod: func(v *api.JobView) { v.Name, v.Command = "<b>&\"x\"</b>\u2028\t\x01é", "echo '\xff' \\ 世界" }},
		"labels and env": {mod: func(v *api.JobView) {
			v.Labels, v.Env = map[string]string{"z": "1", "a": "<2>", "m": ""}, map[string]string{"B": "x", "A": "y"}
		}},
		"empty maps": {mod: func(v *api.JobView) { v.Labels, v.Env = map[string]string{}, map[string]string{} }},
		"every scalar": {mod: func(v *api.JobView) {
			v.Reason, v.CancelRequested, v.Dir, v.IdempotencyKey, v.Output = "waiting for job 3", true, "/tmp", "key-1", "split"
			v.Params, v.Retries, v.MaxRetries, v.Logs, v.Cancellable, v.LogBytes = "-x 1", 4, 4, false, false, 1<<40
			v.Schedule, v.Parent, v.Agent, v.AfterAny, v.After = "nightly", 7, "agent-1", true, []uint64{3, 4}
			v.Notify = []string{"https://example.com/hook", "https://x/<y>"}
			v.StartedAt, v.FinishedAt, v.RetryAt, v.Duration = &zoned, &t0, &t0, &dur
			v.ExitCode, v.Attempt = &code, 2
		}},
		"tty on":               {mod: func(v *api.JobView) { v.TTY = &yes }},
		"tty off":              {mod: func(v *api.JobView) { v.TTY = &no }},
		"a fractional timeout": {mod: func(v *api.JobView) { v.Timeout = 0.25 }},
		"a tiny timeout":       {mod: func(v *api.JobView) { v.Timeout = 1e-9 }},
		"a huge timeout":       {mod: func(v *api.JobView) { v.Timeout = 3.1536e21 }},
		"a timeout of 5 µs":    {mod: func(v *api.JobView) { v.Timeout = 5e-6 }},
		"a whole timeout":      {mod: func(v *api.JobView) { v.Timeout = 31536000 }},
		"nil attempts":         {mod: func(v *api.JobView) { v.Attempts = nil }},
		"attempts":             {mod: func(v *api.JobView) { v.Attempts = []api.AttemptView{{Number: 1, Agent: "a"}} }, fallback: true},
		"a result":             {mod: func(v *api.JobView) { v.Result = &api.ResultView{Outcome: "completed"} }, fallback: true},
		"a fan-out":            {mod: func(v *api.JobView) { v.Fanout = &api.FanoutView{Children: 2} }, fallback: true},
		"live":                 {mod: func(v *api.JobView) { v.Live = &api.LiveView{} }, fallback: true},
		"an odd priority":      {mod: func(v *api.JobView) { v.Priority = 2.5 }, fallback: true},
		"a year past 9999":     {mod: func(v *api.JobView) { v.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, fallback: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			v := fresh()
			tt.mod(&v)
			want := httptest.NewRecorder()
			writeJSON(want, 201, v)
			got := httptest.NewRecorder()
			writeJobJSON(got, 201, &v)
			if got.Code != want.Code || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				t.Errorf("writeJobJSON wrote %d %q:\n%s\nwriteJSON wrote %d %q:\n%s", got.Code, got.Header().Get("Content-Type"), got.Body.Bytes(),
					want.Code, want.Header().Get("Content-Type"), want.Body.Bytes())
			}
			if _, ok := appendJobView(nil, &v); ok == tt.fallback {
				t.Errorf("appendJobView ok = %v, want %v", ok, !tt.fallback)
			}
		})
	}
}

// The hand-written answer does not allocate once its buffer is pooled.
func TestJobJSONAllocs(t *testing.T) {
	v := viewJob(&store.Job{ID: 12, Name: "true", Command: "true", Priority: 75, State: store.Queued, Logs: true,
		Labels: map[string]string{"team": "a"}, CreatedAt: time.Now(), QueuedAt: time.Now()}, "")
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := appendJobView(buf[:0], &v); !ok {
			t.Fatal("appendJobView refused a fresh job")
		}
	}); n != 0 {
		t.Errorf("%v allocations per view, want 0", n)
	}
}

// A fresh job's view costs one allocation, its queued_at (the view
// itself stays on the caller's stack when writeJobJSON takes it; the
// unset times and the priority's name cost nothing).
func TestViewJobAllocs(t *testing.T) {
	j := &store.Job{ID: 12, Name: "true", Command: "true", Priority: 75, State: store.Queued, Logs: true,
		CreatedAt: time.Now(), QueuedAt: time.Now()}
	if n := testing.AllocsPerRun(100, func() {
		v := viewJob(j, "")
		if v.Priority != "high" || v.QueuedAt == nil {
			t.Fatalf("view %+v", v)
		}
	}); n != 1 {
		t.Errorf("%v allocations per view, want 1", n)
	}
}

// priorityValue shows a priority as priorityName names it, or its number.
func TestPriorityValue(t *testing.T) {
	for p := -1; p <= 101; p++ {
		var want any = p
		if name := priorityName(p); name != "" {
			want = name
		}
		if got := priorityValue(p); got != want {
			t.Errorf("priorityValue(%d) = %#v, want %#v", p, got, want)
		}
	}
}

// The hand-written key checks of the submit path accept exactly what
// the regular expressions do.
func TestKeyMatchers(t *testing.T) {
	alphabet := "aZ09._/-=\x00é "
	var keys []string
	for _, a := range alphabet {
		keys = append(keys, string(a))
		for _, b := range alphabet {
			keys = append(keys, string(a)+string(b))
		}
	}
	for _, n := range []int{62, 63, 64, 127, 128, 129} {
		keys = append(keys, strings.Repeat("a", n), "_"+strings.Repeat("1", n-1), strings.Repeat("9", n))
	}
	keys = append(keys, "", "team", "k8s.io/name", "PATH", "_X1", "1X", "a b", "a\n")
	for _, k := range keys {
		if got, want := validLabelKey(k), labelKeyRE.MatchString(k); got != want {
			t.Errorf("validLabelKey(%q) = %v, the regexp says %v", k, got, want)
		}
		if got, want := validEnvKey(k), envKeyRE.MatchString(k); got != want {
			t.Errorf("validEnvKey(%q) = %v, the regexp says %v", k, got, want)
		}
	}
}

// decodePriority's shortcut gives what encoding/json's path gives.
func TestDecodePriority(t *testing.T) {
	tests := map[string]struct {
		want    int
		wantErr bool
	}{
		`"high"`: {want: 75}, `"low"`: {want: 25}, `"med"`: {want: 50}, `"HIGH"`: {want: 75}, `" mid "`: {want: 50},
		`"\u0068igh"`: {want: 75}, `"40"`: {want: 40}, `40`: {want: 40}, `0`: {want: 0}, `100`: {want: 100},
		`-0`: {want: 0}, `5e1`: {want: 50}, `50.0`: {want: 50}, `101`: {wantErr: true}, `-1`: {wantErr: true},
		`2.5`: {wantErr: true}, `"urgent"`: {wantErr: true}, `""`: {wantErr: true}, `true`: {wantErr: true},
		`99999999999999999999`: {wantErr: true},
	}
	for raw, tt := range tests {
		t.Run(raw, func(t *testing.T) {
			got, err := decodePriority(json.RawMessage(raw))
			if (err != nil) != tt.wantErr || err == nil && got != tt.want {
				t.Errorf("decodePriority(%s) = %d, %v; want %d (error: %v)", raw, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
