package api

import (
	"encoding/json"
	"time"
)

// The states of a job, as the API writes them in JobView.Status,
// BatchItem.Status, LogMessage.Status, Event.State and the keys of
// StatsView.Jobs.
const (
	StateQueued     = "queued"
	StateWaiting    = "waiting" // waiting out a retry backoff
	StateDispatched = "dispatched"
	StateRunning    = "running"
	StateCompleted  = "completed"
	StateFailed     = "failed"
	StateTimeout    = "timeout"
	StateCancelled  = "cancelled"
	StateBlocked    = "blocked" // waiting for the jobs it runs after (after)
)

// SubmitRequest is the body of POST /jobs (and each element of the
// array POST /jobs/batch takes). The first eight fields are the
// original job_suite JSON and keep their meaning. Every field but
// command may be left out; the controller refuses fields it does not
// know.
type SubmitRequest struct {
	Name           string            `json:"name,omitempty"`
	Command        string            `json:"command"`
	Params         json.RawMessage   `json:"params,omitempty"`   // string, or list of strings (each shell-quoted)
	Priority       json.RawMessage   `json:"priority,omitempty"` // low|mid|med|high or 0–100; default mid
	Timeout        *float64          `json:"timeout,omitempty"`  // seconds; 0 or absent: none
	Retries        *int              `json:"retries,omitempty"`
	Logs           *bool             `json:"logs,omitempty"` // capture output; default true
	Cancellable    *bool             `json:"cancellable,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Dir            string            `json:"dir,omitempty"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	Backoff        *BackoffRequest   `json:"backoff,omitempty"`
	Output         string            `json:"output,omitempty"` // ordered (default: stdout and stderr in write order) or split
	TTY            *bool             `json:"tty,omitempty"`    // run on a pseudo-terminal; absent: the agent's default
	// After lists jobs that must end before this one runs: it is
	// blocked until all of them completed, and cancelled if one failed,
	// timed out or was cancelled — unless AfterAny, when it runs once
	// they all ended, however. Every ID must exist.
	After    []uint64 `json:"after,omitempty"`
	AfterAny bool     `json:"after_any,omitempty"`
	// Notify lists URLs the controller POSTs a signed Notification to
	// when the job ends (webhooks): https:// only unless the controller
	// allows http, and only to the hosts its notify_hosts allowlist
	// names, if it has one.
	Notify []string `json:"notify,omitempty"`
	// Fanout runs the job on every agent it selects (POST /jobs only):
	// a parent job and one child per agent, pinned to it.
	Fanout *FanoutRequest `json:"fanout,omitempty"`
}

// FanoutRequest selects the agents of a fan-out and how it rolls out.
// Either All or Labels must be set: All alone is every agent, Labels
// the agents whose labels match all of them. The agents are chosen at
// submit time: the connected ones, and with IncludeDisconnected also
// those known from an earlier connection.
type FanoutRequest struct {
	All                 bool              `json:"all,omitempty"`
	Labels              map[string]string `json:"labels,omitempty"`
	IncludeDisconnected bool              `json:"include_disconnected,omitempty"`
	// Batch is how many children run at once: a number, or "N%" of the
	// children (rounded up); absent: all at once.
	Batch json.RawMessage `json:"batch,omitempty"`
	// MaxFailures stops the rollout once this many children failed or
	// timed out (a number, or "N%"): no new child starts, the rest are
	// cancelled. Absent: no limit.
	MaxFailures json.RawMessage `json:"max_failures,omitempty"`
}

// FanoutView is a fan-out parent's rollout (JobView.Fanout).
type FanoutView struct {
	Labels              map[string]string `json:"labels,omitempty"` // the selector; empty: every agent
	IncludeDisconnected bool              `json:"include_disconnected,omitempty"`
	Children            int               `json:"children"`
	FirstChild          uint64            `json:"first_child"` // children are first_child .. first_child+children-1
	Batch               int               `json:"batch,omitempty"`
	MaxFailures         *int              `json:"max_failures,omitempty"`
	Completed           int               `json:"completed"`
	Failed              int               `json:"failed"`
	Timeout             int               `json:"timeout"`
	Cancelled           int               `json:"cancelled"`
	Stopped             bool              `json:"stopped,omitempty"` // max_failures stopped the rollout
}

