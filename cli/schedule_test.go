package cli

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"jobsuite/api"
)

// serveSchedules is the fake controller's /schedules: a create is
// recorded as a submission; schedule "backup" exists.
func (f *fakeController) serveSchedules(w http.ResponseWriter, r *http.Request, parts []string) {
	next := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	v := api.ScheduleView{Name: "backup", Cron: "0 3 * * *", TZ: "UTC", Overlap: "skip", CatchUp: "one",
		Job: api.SubmitRequest{Name: "backup", Command: "backup.sh"}, Next: &next, LastJob: 41, LastStatus: "completed", Fired: 12}
	switch {
	case r.Method == "POST" && len(parts) == 1:
		var body map[string]any
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			fakeError(w, http.StatusBadRequest, "malformed JSON")
			return
		}
		f.mu.Lock()
		f.submits = append(f.submits, body)
		f.mu.Unlock()
		v.Name = body["name"].(string)
		fakeJSON(w, http.StatusCreated, v)
	case r.Method == "GET" && len(parts) == 1:
		fakeJSON(w, http.StatusOK, []api.ScheduleView{v})
	case len(parts) >= 2 && parts[1] != "backup":
		fakeError(w, http.StatusNotFound, "no schedule named "+parts[1], "field", "name")
	case r.Method == "POST" && len(parts) == 3 && parts[2] == "run":
		fakeJSON(w, http.StatusCreated, api.ScheduleRun{Schedule: v, Job: api.JobView{JobID: 42, Status: "queued", Schedule: "backup"}})
	case r.Method == "POST" && len(parts) == 3 && parts[2] == "pause":
		v.Paused, v.Next = true, nil
		fakeJSON(w, http.StatusOK, v)
	default:
		fakeJSON(w, http.StatusOK, v)
	}
}

// schedule create sends the schedule with the job that submit's flags
// describe, named after the schedule.
func TestScheduleCreateBody(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	args := []string{"-name", "backup", "-cron", "0 3 * * *", "-tz", "Europe/Paris", "-overlap", "replace", "-catch-up", "none",
		"-priority", "high", "-timeout", "1h", "-label", "role=db", "--", "backup.sh", "--full"}
	if code := (&ScheduleCreateCommand{Meta: m}).Run(args); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	want := map[string]any{"name": "backup", "cron": "0 3 * * *", "tz": "Europe/Paris", "overlap": "replace", "catch_up": "none",
		"job": map[string]any{"name": "backup", "command": "backup.sh --full", "priority": "high", "timeout": json.Number("3600"),
			"labels": map[string]any{"role": "db"}}}
	if got := f.lastSubmit(); !reflect.DeepEqual(got, want) {
		t.Errorf("body\n got %v\nwant %v", got, want)
	}
	if !strings.HasPrefix(out.String(), "Schedule backup created: 0 3 * * * (UTC), next run ") {
		t.Errorf("stdout %q", out)
	}
}

func TestScheduleUsageErrors(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		args []string
		err  string
	}{
		"no name":         {[]string{"-cron", "@daily", "true"}, "-name is required"},
		"no cron":         {[]string{"-name", "a", "true"}, "-cron is required"},
		"no command":      {[]string{"-name", "a", "-cron", "@daily"}, "a command is required"},
		"bad overlap":     {[]string{"-name", "a", "-cron", "@daily", "-overlap", "queue", "true"}, "-overlap"},
		"bad catch-up":    {[]string{"-name", "a", "-cron", "@daily", "-catch-up", "all", "true"}, "-catch-up"},
		"idempotency key": {[]string{"-name", "a", "-cron", "@daily", "-idempotency-key", "k", "true"}, "idempotency-key"},
	}
	for name, tc := range tests {
		m, _, errb := clientTestMeta()
		if code := (&ScheduleCreateCommand{Meta: m}).Run(tc.args); code != ExitUsage || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%s: exit %d, stderr %q; want usage error %q", name, code, errb, tc.err)
		}
	}
	if got := f.lastSubmit(); got != nil {
		t.Errorf("a schedule reached the controller: %v", got)
	}
}

// The commands on one schedule say what they did.
func TestScheduleActions(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		verb string
		arg  string
		code int
		out  string
	}{
		"run-now": {"run-now", "backup", ExitOK, "Job 42 queued from schedule backup\n"},
		"pause":   {"pause", "backup", ExitOK, "Schedule backup paused\n"},
		"delete":  {"delete", "backup", ExitOK, "Schedule backup deleted (it had created 12 jobs)\n"},
		"show":    {"show", "backup", ExitOK, "Name:"},
		"unknown": {"show", "nope", ExitError, ""},
	}
	for name, tc := range tests {
		m, out, errb := clientTestMeta()
		code := scheduleAct(m, tc.verb).Run([]string{tc.arg})
		if code != tc.code || !strings.HasPrefix(out.String(), tc.out) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, code, out, errb)
		}
		if tc.code != ExitOK && !strings.Contains(errb.String(), "no schedule named nope") {
			t.Errorf("%s: stderr %q", name, errb)
		}
	}
	m, out, _ := clientTestMeta()
	if code := (&ScheduleListCommand{Meta: m}).Run(nil); code != ExitOK || !strings.Contains(out.String(), "backup") || !strings.Contains(out.String(), "LAST-STATE") {
		t.Errorf("list: %d %q", code, out)
	}
}
