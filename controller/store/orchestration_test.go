package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func sched(name string) Schedule {
	return Schedule{
		Name: name, Cron: "*/5 * * * *", TZ: "Europe/Paris", Overlap: OverlapSkip, CatchUp: CatchUpOne,
		Job:       Job{Name: "backup", Command: "backup.sh", Priority: 50, Labels: map[string]string{"role": "db"}},
		Next:      t0.Add(5 * time.Minute),
		CreatedAt: t0, UpdatedAt: t0,
	}
}

// TestSchedules: a create refuses a name taken, an update a name not
// stored — so an update that applies after a delete does not bring the
// schedule back — and what is read is what was written.
func TestSchedules(t *testing.T) {
	s := open(t)
	a, b := sched("b-nightly"), sched("a-hourly")
	for _, sc := range []Schedule{a, b} {
		if err := applyErr(s, &PutSchedule{Schedule: sc, Create: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyErr(s, &PutSchedule{Schedule: a, Create: true}); !errors.Is(err, ErrExists) {
		t.Errorf("second create = %v, want ErrExists", err)
	}
	a.Fired, a.LastJob, a.Next = 1, 42, t0.Add(10*time.Minute)
	if err := applyErr(s, &PutSchedule{Schedule: a}); err != nil {
		t.Fatalf("update: %v", err)
	}
	got, err := s.Schedules()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "a-hourly" || got[1].Name != "b-nightly" || got[1].LastJob != 42 || !got[1].Next.Equal(a.Next) || got[1].Job.Labels["role"] != "db" {
		t.Fatalf("Schedules = %+v", got)
	}
	if err := applyErr(s, &DeleteSchedule{Name: "b-nightly"}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(s, &PutSchedule{Schedule: a}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update after delete = %v, want ErrNotFound", err)
	}
	if err := applyErr(s, &DeleteSchedule{Name: "b-nightly"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete = %v, want ErrNotFound", err)
	}
	if got, _ := s.Schedules(); len(got) != 1 {
		t.Errorf("after delete: %d schedules, want 1", len(got))
	}
}

// TestScheduleCreateAndFireInOneRound: a round that creates and then
// updates a schedule sees its own create.
func TestScheduleCreateAndFireInOneRound(t *testing.T) {
	s := open(t)
	a := sched("x")
	fired := a
	fired.Fired = 1
	res, err := s.Apply(&PutSchedule{Schedule: a, Create: true}, &PutSchedule{Schedule: fired})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("Apply: %v, %v", err, res)
	}
	if got, _ := s.Schedules(); len(got) != 1 || got[0].Fired != 1 {
		t.Errorf("Schedules = %+v", got)
	}
}

func TestScheduleCheck(t *testing.T) {
	tests := map[string]func(*Schedule){
		"no name":       func(s *Schedule) { s.Name = "" },
		"no cron":       func(s *Schedule) { s.Cron = "" },
		"bad overlap":   func(s *Schedule) { s.Overlap = "sometimes" },
		"bad catch-up":  func(s *Schedule) { s.CatchUp = "all" },
		"template ID":   func(s *Schedule) { s.Job.ID = 3 },
		"template went": func(s *Schedule) { s.Job.State = Queued },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			sc := sched("x")
			edit(&sc)
			if err := applyErr(s, &PutSchedule{Schedule: sc, Create: true}); !errors.Is(err, ErrInvalid) {
				t.Errorf("PutSchedule = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestOutbox(t *testing.T) {
	s := open(t)
	d := func(id string, at time.Time) Delivery {
		return Delivery{ID: id, Job: 7, Event: "job.finished", URL: "https://example.com/h", Body: []byte(`{"id":7}`), NextTry: at, CreatedAt: at}
	}
	if err := applyErr(s, &PutDelivery{Delivery: d("7-b", t0.Add(time.Second))}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(s, &PutDelivery{Delivery: d("7-a", t0.Add(2*time.Second))}); err != nil {
		t.Fatal(err)
	}
	retry := d("7-b", t0.Add(time.Second))
	retry.Tries, retry.LastError, retry.NextTry = 1, "503", t0.Add(time.Minute)
	if err := applyErr(s, &PutDelivery{Delivery: retry}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Deliveries()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "7-b" || got[0].Tries != 1 || got[0].LastError != "503" || !bytes.Equal(got[1].Body, []byte(`{"id":7}`)) {
		t.Fatalf("Deliveries = %+v (want oldest first, the retry's count)", got)
	}
	if err := applyErr(s, &DeleteDelivery{ID: "7-b"}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(s, &DeleteDelivery{ID: "7-b"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete = %v, want ErrNotFound", err)
	}
	if err := applyErr(s, &PutDelivery{Delivery: Delivery{ID: "x"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("delivery without URL = %v, want ErrInvalid", err)
	}
}

// TestAgents: an agent seen again keeps its first sighting.
func TestAgents(t *testing.T) {
	s := open(t)
	a := Agent{Name: "web-1", Labels: map[string]string{"role": "web"}, Slots: 4, FirstSeen: t0, LastSeen: t0}
	if err := applyErr(s, &PutAgent{Agent: a}); err != nil {
		t.Fatal(err)
	}
	a.FirstSeen, a.LastSeen, a.Slots = t0.Add(time.Hour), t0.Add(time.Hour), 8
	if err := applyErr(s, &PutAgent{Agent: a}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Agents()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].FirstSeen.Equal(t0) || !got[0].LastSeen.Equal(t0.Add(time.Hour)) || got[0].Slots != 8 {
		t.Fatalf("Agents = %+v, want first seen kept", got)
	}
	if err := applyErr(s, &DeleteAgent{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(s, &DeleteAgent{Name: "web-1"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete = %v, want ErrNotFound", err)
	}
}

// TestNotifySecret: the first secret stored stays; every later set
// returns it.
func TestNotifySecret(t *testing.T) {
	s := open(t)
	if got, err := s.NotifySecret(); err != nil || got != nil {
		t.Fatalf("before any: %x, %v", got, err)
	}
	first, second := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	res, err := applyOne(s, &SetNotifySecret{Secret: first})
	if err != nil || !bytes.Equal(res.Secret, first) {
		t.Fatalf("first set: %x, %v", res.Secret, err)
	}
	res, err = applyOne(s, &SetNotifySecret{Secret: second})
	if err != nil || !bytes.Equal(res.Secret, first) {
		t.Fatalf("second set returned %x, %v; want the first", res.Secret, err)
	}
	if got, err := s.NotifySecret(); err != nil || !bytes.Equal(got, first) {
		t.Errorf("NotifySecret = %x, %v", got, err)
	}
	if err := applyErr(s, &SetNotifySecret{Secret: []byte("short")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a short secret = %v, want ErrInvalid", err)
	}
}

// TestActiveBlocked: blocked jobs are loaded (after the others, by ID),
// leave the load once released, and an orchestration job's fields
// survive the store.
func TestActiveBlocked(t *testing.T) {
	s := open(t)
	q := submit(t, s, newJob(s, 50, t0))
	b1 := newJob(s, 50, t0)
	b1.State, b1.Orch().After, b1.Reason = Blocked, []uint64{q.ID}, "waiting for job 1"
	submit(t, s, b1)
	max := 1
	b2 := newJob(s, 50, t0)
	b2.State, b2.Orch().Parent, b2.Orch().Agent, b2.Orch().Notify = Blocked, 99, "web-1", []string{"https://h/x"}
	b2.Orch().Fanout = &Fanout{Selector: map[string]string{"role": "web"}, FirstChild: 5, Children: 2, Batch: 1, MaxFailures: &max}
	submit(t, s, b2)

	ids := func() []uint64 {
		t.Helper()
		jobs, err := s.Active()
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, j := range jobs {
			out = append(out, j.ID)
		}
		return out
	}
	if got := ids(); len(got) != 3 || got[0] != q.ID || got[1] != b1.ID || got[2] != b2.ID {
		t.Fatalf("Active = %v, want %d then the blocked %d, %d", got, q.ID, b1.ID, b2.ID)
	}
	got, err := s.Get(b2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Parent() != 99 || got.Agent() != "web-1" || got.Fanout() == nil || *got.Fanout().MaxFailures != 1 || got.Fanout().Selector["role"] != "web" || got.Notify()[0] != "https://h/x" {
		t.Errorf("stored %+v (fanout %+v)", got, got.Fanout())
	}
	move(t, s, b1, Queued, func(j *Job) { j.QueuedAt = t0.Add(time.Second) })
	move(t, s, b2, Cancelled, func(j *Job) { j.FinishedAt = t0.Add(time.Second) })
	if got := ids(); len(got) != 2 || got[0] != q.ID || got[1] != b1.ID {
		t.Errorf("after release and cancel: Active = %v, want %d, %d in queue order", got, q.ID, b1.ID)
	}
}

// TestAppendEvent: a finished job's history grows by one event, its
// state and fields stay; an unfinished job, an unknown one and one
// changed in the same round are refused.
func TestAppendEvent(t *testing.T) {
	s := open(t)
	j := submit(t, s, newJob(s, 50, t0))
	running := move(t, s, j, Running, nil)
	done := move(t, s, running, Completed, func(j *Job) { j.FinishedAt = t0.Add(time.Minute) })
	ev := Event{Time: t0.Add(2 * time.Minute), Type: "webhook", Message: "delivered to https://h/x (try 1)"}
	if err := applyErr(s, &AppendEvent{Job: done.ID, Event: ev}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(done.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != Completed || got.Events != done.Events+1 || !got.FinishedAt.Equal(done.FinishedAt) {
		t.Errorf("after the event: %s with %d events, finished %v", got.State, got.Events, got.FinishedAt)
	}
	evs, err := s.Events(done.ID)
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	if len(evs) != int(got.Events) || last.Type != "webhook" || last.State != Completed || last.Seq != done.Events {
		t.Errorf("events %+v", evs)
	}

	other := submit(t, s, newJob(s, 50, t0))
	if err := applyErr(s, &AppendEvent{Job: other.ID, Event: ev}); !errors.Is(err, ErrConflict) {
		t.Errorf("event of a queued job = %v, want ErrConflict", err)
	}
	if err := applyErr(s, &AppendEvent{Job: 999, Event: ev}); !errors.Is(err, ErrNotFound) {
		t.Errorf("event of an unknown job = %v, want ErrNotFound", err)
	}
	// The same round: cancel the queued job, then an event on it.
	cancelled := other.Clone()
	cancelled.State, cancelled.FinishedAt = Cancelled, t0
	res, err := s.Apply(NewTransition(cancelled, Event{Type: "cancelled"}), &AppendEvent{Job: other.ID, Event: ev})
	if err != nil || res[0].Err != nil || !errors.Is(res[1].Err, ErrConflict) || !errors.Is(res[1].Err, ErrSameRound) {
		t.Errorf("same round: %v, %+v; want the event refused with ErrSameRound", err, res)
	}
	// Two events of one finished job in one round (two deliveries
	// recorded together): the second is refused as ErrSameRound, and
	// applies in a round of its own.
	res, err = s.Apply(&AppendEvent{Job: other.ID, Event: ev}, &AppendEvent{Job: other.ID, Event: ev})
	if err != nil || res[0].Err != nil || !errors.Is(res[1].Err, ErrSameRound) {
		t.Errorf("two events in a round: %v, %+v; want the second refused with ErrSameRound", err, res)
	}
	if err := applyErr(s, &AppendEvent{Job: other.ID, Event: ev}); err != nil {
		t.Errorf("the event again in a round of its own: %v", err)
	}
	// An event of a job not finished is not ErrSameRound: retrying it
	// would not help.
	if err := applyErr(s, &AppendEvent{Job: 999999, Event: ev}); errors.Is(err, ErrSameRound) {
		t.Errorf("event of an unknown job = %v, not ErrSameRound", err)
	}
	if err := applyErr(s, &AppendEvent{Job: other.ID}); !errors.Is(err, ErrInvalid) {
		t.Errorf("event without a type = %v, want ErrInvalid", err)
	}
}