// ChildView is one child of a fan-out in GET /jobs/:id of its parent.
type ChildView struct {
	JobID    uint64 `json:"job_id"`
	Agent    string `json:"agent"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
	ExitCode *int   `json:"exit_code"`
}

// BackoffRequest is the retry backoff of a submitted job, in seconds;
// either may be left out for the controller's default.
type BackoffRequest struct {
	Base *float64 `json:"base,omitempty"`
	Max  *float64 `json:"max,omitempty"`
}

// BatchItem is one entry of the POST /jobs/batch answer, in the order of
// the request.
type BatchItem struct {
	JobID  uint64 `json:"job_id"`
	Status string `json:"status"`
	// Created is false when the job's idempotency_key named a job that
	// already existed: that job is returned and nothing new is queued.
	Created bool `json:"created"`
}

// ResubmitRequest is the body of POST /jobs/resubmit. (The route is not
// /jobs/:id/resubmit: httprouter cannot hold a wildcard beside
// /jobs/batch.)
type ResubmitRequest struct {
	JobID uint64 `json:"job_id"` // the job to run again
}

// JobView is a job as the API shows it. job_id, status, command and
// priority are what clients of the original job_suite read.
type JobView struct {
	JobID           uint64            `json:"job_id"`
	Name            string            `json:"name"`
	Command         string            `json:"command"`
	Params          string            `json:"params"`
	Priority        any               `json:"priority"` // "low"|"mid"|"high" when it is one of those, else the number
	PriorityValue   int               `json:"priority_value"`
	Status          string            `json:"status"` // one of the State constants
	Reason          string            `json:"reason,omitempty"`
	Timeout         float64           `json:"timeout"` // seconds, 0 = none
	Retries         int               `json:"retries"`
	MaxRetries      int               `json:"max_retries"`
	Logs            bool              `json:"logs"`
	Cancellable     bool              `json:"cancellable"`
	CancelRequested bool              `json:"cancel_requested,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Env             map[string]string `json:"env,omitempty"`
	Dir             string            `json:"dir,omitempty"`
	IdempotencyKey  string            `json:"idempotency_key,omitempty"`
	Output          string            `json:"output"`        // ordered | split
	TTY             *bool             `json:"tty,omitempty"` // absent: the agent's default
	CreatedAt       time.Time         `json:"created_at"`
	QueuedAt        *time.Time        `json:"queued_at,omitempty"`
	StartedAt       *time.Time        `json:"started_at,omitempty"`
	FinishedAt      *time.Time        `json:"finished_at,omitempty"`
	RetryAt         *time.Time        `json:"retry_at,omitempty"`
	Duration        *float64          `json:"duration,omitempty"` // seconds from first start to finish
	ExitCode        *int              `json:"exit_code"`
	Result          *ResultView       `json:"result,omitempty"`
	Attempt         int               `json:"attempt"` // number of attempts so far
	Attempts        []AttemptView     `json:"attempts"`
	LogBytes        uint64            `json:"log_bytes"`
	After           []uint64          `json:"after,omitempty"` // the jobs it runs after
	AfterAny        bool              `json:"after_any,omitempty"`
	Schedule        string            `json:"schedule,omitempty"` // the schedule that created it
	Parent          uint64            `json:"parent,omitempty"`   // the fan-out it is a child of
	Agent           string            `json:"agent,omitempty"`    // the agent it is pinned to (a fan-out child)
	Fanout          *FanoutView       `json:"fanout,omitempty"`   // set on a fan-out's parent
	Children        []ChildView       `json:"children,omitempty"` // a fan-out parent's children (GET /jobs/:id only)
	Notify          []string          `json:"notify,omitempty"`   // webhook URLs, query strings elided
	Live            *LiveView         `json:"live,omitempty"`     // only with ?live=1
}

// ResultView is the outcome of the latest finished attempt.
type ResultView struct {
	Outcome   string  `json:"outcome"`
	ExitCode  *int    `json:"exit_code"`
	Signal    string  `json:"signal,omitempty"`
	Error     string  `json:"error,omitempty"`
	Duration  float64 `json:"duration"`   // seconds the process ran
	UserCPU   float64 `json:"user_cpu"`   // seconds
	SystemCPU float64 `json:"system_cpu"` // seconds
	MaxRSS    uint64  `json:"max_rss"`    // bytes
}

