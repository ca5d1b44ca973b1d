package controller

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/cronspec"
	"jobsuite/controller/store"
)

// The /schedules routes (issue 17): cron schedules that create jobs.
// The scheduler holds and fires them (controller/sched/schedules.go);
// here a request becomes a store.Schedule, validated field by field,
// and a schedule becomes its view.

// scheduleNameRE is a schedule's name: safe in a URL path and a shell.
var scheduleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// decodeSchedule parses and validates POST /schedules. Errors name
// their field; the job template's fields are "job.<field>".
func decodeSchedule(body []byte, lim submitLimits) (store.Schedule, error) {
	var req api.ScheduleRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return store.Schedule{}, errors.New(`request body is empty; send a JSON schedule such as {"name": "backup", "cron": "0 3 * * *", "job": {"command": "backup.sh"}}`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			f = strings.Trim(f, `"`)
			return store.Schedule{}, badField(f, "is not a schedule field (known: name, cron, tz, overlap, catch_up, paused, job)")
		}
		return store.Schedule{}, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return store.Schedule{}, errors.New("request body holds more than one JSON value")
	}
	if !scheduleNameRE.MatchString(req.Name) {
		return store.Schedule{}, badField("name", "must be 1–63 letters, digits, '.', '_' or '-', starting with a letter or digit; got %q", req.Name)
	}
	if req.TZ != "" {
		if _, err := cronspec.Parse("@hourly", req.TZ); err != nil {
			return store.Schedule{}, badField("tz", "%s", strings.TrimPrefix(err.Error(), cronspec.ErrInvalid.Error()+": "))
		}
	}
	if _, err := cronspec.Parse(req.Cron, req.TZ); err != nil {
		return store.Schedule{}, badField("cron", "%s", strings.TrimPrefix(err.Error(), cronspec.ErrInvalid.Error()+": "))
	}
	sc := store.Schedule{Name: req.Name, Cron: strings.Join(strings.Fields(req.Cron), " "), TZ: req.TZ, Paused: req.Paused,
		Overlap: store.OverlapSkip, CatchUp: store.CatchUpOne}
	switch req.Overlap {
	case "", api.OverlapSkip:
	case api.OverlapAllow, api.OverlapReplace:
		sc.Overlap = req.Overlap
	default:
		return store.Schedule{}, badField("overlap", "must be skip (the default: no new job while the previous one runs), allow or replace (cancel the previous one); got %q", req.Overlap)
	}
	switch req.CatchUp {
	case "", api.CatchUpOne:
	case api.CatchUpNone:
		sc.CatchUp = api.CatchUpNone
	default:
		return store.Schedule{}, badField("catch_up", "must be one (the default: after downtime, run the most recent missed occurrence once) or none; got %q", req.CatchUp)
	}
	if len(req.Job) == 0 || string(req.Job) == "null" {
		return store.Schedule{}, badField("job", `is required: the job to create, as POST /jobs takes it, such as {"command": "backup.sh"}`)
	}
	j, err := decodeSubmit(req.Job, lim)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return store.Schedule{}, badField("job."+fe.field, "%s", fe.msg)
		}
		return store.Schedule{}, badField("job", "%v", err)
	}
	switch {
	case j.IdempotencyKey != "":
		return store.Schedule{}, badField("job.idempotency_key", "a schedule creates a job per occurrence: they cannot share one key")
	case len(j.After()) > 0:
		return store.Schedule{}, badField("job.after", "a scheduled job cannot run after other jobs")
	}
	sc.Job = *j
	return sc, nil
}

// viewTemplate is a schedule's job template as the submit body it was
// made from.
func viewTemplate(j *store.Job) api.SubmitRequest {
	req := api.SubmitRequest{Name: j.Name, Command: j.Command, Labels: j.Labels, Env: j.Env, Dir: j.Dir, TTY: j.TTY}
	for _, u := range j.Notify() {
		req.Notify = append(req.Notify, webhookURL(u)) // the query string may hold a receiver's token
	}
	if j.Params != "" {
		req.Params, _ = json.Marshal(j.Params)
	}
	if name := priorityName(j.Priority); name != "" {
		req.Priority, _ = json.Marshal(name)
	} else {
		req.Priority, _ = json.Marshal(j.Priority)
	}
	if j.Timeout > 0 {
		t := j.Timeout.Seconds()
		req.Timeout = &t
	}
	retries, logs, cancellable := j.Retries, j.Logs, j.Cancellable
	req.Retries, req.Logs, req.Cancellable = &retries, &logs, &cancellable
	if j.Output == store.OutputSplit {
		req.Output = store.OutputSplit
	}
	if j.BackoffBase > 0 || j.BackoffMax > 0 {
		req.Backoff = &api.BackoffRequest{}
		if j.BackoffBase > 0 {
			b := j.BackoffBase.Seconds()
			req.Backoff.Base = &b
		}
		if j.BackoffMax > 0 {
			m := j.BackoffMax.Seconds()
			req.Backoff.Max = &m
		}
	}
	return req
}

