package controller

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
	"jobsuite/controller/webhook"
	"jobsuite/protocol"
)

// routes builds the HTTP API. Every path answers with and without a
// trailing slash and never redirects: clients of the original job_suite
// POST to /jobs/ and do not follow redirects.
func (s *Server) routes() http.Handler {
	r := s.instrument(httprouter.New()) // request metrics (httpmetrics.go)
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s %s", req.Method, req.URL.Path)
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method %s is not allowed on %s (allowed: %s)", req.Method, req.URL.Path, w.Header().Get("Allow"))
	})
	r.PanicHandler = func(w http.ResponseWriter, req *http.Request, v any) {
		s.log.Error("panic in API handler", "path", req.URL.Path, "panic", v)
		writeError(w, http.StatusInternalServerError, "internal error")
	}

	r.POST("/jobs", s.auth(certs.RoleOperator, s.handleSubmit))
	r.POST("/jobs/batch", s.auth(certs.RoleOperator, s.handleSubmitBatch))
	r.POST("/jobs/resubmit", s.auth(certs.RoleOperator, s.handleResubmit)) // resubmit.go
	r.GET("/jobs", s.auth(certs.RoleViewer, s.handleList))
	r.GET("/jobs/:id", s.auth(certs.RoleViewer, s.handleGet))
	r.DELETE("/jobs/:id", s.auth(certs.RoleOperator, s.handleCancel))
	r.GET("/jobs/:id/logs", s.auth(certs.RoleViewer, s.handleLogs))
	r.GET("/jobs/:id/events", s.auth(certs.RoleViewer, s.handleEvents))
	r.GET("/ws/jobs/:id/logs", s.auth(certs.RoleViewer, s.handleLogSocket))
	r.GET("/agents", s.auth(certs.RoleViewer, s.handleAgents))
	r.GET("/agents/:name", s.auth(certs.RoleViewer, s.handleAgent)) // fleet.go
	r.GET("/stats", s.auth(certs.RoleViewer, s.handleStats))        // stats.go
	r.GET("/whoami", s.auth(certs.RoleViewer, s.handleWhoAmI))
	r.GET("/metrics", s.auth(certs.RoleViewer, s.handleMetrics)) // Prometheus; see metrics.go
	r.POST("/agents/:name/drain", s.auth(certs.RoleOperator, s.handleDrain))
	r.POST("/agents/:name/undrain", s.auth(certs.RoleOperator, s.handleUndrain))
	r.POST("/agents/:name/revoke", s.auth(certs.RoleOperator, s.handleRevokeAgent))
	r.POST("/certs/revoke", s.auth(certs.RoleOperator, s.handleRevokeCert))
	r.GET("/revocations", s.auth(certs.RoleOperator, s.handleRevocations))
	r.DELETE("/revocations/:id", s.auth(certs.RoleOperator, s.handleUnrevoke))
	r.POST("/tokens", s.auth(certs.RoleOperator, s.handleCreateToken))
	r.GET("/tokens", s.auth(certs.RoleOperator, s.handleTokens))
	r.DELETE("/tokens/:id", s.auth(certs.RoleOperator, s.handleRevokeToken))
	r.GET("/audit", s.auth(certs.RoleOperator, s.handleAudit))
	r.POST("/agent-tokens", s.auth(certs.RoleOperator, s.handleCreateJoinToken)) // join tokens; see enroll.go
	r.GET("/agent-tokens", s.auth(certs.RoleOperator, s.handleJoinTokens))
	r.DELETE("/agent-tokens/:id", s.auth(certs.RoleOperator, s.handleRevokeJoinToken))
	r.GET("/operator/snapshot", s.auth(certs.RoleOperator, s.handleSnapshot))           // snapshot.go
	r.GET("/operator/members", s.auth(certs.RoleViewer, s.handleMembers))               // node_members.go
	r.DELETE("/operator/members/:id", s.auth(certs.RoleOperator, s.handleRemoveMember)) // remove-peer
	r.POST("/operator/transfer-leadership", s.auth(certs.RoleOperator, s.handleTransferLeadership))
	r.POST("/operator/snapshot/restore", s.auth(certs.RoleOperator, s.handleSnapshotRestore)) // node_restore.go
	r.POST("/enroll", s.handleEnroll)                                                         // no role: the join token in the body authenticates
	r.POST("/enroll/renew", s.handleRenew)                                                    // no role: the agent's own certificate authenticates
	r.POST("/schedules", s.auth(certs.RoleOperator, s.handleCreateSchedule))                  // schedules.go
	r.GET("/schedules", s.auth(certs.RoleViewer, s.handleSchedules))
	r.GET("/schedules/:name", s.auth(certs.RoleViewer, s.handleSchedule))
	r.DELETE("/schedules/:name", s.auth(certs.RoleOperator, s.handleDeleteSchedule))
	r.POST("/schedules/:name/pause", s.auth(certs.RoleOperator, s.handlePauseSchedule))
	r.POST("/schedules/:name/resume", s.auth(certs.RoleOperator, s.handleResumeSchedule))
	r.POST("/schedules/:name/run", s.auth(certs.RoleOperator, s.handleRunSchedule))
	r.GET("/webhooks/secret", s.auth(certs.RoleOperator, s.handleNotifySecret)) // notify.go
	r.GET("/health", s.handleHealth)
	r.GET("/openapi.json", s.handleOpenAPI)
	r.GET("/ui", s.handleUI) // the web dashboard: static files, no role needed (see ui.go)
	r.GET("/ui/*file", s.handleUI)

	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if p := req.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") {
			req.URL.Path = strings.TrimRight(p, "/")
			if req.URL.Path == "" {
				req.URL.Path = "/"
			}
		}
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			// A body must arrive within bodyTimeout: a client trickling
			// one cannot hold a connection and a goroutine for ever.
			// (GETs, the WebSocket among them, have no body to wait for.)
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		}
		r.ServeHTTP(w, req)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, api.Error{Error: fmt.Sprintf(format, args...)})
}

