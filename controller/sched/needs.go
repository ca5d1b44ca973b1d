package sched

import (
	"iter"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// What the scheduler needs from the controller around it, declared
// here, where it is used (STYLE.md: consumer-side interfaces).

// Reader is what the scheduler reads of the store (*store.Store); it
// writes through the Committer.
type Reader interface {
	NextID() uint64
	Get(id uint64) (*store.Job, error)
	IdempotencyKey(key string) (uint64, bool, error)
	Active() ([]*store.Job, error)
	LogEnd(id uint64) (uint64, error)
	Schedules() ([]store.Schedule, error)
	Agents() ([]store.Agent, error)
}

// Session is one connected agent session: the scheduler sends it
// Dispatch and Cancel messages and closes it (replaced, silent, or the
// controller stopping). Name, Labels and Slots are what the agent said
// in its hello and do not change during the session; the scheduler
// reads them once, in Register. What the scheduler knows of the agent
// beyond that — credits, attempts, drain, last heartbeat — is its own
// (registry.go), never the session's.
type Session interface {
	Name() string
	Labels() map[string]string
	Slots() int
	// Send queues a message for the agent without blocking (a session
	// that cannot take it closes itself).
	Send(m protocol.Message)
	// Close ends the session; the controller's serving goroutine calls
	// Unregister when it has ended.
	Close(reason string)
	// Log is the session's logger (remote address, transport, agent).
	Log() hclog.Logger
}

// Metrics hears of every job the scheduler holds and every change it
// makes (the controller's Prometheus metrics).
type Metrics interface {
	// CountAll counts jobs held now: the ones loaded, or held when the
	// metrics are hooked in (SetMetrics).
	CountAll(jobs iter.Seq[*store.Job])
	// Transition counts one job transition; prev is nil for a new job.
	// It is called under the scheduler's lock and must not call back.
	Transition(prev, next *store.Job)
	// LogBytes counts output bytes queued to the store.
	LogBytes(n int)
}

// ScheduleMetrics, if the Metrics also implement it, hears of every
// firing of a schedule (the controller's Prometheus metrics). Called
// under the scheduler's lock: it must be quick and must not call back.
type ScheduleMetrics interface {
	// ScheduleFired counts a job created by schedule name: lateness is
	// how long after its occurrence it was created (not observed for a
	// run-now, manual).
	ScheduleFired(name string, lateness time.Duration, manual bool)
	// ScheduleSkipped counts n occurrences of schedule name that
	// created no job, and why: SkipOverlap, SkipCatchUp or SkipDisk.
	ScheduleSkipped(name, why string, n int)
}

// Why an occurrence was skipped (ScheduleMetrics.ScheduleSkipped).
const (
	SkipOverlap = "overlap"  // the previous job had not ended (overlap skip)
	SkipCatchUp = "catch_up" // missed while no controller ran, not caught up
	SkipDisk    = "disk"     // the controller's disk was nearly full
)

// Disk is the floor of free space on the data directory (the
// controller's disk guard).
type Disk interface {
	// Room refuses growth of about n bytes (a new job, an output chunk)
	// while free space is below the floor.
	Room(n int) error
	// Accepting reports whether dispatch may go on: false while free
	// space is below the floor. The guard kicks the dispatcher
	// (KickDispatch) when space returns.
	Accepting() bool
}

// Notifier makes the webhook notifications of job events (issue 17):
// the controller's, which knows the configured webhooks and writes the
// bodies.
type Notifier interface {
	// Deliveries returns the outbox entries reporting that j reached
	// event (EventStarted, EventFinished) at now, one per target that
	// wants it; none is usual. Everything that varies (IDs, times, the
	// body) is in them: they go into the round as PutDelivery commands.
	// It is called under the scheduler's lock and must not call back.
	Deliveries(j *store.Job, event string, now time.Time) []store.Delivery
	// Queued hands over entries once the round holding them is durable
	// (the delivery worker then sends them).
	Queued(ds ...store.Delivery)
}

// The events a Notifier is asked about.
const (
	EventStarted  = "job.started"  // the first start of an attempt
	EventFinished = "job.finished" // a terminal state
)

// noMetrics and noDisk stand in when Options leave them out (tests).
type noMetrics struct{}

func (noMetrics) CountAll(iter.Seq[*store.Job])    {}
func (noMetrics) Transition(prev, next *store.Job) {}
func (noMetrics) LogBytes(int)                     {}

type noDisk struct{}

func (noDisk) Room(int) error  { return nil }
func (noDisk) Accepting() bool { return true }