// viewSchedule is sc as the API shows it, with its last job's state.
func (s *Server) viewSchedule(sc store.Schedule) api.ScheduleView {
	v := api.ScheduleView{
		Name: sc.Name, Cron: sc.Cron, TZ: sc.TZ, Overlap: sc.Overlap, CatchUp: sc.CatchUp, Paused: sc.Paused,
		Job: viewTemplate(&sc.Job), Next: timePtr(sc.Next), LastFired: timePtr(sc.LastFired), LastJob: sc.LastJob,
		Fired: sc.Fired, Skipped: sc.Skipped, CreatedAt: sc.CreatedAt, UpdatedAt: sc.UpdatedAt,
	}
	if v.TZ == "" {
		v.TZ = "UTC"
	}
	if sc.LastJob != 0 {
		if j := s.sched.Snapshot(sc.LastJob); j != nil {
			v.LastStatus = string(j.State)
		} else if j, err := s.st.Get(sc.LastJob); err == nil {
			v.LastStatus = string(j.State)
		}
	}
	return v
}

// scheduleFailed answers an error of the scheduler about a schedule.
func (s *Server) scheduleFailed(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, ErrNoSchedule):
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no schedule named " + name, Field: "name"})
	default:
		s.log.Error("schedule change failed", "schedule", name, "error", err)
		writeError(w, http.StatusServiceUnavailable, "schedule %s: %v", name, err)
	}
}

func (s *Server) handleCreateSchedule(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	sc, err := decodeSchedule(body, s.limits())
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	name := sc.Name
	sc, err = s.sched.CreateSchedule(sc)
	switch {
	case errors.Is(err, ErrScheduleExists):
		writeJSON(w, http.StatusConflict, api.Error{Error: "a schedule named " + name + " exists already; delete it first or pick another name", Field: "name"})
		return
	case errors.Is(err, cronspec.ErrInvalid): // decodeSchedule parsed it: not expected
		writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Field: "cron"})
		return
	case err != nil:
		s.log.Error("schedule create failed", "schedule", name, "error", err)
		writeError(w, http.StatusServiceUnavailable, "schedule %s: %v", name, err)
		return
	}
	s.auditDetail(r, auditSchedule, "schedule "+sc.Name, sc.Cron)
	w.Header().Set("Location", "/schedules/"+sc.Name)
	writeJSON(w, http.StatusCreated, s.viewSchedule(sc))
}

func (s *Server) handleSchedules(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	all := s.sched.Schedules()
	out := make([]api.ScheduleView, len(all))
	for i, sc := range all {
		out[i] = s.viewSchedule(sc)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleSchedule(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name := p.ByName("name")
	sc, err := s.sched.Schedule(name)
	if err != nil {
		s.scheduleFailed(w, name, err)
		return
	}
	writeJSON(w, http.StatusOK, s.viewSchedule(sc))
}

func (s *Server) handleDeleteSchedule(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name := p.ByName("name")
	sc, err := s.sched.DeleteSchedule(name)
	if err != nil {
		s.scheduleFailed(w, name, err)
		return
	}
	s.audit(r, auditUnschedule, "schedule "+name)
	writeJSON(w, http.StatusOK, s.viewSchedule(sc))
}

func (s *Server) handlePauseSchedule(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	s.pauseSchedule(w, r, p.ByName("name"), true)
}

func (s *Server) handleResumeSchedule(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	s.pauseSchedule(w, r, p.ByName("name"), false)
}

func (s *Server) pauseSchedule(w http.ResponseWriter, r *http.Request, name string, paused bool) {
	sc, err := s.sched.PauseSchedule(name, paused)
	if err != nil {
		s.scheduleFailed(w, name, err)
		return
	}
	action := auditResume
	if paused {
		action = auditPause
	}
	s.audit(r, action, "schedule "+name)
	writeJSON(w, http.StatusOK, s.viewSchedule(sc))
}

func (s *Server) handleRunSchedule(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name := p.ByName("name")
	run, err := s.sched.RunSchedule(name)
	if err != nil {
		s.scheduleFailed(w, name, err)
		return
	}
	s.audit(r, auditRunNow, fmt.Sprintf("schedule %s: job %d", name, run.Job.ID))
	w.Header().Set("Location", fmt.Sprintf("/jobs/%d", run.Job.ID))
	writeJSON(w, http.StatusCreated, api.ScheduleRun{Schedule: s.viewSchedule(run.Schedule), Job: viewJob(run.Job, "")})
}
