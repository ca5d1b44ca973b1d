package sched

import (
	"container/heap"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/cronspec"
	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// Schedules (issue 17): cron schedules that create jobs. The scheduler
// holds every schedule (few: they are loaded at start) with its parsed
// timing, and a heap of when each waits to fire, which DelayLoop serves
// beside the retry delays on the same clock — so a fake clock makes the
// tests exact.
//
// A firing is one round: the job created (Job.Schedule set), the
// previous job's cancel for the replace policy, and the schedule's new
// version (PutSchedule: Next advanced past now, LastJob, LastFired and
// the counts) — all or none durable, so a crash never loses an
// occurrence that ran and never runs one twice. Everything that varies
// (the job's ID, the times, the next occurrence) is chosen before the
// commands are made.
//
// What an occurrence does is cronspec's Due: on time (up to a minute
// late) it runs; occurrences missed while no controller ran are skipped,
// but with catch-up "one" the most recent runs once, never a burst. The
// overlap policy decides when the schedule's previous job has not ended:
// skip (count it and create nothing), allow, or replace (cancel the
// previous job in the same round, then create).

// schedule is a schedule held in memory: its latest version and its
// parsed timing (nil if the stored expression no longer parses).
type schedule struct {
	rec  store.Schedule
	spec *cronspec.Spec
}

// ScheduleRun is what a firing did, for run-now.
type ScheduleRun struct {
	Schedule store.Schedule
	Job      *store.Job // nil when the occurrence was skipped
}

// loadSchedules puts the stored schedules in memory and their next
// occurrences on the timer heap (one in the past fires at once, by the
// catch-up policy). The caller holds s.mu.
func (s *Scheduler) loadSchedules(recs []store.Schedule) {
	for _, rec := range recs {
		spec, err := cronspec.Parse(rec.Cron, rec.TZ)
		if err != nil {
			s.log.Error("schedule does not parse; it will not fire", "schedule", rec.Name, "error", err)
		}
		s.schedules[rec.Name] = &schedule{rec: rec, spec: spec}
		s.arm(rec)
	}
	if len(recs) > 0 {
		s.log.Info("schedules loaded", "schedules", len(recs))
	}
}

// arm puts rec's next occurrence on the timer heap. The caller holds
// s.mu.
func (s *Scheduler) arm(rec store.Schedule) {
	if rec.Paused || rec.Next.IsZero() {
		return
	}
	heap.Push(&s.timers, timerItem{name: rec.Name, due: rec.Next})
	s.kickDelay()
}

// Schedules returns every schedule, by name.
func (s *Scheduler) Schedules() []store.Schedule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]store.Schedule, 0, len(s.schedules))
	for _, sc := range s.schedules {
		out = append(out, sc.rec)
	}
	slices.SortFunc(out, func(a, b store.Schedule) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Schedule returns schedule name.
func (s *Scheduler) Schedule(name string) (store.Schedule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.schedules[name]
	if sc == nil {
		return store.Schedule{}, fmt.Errorf("%w: %s", ErrNoSchedule, name)
	}
	return sc.rec, nil
}

// CreateSchedule stores a new schedule (its Name, Cron, TZ, Job
// template, policies and Paused are the caller's; the times are set
// here) and returns it as stored, once durable.
func (s *Scheduler) CreateSchedule(rec store.Schedule) (store.Schedule, error) {
	spec, err := cronspec.Parse(rec.Cron, rec.TZ)
	if err != nil {
		return store.Schedule{}, err
	}
	s.mu.Lock()
	if s.schedules[rec.Name] != nil {
		s.mu.Unlock()
		return store.Schedule{}, fmt.Errorf("%w: %s", ErrScheduleExists, rec.Name)
	}
	now := s.clock.Now().UTC()
	rec.CreatedAt, rec.UpdatedAt = now, now
	rec.Next, rec.LastFired, rec.LastJob, rec.Fired, rec.Skipped = time.Time{}, time.Time{}, 0, 0, 0
	if !rec.Paused {
		rec.Next = spec.Next(now)
	}
	s.schedules[rec.Name] = &schedule{rec: rec, spec: spec}
	b := s.c.Add(&store.PutSchedule{Schedule: rec, Create: true})
	s.arm(rec)
	s.mu.Unlock()
	s.log.Info("schedule created", "schedule", rec.Name, "cron", rec.Cron, "tz", rec.TZ, "next", rec.Next)
	return rec, b.Wait()
}

// PauseSchedule pauses (paused) or resumes schedule name and returns it
// once durable. A resumed schedule waits for its next occurrence after
// now: what it missed while paused does not run.
func (s *Scheduler) PauseSchedule(name string, paused bool) (store.Schedule, error) {
	s.mu.Lock()
	sc := s.schedules[name]
	if sc == nil {
		s.mu.Unlock()
		return store.Schedule{}, fmt.Errorf("%w: %s", ErrNoSchedule, name)
	}
	if sc.rec.Paused == paused {
		rec := sc.rec
		s.mu.Unlock()
		return rec, nil
	}
	now := s.clock.Now().UTC()
	rec := sc.rec
	rec.Paused, rec.UpdatedAt, rec.Next = paused, now, time.Time{}
	if !paused && sc.spec != nil {
		rec.Next = sc.spec.Next(now)
	}
	sc.rec = rec
	b := s.c.Add(&store.PutSchedule{Schedule: rec})
	s.arm(rec)
	s.mu.Unlock()
	return rec, b.Wait()
}

// DeleteSchedule deletes schedule name, once durable. The jobs it
// created stay.
func (s *Scheduler) DeleteSchedule(name string) (store.Schedule, error) {
	s.mu.Lock()
	sc := s.schedules[name]
	if sc == nil {
		s.mu.Unlock()
		return store.Schedule{}, fmt.Errorf("%w: %s", ErrNoSchedule, name)
	}
	delete(s.schedules, name)
	b := s.c.Add(&store.DeleteSchedule{Name: name})
	s.mu.Unlock()
	s.log.Info("schedule deleted", "schedule", name)
	return sc.rec, b.Wait()
}

// RunSchedule creates schedule name's job now (run-now), whatever its
// timing, pause and overlap policy, and returns it once durable. Its
// Next stays.
func (s *Scheduler) RunSchedule(name string) (ScheduleRun, error) {
	if err := s.disk.Room(1024); err != nil {
		return ScheduleRun{}, err
	}
	s.mu.Lock()
	sc := s.schedules[name]
	if sc == nil {
		s.mu.Unlock()
		return ScheduleRun{}, fmt.Errorf("%w: %s", ErrNoSchedule, name)
	}
	run, b, sends := s.fire(sc, s.clock.Now().UTC(), true)
	s.mu.Unlock()
	if err := b.Wait(); err != nil {
		return ScheduleRun{}, err
	}
	send(sends)
	return run, nil
}

// fireDue fires the schedules due at now and returns when the next one
// is due (zero if none is armed).
func (s *Scheduler) fireDue(now time.Time) time.Time {
	s.mu.Lock()
	var waits []*Batch
	var sends []outgoing
	fired := 0
	for s.timers.Len() > 0 && !s.timers[0].due.After(now) {
		it := heap.Pop(&s.timers).(timerItem)
		sc := s.schedules[it.name]
		if sc == nil || sc.rec.Paused || !sc.rec.Next.Equal(it.due) || sc.spec == nil {
			continue // deleted, paused or superseded
		}
		run, b, out := s.fire(sc, now.UTC(), false)
		waits = append(waits, b)
		sends = append(sends, out...)
		if run.Job != nil {
			fired++
		}
	}
	if fired > 0 {
		s.log.Info("schedules fired", "jobs", fired, "at", now.UTC())
	}
	next := time.Time{}
	if s.timers.Len() > 0 {
		next = s.timers[0].due
	}
	s.mu.Unlock()
	if len(sends) > 0 {
		// A replaced job's agent hears of the cancel once it is durable.
		go func() {
			for _, b := range waits {
				if b.Wait() != nil {
					return
				}
			}
			send(sends)
		}()
	}
	return next
}

func send(out []outgoing) {
	for _, o := range out {
		o.a.Send(o.m)
	}
}

// fire makes one firing of sc at now as one round and returns what it
// did, the round's batch and the Cancel messages to send once it is
// durable (the replace policy's, for a running job). manual is run-now:
// the job is created whatever the timing and the overlap policy, and
// Next stays. The caller holds s.mu.
func (s *Scheduler) fire(sc *schedule, now time.Time, manual bool) (ScheduleRun, *Batch, []outgoing) {
	rec := sc.rec
	next := rec
	next.UpdatedAt = now
	run := now
	if !manual {
		var skipped int
		run, skipped, next.Next = sc.spec.Due(rec.Next, now, rec.CatchUp != store.CatchUpNone)
		next.Skipped += uint64(skipped)
		if skipped > 0 {
			s.scheduleSkipped(rec.Name, SkipCatchUp, skipped)
		}
		if skipped > 0 || run.IsZero() {
			s.log.Warn("schedule missed occurrences while no controller ran", "schedule", rec.Name,
				"missed", skipped, "catch_up", rec.CatchUp, "runs_one", !run.IsZero())
		}
	}
	var r round
	var out []outgoing
	var job *store.Job
	var last *store.Job
	if rec.LastJob != 0 {
		last = s.jobs[rec.LastJob]
	}
	switch {
	case run.IsZero():
	case last != nil && !manual && rec.Overlap == store.OverlapSkip:
		next.Skipped++
		s.scheduleSkipped(rec.Name, SkipOverlap, 1)
		s.log.Info("schedule skipped an occurrence: its previous job has not ended", "schedule", rec.Name,
			"occurrence", run, "job", last.ID, "state", string(last.State))
	case !manual && s.disk.Room(recordSize(&rec.Job)) != nil:
		// As a submission would be refused (507): the occurrence is
		// counted as skipped, the schedule goes on.
		next.Skipped++
		s.scheduleSkipped(rec.Name, SkipDisk, 1)
		s.log.Warn("schedule skipped an occurrence: the controller's disk is nearly full", "schedule", rec.Name, "occurrence", run)
	default:
		if last != nil && !manual && rec.Overlap == store.OverlapReplace {
			out = s.replace(&r, last, rec.Name)
		}
		job = rec.Job.Clone()
		job.ID = s.st.NextID()
		job.Orch().Schedule = rec.Name
		job.CreatedAt, job.QueuedAt = now, now
		job.State = store.Queued
		job.Reason = s.whyQueued(job)
		msg := "schedule " + rec.Name + ": occurrence " + run.Format(time.RFC3339)
		if manual {
			msg = "schedule " + rec.Name + ": run now"
		}
		level := hclog.Debug // fireDue logs one line for the firings of an instant
		if manual {
			level = hclog.Info
		}
		s.change(&r, nil, job, "submitted", msg, level, nil)
		next.LastJob, next.LastFired = job.ID, run
		next.Fired++
		if m, ok := s.metrics.(ScheduleMetrics); ok {
			m.ScheduleFired(rec.Name, now.Sub(run), manual)
		}
	}
	if manual {
		next.Next = rec.Next
	}
	r.cmds = append(r.cmds, &store.PutSchedule{Schedule: next})
	sc.rec = next
	if !manual {
		s.arm(next)
	}
	b := s.commit(&r)
	return ScheduleRun{Schedule: next, Job: job}, b, out
}

// replace cancels schedule name's previous job, last, in r: at once if
// no agent holds it, else by asking its agent (the Cancel returned, to
// send once r is durable). A job submitted not cancellable is left to
// run. The caller holds s.mu.
func (s *Scheduler) replace(r *round, last *store.Job, name string) []outgoing {
	why := "replaced by the next run of schedule " + name
	next := last.Clone()
	next.CancelRequested = true
	switch {
	case !last.State.Active():
		next.State = store.Cancelled
		next.FinishedAt = s.clock.Now().UTC()
		next.Reason = why
		s.change(r, last, next, "cancelled", why, hclog.Info, nil)
		return nil
	case !last.Cancellable || last.CancelRequested:
		return nil
	}
	next.Reason = why + "; waiting for the agent to stop it"
	s.change(r, last, next, "cancel_requested", why, hclog.Info, nil)
	cur := next.Current()
	if st := s.agents[cur.Agent]; st != nil {
		return []outgoing{{st.conn, &protocol.Cancel{JobID: last.ID, Attempt: cur.Number, Reason: why}}}
	}
	return nil
}

// timerItem is a schedule's next occurrence on the timer heap.
type timerItem struct {
	name string
	due  time.Time
}

type timerHeap []timerItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerItem)) }
func (h *timerHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// scheduleSkipped tells the metrics, if they count schedules, of n
// occurrences skipped. The caller holds s.mu.
func (s *Scheduler) scheduleSkipped(name, why string, n int) {
	if m, ok := s.metrics.(ScheduleMetrics); ok {
		m.ScheduleSkipped(name, why, n)
	}
}
