package controller

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/clock/clocktest"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
)

// testLog sends log lines to t.Log.
func testLog(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: logWriter{t}})
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testStore opens a NoSync store in a temporary directory, closed when
// the test ends.
func testStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{Logger: testLog(t, "store"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// applyAll applies cmds to st as one batch and returns the batch's error
// or else the first command's.
func applyAll(st *store.Store, cmds ...store.Command) error {
	res, err := st.Apply(cmds...)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// applyOne returns a function that applies one command to st, as the
// committer's do does.
func applyOne(st *store.Store) func(store.Command) (store.Result, error) {
	return func(c store.Command) (store.Result, error) {
		res, err := st.Apply(c)
		if err != nil {
			return store.Result{}, err
		}
		return res[0], nil
	}
}

// fakePruner records Prune calls with the (bubble) time they were made.
type fakePruner struct {
	mu    sync.Mutex
	calls []pruneCall
	err   error
	block bool // Prune waits for ctx to end
}

type pruneCall struct {
	at time.Time
	o  store.PruneOptions
}

func (f *fakePruner) Prune(ctx context.Context, o store.PruneOptions, _ func(store.Command) (store.Result, error)) (int, error) {
	f.mu.Lock()
	f.calls = append(f.calls, pruneCall{time.Now(), o})
	err, block := f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return 3, ctx.Err()
	}
	return 2, err
}

func (f *fakePruner) FinishedJobs() int { return 7 }

func (f *fakePruner) recorded() []pruneCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pruneCall(nil), f.calls...)
}

func TestRetentionSchedule(t *testing.T) {
	tests := map[string]struct {
		retainFor  time.Duration
		retainJobs int
		err        error
		wantAge    bool // FinishedBefore is now-retainFor
		wantKeep   int
		wantCalls  bool
	}{
		"both limits":    {time.Hour, 100, nil, true, 100, true},
		"age only":       {time.Hour, -1, nil, true, 0, true},
		"count only":     {-1, 5, nil, false, 5, true},
		"both off":       {-1, -1, nil, false, 0, false},
		"failing store":  {time.Hour, 100, errors.New("disk full"), true, 100, true},
		"zero means off": {0, 0, nil, false, 0, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakePruner{err: tt.err}
				r := retention{st: f, log: testLog(t, "retention"), retainFor: tt.retainFor, retainJobs: tt.retainJobs}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				start := time.Now()
				go func() { r.run(ctx); close(done) }()

				time.Sleep(retentionDelay - time.Nanosecond)
				synctest.Wait()
				if n := len(f.recorded()); n != 0 {
					t.Fatalf("%d passes before retentionDelay", n)
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				time.Sleep(2 * retentionInterval)
				synctest.Wait()

				calls := f.recorded()
				var wantAt []time.Time
				if tt.wantCalls {
					first := start.Add(retentionDelay)
					wantAt = []time.Time{first, first.Add(retentionInterval), first.Add(2 * retentionInterval)}
				}
				var gotAt []time.Time
				for _, c := range calls {
					gotAt = append(gotAt, c.at)
					var age time.Time
					if tt.wantAge {
						age = c.at.Add(-tt.retainFor)
					}
					if want := (store.PruneOptions{FinishedBefore: age, KeepNewest: tt.wantKeep}); c.o != want {
						t.Errorf("Prune(%+v), want %+v", c.o, want)
					}
				}
				if !reflect.DeepEqual(gotAt, wantAt) {
					t.Errorf("passes at %v, want %v", gotAt, wantAt)
				}

				cancel()
				<-done
			})
		})
	}
}

func TestRetentionStopsMidPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakePruner{block: true}
		r := retention{st: f, log: testLog(t, "retention"), retainFor: time.Hour, retainJobs: 10}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { r.run(ctx); close(done) }()
		time.Sleep(retentionDelay)
		synctest.Wait()
		if n := len(f.recorded()); n != 1 {
			t.Fatalf("%d passes started, want 1", n)
		}
		cancel()
		<-done
	})
}

