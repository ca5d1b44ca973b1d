package sched

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"jobsuite/controller/store"
)

// fakeSync is a batch handed to a fakeStore: Wait blocks until the test
// releases it with an error or nil.
type fakeSync struct {
	cmds   []store.Command
	result chan error
}

func (f *fakeSync) Wait() error { return <-f.result }

// fakeStore stands in for store.ApplyNoWait: every applied batch is
// sent on applied, and its fsync ends when the test says so.
type fakeStore struct {
	applied chan *fakeSync
	fail    map[uint64]error // job ID → error ApplyNoWait returns for its batch
}

func newFakeStore() *fakeStore {
	return &fakeStore{applied: make(chan *fakeSync, 100), fail: map[uint64]error{}}
}

func (f *fakeStore) apply(cmds []store.Command) (syncer, []store.Result, error) {
	for _, c := range cmds {
		if err := f.fail[jobOf(c)]; err != nil {
			return nil, nil, err
		}
	}
	s := &fakeSync{cmds: cmds, result: make(chan error, 1)}
	f.applied <- s
	return s, make([]store.Result, len(cmds)), nil
}

// jobOf returns the job a transition is about (0 for other commands).
func jobOf(c store.Command) uint64 {
	if t, ok := c.(*store.Transition); ok {
		return t.Job.ID
	}
	return 0
}

// recv returns the next value from ch, failing the test if none comes
// (a deadlock guard, not a timing assertion).
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

func update(id uint64) store.Command {
	return store.NewTransition(&store.Job{ID: id, State: store.Queued}, store.Event{})
}

func isDone(b *Batch) bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// startCommitter runs c until the test ends (or stop is closed by the
// test) and returns run's result channel.
func startCommitter(t testing.TB, c *Committer) (stop chan struct{}, result chan error) {
	t.Helper()
	stop = make(chan struct{})
	result = make(chan error, 1)
	go func() { result <- c.Run(stop) }()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	})
	return stop, result
}

func fakeCommitter(f *fakeStore) *Committer {
	c := NewCommitter(nil, CommitOptions{})
	c.apply = f.apply
	return c
}

// The next batch is applied while the previous one is still syncing,
// and waiters are released in batch order even when a later fsync ends
// first.
func TestCommitterPipelines(t *testing.T) {
	f := newFakeStore()
	c := fakeCommitter(f)
	stop, result := startCommitter(t, c)

	b1 := c.Add(update(1))
	s1 := recv(t, f.applied, "first batch")
	b2 := c.Add(update(2))
	s2 := recv(t, f.applied, "second batch applied while the first syncs")
	if b1 == b2 {
		t.Fatal("both updates in one batch")
	}
	if len(s1.cmds) != 1 || jobOf(s1.cmds[0]) != 1 || len(s2.cmds) != 1 || jobOf(s2.cmds[0]) != 2 {
		t.Fatalf("batches hold %v and %v", s1.cmds, s2.cmds)
	}

	// The second fsync ends first; its waiter must still wait for the
	// first batch.
	s2.result <- nil
	order := make(chan error, 1)
	go func() {
		err := b2.Wait()
		if err == nil && !isDone(b1) {
			err = errors.New("batch 2 released before batch 1")
		}
		order <- err
	}()
	s1.result <- nil
	if err := b1.Wait(); err != nil {
		t.Fatalf("batch 1: %v", err)
	}
	if err := recv(t, order, "batch 2 release"); err != nil {
		t.Fatal(err)
	}

	close(stop)
	if err := recv(t, result, "run's return"); err != nil {
		t.Fatalf("run = %v", err)
	}
	if err := c.Add(update(3)).Wait(); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("add after stop = %v, want ErrShuttingDown", err)
	}
}

