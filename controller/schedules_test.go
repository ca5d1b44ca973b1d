package controller_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// Creating a schedule checks every field and names the one at fault.
func TestScheduleValidation(t *testing.T) {
	c := startCluster(t)
	tests := map[string]struct {
		body  string
		field string
	}{
		"no name":          {`{"cron": "@hourly", "job": {"command": "x"}}`, "name"},
		"bad name":         {`{"name": "a/b", "cron": "@hourly", "job": {"command": "x"}}`, "name"},
		"no cron":          {`{"name": "a", "job": {"command": "x"}}`, "cron"},
		"six fields":       {`{"name": "a", "cron": "0 0 0 * * *", "job": {"command": "x"}}`, "cron"},
		"sub-second every": {`{"name": "a", "cron": "@every 500ms", "job": {"command": "x"}}`, "cron"},
		"unknown zone":     {`{"name": "a", "cron": "@hourly", "tz": "Mars/Olympus", "job": {"command": "x"}}`, "tz"},
		"bad overlap":      {`{"name": "a", "cron": "@hourly", "overlap": "queue", "job": {"command": "x"}}`, "overlap"},
		"bad catch-up":     {`{"name": "a", "cron": "@hourly", "catch_up": "all", "job": {"command": "x"}}`, "catch_up"},
		"no job":           {`{"name": "a", "cron": "@hourly"}`, "job"},
		"job field":        {`{"name": "a", "cron": "@hourly", "job": {"command": "x", "priority": "urgent"}}`, "job.priority"},
		"job without cmd":  {`{"name": "a", "cron": "@hourly", "job": {}}`, "job.command"},
		"idempotency key":  {`{"name": "a", "cron": "@hourly", "job": {"command": "x", "idempotency_key": "k"}}`, "job.idempotency_key"},
		"after":            {`{"name": "a", "cron": "@hourly", "job": {"command": "x", "after": [1]}}`, "job.after"},
		"unknown field":    {`{"name": "a", "cron": "@hourly", "every": "1h", "job": {"command": "x"}}`, "every"},
	}
	for name, tc := range tests {
		code, body := c.do("POST", "/schedules", tc.body)
		var e api.Error
		_ = json.Unmarshal(body, &e)
		if code != 400 || e.Field != tc.field {
			t.Errorf("%s: %d %s, want 400 naming field %s", name, code, body, tc.field)
		}
	}
	good := `{"name": "nightly", "cron": "0 3 * * *", "tz": "Europe/Paris", "job": {"command": "backup.sh", "priority": "high"}}`
	if code, body := c.do("POST", "/schedules", good); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, _ := c.do("POST", "/schedules", good); code != 409 {
		t.Errorf("create twice: %d, want 409", code)
	}
	var v api.ScheduleView
	c.getJSON("/schedules/nightly", &v)
	if v.Overlap != "skip" || v.CatchUp != "one" || v.TZ != "Europe/Paris" || v.Next == nil || v.Job.Command != "backup.sh" || string(v.Job.Priority) != `"high"` {
		t.Errorf("the schedule: %+v", v)
	}
	// 03:00 in Paris is 01:00 or 02:00 UTC.
	if h := v.Next.UTC().Hour(); h != 1 && h != 2 {
		t.Errorf("next occurrence %v is not 03:00 in Paris", v.Next)
	}
	for _, p := range []string{"/schedules/none", "/schedules/none/pause", "/schedules/none/run"} {
		method := "POST"
		if p == "/schedules/none" {
			method = "GET"
		}
		if code, _ := c.do(method, p, ""); code != 404 {
			t.Errorf("%s %s: %d, want 404", method, p, code)
		}
	}
}

