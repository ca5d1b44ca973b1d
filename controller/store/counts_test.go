package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// recount counts the stored jobs by state from their records.
func recount(t *testing.T, s *Store) map[State]int {
	t.Helper()
	out := map[State]int{}
	for st := range stateCodes {
		out[st] = 0
	}
	jobs, _, err := s.List(ListOptions{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		out[j.State]++
	}
	return out
}

func checkCounts(t *testing.T, s *Store, when string) {
	t.Helper()
	got, err := s.StateCounts()
	if err != nil {
		t.Fatalf("%s: StateCounts: %v", when, err)
	}
	if want := recount(t, s); !maps.Equal(got, want) {
		t.Errorf("%s: StateCounts %v, want %v", when, got, want)
	}
}

// TestStateCounts: the counts match the records after the first count,
// after transitions, after Prune, and after a reopen.
func TestStateCounts(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	finished, unfinished := pruneFixture(t, s)
	checkCounts(t, s, "first count")

	// Transitions after the first count are added.
	j := move(t, s, unfinished[0], Dispatched, nil)
	j = move(t, s, j, Running, nil)
	move(t, s, j, Completed, func(j *Job) { j.FinishedAt = t0.Add(time.Hour) })
	submit(t, s, newJob(s, 3, t0))
	checkCounts(t, s, "after transitions")

	if n, err := s.Prune(context.Background(), PruneOptions{KeepNewest: 4}, prune(s)); err != nil || n != len(finished)+1-4 {
		t.Fatalf("Prune: %d, %v; want %d", n, err, len(finished)+1-4)
	}
	checkCounts(t, s, "after Prune")
	before, err := s.StateCounts()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, dir)
	after, err := s.StateCounts()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, after) {
		t.Errorf("after reopening: %v, before %v", after, before)
	}
	if _, err := s.StateCounts(); err != nil {
		t.Fatal(err)
	}
}

// TestStateCountsWhileWriting: the first count, taken while other
// goroutines move jobs through their states, is exact once they are done.
func TestStateCountsWhileWriting(t *testing.T) {
	s := open(t)
	const workers, perWorker = 8, 30
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range perWorker {
				j := submit(t, s, newJob(s, 1, t0))
				switch i % 3 {
				case 1:
					move(t, s, j, Running, nil)
				case 2:
					move(t, s, move(t, s, j, Running, nil), Failed, func(j *Job) { j.FinishedAt = t0 })
				}
			}
		})
	}
	counters := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := s.StateCounts()
			counters <- err
		}()
	}
	for range 4 {
		if err := <-counters; err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	checkCounts(t, s, "after the writers")
	got, _ := s.StateCounts()
	if total := got[Queued] + got[Running] + got[Failed]; total != workers*perWorker {
		t.Errorf("counts %v add up to %d jobs, want %d", got, total, workers*perWorker)
	}
}

func TestStateCountsClosed(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StateCounts(); err == nil {
		t.Error("StateCounts on a closed store: no error")
	}
}

// TestOpenLocked: a directory another process holds open is refused
// with ErrLocked, not "resource temporarily unavailable". The other
// process is this test binary, run as holdLock.
func TestOpenLocked(t *testing.T) {
	if dir := os.Getenv("JOBSUITE_STORE_HOLD"); dir != "" {
		holdLock(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenLocked$")
	cmd.Env = append(os.Environ(), "JOBSUITE_STORE_HOLD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "open\n" {
		t.Fatalf("the other process did not open the store: %q, %v", line, err)
	}
	s, err := Open(dir, Options{})
	if err == nil {
		s.Close()
		t.Fatal("a second Open of the same directory succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "holds its LOCK file") {
		t.Errorf("second Open: %v; want ErrLocked", err)
	}
}

// holdLock opens the store in dir, says "open" and keeps it open until
// stdin closes.
func holdLock(dir string) {
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	fmt.Println("open")
	io.Copy(io.Discard, os.Stdin)
}

// Counting a round's state changes allocates nothing, counting or not
// (it was two closures per round).
func TestStateCountsRoundAllocatesNothing(t *testing.T) {
	var c stateCounts
	for _, on := range []bool{false, true} {
		c.on = on
		allocs := testing.AllocsPerRun(100, func() {
			if c.begin() {
				c.add(Queued, Dispatched)
				c.add(Dispatched, Completed)
			}
			c.end()
		})
		if allocs != 0 {
			t.Errorf("on=%v: %v allocations per round, want 0", on, allocs)
		}
	}
	if got := c.n[stateCodes[Completed]].Load(); got != 101 { // AllocsPerRun runs once more to warm up
		t.Errorf("completed counted %d times, want 101", got)
	}
	if got := c.n[stateCodes[Queued]].Load(); got != -101 {
		t.Errorf("queued counted %d, want -101", got)
	}
}