// Priority names and their numbers. A number 0–100 is accepted too.
var priorityNames = map[string]int{"low": 25, "mid": 50, "med": 50, "medium": 50, "high": 75}

// priorityName is the canonical name of a numeric priority, or "".
func priorityName(p int) string {
	switch p {
	case 25:
		return "low"
	case 50:
		return "mid"
	case 75:
		return "high"
	}
	return ""
}

// priorityValue is a priority as a view shows it: its canonical name, or
// else the number. The names are constants in an interface, which a
// string variable would have to be copied to the heap to be.
func priorityValue(p int) any {
	switch p {
	case 25:
		return "low"
	case 50:
		return "mid"
	case 75:
		return "high"
	}
	return p
}

// fieldError is a validation error that names its field.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return fmt.Sprintf("field %q: %s", e.field, e.msg) }

func badField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

var (
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// validLabelKey is labelKeyRE.MatchString without the regexp engine,
// for the submit path (TestKeyMatchers holds them equal).
func validLabelKey(k string) bool {
	if len(k) == 0 || len(k) > 63 {
		return false
	}
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '/' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validEnvKey is envKeyRE.MatchString without the regexp engine.
func validEnvKey(k string) bool {
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return true
}

// Limits on a submitted job. The configurable ones are defaults of
// Config (MaxCommandBytes, MaxEnv, MaxLabels).
const (
	defaultMaxCommand   = 64 << 10
	defaultMaxLabels    = 32
	defaultMaxEnv       = 128
	defaultMaxFollowers = 100
	maxName             = 256
	maxRetries          = 100
	maxEnvValue         = 32 << 10
	maxKeyLength        = 256
	maxTimeout          = 365 * 24 * 3600 // seconds
	maxBackoff          = 86400           // seconds
	maxDir              = 4096
	maxLabelValue       = 256
	maxAfter            = 100 // jobs one job may run after

	// maxBodyLimit is the highest Config.MaxBodyBytes: an accepted job
	// must fit, with room to spare, in one protocol frame to its agent.
	maxBodyLimit = 3 << 20
)

// MinFrameBytes is the lowest Config.MaxFrameBytes: a full log chunk
// and its header must fit in a frame.
const MinFrameBytes = 2 * protocol.MaxChunkSize

// submitLimits bounds one submitted job (Config's limits).
type submitLimits struct {
	body    int // bytes of the job's JSON, and of its fields once decoded
	command int // command plus params
	env     int // env entries
	labels  int // labels
	// notify checks notify URLs; nil: the default policy (https, public
	// addresses).
	notify *webhook.Policy
}

// limits are the server's submit limits.
func (s *Server) limits() submitLimits {
	lim := submitLimits{body: int(s.cfg.MaxBodyBytes), command: s.cfg.MaxCommandBytes, env: s.cfg.MaxEnv, labels: s.cfg.MaxLabels}
	if s.notify != nil {
		lim.notify = s.notify.policy
	}
	return lim
}

// decodeSubmit parses and validates a submission into a new job; a
// fan-out is refused (only POST /jobs takes one: decodeJob).
func decodeSubmit(body []byte, lim submitLimits) (*store.Job, error) {
	j, fo, err := decodeJob(body, lim)
	if err == nil && fo != nil {
		return nil, badField("fanout", "is taken by POST /jobs only (not in a batch or a schedule's job)")
	}
	return j, err
}

// decodeJob parses and validates a submission into a new job, and its
// fan-out if it asks for one.
func decodeJob(body []byte, lim submitLimits) (*store.Job, *sched.FanoutSpec, error) {
	j, req, err := decodeRequest(body, lim)
	if err != nil || req.Fanout == nil {
		return j, nil, err
	}
	spec, err := decodeFanout(req, lim)
	if err != nil {
		return nil, nil, err
	}
	return j, spec, nil
}

// decodeFanout checks a submission's fanout object.
func decodeFanout(req *api.SubmitRequest, lim submitLimits) (*sched.FanoutSpec, error) {
	fo := req.Fanout
	if !fo.All && len(fo.Labels) == 0 {
		return nil, badField("fanout", "needs \"all\": true (every agent) or \"labels\" (the agents matching them)")
	}
	if len(req.Labels) > 0 {
		return nil, badField("labels", "a fan-out selects its agents with \"fanout\": {\"labels\": ...}; leave the job's labels out")
	}
	if len(req.After) > 0 {
		return nil, badField("after", "is not supported with a fan-out (a job can run after a fan-out, not the reverse)")
	}
	if len(fo.Labels) > lim.labels {
		return nil, badField("fanout.labels", "has %d entries; the limit is %d (the controller's -max-labels)", len(fo.Labels), lim.labels)
	}
	for k, v := range fo.Labels {
		if !validLabelKey(k) {
			return nil, badField("fanout.labels", "key %q must be 1–63 letters, digits, '.', '_', '/' or '-'", k)
		}
		if len(v) > maxLabelValue {
			return nil, badField("fanout.labels", "value of %q is longer than %d bytes", k, maxLabelValue)
		}
	}
	spec := &sched.FanoutSpec{IncludeOffline: fo.IncludeDisconnected}
	if len(fo.Labels) > 0 {
		spec.Selector = fo.Labels
	}
	var err error
	if spec.Batch, err = decodeCount("fanout.batch", fo.Batch); err != nil {
		return nil, err
	}
	if spec.MaxFailures, err = decodeCount("fanout.max_failures", fo.MaxFailures); err != nil {
		return nil, err
	}
	return spec, nil
}

// maxFanoutCount bounds a fan-out's batch and max_failures.
const maxFanoutCount = 100000

// decodeCount reads a fan-out count: a positive integer, or "N%" with
// N from 1 to 100 (a plain number may be sent as a string too).
func decodeCount(field string, raw json.RawMessage) (sched.Count, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return sched.Count{}, nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		text = string(raw)
	}
	text = strings.TrimSpace(text)
	pct := strings.HasSuffix(text, "%")
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(text, "%")))
	switch {
	case err != nil:
		return sched.Count{}, badField(field, "must be a positive integer or a percentage such as \"25%%\", got %s", raw)
	case pct && (n < 1 || n > 100):
		return sched.Count{}, badField(field, "a percentage must be between 1%% and 100%%, got %s", raw)
	case n < 1 || n > maxFanoutCount:
		return sched.Count{}, badField(field, "must be between 1 and %d, got %s", maxFanoutCount, raw)
	}
	return sched.Count{N: n, Percent: pct}, nil
}

