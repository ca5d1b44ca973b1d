package controller

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
)

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	p := new(time.Time) // not &t: that allocates t even when it is zero
	*p = t
	return p
}

func viewJob(j *store.Job, reason string) api.JobView {
	v := api.JobView{
		JobID: j.ID, Name: j.Name, Command: j.Command, Params: j.Params,
		PriorityValue: j.Priority, Status: string(j.State), Reason: j.Reason,
		Timeout: j.Timeout.Seconds(), Retries: j.Retries, MaxRetries: j.Retries,
		Logs: j.Logs, Cancellable: j.Cancellable, CancelRequested: j.CancelRequested,
		Labels: j.Labels, Env: j.Env, Dir: j.Dir, IdempotencyKey: j.IdempotencyKey, Output: "ordered", TTY: j.TTY,
		CreatedAt: j.CreatedAt, StartedAt: timePtr(j.StartedAt), FinishedAt: timePtr(j.FinishedAt),
		Attempt: len(j.Attempts), Attempts: make([]api.AttemptView, 0, len(j.Attempts)), LogBytes: j.LogBytes,
		After: j.After(), AfterAny: j.AfterAny(), Schedule: j.Schedule(), Parent: j.Parent(), Agent: j.Agent(),
	}
	if f := j.Fanout(); f != nil {
		v.Fanout = &api.FanoutView{
			Labels: f.Selector, IncludeDisconnected: f.IncludeOffline, Children: f.Children, FirstChild: f.FirstChild,
			Batch: f.Batch, MaxFailures: f.MaxFailures, Completed: f.Completed, Failed: f.Failed, Timeout: f.Timeout,
			Cancelled: f.Cancelled, Stopped: f.Stopped,
		}
	}
	for _, u := range j.Notify() {
		v.Notify = append(v.Notify, webhookURL(u))
	}
	if reason != "" {
		v.Reason = reason
	}
	if j.Output == store.OutputSplit {
		v.Output = store.OutputSplit
	}
	v.Priority = priorityValue(j.Priority)
	if j.State == store.Queued {
		v.QueuedAt = timePtr(j.QueuedAt)
	}
	if j.State == store.Waiting {
		v.RetryAt = timePtr(j.NotBefore)
	}
	if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		d := j.FinishedAt.Sub(j.StartedAt).Seconds()
		v.Duration = &d
	}
	for _, a := range j.Attempts {
		v.Attempts = append(v.Attempts, api.AttemptView{
			Number: a.Number, Agent: a.Agent, DispatchedAt: a.DispatchedAt,
			StartedAt: timePtr(a.StartedAt), FinishedAt: timePtr(a.FinishedAt), PID: a.PID,
			Outcome: string(a.Outcome), ExitCode: a.ExitCode, Signal: a.Signal, Error: a.Error,
			Duration: a.Duration.Seconds(), UserCPU: a.UserCPU.Seconds(), SystemCPU: a.SystemCPU.Seconds(),
			MaxRSS: a.MaxRSS, LogStart: a.LogStart, OutputBytes: a.OutputBytes, QueueLatency: queueLatency(a),
		})
	}
	for i := len(j.Attempts) - 1; i >= 0; i-- {
		a := j.Attempts[i]
		if a.Outcome == "" {
			continue
		}
		v.ExitCode = a.ExitCode
		v.Result = &api.ResultView{
			Outcome: string(a.Outcome), ExitCode: a.ExitCode, Signal: a.Signal, Error: a.Error,
			Duration: a.Duration.Seconds(), UserCPU: a.UserCPU.Seconds(), SystemCPU: a.SystemCPU.Seconds(),
			MaxRSS: a.MaxRSS,
		}
		break
	}
	return v
}

func queueLatency(a store.Attempt) float64 {
	if a.QueuedAt.IsZero() || a.DispatchedAt.Before(a.QueuedAt) {
		return 0
	}
	return a.DispatchedAt.Sub(a.QueuedAt).Seconds()
}

// jobID parses the :id parameter; it writes the error itself.
func jobID(w http.ResponseWriter, p httprouter.Params) (uint64, bool) {
	raw := p.ByName("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil || id == 0 {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "job id must be a positive integer, got " + strconv.Quote(raw), Field: "id"})
		return 0, false
	}
	return id, true
}

// getJob loads a job or writes 404/500.
func (s *Server) getJob(w http.ResponseWriter, id uint64) (*store.Job, bool) {
	j, err := s.st.Get(id)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no job with id " + strconv.FormatUint(id, 10), JobID: id})
		return nil, false
	}
	if err != nil {
		s.log.Error("reading job", "job", id, "error", err)
		writeError(w, http.StatusInternalServerError, "reading job %d failed", id)
		return nil, false
	}
	return j, true
}

