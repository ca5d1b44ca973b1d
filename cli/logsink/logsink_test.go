package logsink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
)

// lockedBuffer is a bytes.Buffer safe for the Writer's goroutine and the
// test, counting the Write calls it receives.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestConcurrentLinesArriveWholeAndInOrder(t *testing.T) {
	var out lockedBuffer
	w := New(&out, 4096)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(w, "writer=%d line=%d %s\n", g, i, strings.Repeat("x", i%97))
			}
		}()
	}
	wg.Wait()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines arrived, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		var g, i int
		f := strings.Split(l, " ")
		if len(f) != 3 {
			t.Fatalf("torn line %q", l)
		}
		if _, err := fmt.Sscanf(f[0]+" "+f[1], "writer=%d line=%d", &g, &i); err != nil {
			t.Fatalf("torn line %q: %v", l, err)
		}
		pad := f[2]
		if g < 0 || g >= writers || i != next[g] {
			t.Fatalf("line %q out of order: want line %d of writer %d", l, next[g], g)
		}
		if len(pad) != i%97 {
			t.Fatalf("line %q: padding %d bytes, want %d", l, len(pad), i%97)
		}
		next[g]++
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// blockingWriter blocks every Write until release is closed and reports
// each call on entered.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	lockedBuffer
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.lockedBuffer.Write(p)
}

func TestWriteWaitsWhenTheLimitIsPendingAndLosesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &blockingWriter{entered: make(chan struct{}, 100), release: make(chan struct{})}
		w := New(out, 10)
		if _, err := w.Write([]byte("first\n")); err != nil { // taken by the goroutine, which blocks in out
			t.Fatal(err)
		}
		<-out.entered
		if _, err := w.Write([]byte("0123456789\n")); err != nil { // pending: 11 bytes ≥ limit
			t.Fatal(err)
		}
		third := make(chan struct{})
		go func() {
			_, _ = w.Write([]byte("third\n"))
			close(third)
		}()
		synctest.Wait() // every goroutine is blocked: out in Write, the third Write in Wait
		select {
		case <-third:
			t.Fatal("Write returned with more than the limit pending and the output blocked")
		default:
		}
		close(out.release)
		<-third
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got, want := out.String(), "first\n0123456789\nthird\n"; got != want {
			t.Fatalf("output %q, want %q", got, want)
		}
	})
}

func TestLinesWrittenDuringAWriteShareTheNextOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &blockingWriter{entered: make(chan struct{}, 100), release: make(chan struct{})}
		w := New(out, 0)
		_, _ = w.Write([]byte("a\n"))
		<-out.entered
		for range 50 {
			_, _ = w.Write([]byte("b\n"))
		}
		close(out.release)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		out.mu.Lock()
		writes := out.writes
		out.mu.Unlock()
		if writes != 2 {
			t.Fatalf("51 lines took %d writes; want 2 (the first, then the 50 that queued behind it)", writes)
		}
		if got := out.String(); got != "a\n"+strings.Repeat("b\n", 50) {
			t.Fatalf("output %q", got)
		}
		_ = w.Close()
	})
}

type failingWriter struct{ err error }

func (f failingWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestFlushAndCloseReportTheOutputsError(t *testing.T) {
	boom := errors.New("disk full")
	w := New(failingWriter{boom}, 0)
	_, _ = w.Write([]byte("x\n"))
	if err := w.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush = %v, want %v", err, boom)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want %v", err, boom)
	}
}

func TestCloseWritesWhatIsPendingThenWritesGoStraightThrough(t *testing.T) {
	var out lockedBuffer
	w := New(&out, 0)
	for i := range 100 {
		fmt.Fprintf(w, "%d\n", i)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	var want strings.Builder
	for i := range 100 {
		fmt.Fprintf(&want, "%d\n", i)
	}
	if out.String() != want.String() {
		t.Fatalf("after Close the output holds %q", out.String())
	}
	fmt.Fprintf(w, "late\n")
	if !strings.HasSuffix(out.String(), "99\nlate\n") {
		t.Fatalf("a Write after Close did not reach the output: %q", out.String())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLogLine compares one hclog line written to a file directly
// (one write(2) per line) with the same line through a Writer. `make
// bench-go` runs it.
func BenchmarkLogLine(b *testing.B) {
	for _, sink := range []bool{false, true} {
		name := "direct"
		if sink {
			name = "logsink"
		}
		b.Run(name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var out io.Writer = f
			if sink {
				w := New(f, 0)
				defer w.Close()
				out = w
			}
			l := hclog.New(&hclog.LoggerOptions{Name: "controller", Output: out}).Named("scheduler")
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				l.Info("job dispatched", "job", i, "state", "dispatched", "attempt", 1, "agent", "worker-1", "msg", "")
			}
		})
	}
}

// With a linger, the lines that arrive within it after the first share
// its write; Flush does not wait for the linger; a line after the write
// starts the next linger.
func TestLingerGathersLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &lockedBuffer{}
		const linger = 5 * time.Millisecond
		w := NewLinger(out, 0, linger)
		defer w.Close()
		writes := func() int {
			out.mu.Lock()
			defer out.mu.Unlock()
			return out.writes
		}
		_, _ = w.Write([]byte("a\n"))
		synctest.Wait()
		if n := writes(); n != 0 {
			t.Fatalf("%d writes before the linger ended, want 0", n)
		}
		time.Sleep(linger / 2)
		_, _ = w.Write([]byte("b\n"))
		_, _ = w.Write([]byte("c\n"))
		synctest.Wait()
		if n := writes(); n != 0 {
			t.Fatalf("%d writes before the linger ended, want 0", n)
		}
		time.Sleep(linger / 2)
		synctest.Wait()
		if n, got := writes(), out.String(); n != 1 || got != "a\nb\nc\n" {
			t.Fatalf("after the linger: %d writes of %q, want 1 of the three lines", n, got)
		}

		start := time.Now()
		_, _ = w.Write([]byte("d\n"))
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Flush waited %s for the linger", waited)
		}
		if n, got := writes(), out.String(); n != 2 || got != "a\nb\nc\nd\n" {
			t.Fatalf("after Flush: %d writes of %q", n, got)
		}
	})
}

// Close does not wait for the linger either, and writes what is pending.
func TestLingerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &lockedBuffer{}
		w := NewLinger(out, 0, time.Hour)
		_, _ = w.Write([]byte("a\n"))
		start := time.Now()
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Close waited %s for the linger", waited)
		}
		if got := out.String(); got != "a\n" {
			t.Fatalf("output %q", got)
		}
	})
}

// A full buffer ends the linger: the writer waits for the output, not
// for the clock.
func TestLingerFullBufferWritesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &lockedBuffer{}
		w := NewLinger(out, 4, time.Hour)
		defer w.Close()
		start := time.Now()
		_, _ = w.Write([]byte("abcd\n")) // reaches the limit
		_, _ = w.Write([]byte("e\n"))    // waits for the output
		if waited := time.Since(start); waited != 0 {
			t.Errorf("a Write past the limit waited %s", waited)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != "abcd\ne\n" {
			t.Fatalf("output %q", got)
		}
	})
}