// A failed fsync fails its batch and every later one, even one whose
// own fsync succeeded, and run returns the error.
func TestCommitterSyncFailure(t *testing.T) {
	f := newFakeStore()
	c := fakeCommitter(f)
	_, result := startCommitter(t, c)

	b1 := c.Add(update(1))
	s1 := recv(t, f.applied, "first batch")
	b2 := c.Add(update(2))
	s2 := recv(t, f.applied, "second batch")
	s2.result <- nil
	boom := errors.New("fsync failed")
	s1.result <- boom

	if err := b1.Wait(); !errors.Is(err, boom) {
		t.Fatalf("batch 1 = %v, want the fsync error", err)
	}
	if err := b2.Wait(); !errors.Is(err, boom) {
		t.Fatalf("batch 2 = %v, want the fsync error of batch 1", err)
	}
	if err := recv(t, result, "run's return"); !errors.Is(err, boom) {
		t.Fatalf("run = %v, want the fsync error", err)
	}
	if err := c.Add(update(3)).Wait(); !errors.Is(err, boom) {
		t.Fatalf("add after the failure = %v, want the fsync error", err)
	}
}

// A batch the store refuses fails after the batches before it are
// released (in order, with their own results); later adds fail.
func TestCommitterApplyFailure(t *testing.T) {
	f := newFakeStore()
	boom := errors.New("refused")
	f.fail[2] = boom
	c := fakeCommitter(f)
	_, result := startCommitter(t, c)

	b1 := c.Add(update(1))
	s1 := recv(t, f.applied, "first batch")
	b2 := c.Add(update(2))
	// Batch 2 fails in apply while batch 1 syncs; run must not return
	// before batch 1 is released.
	order := make(chan error, 1)
	go func() {
		err := b2.Wait()
		if !errors.Is(err, boom) {
			err = fmt.Errorf("batch 2 = %v, want the apply error", err)
		} else if !isDone(b1) {
			err = errors.New("batch 2 released before batch 1")
		} else {
			err = nil
		}
		order <- err
	}()
	s1.result <- nil
	if err := b1.Wait(); err != nil {
		t.Fatalf("batch 1 = %v, want nil (it was synced)", err)
	}
	if err := recv(t, order, "batch 2 release"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, result, "run's return"); !errors.Is(err, boom) {
		t.Fatalf("run = %v, want the apply error", err)
	}
	if err := c.Add(update(3)).Wait(); !errors.Is(err, boom) {
		t.Fatalf("add after the failure = %v, want the apply error", err)
	}
}

