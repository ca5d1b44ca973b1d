package store

import "time"

// State is where a job is in its life.
//
//	queued → dispatched → running → completed | failed | timeout | cancelled
//	          ↘ (lost/failed with retries left) → waiting → queued
//	blocked → queued | cancelled
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
	// Blocked: not in the queue until something other than a time
	// happens — the jobs it runs after end, or its turn in a fan-out's
	// rollout comes. Reason says what it waits for.
	Blocked State = "blocked"
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
//
// Layout. The scheduler keeps every active job's Job in memory (100,000
// queued jobs are 100,000 of them), so its size is the controller's
// memory per queued job: bench row 7c. It is 384 bytes on 64-bit
// platforms, exactly Go's 384-byte size class; TestJobSize fails if it
// grows past that (the next class is 416 bytes). Issue 17's
// orchestration fields, set on few jobs, had made it 480 (+96 bytes per
// queued job, +12–14% in row 7c); they live behind the embedded pointer
// *Orchestration since, nil on an ordinary job, so they cost those jobs
// 8 bytes. A field added to Job must be set on most jobs to belong here;
// a rarely set one goes in Orchestration (or another such struct).
//
// Embedding keeps the JSON flat and in the same order as before:
// encoding/json writes an embedded struct's fields in its place, leaves
// them all out when the pointer is nil and allocates it when a record
// has one of them, so the stored records are byte-for-byte unchanged
// (TestJobFlatJSON). Reading a promoted field through a nil pointer
// would panic, so Job shadows every one with a nil-safe method of the
// same name (j.Parent(), j.Fanout(), ...): j.Parent is the method, never
// the field, so code that uses it as the field does not compile, and the
// uses that would (comparing j.Fanout with nil, printing j.Agent) are
// reported by go vet. Write through j.Orch(), which allocates the struct
// on an ordinary job; whoever reads j.Orchestration itself checks it for
// nil.
//
// The remaining padding (after Cancellable, CancelRequested and Events,
// 17 bytes) stays: removing it means moving those fields next to each
// other, which would change the order encoding/json and appendJob write
// the fields in, and with it every stored record.
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

	// The orchestration fields (issue 17), nil on an ordinary job: see
	// the layout note above and the accessors below.
	*Orchestration

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

// Orchestration holds the fields of a job that only orchestration
// (issue 17) sets: fan-outs, dependencies, schedules and webhooks. A Job
// embeds a pointer to one, nil unless one of them is set (Job's layout
// note). Read them with Job's methods of the same names, write them
// through Job.Orch.
type Orchestration struct {
	// Parent is the fan-out job this job is a child of; Agent pins the
	// job to the agent of that name (a fan-out child runs on its host
	// and nowhere else).
	Parent uint64 `json:"parent,omitempty"`
	Agent  string `json:"agent,omitempty"`
	// After lists the jobs this one runs after: it stays blocked until
	// all of them completed, and is cancelled if one did not — unless
	// AfterAny, when it runs once they all ended, whatever their outcome.
	After    []uint64 `json:"after,omitempty"`
	AfterAny bool     `json:"after_any,omitempty"`
	// Schedule names the schedule that created the job.
	Schedule string `json:"schedule,omitempty"`
	// Notify lists URLs to POST the job's end to (webhooks).
	Notify []string `json:"notify,omitempty"`
	// Fanout is set on a fan-out's parent: the job is never dispatched
	// itself; its children run the command, one per agent.
	Fanout *Fanout `json:"fanout,omitempty"`
}

// Orch returns j's orchestration fields for writing, allocating them on
// a job that has none.
func (j *Job) Orch() *Orchestration {
	if j.Orchestration == nil {
		j.Orchestration = new(Orchestration)
	}
	return j.Orchestration
}

// Parent is the fan-out job j is a child of; 0: none.
func (j *Job) Parent() uint64 {
	if j.Orchestration == nil {
		return 0
	}
	return j.Orchestration.Parent
}

// Agent is the name of the agent j is pinned to; "": none.
func (j *Job) Agent() string {
	if j.Orchestration == nil {
		return ""
	}
	return j.Orchestration.Agent
}

// After lists the jobs j runs after (the caller must not modify it).
func (j *Job) After() []uint64 {
	if j.Orchestration == nil {
		return nil
	}
	return j.Orchestration.After
}

// AfterAny reports whether j runs once the jobs it runs after ended,
// whatever their outcome.
func (j *Job) AfterAny() bool {
	return j.Orchestration != nil && j.Orchestration.AfterAny
}

// Schedule names the schedule that created j; "": none.
func (j *Job) Schedule() string {
	if j.Orchestration == nil {
		return ""
	}
	return j.Orchestration.Schedule
}

// Notify lists the URLs j's end is posted to (the caller must not
// modify it).
func (j *Job) Notify() []string {
	if j.Orchestration == nil {
		return nil
	}
	return j.Orchestration.Notify
}

// Fanout is set on a fan-out's parent; nil on any other job.
func (j *Job) Fanout() *Fanout {
	if j.Orchestration == nil {
		return nil
	}
	return j.Orchestration.Fanout
}

// Fanout describes a fan-out parent: its children, how they roll out
// and how far they got. Its children are the jobs FirstChild to
// FirstChild+Children-1, created with it in one round.
type Fanout struct {
	Selector       map[string]string `json:"selector,omitempty"` // the labels the agents matched; empty: every agent
	IncludeOffline bool              `json:"include_offline,omitempty"`
	FirstChild     uint64            `json:"first_child"`
	Children       int               `json:"children"`
	// Batch is how many children may be unfinished and released at once
	// (a rolling rollout); 0: all at once.
	Batch int `json:"batch,omitempty"`
	// MaxFailures is how many children may fail before the rollout
	// stops (the children not yet released are cancelled); nil: no limit.
	MaxFailures *int `json:"max_failures,omitempty"`
	// The children that ended, by how.
	Completed int `json:"completed,omitempty"`
	Failed    int `json:"failed,omitempty"`
	Timeout   int `json:"timeout,omitempty"`
	Cancelled int `json:"cancelled,omitempty"`
	// Stopped is set once the rollout stopped for MaxFailures.
	Stopped bool `json:"stopped,omitempty"`
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
	if o := j.Orchestration; o != nil {
		co := *o
		if o.After != nil {
			co.After = append([]uint64(nil), o.After...)
		}
		if o.Notify != nil {
			co.Notify = append([]string(nil), o.Notify...)
		}
		if o.Fanout != nil {
			f := *o.Fanout
			f.Selector = cloneMap(o.Fanout.Selector)
			if m := o.Fanout.MaxFailures; m != nil {
				v := *m
				f.MaxFailures = &v
			}
			co.Fanout = &f
		}
		c.Orchestration = &co
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
