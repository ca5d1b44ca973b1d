package store

import "time"

// State is where a job is in its life.
//
//	queued → dispatched → running → completed | failed | timeout | cancelled
//	          ↘ (lost/failed with retries left) → waiting → queued
type State string

const (
	Queued     State = "queued"     // in the priority queue
	Waiting    State = "waiting"    // retry backoff: in the delay index until NotBefore
	Dispatched State = "dispatched" // sent to an agent, not started yet
	Running    State = "running"    // the agent started the process
	Completed  State = "completed"  // exit status 0
	Failed     State = "failed"     // non-zero exit, lost with no retries left, could not start
	Timeout    State = "timeout"    // killed at its timeout, no retries left
	Cancelled  State = "cancelled"  // cancelled by a user
)

// Terminal reports whether no further transition can happen.
func (s State) Terminal() bool {
	switch s {
	case Completed, Failed, Timeout, Cancelled:
		return true
	}
	return false
}

// Active reports whether an agent holds (or may hold) an attempt.
func (s State) Active() bool { return s == Dispatched || s == Running }

// Job is the durable record of one job. It is stored as JSON; fields are
// only ever added.
type Job struct {
	ID             uint64            `json:"id"`
	Name           string            `json:"name"`
	Command        string            `json:"command"`
	Params         string            `json:"params,omitempty"`
	Priority       int               `json:"priority"` // 0..100, higher runs first
	Timeout        time.Duration     `json:"timeout,omitempty"`
	Retries        int               `json:"retries"` // attempts allowed after the first
	Logs           bool              `json:"logs"`
	Cancellable    bool              `json:"cancellable"`
	Labels         map[string]string `json:"labels,omitempty"` // agent selector
	Env            map[string]string `json:"env,omitempty"`
	Dir            string            `json:"dir,omitempty"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	BackoffBase    time.Duration     `json:"backoff_base,omitempty"`
	BackoffMax     time.Duration     `json:"backoff_max,omitempty"`
	// Output is how stdout and stderr are captured: "" (ordered, the
	// default) on one pipe in the order the job wrote them, OutputSplit
	// apart. Absent from records written before it, which were split in
	// fact but are read as ordered: it only matters at dispatch.
	Output string `json:"output,omitempty"`
	// TTY asks for a pseudo-terminal (true) or for none (false); nil
	// leaves it to the agent's default.
	TTY *bool `json:"tty,omitempty"`

	State     State     `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	// QueuedAt orders the queue: FIFO within a priority. Set on every
	// entry into Queued.
	QueuedAt time.Time `json:"queued_at"`
	// NotBefore is when a Waiting job is due back in the queue.
	NotBefore  time.Time `json:"not_before,omitzero"`
	StartedAt  time.Time `json:"started_at,omitzero"`  // first process start
	FinishedAt time.Time `json:"finished_at,omitzero"` // reached a terminal state

	Attempts        []Attempt `json:"attempts,omitempty"` // Attempts[i].Number == i+1
	CancelRequested bool      `json:"cancel_requested,omitempty"`
	Reason          string    `json:"reason,omitempty"` // why it is in its state, for humans
	LogBytes        uint64    `json:"log_bytes,omitempty"`
	// Events counts the events appended for this job; the next event
	// gets sequence number Events.
	Events uint32 `json:"events"`
}

// OutputSplit is Job.Output for a job whose stdout and stderr are
// captured apart.
const OutputSplit = "split"

// Current returns the latest attempt, or nil before the first dispatch.
func (j *Job) Current() *Attempt {
	if len(j.Attempts) == 0 {
		return nil
	}
	return &j.Attempts[len(j.Attempts)-1]
}

// Clone returns a deep copy, so a caller can build the next version of a
// record without touching the previous one.
func (j *Job) Clone() *Job {
	c := *j
	c.Labels = cloneMap(j.Labels)
	c.Env = cloneMap(j.Env)
	if j.TTY != nil {
		v := *j.TTY
		c.TTY = &v
	}
	c.Attempts = append([]Attempt(nil), j.Attempts...)
	for i := range c.Attempts {
		if e := j.Attempts[i].ExitCode; e != nil {
			v := *e
			c.Attempts[i].ExitCode = &v
		}
	}
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Outcome is how an attempt ended. Values are only added, never
// reused: they are stored.
type Outcome string

const (
	OutcomeCompleted Outcome = "completed" // exit status 0
	OutcomeFailed    Outcome = "failed"    // non-zero exit, killed, could not start
	OutcomeTimeout   Outcome = "timeout"   // killed at its timeout (by the agent or the controller's deadline)
	OutcomeCancelled Outcome = "cancelled" // killed because a user cancelled the job
	OutcomeLost      Outcome = "lost"      // its agent went silent, disconnected for good or was revoked
)

// Attempt is one dispatch of a job to an agent. Its Number is the
// fencing token agents quote in every report.
type Attempt struct {
	Number       uint32        `json:"number"`
	Agent        string        `json:"agent"`
	DispatchedAt time.Time     `json:"dispatched_at"`
	StartedAt    time.Time     `json:"started_at,omitzero"`
	FinishedAt   time.Time     `json:"finished_at,omitzero"`
	PID          uint32        `json:"pid,omitempty"`
	Outcome      Outcome       `json:"outcome,omitempty"` // how it ended; empty while it runs
	ExitCode     *int          `json:"exit_code,omitempty"`
	Signal       string        `json:"signal,omitempty"`
	Error        string        `json:"error,omitempty"`
	Duration     time.Duration `json:"duration,omitempty"`
	UserCPU      time.Duration `json:"user_cpu,omitempty"`
	SystemCPU    time.Duration `json:"system_cpu,omitempty"`
	MaxRSS       uint64        `json:"max_rss,omitempty"`
	LogStart     uint64        `json:"log_start"`              // job log offset where this attempt's output begins
	QueuedAt     time.Time     `json:"queued_at,omitzero"`     // when the job entered the queue this attempt came from
	OutputBytes  uint64        `json:"output_bytes,omitempty"` // output of this attempt, set when it ends
}

// Event is one entry in a job's history.
type Event struct {
	Seq     uint32    `json:"seq"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"` // submitted, dispatched, started, finished, retry, lost, cancel_requested, cancelled, requeued
	State   State     `json:"state"`
	Attempt uint32    `json:"attempt,omitempty"`
	Agent   string    `json:"agent,omitempty"`
	Message string    `json:"message,omitempty"`
}

// Chunk is a piece of a job's stored output.
type Chunk struct {
	Offset uint64 // position of Data[0] in the job's log
	Stream uint8  // 1 stdout, 2 stderr (protocol.Stream values)
	Data   []byte
	// Time is when the controller received the chunk; zero for chunks
	// stored before times were kept (and for a zero Time in an Output
	// command).
	Time time.Time
}