// decodeRequest parses and validates a submission into a new job and
// the request it came in.
func decodeRequest(body []byte, lim submitLimits) (*store.Job, *api.SubmitRequest, error) {
	var req api.SubmitRequest
	j, err := decodeInto(body, lim, &req)
	return j, &req, err
}

// decodeInto parses and validates a submission into req and a new job.
func decodeInto(body []byte, lim submitLimits, req *api.SubmitRequest) (*store.Job, error) {
	if err := checkBody(body, lim); err != nil {
		return nil, err
	}
	if !decodeSubmitFast(body, req) { // submitjson.go
		*req = api.SubmitRequest{}
		if err := decodeSubmitJSON(body, req); err != nil {
			return nil, err
		}
	}
	return jobFrom(req, lim)
}

// checkBody refuses a body too large or empty, before it is parsed.
func checkBody(body []byte, lim submitLimits) error {
	if len(body) > lim.body {
		return fmt.Errorf("the job is %d bytes of JSON; the limit is %d (the controller's -max-body-bytes)", len(body), lim.body)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("request body is empty; send a JSON job such as {\"command\": \"echo hi\"}")
	}
	return nil
}

// jobFrom validates a parsed submission and makes its new job.
func jobFrom(req *api.SubmitRequest, lim submitLimits) (*store.Job, error) {
	j := &store.Job{Name: req.Name, Command: req.Command, Logs: true, Cancellable: true, Priority: 50}

	if strings.TrimSpace(req.Command) == "" {
		return nil, badField("command", "is required and must not be blank")
	}
	if len(req.Command) > lim.command {
		return nil, badField("command", "is %d bytes; the limit is %d (the controller's -max-command-bytes)", len(req.Command), lim.command)
	}
	if strings.ContainsRune(req.Command, 0) {
		return nil, badField("command", "must not contain NUL bytes")
	}
	if len(req.Name) > maxName {
		return nil, badField("name", "is longer than %d bytes", maxName)
	}
	// Every field that reaches the job's process (name: JOBSUITE_JOB_NAME;
	// params: its command line) must be a string exec can pass, and a NUL
	// byte ends one: such a job could never run. The idempotency key
	// reaches no process but is refused too: no client means one.
	if strings.ContainsRune(req.Name, 0) {
		return nil, badField("name", "must not contain NUL bytes")
	}
	if strings.ContainsRune(req.IdempotencyKey, 0) {
		return nil, badField("idempotency_key", "must not contain NUL bytes")
	}
	if j.Name == "" {
		j.Name = firstWords(req.Command)
	}
	params, err := decodeParams(req.Params)
	if err != nil {
		return nil, err
	}
	j.Params = params
	if strings.ContainsRune(params, 0) {
		return nil, badField("params", "must not contain NUL bytes")
	}
	if len(j.Command)+len(j.Params) > lim.command {
		return nil, badField("params", "command plus params exceed %d bytes (the controller's -max-command-bytes)", lim.command)
	}
	if len(req.Priority) > 0 && string(req.Priority) != "null" {
		p, err := decodePriority(req.Priority)
		if err != nil {
			return nil, err
		}
		j.Priority = p
	}
	if req.Timeout != nil {
		t := *req.Timeout
		if t < 0 || math.IsNaN(t) || t > maxTimeout {
			return nil, badField("timeout", "must be between 0 (none) and 31536000 seconds, got %v", t)
		}
		j.Timeout = time.Duration(t * float64(time.Second))
	}
	if req.Retries != nil {
		if *req.Retries < 0 || *req.Retries > maxRetries {
			return nil, badField("retries", "must be between 0 and %d, got %d", maxRetries, *req.Retries)
		}
		j.Retries = *req.Retries
	}
	if req.Logs != nil {
		j.Logs = *req.Logs
	}
	if req.Cancellable != nil {
		j.Cancellable = *req.Cancellable
	}
	if len(req.Labels) > lim.labels {
		return nil, badField("labels", "has %d entries; the limit is %d (the controller's -max-labels)", len(req.Labels), lim.labels)
	}
	for k, v := range req.Labels {
		if !validLabelKey(k) {
			return nil, badField("labels", "key %q must be 1–63 letters, digits, '.', '_', '/' or '-'", k)
		}
		if len(v) > maxLabelValue {
			return nil, badField("labels", "value of %q is longer than %d bytes", k, maxLabelValue)
		}
	}
	if len(req.Labels) > 0 {
		j.Labels = req.Labels
	}
	if len(req.Env) > lim.env {
		return nil, badField("env", "has %d entries; the limit is %d (the controller's -max-env)", len(req.Env), lim.env)
	}
	for k, v := range req.Env {
		if !validEnvKey(k) {
			return nil, badField("env", "name %q is not a valid environment variable name", k)
		}
		if len(v) > maxEnvValue {
			return nil, badField("env", "value of %q is longer than %d bytes", k, maxEnvValue)
		}
		if strings.ContainsRune(v, 0) {
			return nil, badField("env", "value of %q must not contain NUL bytes", k)
		}
	}
	if len(req.Env) > 0 {
		j.Env = req.Env
	}
	if len(req.Dir) > maxDir {
		return nil, badField("dir", "is longer than %d bytes", maxDir)
	}
	if strings.ContainsRune(req.Dir, 0) {
		return nil, badField("dir", "must not contain NUL bytes")
	}
	j.Dir = req.Dir
	if len(req.IdempotencyKey) > maxKeyLength {
		return nil, badField("idempotency_key", "is longer than %d bytes", maxKeyLength)
	}
	j.IdempotencyKey = req.IdempotencyKey
	switch req.Output {
	case "", "ordered":
	case store.OutputSplit:
		j.Output = store.OutputSplit
	default:
		return nil, badField("output", "must be ordered (stdout and stderr in the order the job wrote them, the default) or split (apart, the order between them approximate); got %q", req.Output)
	}
	if req.TTY != nil {
		if *req.TTY && j.Output == store.OutputSplit {
			return nil, badField("tty", "a terminal is one stream: it cannot be combined with \"output\": \"split\"")
		}
		v := *req.TTY
		j.TTY = &v
	}
	if len(req.After) > maxAfter {
		return nil, badField("after", "names %d jobs; the limit is %d", len(req.After), maxAfter)
	}
	for i, id := range req.After {
		if id == 0 {
			return nil, badField("after", "job IDs are positive integers, got 0")
		}
		if slices.Contains(req.After[:i], id) {
			return nil, badField("after", "names job %d twice", id)
		}
	}
	if req.AfterAny && len(req.After) == 0 {
		return nil, badField("after_any", "needs \"after\": the jobs to wait for")
	}
	if len(req.After) > 0 {
		j.Orch().After = req.After
		j.Orch().AfterAny = req.AfterAny
	}
	policy := lim.notify
	if policy == nil {
		policy = &webhook.Policy{}
	}
	if err := checkNotify(req.Notify, policy); err != nil {
		return nil, err
	}
	if len(req.Notify) > 0 {
		j.Orch().Notify = req.Notify
	}
	// JSON decoding can grow a value (an invalid UTF-8 byte becomes a
	// 3-byte U+FFFD): bound the decoded job too, so it fits a frame.
	if n := decodedSize(j); n > lim.body {
		return nil, fmt.Errorf("the job is %d bytes once decoded; the limit is %d (the controller's -max-body-bytes)", n, lim.body)
	}
	if b := req.Backoff; b != nil {
		if b.Base != nil {
			if !(*b.Base > 0 && *b.Base <= maxBackoff) {
				return nil, badField("backoff", "base must be between 0 and %d seconds", maxBackoff)
			}
			j.BackoffBase = time.Duration(*b.Base * float64(time.Second))
		}
		if b.Max != nil {
			if !(*b.Max > 0 && *b.Max <= maxBackoff) {
				return nil, badField("backoff", "max must be between 0 and %d seconds", maxBackoff)
			}
			j.BackoffMax = time.Duration(*b.Max * float64(time.Second))
		}
	}
	return j, nil
}