// TestRetentionLoop runs the Server's loop, on a fake clock, over a real
// store and committer: nothing happens before retentionDelay, then a
// pass removes the job finished more than RetainFor ago (through the
// committer) and keeps the recent one, and the loop returns when its
// context ends.
func TestRetentionLoop(t *testing.T) {
	st := testStore(t)
	clk := clocktest.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	finished := func(at time.Time) uint64 {
		t.Helper()
		j := &store.Job{ID: st.NextID(), Command: "true", State: store.Completed, CreatedAt: at, FinishedAt: at}
		if err := applyAll(st, store.NewTransition(j, store.Event{Type: "finished"})); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	old, recent := finished(clk.Now().Add(-2*time.Hour)), finished(clk.Now().Add(-time.Minute))

	pruned := make(chan int, 1)
	c := sched.NewCommitter(st, sched.CommitOptions{Applied: func(cmds []store.Command, res []store.Result) {
		for i, cmd := range cmds {
			if _, ok := cmd.(*store.PruneJobs); ok {
				pruned <- res[i].N
			}
		}
	}})
	stop, result := make(chan struct{}), make(chan error, 1)
	go func() { result <- c.Run(stop) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			close(stop)
		}
	})
	s := &Server{cfg: Config{RetainFor: time.Hour, RetainJobs: 10}, log: testLog(t, "ctl"), st: st, c: c, clock: clk}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.retentionLoop(ctx); close(done) }()

	clk.WaitTimers(1) // the loop's first timer is set
	clk.Advance(retentionDelay - 1)
	select {
	case <-pruned:
		t.Fatal("a pass before retentionDelay")
	default: // the timer has not fired: no pass can have started
	}
	clk.Advance(1)
	if n := recv(t, pruned, "a prune"); n != 1 {
		t.Errorf("the pass removed %d jobs, want 1", n)
	}
	if _, err := st.Get(old); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("job finished 2h ago: %v, want removed", err)
	}
	if _, err := st.Get(recent); err != nil {
		t.Errorf("job finished a minute ago: %v, want kept", err)
	}
	cancel()
	recv(t, done, "the loop's return")
	close(stop)
	stopped = true
	if err := recv(t, result, "the committer's return"); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionPass removes through the real store: by age, by count,
// never an unfinished job.
func TestRetentionPass(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	st := testStore(t)
	add := func(state store.State, finished time.Time) uint64 {
		t.Helper()
		j := &store.Job{ID: st.NextID(), Command: "true", State: state, CreatedAt: now.Add(-48 * time.Hour), FinishedAt: finished}
		if err := applyAll(st, store.NewTransition(j, store.Event{Type: "submitted"})); err != nil {
			t.Fatal(err)
		}
		if err := applyAll(st, &store.Output{Job: j.ID, Chunk: store.Chunk{Stream: 1, Data: []byte("hi\n")}}); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	old := []uint64{
		add(store.Failed, now.Add(-3*time.Hour)),
		add(store.Completed, now.Add(-2*time.Hour)),
	}
	recent := []uint64{
		add(store.Cancelled, now.Add(-30*time.Minute)),
		add(store.Timeout, now.Add(-20*time.Minute)),
		add(store.Completed, now.Add(-10*time.Minute)),
	}
	var unfinished []uint64
	for _, state := range []store.State{store.Queued, store.Waiting, store.Dispatched, store.Running} {
		unfinished = append(unfinished, add(state, now.Add(-24*time.Hour)))
	}
	exists := func(id uint64) bool {
		_, err := st.Get(id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	r := retention{st: st, apply: applyOne(st), log: testLog(t, "retention"), retainFor: time.Hour, retainJobs: 2}
	r.pass(t.Context(), now)
	for _, id := range old {
		if exists(id) {
			t.Errorf("job %d, finished over an hour ago, kept", id)
		}
	}
	if exists(recent[0]) || !exists(recent[1]) || !exists(recent[2]) {
		t.Errorf("count limit 2: recent jobs exist %v %v %v, want false true true", exists(recent[0]), exists(recent[1]), exists(recent[2]))
	}
	for _, id := range unfinished {
		if !exists(id) {
			t.Errorf("unfinished job %d removed", id)
		}
		if c, err := st.ReadLog(id, 0, 0); err != nil || len(c) != 1 {
			t.Errorf("unfinished job %d lost its output: %v", id, err)
		}
	}
	if n := st.FinishedJobs(); n != 2 {
		t.Errorf("FinishedJobs = %d, want 2", n)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s after 30s", what)
		panic("unreachable")
	}
}