// readBody reads a request body of at most MaxBodyBytes: 413 beyond
// it, 400 if it cannot be read (the answer is written; ok is false).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (body []byte, ok bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", s.cfg.MaxBodyBytes)
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "reading request body: %v", err)
		return nil, false
	}
	return body, true
}

// writeDecodeError answers 400 for a body that did not decode, naming
// the field at fault when the decoder knows it.
func writeDecodeError(w http.ResponseWriter, err error) {
	var fe *fieldError
	if errors.As(err, &fe) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: fe.Error(), Field: fe.field})
		return
	}
	writeError(w, http.StatusBadRequest, "%v", err)
}

func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	job, fanout, err := decodeJob(body, s.limits())
	if err != nil {
		writeDecodeError(w, err)
		return
	}
	audit := s.auditEntry(r, auditSubmit) // stored with the job, if created
	if fanout != nil {
		s.submitFanout(w, job, *fanout, audit)
		return
	}
	j, created, err := s.sched.Submit(job, audit)
	if err != nil {
		s.submitFailed(w, err, 1)
		return
	}
	w.Header().Set("Location", "/jobs/"+strconv.FormatUint(j.ID, 10))
	if !created {
		if cur, err := s.st.Get(j.ID); err == nil {
			j = cur
		}
		v := viewJob(j, s.sched.Reason(j))
		writeJobJSON(w, http.StatusOK, &v)
		return
	}
	s.logAudit(audit)
	v := viewJob(j, "")
	writeJobJSON(w, http.StatusCreated, &v) // jobjson.go
}

// submitFanout creates a fan-out (its parent and children in one
// round) and answers with the parent and its children: 409 when no
// agent matches.
func (s *Server) submitFanout(w http.ResponseWriter, job *store.Job, spec sched.FanoutSpec, audit *store.AuditEntry) {
	p, children, created, err := s.sched.SubmitFanout(job, spec, audit)
	if errors.Is(err, ErrNoAgents) {
		writeJSON(w, http.StatusConflict, api.Error{Error: "field \"fanout\": " + err.Error(), Field: "fanout"})
		return
	}
	if err != nil {
		s.submitFailed(w, err, 1)
		return
	}
	w.Header().Set("Location", "/jobs/"+strconv.FormatUint(p.ID, 10))
	if !created { // the idempotency key's job, as it is now
		if cur, err := s.st.Get(p.ID); err == nil {
			p = cur
		}
		v := viewJob(p, s.sched.Reason(p))
		if p.Fanout() != nil {
			v.Children = childViews(s.children(p), func(c *store.Job) string { return c.Reason })
		}
		writeJSON(w, http.StatusOK, v)
		return
	}
	s.logAudit(audit)
	v := viewJob(p, "")
	v.Children = childViews(children, func(c *store.Job) string { return c.Reason })
	writeJSON(w, http.StatusCreated, v)
}

// childViews is the per-host table of a fan-out; nil children (not
// found) are left out.
func childViews(children []*store.Job, reason func(*store.Job) string) []api.ChildView {
	out := make([]api.ChildView, 0, len(children))
	for _, c := range children {
		if c == nil {
			continue
		}
		cv := api.ChildView{JobID: c.ID, Agent: c.Agent(), Status: string(c.State), Reason: reason(c)}
		for i := len(c.Attempts) - 1; i >= 0; i-- {
			if c.Attempts[i].Outcome != "" {
				cv.ExitCode = c.Attempts[i].ExitCode
				break
			}
		}
		out = append(out, cv)
	}
	return out
}

// children reads the children of fan-out parent p: the scheduler's
// latest version of those it holds, the store's of the others.
func (s *Server) children(p *store.Job) []*store.Job {
	out := s.sched.Children(p)
	for i, c := range out {
		if c != nil {
			continue
		}
		if j, err := s.st.Get(p.Fanout().FirstChild + uint64(i)); err == nil {
			out[i] = j
		}
	}
	return out
}

