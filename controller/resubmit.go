package controller

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
)

// resubmission is a new job with what job j was submitted with: name,
// command, params, priority, timeout, retries, logs, cancellable,
// labels, env, dir and backoff, and the agent a fan-out child was
// pinned to. Not its idempotency key: a copy is a new submission on
// purpose.
func resubmission(j *store.Job) *store.Job {
	c := j.Clone()
	n := &store.Job{
		Name: c.Name, Command: c.Command, Params: c.Params, Priority: c.Priority,
		Timeout: c.Timeout, Retries: c.Retries, Logs: c.Logs, Cancellable: c.Cancellable,
		Labels: c.Labels, Env: c.Env, Dir: c.Dir, BackoffBase: c.BackoffBase, BackoffMax: c.BackoffMax,
	}
	if a := c.Agent(); a != "" {
		n.Orch().Agent = a
	}
	return n
}

// refanout is the fan-out of a parent run again: the same selector,
// batch and max failures, over the agents it selects now.
func refanout(f *store.Fanout) sched.FanoutSpec {
	spec := sched.FanoutSpec{Selector: f.Selector, IncludeOffline: f.IncludeOffline, Batch: sched.Count{N: f.Batch}}
	if f.MaxFailures != nil {
		spec.MaxFailures = sched.Count{N: *f.MaxFailures}
	}
	return spec
}

// handleResubmit runs a job again: it queues a new job made like the
// one named in the body (which may be in any state) and answers it, 201.
func (s *Server) handleResubmit(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", 4<<10)
			return
		}
		writeError(w, http.StatusBadRequest, "reading request body: %v", err)
		return
	}
	var req api.ResubmitRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.JobID == 0 {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: `the body must be {"job_id": N}, the job to run again`, Field: "job_id"})
		return
	}
	orig, ok := s.getJob(w, req.JobID)
	if !ok {
		return
	}
	audit := s.auditEntry(r, auditResubmit)
	audit.Detail = "a copy of job " + strconv.FormatUint(req.JobID, 10)
	if orig.Fanout() != nil { // a fan-out runs again as a fan-out
		s.submitFanout(w, resubmission(orig), refanout(orig.Fanout()), audit)
		return
	}
	j, _, err := s.sched.Submit(resubmission(orig), audit)
	if err != nil {
		s.log.Error("resubmit failed", "job", req.JobID, "error", err)
		writeError(w, http.StatusServiceUnavailable, "the job could not be stored: %v", err)
		return
	}
	s.logAudit(audit)
	w.Header().Set("Location", "/jobs/"+strconv.FormatUint(j.ID, 10))
	writeJSON(w, http.StatusCreated, viewJob(j, ""))
}