// With a real store, synced and not: many concurrent transitions, each
// waiter released only after every earlier batch, and every
// acknowledged job is in the store after a restart.
func TestCommitterStore(t *testing.T) {
	for name, noSync := range map[string]bool{"sync": false, "nosync": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := store.Open(dir, store.Options{Logger: testLog(t, "store"), NoSync: noSync})
			if err != nil {
				t.Fatal(err)
			}
			c := NewCommitter(st, CommitOptions{})
			stop, result := startCommitter(t, c)

			const writers, perWriter = 8, 50
			var (
				mu      sync.Mutex
				batches []*Batch // in the order add returned them
				acked   []uint64
				wg      sync.WaitGroup
				errs    = make(chan error, writers*perWriter)
			)
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range perWriter {
						j := &store.Job{ID: st.NextID(), Command: "true", State: store.Queued}
						u := store.NewTransition(j, store.Event{Type: "submitted"})
						// add and recording its position happen together,
						// as under the scheduler's lock.
						mu.Lock()
						b := c.Add(u)
						n := len(batches)
						batches = append(batches, b)
						mu.Unlock()
						if err := b.Wait(); err != nil {
							errs <- err
							return
						}
						mu.Lock()
						earlier := batches[:n]
						mu.Unlock()
						for _, e := range earlier {
							if !isDone(e) {
								errs <- fmt.Errorf("job %d released before an earlier batch", j.ID)
								return
							}
						}
						mu.Lock()
						acked = append(acked, j.ID)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			close(stop)
			if err := recv(t, result, "run's return"); err != nil {
				t.Fatalf("run = %v", err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			st, err = store.Open(dir, store.Options{Logger: testLog(t, "store")})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if len(acked) != writers*perWriter {
				t.Fatalf("%d jobs acknowledged, want %d", len(acked), writers*perWriter)
			}
			for _, id := range acked {
				j, err := st.Get(id)
				if err != nil {
					t.Fatalf("acknowledged job %d: %v", id, err)
				}
				if j.State != store.Queued || j.Events != 1 {
					t.Fatalf("job %d stored as %s with %d events", id, j.State, j.Events)
				}
			}
		})
	}
}

// BenchmarkCommitter measures synced transitions through the committer
// from concurrent writers that each wait for their batch, as submits do:
// throughput and the process's CPU time per transition.
func BenchmarkCommitter(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			st, err := store.Open(b.TempDir(), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			c := NewCommitter(st, CommitOptions{})
			var batches atomic.Int64
			apply := c.apply
			c.apply = func(cmds []store.Command) (syncer, []store.Result, error) {
				batches.Add(1)
				return apply(cmds)
			}
			stop, result := startCommitter(b, c)
			var next sync.Mutex
			n := 0
			cpu0 := cpuTime()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for {
						next.Lock()
						if n >= b.N {
							next.Unlock()
							return
						}
						n++
						next.Unlock()
						j := &store.Job{ID: st.NextID(), Name: "bench", Command: "true", State: store.Queued,
							CreatedAt: time.Now(), QueuedAt: time.Now(), Labels: map[string]string{"os": "linux"}}
						if err := c.Add(store.NewTransition(j, store.Event{Time: j.CreatedAt, Type: "submitted"})).Wait(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/job")
			b.ReportMetric(float64(b.N)/float64(batches.Load()), "jobs/batch")
			close(stop)
			if err := <-result; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// cpuTime returns the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCommitterLatency measures how long one synced transition
// waits for its batch (add to release) while 8 other writers keep
// batches in flight, as a dispatch waits behind submits.
func BenchmarkCommitterLatency(b *testing.B) {
	st, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := NewCommitter(st, CommitOptions{})
	stop, result := startCommitter(b, c)
	create := func() store.Command {
		j := &store.Job{ID: st.NextID(), Command: "true", State: store.Queued, CreatedAt: time.Now(), QueuedAt: time.Now()}
		return store.NewTransition(j, store.Event{Time: j.CreatedAt, Type: "submitted"})
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := c.Add(create()).Wait(); err != nil {
					return
				}
			}
		})
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		if err := c.Add(create()).Wait(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	close(done)
	wg.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	close(stop)
	if err := <-result; err != nil {
		b.Fatal(err)
	}
}

// A lazy command starts no round: it waits in the open batch and rides
// the next round something else starts, in the order it was queued; one
// that nothing follows is applied lazyWait after it was queued.
func TestCommitterLazy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeStore()
		c := fakeCommitter(f)
		stop, result := startCommitter(t, c)

		c.AddLazy(update(1))
		synctest.Wait()
		if n := len(f.applied); n != 0 {
			t.Fatalf("a lazy command alone started a round: %d applied", n)
		}
		b := c.Add(update(2))
		s := <-f.applied
		if len(s.cmds) != 2 || jobOf(s.cmds[0]) != 1 || jobOf(s.cmds[1]) != 2 {
			t.Fatalf("the round holds %v, want the lazy command 1 then 2", s.cmds)
		}
		s.result <- nil
		if err := b.Wait(); err != nil {
			t.Fatal(err)
		}

		// Alone, it is applied once lazyWait has passed, not before.
		queued := time.Now()
		c.AddLazy(update(3))
		s = <-f.applied
		if waited := time.Since(queued); waited != lazyWait {
			t.Fatalf("a lone lazy command was applied after %s, want %s", waited, lazyWait)
		}
		if len(s.cmds) != 1 || jobOf(s.cmds[0]) != 3 {
			t.Fatalf("the round holds %v, want the lazy command 3", s.cmds)
		}
		s.result <- nil

		// A timer left from a round that a kick flushed first still
		// bounds the next lazy command's wait.
		c.AddLazy(update(4))
		synctest.Wait()
		b = c.Add(update(5))
		s = <-f.applied
		s.result <- nil
		if err := b.Wait(); err != nil {
			t.Fatal(err)
		}
		queued = time.Now()
		c.AddLazy(update(6))
		s = <-f.applied
		if waited := time.Since(queued); waited > lazyWait {
			t.Fatalf("a lazy command was applied after %s, more than %s", waited, lazyWait)
		}
		if len(s.cmds) != 1 || jobOf(s.cmds[0]) != 6 {
			t.Fatalf("the round holds %v, want the lazy command 6", s.cmds)
		}
		s.result <- nil

		// Stopping flushes a lazy command still waiting.
		c.AddLazy(update(7))
		synctest.Wait()
		close(stop)
		s = <-f.applied
		if len(s.cmds) != 1 || jobOf(s.cmds[0]) != 7 {
			t.Fatalf("the final round holds %v, want the lazy command 7", s.cmds)
		}
		s.result <- nil
		if err := <-result; err != nil {
			t.Fatal(err)
		}
	})
}

// Commands that can wait share the earliest due time of their batch: a
// result (AddAllWithin, a short wait) queued behind a lazy start (a long
// one) takes both along at its own due time, and a round a kick starts
// takes them at once.
func TestCommitterWithin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeStore()
		c := fakeCommitter(f)
		stop, result := startCommitter(t, c)

		queued := time.Now()
		c.AddLazy(update(1))
		synctest.Wait()
		const short = 2 * time.Millisecond
		b, i := c.AddAllWithin(short, update(2), update(3))
		s := <-f.applied
		if waited := time.Since(queued); waited != short {
			t.Errorf("the batch was applied after %s, want %s", waited, short)
		}
		if i != 1 || len(s.cmds) != 3 || jobOf(s.cmds[0]) != 1 || jobOf(s.cmds[2]) != 3 {
			t.Fatalf("the round holds %v (the group at %d), want 1, 2, 3 (at 1)", s.cmds, i)
		}
		s.result <- nil
		if err := b.Wait(); err != nil {
			t.Fatal(err)
		}

		queued = time.Now()
		b, _ = c.AddAllWithin(short, update(4))
		c.Add(update(5))
		s = <-f.applied
		if waited := time.Since(queued); waited != 0 || len(s.cmds) != 2 {
			t.Errorf("a kick applied %v after %s, want both at once", s.cmds, waited)
		}
		s.result <- nil
		if err := b.Wait(); err != nil {
			t.Fatal(err)
		}
		// The timer armed for the batch a kick took fires with nothing
		// due: no empty round.
		time.Sleep(2 * short)
		synctest.Wait()
		if n := len(f.applied); n != 0 {
			t.Errorf("%d rounds applied with nothing due", n)
		}
		close(stop)
		if err := <-result; err != nil {
			t.Fatal(err)
		}
	})
}

