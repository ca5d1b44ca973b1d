package webhook

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/clock/clocktest"
	"jobsuite/controller/store"
)

var outboxT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// backoffStep is the fixture's backoff: tries minutes.
func backoffStep(tries int) time.Duration { return time.Duration(tries) * time.Minute }

// outboxFixture is an Outbox over a real store, with a scripted sender.
type outboxFixture struct {
	t       *testing.T
	st      *store.Store
	o       *Outbox
	mu      sync.Mutex
	script  map[string][]error // per delivery ID, the results of its tries in turn (then nil)
	sends   map[string]int
	commits chan []store.Command
	clock   *clocktest.Fake
}

func newOutboxFixture(t *testing.T) *outboxFixture {
	st, err := store.Open(t.TempDir(), store.Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &outboxFixture{t: t, st: st, script: map[string][]error{}, sends: map[string]int{}, commits: make(chan []store.Command, 100), clock: clocktest.NewFake(outboxT0)}
	f.o = &Outbox{
		Send: func(_ context.Context, d store.Delivery) (int, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.sends[d.ID]++
			if s := f.script[d.ID]; len(s) > 0 {
				f.script[d.ID] = s[1:]
				var we *Error
				if errors.As(s[0], &we) {
					return we.Status, s[0]
				}
				return 0, s[0]
			}
			return 200, nil
		},
		Do: func(cmds ...store.Command) error {
			if _, err := st.Apply(cmds...); err != nil {
				return err
			}
			f.commits <- cmds
			return nil
		},
		Backoff:  backoffStep,
		MaxTries: 4,
		Clock:    f.clock,
		Log:      hclog.NewNullLogger(),
	}
	return f
}

// finishedJob stores a completed job and an outbox entry for it.
func (f *outboxFixture) finishedJob(id string) store.Delivery {
	f.t.Helper()
	now := f.clock.Now()
	j := &store.Job{ID: f.st.NextID(), Command: "true", State: store.Completed, CreatedAt: now, QueuedAt: now, FinishedAt: now}
	d := store.Delivery{ID: id, Job: j.ID, Event: "job.finished", URL: "https://hooks.example.com/x?token=secret", Body: []byte(`{}`), NextTry: now, CreatedAt: now}
	if _, err := f.st.Apply(store.NewTransition(j, store.Event{Type: "finished"}), &store.PutDelivery{Delivery: d}); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// run starts the Outbox; the returned function stops it.
func (f *outboxFixture) run() func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.o.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Error(err)
		}
	}
}

// waitEnd waits for the commit that ends delivery id (the one with an
// AppendEvent) and returns that event's type and message. Each retry
// stored meanwhile must wait the fixture's backoff: the clock is moved
// on by exactly that once the Outbox armed its timer for it.
func (f *outboxFixture) waitEnd(id string, job uint64) (string, string) {
	f.t.Helper()
	for {
		select {
		case cmds := <-f.commits:
			for _, c := range cmds {
				if e, ok := c.(*store.AppendEvent); ok && e.Job == job {
					return e.Event.Type, e.Event.Message
				}
				if p, ok := c.(*store.PutDelivery); ok && p.Delivery.ID == id {
					wait := backoffStep(p.Delivery.Tries)
					if want := f.clock.Now().Add(wait); !p.Delivery.NextTry.Equal(want) {
						f.t.Errorf("retry after try %d at %s, want %s", p.Delivery.Tries, p.Delivery.NextTry, want)
					}
					f.clock.WaitTimers(1)
					f.clock.Advance(wait)
				}
			}
		case <-time.After(30 * time.Second): // a hang guard
			f.t.Fatalf("delivery %s never ended", id)
		}
	}
}

func retryable(msg string) error { return &Error{Msg: msg, Retry: true} }

