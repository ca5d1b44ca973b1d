package agent

import (
	"sync"
	"testing"
)

// A goroutine that finished its work takes the next, up to max waiting;
// every piece of work runs exactly once either way.
func TestRunners(t *testing.T) {
	for name, tc := range map[string]struct {
		r    *runners
		idle int32 // how many may wait afterwards
	}{
		"pool":    {r: newRunners(2), idle: 2},
		"none":    {r: newRunners(0), idle: 0},
		"nil":     {r: nil, idle: 0},
		"literal": {r: &runners{}, idle: 0}, // an Agent built without New
	} {
		t.Run(name, func(t *testing.T) {
			const n = 200
			var wg sync.WaitGroup
			var mu sync.Mutex
			ran := map[int]int{}
			for i := range n {
				wg.Add(1)
				tc.r.goRun(func() {
					defer wg.Done()
					mu.Lock()
					ran[i]++
					mu.Unlock()
				})
			}
			wg.Wait()
			for i := range n {
				if ran[i] != 1 {
					t.Fatalf("work %d ran %d times", i, ran[i])
				}
			}
			if tc.r != nil {
				if got := tc.r.idle.Load(); got > tc.idle {
					t.Errorf("%d goroutines wait, at most %d may", got, tc.idle)
				}
			}
		})
	}
}

// Work handed to a waiting goroutine runs on it: no new goroutine.
func TestRunnersReuse(t *testing.T) {
	r := newRunners(1)
	done := make(chan struct{})
	r.goRun(func() { close(done) })
	<-done
	waitUntil(t, "the goroutine to wait for work", func() bool { return r.idle.Load() == 1 })
	ran, release := make(chan struct{}), make(chan struct{})
	r.goRun(func() { close(ran); <-release })
	<-ran
	// The waiting goroutine took it (and stopped counting as idle
	// before running it); a new one would have left it waiting.
	if got := r.idle.Load(); got != 0 {
		t.Errorf("%d goroutines wait while the work runs: it ran on a new one", got)
	}
	close(release)
	waitUntil(t, "the goroutine to wait again", func() bool { return r.idle.Load() == 1 })
}

// stop ends the waiting goroutines; work handed over afterwards still
// runs, once, on a goroutine that then ends.
func TestRunnersStop(t *testing.T) {
	r := newRunners(4)
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 { // none waits yet: four goroutines
		wg.Add(1)
		r.goRun(func() { <-release; wg.Done() })
	}
	close(release)
	wg.Wait()
	waitUntil(t, "the goroutines to wait for work", func() bool { return r.idle.Load() == 4 })
	r.stop()
	waitUntil(t, "the waiting goroutines to end", func() bool { return r.idle.Load() == 0 })
	ran := make(chan struct{})
	r.goRun(func() { close(ran) })
	<-ran
	r.stop() // twice is fine
	if got := r.idle.Load(); got != 0 {
		t.Errorf("%d goroutines wait after stop", got)
	}
}
