package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Records of issue 17's orchestration: schedules that create jobs, the
// webhook outbox, the agents the controller has seen (for fan-out to
// agents that are not connected) and the secret webhook bodies are
// signed with. Each is a small JSON record under its own prefix, written
// only by the commands below, so they are as durable and as replicable
// as jobs.
const (
	prefixSchedule = 'p' // 'p' + name → Schedule
	prefixOutbox   = 'o' // 'o' + delivery ID → Delivery
	prefixAgent    = 'g' // 'g' + agent name → Agent
	prefixNotify   = 'w' // 'w' → the webhook signing secret
)

// Overlap policies of a schedule: what an occurrence does while the job
// of the previous one has not ended.
const (
	OverlapSkip    = "skip"    // create nothing (the default)
	OverlapAllow   = "allow"   // create the job anyway
	OverlapReplace = "replace" // cancel the running job, then create
)

// Catch-up policies: what a schedule does about occurrences missed while
// no controller ran.
const (
	CatchUpOne  = "one"  // run the most recent missed occurrence once (the default)
	CatchUpNone = "none" // skip them all
)

// Schedule is a durable cron schedule. Its timing (Cron in TZ) is parsed
// by controller/cronspec; Job is the template of the jobs it creates
// (submitted fields only: ID, state, times and history are unset).
type Schedule struct {
	Name    string `json:"name"` // unique; the schedule's ID
	Cron    string `json:"cron"`
	TZ      string `json:"tz,omitempty"` // IANA zone; "" is UTC
	Job     Job    `json:"job"`
	Overlap string `json:"overlap"`
	CatchUp string `json:"catch_up"`
	Paused  bool   `json:"paused,omitempty"`

	// Next is the occurrence the schedule waits for (unset while paused).
	Next time.Time `json:"next,omitzero"`
	// LastFired is the occurrence of the last job created; LastJob its ID.
	LastFired time.Time `json:"last_fired,omitzero"`
	LastJob   uint64    `json:"last_job,omitempty"`
	Fired     uint64    `json:"fired"`   // jobs created
	Skipped   uint64    `json:"skipped"` // occurrences skipped (overlap, catch-up)

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Delivery is one webhook notification in the outbox, from the commit
// of the event it reports until it was delivered or given up.
type Delivery struct {
	ID        string    `json:"id"` // unique, the same on every try (the receiver's dedupe key)
	Job       uint64    `json:"job"`
	Event     string    `json:"event"` // "job.finished", "job.started"
	URL       string    `json:"url"`
	Hook      string    `json:"hook,omitempty"` // the controller-wide webhook's name; "" for the job's own notify URL
	Body      []byte    `json:"body"`           // JSON, fixed when the event committed
	Tries     int       `json:"tries"`
	NextTry   time.Time `json:"next_try"`
	LastError string    `json:"last_error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Agent is what the controller remembers of an agent that connected:
// enough to fan a job out to it while it is away.
type Agent struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Slots     int               `json:"slots"`
	Version   string            `json:"version,omitempty"`
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
}

func scheduleKey(name string) []byte { return append([]byte{prefixSchedule}, name...) }
func outboxKey(id string) []byte     { return append([]byte{prefixOutbox}, id...) }
func agentKey(name string) []byte    { return append([]byte{prefixAgent}, name...) }

var notifyKey = []byte{prefixNotify}

// PutSchedule stores a schedule. With Create it must not exist
// (ErrExists); without, it must (ErrNotFound): an update that applies
// after a delete does not bring the schedule back.
type PutSchedule struct {
	Schedule Schedule
	Create   bool
}

// DeleteSchedule removes the schedule Name; ErrNotFound if there is none.
type DeleteSchedule struct{ Name string }

// PutDelivery stores an outbox entry under its ID, replacing one stored
// there (a retry's new count and time).
type PutDelivery struct{ Delivery Delivery }

// DeleteDelivery removes the outbox entry ID (delivered or given up);
// ErrNotFound if there is none.
type DeleteDelivery struct{ ID string }

// PutAgent stores what is known of an agent, replacing the record of the
// same name but keeping its FirstSeen.
type PutAgent struct{ Agent Agent }

// DeleteAgent forgets agent Name; ErrNotFound if it is not known.
type DeleteAgent struct{ Name string }

// AppendEvent adds Event to the history of a finished job (a webhook's
// delivery or its failure): the job's Events count grows by one, its
// state stays. Event.Seq and Event.State are set from the record. A job
// that is not stored (ErrNotFound), not finished, or changed earlier in
// the same round (ErrConflict) is left alone: an unfinished job's
// history belongs to the scheduler, whose next transition numbers its
// events.
type AppendEvent struct {
	Job   uint64
	Event Event
}

// SetNotifySecret stores the webhook signing secret unless one is stored
// already: the first one made stays (two controllers racing to make one
// end with the same). Result.Secret is the stored secret either way.
type SetNotifySecret struct{ Secret []byte }

func (c *PutSchedule) check() error {
	s := &c.Schedule
	switch {
	case s.Name == "":
		return fmt.Errorf("%w: schedule without a name", ErrInvalid)
	case s.Cron == "":
		return fmt.Errorf("%w: schedule %s without a cron expression", ErrInvalid, s.Name)
	case s.Overlap != OverlapSkip && s.Overlap != OverlapAllow && s.Overlap != OverlapReplace:
		return fmt.Errorf("%w: schedule %s: overlap %q", ErrInvalid, s.Name, s.Overlap)
	case s.CatchUp != CatchUpOne && s.CatchUp != CatchUpNone:
		return fmt.Errorf("%w: schedule %s: catch-up %q", ErrInvalid, s.Name, s.CatchUp)
	case s.Job.ID != 0 || s.Job.State != "" || s.Job.Events != 0:
		return fmt.Errorf("%w: schedule %s: its job template has an ID, a state or events", ErrInvalid, s.Name)
	}
	return nil
}

func (c *DeleteSchedule) check() error { return nil }

func (c *PutDelivery) check() error {
	if c.Delivery.ID == "" || c.Delivery.URL == "" {
		return fmt.Errorf("%w: outbox entry without an ID or a URL", ErrInvalid)
	}
	return nil
}

func (c *DeleteDelivery) check() error { return nil }

func (c *PutAgent) check() error {
	if c.Agent.Name == "" {
		return fmt.Errorf("%w: agent without a name", ErrInvalid)
	}
	return nil
}

func (c *DeleteAgent) check() error { return nil }

func (c *AppendEvent) check() error {
	if c.Job == 0 || c.Event.Type == "" {
		return fmt.Errorf("%w: an event without a job or a type", ErrInvalid)
	}
	return nil
}

func (c *SetNotifySecret) check() error {
	if len(c.Secret) < 16 {
		return fmt.Errorf("%w: a notify secret of %d bytes (at least 16)", ErrInvalid, len(c.Secret))
	}
	return nil
}

func (c *PutSchedule) apply(r *round) (Result, error) {
	key := scheduleKey(c.Schedule.Name)
	_, ok, err := r.get(key)
	if err != nil {
		return Result{}, err
	}
	switch {
	case c.Create && ok:
		return Result{Err: fmt.Errorf("store: create schedule %s: %w", c.Schedule.Name, ErrExists)}, nil
	case !c.Create && !ok:
		return Result{Err: fmt.Errorf("store: update schedule %s: %w", c.Schedule.Name, ErrNotFound)}, nil
	}
	return Result{}, r.setJSON(key, &c.Schedule)
}

func (c *DeleteSchedule) apply(r *round) (Result, error) {
	return r.deleteRecord(scheduleKey(c.Name), "schedule "+c.Name)
}

func (c *PutDelivery) apply(r *round) (Result, error) {
	return Result{}, r.setJSON(outboxKey(c.Delivery.ID), &c.Delivery)
}

func (c *DeleteDelivery) apply(r *round) (Result, error) {
	return r.deleteRecord(outboxKey(c.ID), "outbox entry "+c.ID)
}

func (c *PutAgent) apply(r *round) (Result, error) {
	key := agentKey(c.Agent.Name)
	a := c.Agent
	v, ok, err := r.get(key)
	if err != nil {
		return Result{}, err
	}
	if ok {
		var old Agent
		if err := json.Unmarshal(v, &old); err != nil {
			return Result{}, fmt.Errorf("agent %s: %w", a.Name, err)
		}
		a.FirstSeen = old.FirstSeen
	}
	return Result{}, r.setJSON(key, &a)
}

func (c *DeleteAgent) apply(r *round) (Result, error) {
	return r.deleteRecord(agentKey(c.Name), "agent "+c.Name)
}

func (c *AppendEvent) apply(r *round) (Result, error) {
	if _, ok := r.jobs[c.Job]; ok {
		// The batch is not readable: a record this round wrote is not
		// in Pebble yet. Never the case for a finished job.
		return Result{Err: fmt.Errorf("store: event of job %d: %w: %w", c.Job, ErrConflict, ErrSameRound)}, nil
	}
	j, err := getJob(r.s.db, c.Job)
	if errors.Is(err, ErrNotFound) {
		return Result{Err: fmt.Errorf("store: event of job %d: %w", c.Job, ErrNotFound)}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("job %d: %w", c.Job, err)
	}
	if !j.State.Terminal() {
		return Result{Err: fmt.Errorf("store: event of job %d: %w: it is %s, not finished", c.Job, ErrConflict, j.State)}, nil
	}
	ev := c.Event
	ev.Seq, ev.State = j.Events, j.State
	j.Events++
	sc := &r.sc
	if sc.job, err = appendJob(sc.job[:0], j); err != nil {
		return Result{}, fmt.Errorf("job %d: encode: %w", j.ID, err)
	}
	if sc.event, err = appendEvent(sc.event[:0], &ev); err != nil {
		return Result{}, fmt.Errorf("job %d: encode event: %w", j.ID, err)
	}
	_ = r.b.Set(jobKey(j.ID), sc.job, nil)
	_ = r.b.Set(eventKey(j.ID, ev.Seq), sc.event, nil)
	r.jobs[j.ID] = headOf(j)
	return Result{}, nil
}

func (c *SetNotifySecret) apply(r *round) (Result, error) {
	v, ok, err := r.get(notifyKey)
	if err != nil {
		return Result{}, err
	}
	if ok {
		return Result{Secret: v}, nil
	}
	r.set(notifyKey, c.Secret)
	return Result{Secret: c.Secret}, nil
}

// Schedules returns every schedule, by name.
func (s *Store) Schedules() ([]Schedule, error) {
	out, err := scanJSON[Schedule](s, prefixSchedule)
	if err != nil {
		return nil, fmt.Errorf("store: schedules: %w", err)
	}
	return out, nil // key order is name order
}

// Deliveries returns the outbox, oldest first.
func (s *Store) Deliveries() ([]Delivery, error) {
	out, err := scanJSON[Delivery](s, prefixOutbox)
	if err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Agents returns the agents the controller has seen, by name.
func (s *Store) Agents() ([]Agent, error) {
	out, err := scanJSON[Agent](s, prefixAgent)
	if err != nil {
		return nil, fmt.Errorf("store: agents: %w", err)
	}
	return out, nil
}

// NotifySecret returns the webhook signing secret, or nil before
// SetNotifySecret stored one.
func (s *Store) NotifySecret() ([]byte, error) {
	var out []byte
	err := s.scan(prefixNotify, func(v []byte) error {
		out = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: notify secret: %w", err)
	}
	return out, nil
}

// scanJSON decodes every record under prefix p, in key order.
func scanJSON[T any](s *Store, p byte) ([]T, error) {
	var out []T
	err := s.scan(p, func(v []byte) error {
		var x T
		if err := json.Unmarshal(v, &x); err != nil {
			return err
		}
		out = append(out, x)
		return nil
	})
	return out, err
}