// One firing on the real clock: an @every 1s schedule creates a job
// that an agent runs, linked to its schedule; pause stops it, run-now
// creates one at once, delete removes the schedule and keeps the jobs.
func TestScheduleRealClock(t *testing.T) {
	c := startCluster(t, "agent-1")
	code, body := c.do("POST", "/schedules", `{"name": "tick", "cron": "@every 1s", "job": {"command": "echo tick"}}`)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var v api.ScheduleView
	c.waitFor("the schedule to fire", func() bool {
		c.getJSON("/schedules/tick", &v)
		return v.LastJob != 0
	})
	j := c.waitState(v.LastJob, "completed")
	var full api.JobView
	c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &full)
	if full.Schedule != "tick" || c.logs(j.JobID) != "tick\n" {
		t.Errorf("the fired job: schedule %q, output %q", full.Schedule, c.logs(j.JobID))
	}

	if code, body := c.do("POST", "/schedules/tick/pause", ""); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}
	var run api.ScheduleRun
	code, body = c.do("POST", "/schedules/tick/run", "")
	if err := json.Unmarshal(body, &run); code != 201 || err != nil || run.Job.Schedule != "tick" || !run.Schedule.Paused {
		t.Fatalf("run now: %d %s", code, body)
	}
	c.waitState(run.Job.JobID, "completed")
	var list []api.ScheduleView
	c.getJSON("/schedules", &list)
	if len(list) != 1 || list[0].Name != "tick" || list[0].LastJob != run.Job.JobID {
		t.Errorf("list: %+v", list)
	}
	if code, _ := c.do("DELETE", "/schedules/tick", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := c.do("GET", "/schedules/tick", ""); code != 404 {
		t.Errorf("after delete: %d", code)
	}
	if j := c.job(run.Job.JobID); j.Status != "completed" {
		t.Errorf("the job after its schedule was deleted: %s", j.Status)
	}
}

// A schedule survives kill -9 of a real controller process, and never
// fires twice for one occurrence: an @every 1s schedule runs while the
// controller is killed at random moments and restarted; afterwards every
// job it created stands for a different occurrence, and the schedule
// counts exactly the jobs that exist (a job is never durable without
// the schedule's advance, nor the advance without the job).
func TestCrashSchedule(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds the binary; skipped with -short")
	}
	work := t.TempDir()
	p, client := startCrashController(t, work)
	// No agent: the jobs stay queued, so allow lets every occurrence
	// create one.
	code, body, err := client.do("POST", "/schedules", `{"name": "tick", "cron": "@every 1s", "overlap": "allow", "job": {"command": "true"}}`)
	if err != nil || code != 201 {
		t.Fatalf("create: %d %s %v", code, body, err)
	}
	fired := func() uint64 {
		code, body, err := client.do("GET", "/schedules/tick", "")
		if err != nil || code != 200 {
			return 0
		}
		var v api.ScheduleView
		_ = json.Unmarshal(body, &v)
		return v.Fired
	}
	waitFired := func(above uint64) {
		deadline := time.Now().Add(waitLimit)
		for fired() <= above {
			if time.Now().After(deadline) {
				t.Fatalf("the schedule did not fire past %d within %v", above, waitLimit)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for range 4 {
		waitFired(fired())
		// Kill at a random moment between two occurrences, or during one.
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
		p.kill()
		p.start(client)
	}
	waitFired(fired())
	p.stop()

	st, err := store.Open(p.data, store.Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	scheds, err := st.Schedules()
	if err != nil || len(scheds) != 1 {
		t.Fatalf("schedules stored: %+v %v", scheds, err)
	}
	jobs, _, err := st.List(store.ListOptions{Limit: 10000, Match: func(j *store.Job) bool { return j.Schedule() == "tick" }})
	if err != nil {
		t.Fatal(err)
	}
	occurrences := map[string]uint64{}
	var last uint64
	for _, j := range jobs {
		evs, err := st.Events(j.ID)
		if err != nil || len(evs) == 0 {
			t.Fatalf("events of job %d: %v", j.ID, err)
		}
		occ, ok := strings.CutPrefix(evs[0].Message, "schedule tick: occurrence ")
		if !ok {
			t.Fatalf("job %d's first event: %q", j.ID, evs[0].Message)
		}
		if prev, dup := occurrences[occ]; dup {
			t.Errorf("occurrence %s fired twice: jobs %d and %d", occ, prev, j.ID)
		}
		occurrences[occ] = j.ID
		last = max(last, j.ID)
	}
	sc := scheds[0]
	if sc.Fired != uint64(len(jobs)) || sc.LastJob != last {
		t.Errorf("the schedule counts %d jobs, last %d; the store holds %d, last %d", sc.Fired, sc.LastJob, len(jobs), last)
	}
	t.Logf("%d starts, %d occurrences fired, %d skipped", p.starts, len(jobs), sc.Skipped)
	if len(jobs) < 5 {
		t.Errorf("only %d firings", len(jobs))
	}
}