// submitFailed answers a submission the scheduler could not take: 507
// while the disk is nearly full (the client may retry later), else 503.
func (s *Server) submitFailed(w http.ResponseWriter, err error, jobs int) {
	if errors.Is(err, ErrNoDependency) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "field \"after\": " + err.Error() + " (a job can only run after jobs that exist)", Field: "after"})
		return
	}
	if errors.Is(err, ErrDiskLow) {
		writeError(w, http.StatusInsufficientStorage, "%v", err)
		return
	}
	s.log.Error("submit failed", "jobs", jobs, "error", err)
	writeError(w, http.StatusServiceUnavailable, "the job could not be stored: %v", err)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q := r.URL.Query()
	var o store.ListOptions
	if st := q.Get("status"); st != "" {
		switch state := store.State(st); state {
		case store.Queued, store.Waiting, store.Dispatched, store.Running, store.Completed, store.Failed, store.Timeout, store.Cancelled, store.Blocked:
			o.State = state
		default:
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "status must be one of queued, waiting, blocked, dispatched, running, completed, failed, timeout, cancelled; got " + strconv.Quote(st), Field: "status"})
			return
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "limit must be an integer from 1 to 1000, got " + strconv.Quote(l), Field: "limit"})
			return
		}
		o.Limit = n
	}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || !labelKeyRE.MatchString(k) {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "label must be key=value with a key of 1–63 letters, digits, '.', '_', '/' or '-', got " + strconv.Quote(l), Field: "label"})
			return
		}
		if prev, dup := o.Labels[k]; dup && prev != v {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "label " + strconv.Quote(k) + " is given twice with different values; no job can match", Field: "label"})
			return
		}
		if o.Labels == nil {
			o.Labels = map[string]string{}
		}
		o.Labels[k] = v
	}
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "before must be a job id, got " + strconv.Quote(b), Field: "before"})
			return
		}
		o.Before = n
	}
	if c := q.Get("cursor"); c != "" {
		if o.Before != 0 {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "give cursor or before, not both", Field: "cursor"})
			return
		}
		n, err := store.DecodeCursor(c)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "cursor must be the X-Next-Cursor header of an earlier answer, got " + strconv.Quote(c), Field: "cursor"})
			return
		}
		o.Before = n
	}
	match, ok := searchFilter(w, q) // search.go
	if !ok {
		return
	}
	o.Match = match
	jobs, next, err := s.st.List(o)
	if err != nil {
		s.log.Error("listing jobs", "error", err)
		writeError(w, http.StatusInternalServerError, "listing jobs failed")
		return
	}
	if next != 0 {
		// The body stays a bare array for the original job_suite clients;
		// the next page is named in a header. It may be empty while the
		// header is set (the scan bound was reached): keep following.
		w.Header().Set("X-Next-Cursor", store.EncodeCursor(next))
	}
	out := make([]api.JobView, 0, len(jobs))
	for _, j := range jobs {
		v := viewJob(j, "")
		v.LogBytes = s.sched.OutputSoFar(j)
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id, ok := jobID(w, p)
	if !ok {
		return
	}
	q := r.URL.Query()
	wantLive := q.Get("live") == "1" || q.Get("live") == "true"
	wait := 500 * time.Millisecond
	if raw := q.Get("wait"); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d <= 0 || d > 30*time.Second {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "wait must be a duration such as 500ms, at most 30s; got " + strconv.Quote(raw), Field: "wait"})
			return
		}
		wait = d
	}
	j, ok := s.getJob(w, id)
	if !ok {
		return
	}
	v := viewJob(j, s.sched.Reason(j))
	v.LogBytes = s.sched.OutputSoFar(j)
	if j.Fanout() != nil {
		v.Children = childViews(s.children(j), func(c *store.Job) string {
			if r := s.sched.Reason(c); r != "" {
				return r
			}
			return c.Reason
		})
	}
	if wantLive {
		v.Live = s.live(r.Context(), id, wait)
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id, ok := jobID(w, p)
	if !ok {
		return
	}
	j, pending, err := s.sched.Cancel(id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no job with id " + strconv.FormatUint(id, 10), JobID: id})
	case errors.Is(err, ErrFinished):
		writeJSON(w, http.StatusConflict, api.Error{Error: err.Error() + "; only queued, waiting or running jobs can be cancelled", Status: string(j.State), JobID: id})
	case errors.Is(err, ErrNotCancellable):
		writeJSON(w, http.StatusConflict, api.Error{Error: err.Error(), Status: string(j.State), JobID: id})
	case err != nil:
		s.log.Error("cancel failed", "job", id, "error", err)
		writeError(w, http.StatusServiceUnavailable, "cancel of job %d failed: %v", id, err)
	case pending:
		s.audit(r, auditCancel, "job "+strconv.FormatUint(id, 10))
		writeJSON(w, http.StatusAccepted, viewJob(j, ""))
	default:
		s.audit(r, auditCancel, "job "+strconv.FormatUint(id, 10))
		writeJSON(w, http.StatusOK, viewJob(j, ""))
	}
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id, ok := jobID(w, p)
	if !ok {
		return
	}
	evs, err := s.st.Events(id)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no job with id " + strconv.FormatUint(id, 10), JobID: id})
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading events failed")
		return
	}
	out := make([]api.Event, len(evs))
	for i, e := range evs {
		out[i] = api.Event{Seq: e.Seq, Time: e.Time, Type: e.Type, State: string(e.State), Attempt: e.Attempt, Agent: e.Agent, Message: e.Message}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleLogs writes a job's stored output as plain text, from ?offset=;
// with ?attempt=N only that attempt's output (what is stored of it so
// far), its range given in X-Log-Start and, once the attempt has ended,
// X-Log-End.
func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id, ok := jobID(w, p)
	if !ok {
		return
	}
	offset, ok := queryOffset(w, r)
	if !ok {
		return
	}
	j, ok := s.getJob(w, id)
	if !ok {
		return
	}
	stop := uint64(math.MaxUint64)
	if n, ok := queryAttempt(w, r, j); !ok {
		return
	} else if n > 0 {
		if cur := s.sched.Snapshot(id); cur != nil {
			j = cur // newer than the store's until its batch is durable
		}
		start, end, ended := attemptRange(j, n)
		offset = max(offset, start)
		w.Header().Set("X-Log-Start", strconv.FormatUint(start, 10))
		if ended {
			stop = end
			w.Header().Set("X-Log-End", strconv.FormatUint(end, 10))
		}
	}
	stop = min(stop, s.readLimit(id)) // a running attempt's final output (ws.go)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	for offset < stop {
		chunks, _, err := s.readLog(id, offset, 1<<20)
		if err != nil {
			s.log.Error("reading log", "job", id, "error", err)
			return
		}
		if len(chunks) == 0 {
			return
		}
		for _, c := range clipChunks(chunks, stop) {
			if _, err := w.Write(c.Data); err != nil {
				return
			}
			offset = c.Offset + uint64(len(c.Data))
		}
	}
}