func TestOutbox(t *testing.T) {
	tests := map[string]struct {
		script    []error
		wantType  string
		wantMsg   string
		wantSends int
	}{
		"first try":            {nil, "notified", "job.finished webhook to https://hooks.example.com/x?… delivered (200) after 1 try", 1},
		"fails three times":    {[]error{retryable("503"), retryable("503"), retryable("timeout")}, "notified", "delivered (200) after 4 tries", 4},
		"refused":              {[]error{&Error{Msg: "policy", Err: ErrPolicy}}, "notify_failed", "failed after 1 try (not retried): policy", 1},
		"out of tries":         {[]error{retryable("503"), retryable("503"), retryable("503"), retryable("502")}, "notify_failed", "failed after 4 tries: 502", 4},
		"gone after one retry": {[]error{retryable("503"), &Error{Msg: "410 Gone", Status: 410}}, "notify_failed", "failed after 2 tries (not retried): 410 Gone", 2},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newOutboxFixture(t)
			d := f.finishedJob("d1")
			f.script[d.ID] = tt.script
			stop := f.run()
			defer stop()
			f.o.Add(d)
			typ, msg := f.waitEnd(d.ID, d.Job)
			if typ != tt.wantType || !strings.Contains(msg, tt.wantMsg) || strings.Contains(msg, "secret") {
				t.Errorf("event %s %q, want %s containing %q (and no query string)", typ, msg, tt.wantType, tt.wantMsg)
			}
			f.mu.Lock()
			sends := f.sends[d.ID]
			f.mu.Unlock()
			if sends != tt.wantSends {
				t.Errorf("%d sends, want %d", sends, tt.wantSends)
			}
			if left, err := f.st.Deliveries(); err != nil || len(left) != 0 {
				t.Errorf("outbox after the end: %v, %v", left, err)
			}
			evs, err := f.st.Events(d.Job)
			if err != nil || evs[len(evs)-1].Type != tt.wantType {
				t.Errorf("job history %+v, %v", evs, err)
			}
		})
	}
}

// TestOutboxRetryIsStored: between tries the entry in the store holds
// the count, the error and the next time, so a restart resumes there.
func TestOutboxRetryIsStored(t *testing.T) {
	f := newOutboxFixture(t)
	d := f.finishedJob("d1")
	f.script[d.ID] = []error{retryable("503 Service Unavailable")}
	stop := f.run()
	f.o.Add(d)
	select {
	case <-f.commits:
	case <-time.After(30 * time.Second):
		t.Fatal("no commit after the failed try")
	}
	stop()
	left, err := f.st.Deliveries()
	if err != nil || len(left) != 1 {
		t.Fatalf("outbox: %v, %v", left, err)
	}
	if e := left[0]; e.Tries != 1 || e.LastError != "503 Service Unavailable" || !e.NextTry.Equal(outboxT0.Add(time.Minute)) {
		t.Errorf("stored entry %+v", e)
	}
	// A restart, once the retry is due: a new Outbox is handed the
	// stored entry and delivers it.
	f2 := newOutboxFixture(t)
	f2.st = f.st
	f2.o.Do = f.o.Do
	f.commits = f2.commits
	f2.clock.Advance(time.Minute)
	stop = f2.run()
	defer stop()
	f2.o.Add(left...)
	if typ, msg := f2.waitEnd(d.ID, d.Job); typ != "notified" || !strings.Contains(msg, "after 2 tries") {
		t.Errorf("after the restart: %s %q", typ, msg)
	}
}

// TestOutboxStopsOnCommitFailure: a failed commit ends Run with it.
func TestOutboxStopsOnCommitFailure(t *testing.T) {
	f := newOutboxFixture(t)
	broken := errors.New("store write failed")
	f.o.Do = func(...store.Command) error { return broken }
	d := f.finishedJob("d1")
	f.o.Add(d)
	if err := f.o.Run(context.Background()); !errors.Is(err, broken) {
		t.Errorf("Run = %v, want the commit's error", err)
	}
}

// TestOutboxPerTarget: a slow receiver holds at most PerTarget
// deliveries in flight; another host's go on meanwhile.
func TestOutboxPerTarget(t *testing.T) {
	f := newOutboxFixture(t)
	f.o.PerTarget = 1
	release := make(chan struct{})
	started := make(chan string, 10)
	var mu sync.Mutex
	inFlight, most := 0, 0
	f.o.Send = func(_ context.Context, d store.Delivery) (int, error) {
		started <- d.ID
		if strings.Contains(d.URL, "slow.example") {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			<-release
			mu.Lock()
			inFlight--
			mu.Unlock()
		}
		return 200, nil
	}
	var ds []store.Delivery
	for i, u := range []string{"https://slow.example/a", "https://slow.example/b", "https://fast.example/c"} {
		d := f.finishedJob(string(rune('1' + i)))
		d.URL = u
		ds = append(ds, d)
	}
	stop := f.run()
	defer stop()
	f.o.Add(ds...)
	// The fast host's delivery ends while the first slow one hangs.
	f.waitEnd(ds[2].ID, ds[2].Job)
	close(release)
	f.waitEnd(ds[0].ID, ds[0].Job)
	f.waitEnd(ds[1].ID, ds[1].Job)
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Errorf("%d deliveries to one host in flight at once, want at most 1", most)
	}
}