// decodeSubmitJSON parses body into req with encoding/json: unknown
// fields and trailing values refused, every error worded for the client.
func decodeSubmitJSON(body []byte, req *api.SubmitRequest) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return errors.New("request body holds more than one JSON value")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return errors.New("request body holds more than one JSON value")
	}
	return nil
}

// decodedSize is the size of a job's variable-length fields.
func decodedSize(j *store.Job) int {
	n := len(j.Name) + len(j.Command) + len(j.Params) + len(j.Dir) + len(j.IdempotencyKey)
	for k, v := range j.Env {
		n += len(k) + len(v)
	}
	for k, v := range j.Labels {
		n += len(k) + len(v)
	}
	return n
}

// firstWords names a job after the start of its command.
func firstWords(cmd string) string {
	// The first two of strings.Fields(cmd), without making the list.
	s0, e0 := nextField(cmd, 0)
	if s0 == e0 {
		return "job"
	}
	name := cmd[s0:e0]
	if s1, e1 := nextField(cmd, e0); s1 < e1 {
		if s1 == e0+1 && cmd[e0] == ' ' {
			name = cmd[s0:e1] // one space between them: a substring, no copy
		} else {
			name += " " + cmd[s1:e1]
		}
	}
	// "echo hello; echo bye" is named "echo hello", not "echo hello;":
	// a separator ending the name says nothing about the job.
	name = strings.TrimRight(name, ";&| ")
	if name == "" {
		return "job"
	}
	if len(name) > 64 {
		// Cut at a character boundary: a split one would be invalid UTF-8.
		n := 64
		for n > 0 && !utf8.RuneStart(name[n]) {
			n--
		}
		name = name[:n]
	}
	return name
}

