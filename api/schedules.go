package api

import (
	"encoding/json"
	"time"
)

// Overlap and catch-up policies of a schedule (ScheduleRequest).
const (
	OverlapSkip    = "skip"    // the previous job has not ended: create nothing (default)
	OverlapAllow   = "allow"   // create the job anyway
	OverlapReplace = "replace" // cancel the previous job, then create
	CatchUpOne     = "one"     // after downtime, run the most recent missed occurrence once (default)
	CatchUpNone    = "none"    // after downtime, skip what was missed
)

// ScheduleRequest is the body of POST /schedules: a cron schedule that
// creates Job (the body POST /jobs takes, without idempotency_key and
// after) at each occurrence.
type ScheduleRequest struct {
	Name    string          `json:"name"`
	Cron    string          `json:"cron"`               // 5 fields, @hourly-style descriptors, or @every 90s
	TZ      string          `json:"tz,omitempty"`       // IANA zone; default UTC
	Overlap string          `json:"overlap,omitempty"`  // skip (default), allow, replace
	CatchUp string          `json:"catch_up,omitempty"` // one (default), none
	Paused  bool            `json:"paused,omitempty"`
	Job     json.RawMessage `json:"job"` // a SubmitRequest
}

// ScheduleView is a schedule as the API shows it.
type ScheduleView struct {
	Name    string        `json:"name"`
	Cron    string        `json:"cron"`
	TZ      string        `json:"tz"`
	Overlap string        `json:"overlap"`
	CatchUp string        `json:"catch_up"`
	Paused  bool          `json:"paused"`
	Job     SubmitRequest `json:"job"` // the template of the jobs it creates
	// Next is the occurrence it waits for; absent while paused.
	Next *time.Time `json:"next,omitempty"`
	// LastFired is the occurrence the last job stands for (the time of
	// a run-now); LastJob that job, LastStatus its state.
	LastFired  *time.Time `json:"last_fired,omitempty"`
	LastJob    uint64     `json:"last_job,omitempty"`
	LastStatus string     `json:"last_status,omitempty"`
	Fired      uint64     `json:"fired"`   // jobs created
	Skipped    uint64     `json:"skipped"` // occurrences that created none (overlap skip, missed while down)
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

// ScheduleRun is the answer of POST /schedules/:name/run: the job
// created and the schedule after it.
type ScheduleRun struct {
	Schedule ScheduleView `json:"schedule"`
	Job      JobView      `json:"job"`
}