// AttemptView is one attempt of a job.
type AttemptView struct {
	Number       uint32     `json:"number"`
	Agent        string     `json:"agent"`
	DispatchedAt time.Time  `json:"dispatched_at"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	FinishedAt   *time.Time `json:"finished_at,omitempty"`
	PID          uint32     `json:"pid,omitempty"`
	Outcome      string     `json:"outcome,omitempty"`
	ExitCode     *int       `json:"exit_code"`
	Signal       string     `json:"signal,omitempty"`
	Error        string     `json:"error,omitempty"`
	Duration     float64    `json:"duration,omitempty"`
	UserCPU      float64    `json:"user_cpu,omitempty"`
	SystemCPU    float64    `json:"system_cpu,omitempty"`
	MaxRSS       uint64     `json:"max_rss,omitempty"`
	QueueLatency float64    `json:"queue_latency,omitempty"` // seconds from entering the queue to dispatch
	LogStart     uint64     `json:"log_start"`               // offset in the job's log where this attempt's output begins
	OutputBytes  uint64     `json:"output_bytes,omitempty"`
}

// LiveView is the live part of GET /jobs/:id?live=1: what the agent
// running the job says about it right now. Stale is set, with Error
// saying why, when no fresh answer could be had in time.
type LiveView struct {
	Stale       bool    `json:"stale"`
	Error       string  `json:"error,omitempty"`
	Agent       string  `json:"agent,omitempty"`
	Attempt     uint32  `json:"attempt,omitempty"`
	PID         uint32  `json:"pid,omitempty"`
	Elapsed     float64 `json:"elapsed,omitempty"`    // seconds since the process started
	UserCPU     float64 `json:"user_cpu,omitempty"`   // seconds, whole process group
	SystemCPU   float64 `json:"system_cpu,omitempty"` // seconds, whole process group
	RSS         uint64  `json:"rss,omitempty"`        // bytes, whole process group
	Processes   uint32  `json:"processes,omitempty"`
	OutputBytes uint64  `json:"output_bytes"`
	LastLine    string  `json:"last_line"`
}

// Event is one entry of GET /jobs/:id/events: something that happened
// to a job, in order (Seq).
type Event struct {
	Seq     uint32    `json:"seq"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`  // submitted, dispatched, started, finished, retry, lost, cancel_requested, cancelled, requeued, released (blocked → queued)
	State   string    `json:"state"` // the job's state after it; one of the State constants
	Attempt uint32    `json:"attempt,omitempty"`
	Agent   string    `json:"agent,omitempty"`
	Message string    `json:"message,omitempty"`
}

// LogMessage is one message of the log WebSocket in format=json.
// Type "output" carries Data (base64 in JSON, so any bytes survive) at
// Offset of the job's log, and the Time the controller received it;
// the last message has Type "end" and the job's final status. With
// ?attempts=1 (or ?attempt=N), a message of Type "attempt" comes before
// the output of each attempt (or of attempt N): its number, Agent, the
// Time it was dispatched, the Offset where its output begins and the
// job's Attempts so far. Clients skip types they do not know.
type LogMessage struct {
	Type     string    `json:"type"` // output | attempt | end
	Offset   uint64    `json:"offset,omitempty"`
	Stream   string    `json:"stream,omitempty"` // stdout | stderr
	Data     []byte    `json:"data,omitempty"`
	Time     time.Time `json:"time,omitzero"`     // output: received (absent for output stored before times were kept); attempt: dispatched
	Attempt  uint32    `json:"attempt,omitempty"` // attempt: its number; end of ?attempt=N: N
	Agent    string    `json:"agent,omitempty"`
	Attempts int       `json:"attempts,omitempty"` // attempt: the job's attempts so far
	Status   string    `json:"status,omitempty"`   // end: the job's state
	ExitCode *int      `json:"exit_code,omitempty"`
	Signal   string    `json:"signal,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Outcome  string    `json:"outcome,omitempty"` // end of ?attempt=N: the attempt's outcome, "" while it runs
}

// The events of a Notification (its "event" and the Jobsuite-Event
// header).
const (
	EventJobStarted  = "job.started"  // an attempt started running
	EventJobFinished = "job.finished" // the job reached a terminal state
)

// Notification is the body of a webhook delivery: POSTed, signed, to a
// job's notify URLs and to the controller's configured webhooks.
// README "Webhooks" shows how a receiver verifies it.
type Notification struct {
	// ID is the delivery's ID, also in the Jobsuite-Delivery header: the
	// same on every retry, so receivers can drop a repeat.
	ID    string          `json:"id"`
	Event string          `json:"event"` // EventJobStarted or EventJobFinished
	Time  time.Time       `json:"time"`  // when the event happened
	Job   NotificationJob `json:"job"`
}

// NotificationJob is the job a Notification reports: what a receiver
// needs to act on it, and never its environment (which may hold
// secrets).
type NotificationJob struct {
	JobID      uint64            `json:"job_id"`
	Name       string            `json:"name"`
	Status     string            `json:"status"` // one of the State constants
	Reason     string            `json:"reason,omitempty"`
	ExitCode   *int              `json:"exit_code"`        // of the latest attempt; null if none ended with one
	Signal     string            `json:"signal,omitempty"` // that killed the latest attempt
	Attempt    int               `json:"attempt"`          // attempts so far
	Agent      string            `json:"agent,omitempty"`  // of the latest attempt
	Labels     map[string]string `json:"labels,omitempty"`
	Schedule   string            `json:"schedule,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	StartedAt  *time.Time        `json:"started_at,omitempty"`
	FinishedAt *time.Time        `json:"finished_at,omitempty"`
	Duration   *float64          `json:"duration,omitempty"` // seconds from first start to finish
}

// NotifySecretView is the answer of GET /webhooks/secret: the key the
// controller signs the deliveries to jobs' notify URLs with.
type NotifySecretView struct {
	Secret string `json:"secret"`
}