// Queuing commands that can wait wakes nobody: the queuing goroutine
// arms the timer itself, and the applier wakes once, at the earliest due
// time (or at a kick), however many were queued.
func TestCommitterWithinWakesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeStore()
		c := fakeCommitter(f)
		stop, result := startCommitter(t, c)

		const short = 2 * time.Millisecond
		c.AddLazy(update(1))
		c.AddAllWithin(short, update(2))
		c.AddLazy(update(3))
		b, _ := c.AddAllWithin(short/2, update(4))
		synctest.Wait()
		if n := c.wakes.Load(); n != 0 {
			t.Fatalf("the applier woke %d times before anything was due, want 0", n)
		}
		s := <-f.applied
		if len(s.cmds) != 4 {
			t.Fatalf("the round holds %v, want all four", s.cmds)
		}
		s.result <- nil
		if err := b.Wait(); err != nil {
			t.Fatal(err)
		}
		if n := c.wakes.Load(); n != 1 {
			t.Fatalf("the applier woke %d times for one due round, want 1", n)
		}
		// A kick takes the next batch before its due time, and the timer
		// armed for it does not wake the applier again.
		c.AddAllWithin(short, update(5))
		b = c.Add(update(6))
		s = <-f.applied
		s.result <- nil
		if err := b.Wait(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * short)
		synctest.Wait()
		if n := c.wakes.Load(); n != 2 {
			t.Fatalf("the applier woke %d times for two rounds, want 2", n)
		}
		close(stop)
		if err := <-result; err != nil {
			t.Fatal(err)
		}
	})
}