// queryAttempt parses ?attempt=, a number of one of j's attempts; 0 when
// absent. It writes the error itself.
func queryAttempt(w http.ResponseWriter, r *http.Request, j *store.Job) (uint32, bool) {
	raw := r.URL.Query().Get("attempt")
	if raw == "" {
		return 0, true
	}
	n, err := strconv.ParseUint(raw, 10, 32)
	if err != nil || n == 0 {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "attempt must be a positive integer, got " + strconv.Quote(raw), Field: "attempt"})
		return 0, false
	}
	if int(n) > len(j.Attempts) {
		msg := fmt.Sprintf("job %d has %d attempts so far; attempt must be between 1 and %d", j.ID, len(j.Attempts), len(j.Attempts))
		if len(j.Attempts) == 0 {
			msg = fmt.Sprintf("job %d has not been dispatched yet: it has no attempt %d", j.ID, n)
		}
		writeJSON(w, http.StatusBadRequest, api.Error{Error: msg, Field: "attempt", JobID: j.ID})
		return 0, false
	}
	return uint32(n), true
}

// attemptRange is where attempt n of j (1-based, one it has) lies in the
// job's log: from start to end once it has ended (ended true), else from
// start on. An attempt's output ends where the next attempt's begins:
// output of an attempt that is no longer current is refused.
func attemptRange(j *store.Job, n uint32) (start, end uint64, ended bool) {
	a := j.Attempts[n-1]
	start = a.LogStart
	switch {
	case int(n) < len(j.Attempts):
		return start, j.Attempts[n].LogStart, true
	case a.Outcome != "" || j.State.Terminal():
		return start, max(start+a.OutputBytes, j.LogBytes), true
	}
	return start, 0, false
}

// clipChunks cuts chunks, in offset order, at stop.
func clipChunks(chunks []store.Chunk, stop uint64) []store.Chunk {
	for i, c := range chunks {
		if c.Offset >= stop {
			return chunks[:i]
		}
		if end := c.Offset + uint64(len(c.Data)); end > stop {
			chunks[i].Data = c.Data[:stop-c.Offset]
			return chunks[:i+1]
		}
	}
	return chunks
}

func queryOffset(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	raw := r.URL.Query().Get("offset")
	if raw == "" {
		return 0, true
	}
	n, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "offset must be a non-negative integer, got " + strconv.Quote(raw), Field: "offset"})
		return 0, false
	}
	return n, true
}

func (s *Server) handleAgents(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	agents := s.sched.Agents()
	out := make([]api.AgentInfo, len(agents))
	for i, a := range agents {
		out[i] = agentInfo(a)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
}

// handleDrain stops dispatching to an agent; its running jobs finish.
func (s *Server) handleDrain(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name := p.ByName("name")
	if !s.sched.Drain(name) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no connected agent named " + strconv.Quote(name), Field: "name"})
		return
	}
	s.log.Info("agent drained by API", "agent", name)
	s.audit(r, auditDrain, "agent "+name)
	if a, ok := s.sched.Agent(name); ok {
		writeJSON(w, http.StatusOK, agentInfo(a))
		return
	}
	writeJSON(w, http.StatusNotFound, api.Error{Error: "agent " + strconv.Quote(name) + " disconnected", Field: "name"})
}