// nextField is where the next field of s from i on lies, as
// strings.Fields splits: runs of unicode.IsSpace. start == end: none.
func nextField(s string, i int) (start, end int) {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += n
	}
	start = i
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			break
		}
		i += n
	}
	return start, i
}

func decodeParams(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return strings.TrimSpace(s), nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", badField("params", "must be a string or a list of strings")
	}
	quoted := make([]string, len(list))
	for i, p := range list {
		quoted[i] = shellQuote(p)
	}
	return strings.Join(quoted, " "), nil
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func decodePriority(raw json.RawMessage) (int, error) {
	// The usual forms first, without encoding/json: a name as the map
	// has it ("high"), or a plain integer. Anything else (escapes, upper
	// case, spaces, 5e1) takes the general path below, which gives the
	// same answer for these.
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' {
		if p, ok := priorityNames[string(raw[1:n-1])]; ok {
			return p, nil
		}
	} else if p, err := strconv.Atoi(string(raw)); err == nil && p >= 0 && p <= 100 {
		return p, nil
	}
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		if p, ok := priorityNames[strings.ToLower(strings.TrimSpace(name))]; ok {
			return p, nil
		}
		if n, err := strconv.Atoi(strings.TrimSpace(name)); err == nil && n >= 0 && n <= 100 {
			return n, nil
		}
		return 0, badField("priority", "must be low, mid (or med), high, or an integer 0–100; got %q", name)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, badField("priority", "must be low, mid (or med), high, or an integer 0–100")
	}
	if f != math.Trunc(f) || f < 0 || f > 100 {
		return 0, badField("priority", "must be an integer between 0 and 100; got %v", f)
	}
	return int(f), nil
}

// jsonError turns a decoding error into a message that names the field.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return fmt.Errorf("request body must be a JSON object, got %s", typeErr.Value)
		}
		return badField(field, "must be %s, got %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("malformed JSON: the body ends early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badField(field, "is not a job field (known: name, command, params, priority, timeout, retries, logs, cancellable, labels, env, dir, idempotency_key, backoff, output, tty, after, after_any)")
	}
	return fmt.Errorf("malformed JSON: %v", err)
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "uint64", "uint32", "int32":
		return "an integer"
	case "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "map":
		return "an object of strings"
	case "ptr", "struct":
		return "an object"
	}
	return "a " + k
}
