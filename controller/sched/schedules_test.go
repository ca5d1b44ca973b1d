package sched

import (
	"errors"
	"sync"
	"testing"
	"time"

	"jobsuite/controller/clock/clocktest"
	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// every5 is a schedule firing at minutes 0, 5, 10… of every hour, UTC.
func every5(name, overlap, catchUp string) store.Schedule {
	return store.Schedule{Name: name, Cron: "*/5 * * * *", Overlap: overlap, CatchUp: catchUp,
		Job: store.Job{Name: name, Command: "backup", Priority: 50, Logs: true, Cancellable: true}}
}

func (f *schedFixture) create(rec store.Schedule) store.Schedule {
	f.t.Helper()
	rec, err := f.s.CreateSchedule(rec)
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

// fire runs the timer at the clock's time and returns the schedule
// name as it is then.
func (f *schedFixture) fire(name string) store.Schedule {
	f.t.Helper()
	f.s.fireDue(f.clock.Now())
	if err := f.s.c.Barrier().Wait(); err != nil {
		f.t.Fatal(err)
	}
	rec, err := f.s.Schedule(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

// A schedule fires exactly at its occurrences: not a nanosecond before,
// and each firing is one round holding the job (linked to the schedule)
// and the schedule's next occurrence.
func TestScheduleFiresOnTime(t *testing.T) {
	f := newSchedFixture(t, Options{})
	rec := f.create(every5("backup", store.OverlapAllow, store.CatchUpOne))
	if want := schedT0.Add(5 * time.Minute); !rec.Next.Equal(want) {
		t.Fatalf("next %v, want %v", rec.Next, want)
	}
	f.clock.Advance(5*time.Minute - 1)
	if got := f.fire("backup"); got.Fired != 0 || got.LastJob != 0 {
		t.Fatalf("fired before its time: %+v", got)
	}
	f.clock.Advance(1)
	got := f.fire("backup")
	if got.Fired != 1 || got.LastJob == 0 || !got.LastFired.Equal(schedT0.Add(5*time.Minute)) || !got.Next.Equal(schedT0.Add(10*time.Minute)) {
		t.Fatalf("after the first occurrence: %+v", got)
	}
	j := f.job(got.LastJob)
	if j.Schedule() != "backup" || j.Command != "backup" || j.State != store.Queued || !j.CreatedAt.Equal(schedT0.Add(5*time.Minute)) {
		t.Errorf("the job: %+v", j)
	}
	r := f.roundOf(j.ID, store.Queued)
	var put *store.PutSchedule
	for _, c := range r {
		if p, ok := c.(*store.PutSchedule); ok {
			put = p
		}
	}
	if put == nil || put.Schedule.LastJob != j.ID || !put.Schedule.Next.Equal(schedT0.Add(10*time.Minute)) {
		t.Errorf("the job's round does not advance the schedule: %+v", put)
	}
	// Ten more occurrences, each on time.
	for i := 2; i <= 11; i++ {
		f.clock.Advance(5 * time.Minute)
		if got := f.fire("backup"); got.Fired != uint64(i) || !got.LastFired.Equal(schedT0.Add(time.Duration(i)*5*time.Minute)) {
			t.Fatalf("occurrence %d: %+v", i, got)
		}
	}
}

// The overlap policies, while the previous job has not ended: skip
// creates nothing and counts it, allow creates the job anyway, replace
// cancels the previous job in the same round and creates the new one.
func TestScheduleOverlap(t *testing.T) {
	tests := map[string]struct {
		overlap   string
		newJob    bool
		prevState store.State
		skipped   uint64
	}{
		"skip":    {store.OverlapSkip, false, store.Queued, 1},
		"allow":   {store.OverlapAllow, true, store.Queued, 0},
		"replace": {store.OverlapReplace, true, store.Cancelled, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newSchedFixture(t, Options{})
			f.create(every5("s", tc.overlap, store.CatchUpOne))
			f.clock.Advance(5 * time.Minute)
			first := f.fire("s").LastJob
			f.clock.Advance(5 * time.Minute)
			got := f.fire("s")
			if (got.LastJob != first) != tc.newJob || got.Skipped != tc.skipped {
				t.Errorf("second occurrence: last job %d (first %d), skipped %d; want a new job %v, skipped %d",
					got.LastJob, first, got.Skipped, tc.newJob, tc.skipped)
			}
			if st := f.job(first).State; st != tc.prevState {
				t.Errorf("the first job is %s, want %s", st, tc.prevState)
			}
			if !got.Next.Equal(schedT0.Add(15 * time.Minute)) {
				t.Errorf("next %v", got.Next)
			}
			if tc.overlap == store.OverlapReplace {
				if r := f.roundOf(got.LastJob, store.Queued); !inRound(r, first, store.Cancelled) {
					t.Errorf("the replaced job's cancel is not in the new job's round")
				}
			}
			// Once the job ended, skip runs again.
			if tc.overlap == store.OverlapSkip {
				if _, _, err := f.s.Cancel(first); err != nil {
					t.Fatal(err)
				}
				f.clock.Advance(5 * time.Minute)
				if got := f.fire("s"); got.LastJob == first || got.Fired != 2 {
					t.Errorf("after the first job ended: %+v", got)
				}
			}
		})
	}
}

// replace with a running job: the job is asked to stop (its agent gets
// a Cancel once the round is durable), and the new one is created.
func TestScheduleReplaceRunning(t *testing.T) {
	f := newSchedFixture(t, Options{})
	a := newAgent(t, f.s, "a", 1)
	f.create(every5("s", store.OverlapReplace, store.CatchUpOne))
	f.clock.Advance(5 * time.Minute)
	first := f.fire("s").LastJob
	f.s.Credit(a, 1)
	if d := f.dispatch(); len(d) != 1 || d[0].JobID != first {
		t.Fatalf("dispatched %+v", d)
	}
	sent(a)
	f.clock.Advance(5 * time.Minute)
	got := f.fire("s")
	if got.LastJob == first {
		t.Fatal("no new job")
	}
	if j := f.job(first); !j.CancelRequested {
		t.Errorf("the running job was not asked to stop: %+v", j)
	}
	var cs []*protocol.Cancel
	for i := 0; i < 1000 && len(cs) == 0; i++ {
		m := <-a.out // the Cancel goes out from a goroutine once durable
		if c, ok := m.(*protocol.Cancel); ok {
			cs = append(cs, c)
		}
	}
	if cs[0].JobID != first {
		t.Errorf("cancel sent for %+v", cs[0])
	}
}

// After downtime: catch-up one runs the most recent missed occurrence
// once (never a burst) and skips the rest; none skips them all. Either
// way the schedule then waits for the next occurrence after now.
func TestScheduleCatchUp(t *testing.T) {
	tests := map[string]struct {
		catchUp string
		jobs    uint64
		skipped uint64
	}{
		"one":  {store.CatchUpOne, 1, 11},
		"none": {store.CatchUpNone, 0, 12},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newSchedFixture(t, Options{})
			f.create(every5("s", store.OverlapAllow, tc.catchUp))
			// Down from just before 00:05 to 01:02:30: twelve occurrences
			// (00:05 … 01:00) were missed.
			o := f.s.opts
			clk := clocktest.NewFake(schedT0.Add(62*time.Minute + 30*time.Second))
			o.Clock = clk
			s2, _ := memSchedulerOver(t, f.ms, o)
			if err := s2.Load(); err != nil {
				t.Fatal(err)
			}
			s2.fireDue(clk.Now())
			if err := s2.c.Barrier().Wait(); err != nil {
				t.Fatal(err)
			}
			got, _ := s2.Schedule("s")
			if got.Fired != tc.jobs || got.Skipped != tc.skipped || !got.Next.Equal(schedT0.Add(65*time.Minute)) {
				t.Errorf("after the downtime: fired %d skipped %d next %v; want %d, %d, 01:05",
					got.Fired, got.Skipped, got.Next.Sub(schedT0), tc.jobs, tc.skipped)
			}
			if tc.jobs == 1 {
				if !got.LastFired.Equal(schedT0.Add(time.Hour)) {
					t.Errorf("the run stands for %v, want the most recent missed occurrence, 01:00", got.LastFired.Sub(schedT0))
				}
				if j, _ := f.ms.Get(got.LastJob); j == nil || j.Schedule() != "s" {
					t.Errorf("the catch-up job: %+v", j)
				}
			}
		})
	}
}

// A firing is durable with the schedule's advance: a restart at the
// same instant finds the occurrence done and does not fire it again.
func TestScheduleNoDoubleFireAfterRestart(t *testing.T) {
	f := newSchedFixture(t, Options{})
	f.create(every5("s", store.OverlapAllow, store.CatchUpOne))
	f.clock.Advance(5 * time.Minute)
	first := f.fire("s")
	s2, _ := memSchedulerOver(t, f.ms, f.s.opts)
	if err := s2.Load(); err != nil {
		t.Fatal(err)
	}
	s2.fireDue(f.clock.Now())
	if err := s2.c.Barrier().Wait(); err != nil {
		t.Fatal(err)
	}
	got, _ := s2.Schedule("s")
	if got.Fired != 1 || got.LastJob != first.LastJob {
		t.Errorf("after the restart: %+v, want the one firing before it", got)
	}
}

// Pause, resume, run-now and delete.
func TestScheduleLifecycle(t *testing.T) {
	f := newSchedFixture(t, Options{})
	f.create(every5("s", store.OverlapSkip, store.CatchUpOne))
	if _, err := f.s.CreateSchedule(every5("s", store.OverlapSkip, store.CatchUpOne)); !errors.Is(err, ErrScheduleExists) {
		t.Errorf("create twice: %v", err)
	}
	if _, err := f.s.CreateSchedule(store.Schedule{Name: "bad", Cron: "* * *", Overlap: store.OverlapSkip, CatchUp: store.CatchUpOne}); err == nil {
		t.Error("a bad cron expression was accepted")
	}
	p, err := f.s.PauseSchedule("s", true)
	if err != nil || !p.Paused || !p.Next.IsZero() {
		t.Fatalf("pause: %+v %v", p, err)
	}
	f.clock.Advance(time.Hour)
	if got := f.fire("s"); got.Fired != 0 {
		t.Errorf("a paused schedule fired: %+v", got)
	}
	run, err := f.s.RunSchedule("s")
	if err != nil || run.Job == nil || run.Job.Schedule() != "s" || run.Schedule.Fired != 1 {
		t.Fatalf("run now: %+v %v", run, err)
	}
	// Run-now ignores the overlap policy (the previous job is queued).
	if run2, err := f.s.RunSchedule("s"); err != nil || run2.Job == nil {
		t.Errorf("run now over a queued job: %+v %v", run2, err)
	}
	r, err := f.s.PauseSchedule("s", false)
	if err != nil || r.Paused || !r.Next.Equal(schedT0.Add(65*time.Minute)) {
		t.Fatalf("resume: %+v %v; want next 01:05", r, err)
	}
	if _, err := f.s.DeleteSchedule("s"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(10 * time.Minute)
	f.s.fireDue(f.clock.Now())
	if _, err := f.s.Schedule("s"); !errors.Is(err, ErrNoSchedule) {
		t.Errorf("after delete: %v", err)
	}
	if len(f.ms.scheds) != 0 {
		t.Errorf("stored schedules after delete: %v", f.ms.scheds)
	}
}

// fullDisk refuses growth.
type fullDisk struct{}

func (fullDisk) Room(int) error  { return errors.New("disk nearly full") }
func (fullDisk) Accepting() bool { return true }

// While the disk refuses growth an occurrence creates no job: it is
// counted as skipped and the schedule goes on to the next.
func TestScheduleSkipsOnFullDisk(t *testing.T) {
	f := newSchedFixture(t, Options{})
	f.create(every5("s", store.OverlapAllow, store.CatchUpOne))
	f.s.disk = fullDisk{}
	f.clock.Advance(5 * time.Minute)
	got := f.fire("s")
	if got.Fired != 0 || got.Skipped != 1 || !got.Next.Equal(schedT0.Add(10*time.Minute)) {
		t.Errorf("on a full disk: %+v", got)
	}
	if _, err := f.s.RunSchedule("s"); err == nil {
		t.Error("run-now on a full disk was accepted")
	}
}

// schedMetrics records what a ScheduleMetrics hears.
type schedMetrics struct {
	noMetrics
	mu       sync.Mutex
	lateness []time.Duration
	fired    map[string]int
	skipped  map[string]int // "name why"
}

func (m *schedMetrics) ScheduleFired(name string, lateness time.Duration, manual bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fired[name]++
	if !manual {
		m.lateness = append(m.lateness, lateness)
	}
}

func (m *schedMetrics) ScheduleSkipped(name, why string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.skipped[name+" "+why] += n
}

// The metrics hear of each firing with its lateness (the firing's time
// minus its occurrence), of a run-now without one, and of skipped
// occurrences with the reason: overlap, and catch-up after downtime.
func TestScheduleMetrics(t *testing.T) {
	m := &schedMetrics{fired: map[string]int{}, skipped: map[string]int{}}
	f := newSchedFixture(t, Options{})
	f.s.SetMetrics(m)
	f.create(every5("backup", store.OverlapSkip, store.CatchUpNone))
	f.clock.Advance(5*time.Minute + 3*time.Second) // 3 s late
	f.fire("backup")
	f.clock.Advance(5 * time.Minute) // the first job has not ended: skipped
	f.fire("backup")
	// Three occurrences missed (15, 20, 25): none caught up; the one
	// at 30, 3 s ago, is on time but its previous job has not ended.
	f.clock.Advance(20 * time.Minute)
	f.fire("backup")
	if _, err := f.s.RunSchedule("backup"); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.lateness) != 1 || m.lateness[0] != 3*time.Second {
		t.Errorf("lateness %v, want [3s]", m.lateness)
	}
	if m.fired["backup"] != 2 {
		t.Errorf("fired %v, want 2 (one on time, one run now)", m.fired)
	}
	if m.skipped["backup overlap"] != 2 || m.skipped["backup catch_up"] != 3 {
		t.Errorf("skipped %v, want 2 for overlap and 3 for catch_up", m.skipped)
	}
}
