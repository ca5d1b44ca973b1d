package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The crash test of issue 14's two log stores: a child process (this
// test binary again, TestLogStoreCrashChild) appends to a store the way
// raft does and prints what each call acknowledged; the parent kills it
// with SIGKILL at a random moment, several times over the same
// directory, and after each kill opens the store and checks it against
// what was printed (checkLog). BENCHMARKS.md, "Issue 14: raft-wal vs
// raft-boltdb (session 8)", has the results and what a kill -9 does not
// prove (power loss: the page cache survives a killed process).

const (
	crashEnvKind = "JOBSUITE_LOGSTORE_CRASH_KIND" // the store: a key of logStores
	crashEnvDir  = "JOBSUITE_LOGSTORE_CRASH_DIR"  // its directory
	crashEnvSeed = "JOBSUITE_LOGSTORE_CRASH_SEED" // a seed to replay a run
	crashKills   = 8                              // kills per store
	crashMaxAcks = 48                             // batches acknowledged before a kill, at most
	// crashSegment makes raft-wal rotate its 1 MiB segments every ~30
	// batches, so kills also land around a rotation (a node uses 64 MiB).
	crashSegment = 1 << 20
)

// TestLogStoreCrashChild is the crash test's child and does nothing in
// a normal run: started with crashEnvKind and crashEnvDir set, it opens
// that store, completes an election its predecessor left half written,
// and then appends batches after the store's last index for ever (until
// killed), printing "log N" after each StoreLogs returned and "term T"
// after each setTerm (one every 8 batches) returned.
func TestLogStoreCrashChild(t *testing.T) {
	kind, dir := os.Getenv(crashEnvKind), os.Getenv(crashEnvDir)
	if kind == "" {
		return
	}
	if err := crashChild(kind, dir); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	os.Exit(3) // never killed: the parent has gone
}

func crashChild(kind, dir string) error {
	open, ok := logStores[kind]
	if !ok {
		return fmt.Errorf("no store %q", kind)
	}
	s, err := open(dir, crashSegment)
	if err != nil {
		return err
	}
	a, err := storeState(s)
	if err != nil {
		return err
	}
	fmt.Printf("open %d %d\n", a.index, a.cur)
	last, cur := a.index, a.cur
	if a.vote != cur || a.cand != cur {
		if err := setTerm(s, cur); err != nil {
			return err
		}
		fmt.Printf("term %d\n", cur)
	}
	for n := 1; n <= 100000; n++ {
		if last, err = appendBatch(s, last+1); err != nil {
			return err
		}
		fmt.Printf("log %d\n", last)
		if n%8 == 0 {
			cur++
			if err := setTerm(s, cur); err != nil {
				return err
			}
			fmt.Printf("term %d\n", cur)
		}
	}
	return nil
}

// TestLogStoreCrash kills a writer of each store crashKills times at
// random moments (after 0 to crashMaxAcks acknowledged batches; 0 kills
// it in its first batch, or while it opens and recovers the store) and
// checks the store after each kill. JOBSUITE_LOGSTORE_CRASH_SEED
// replays a run's kill points.
func TestLogStoreCrash(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv(crashEnvSeed), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (%s=%d replays the kill points)", seed, crashEnvSeed, seed)
	for kind, open := range logStores {
		t.Run(kind, func(t *testing.T) {
			h := fnv.New64a()
			h.Write([]byte(kind))
			rng := rand.New(rand.NewPCG(seed, h.Sum64()))
			dir := filepath.Join(t.TempDir(), kind)
			var a acked
			unacked, batches := 0, 0
			for k := range crashKills {
				goal := rng.IntN(crashMaxAcks + 1)
				printed, sealed := crashOnce(t, kind, dir, a, goal)
				s, err := open(dir, crashSegment)
				if err != nil {
					t.Fatalf("kill %d: the store does not open: %v", k, err)
				}
				got, err := checkLog(s, printed)
				if cerr := s.Close(); cerr != nil {
					t.Fatalf("kill %d: close: %v", k, cerr)
				}
				if err != nil {
					t.Fatalf("kill %d (after %d acknowledged batches): %v", k, goal, err)
				}
				if sealed {
					// The store lost nothing (checked above) but refused
					// to append after it was reopened (walSealed): the
					// repair OpenWAL makes did not happen.
					t.Fatalf("after kill %d the reopened store refused StoreLogs (%q); it holds all %d acknowledged entries", k-1, walSealed, got.index)
				}
				if got.index > printed.index {
					unacked++
				}
				batches += goal
				a = got
			}
			if a.index == 0 {
				t.Fatalf("%d kills and not one entry stored", crashKills)
			}
			t.Logf("%d entries and term %d in the end; %d kills left a whole batch the child had not acknowledged, none a part of one", a.index, a.cur, unacked)
		})
	}
}

// crashOnce starts a child on dir, which holds what a (checked and
// found in the store), kills it once it printed goal batches, and
// returns all it printed: the lines still in the pipe after the kill
// were acknowledged too.
func crashOnce(t *testing.T, kind, dir string, a acked, goal int) (printed acked, sealed bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLogStoreCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvKind+"="+kind, crashEnvDir+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Errorf("kill: %v", err)
			}
		}
	}
	defer kill()
	printed, logs := a, 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue // not ours: the test framework's
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "open":
			if v != a.index {
				t.Errorf("the child opened the store at index %d, the checker found %d", v, a.index)
			}
		case "log":
			printed.index = v
			logs++
		case "term":
			printed.cur, printed.vote, printed.cand = v, v, v
		default:
			continue
		}
		if f[0] != "term" && logs >= goal {
			kill()
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the child: %v", err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !killed && strings.Contains(stderr.String(), walSealed) {
		killed = true // it ended: nothing left to kill
		return printed, true
	}
	if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended on its own (%v) before the kill; stderr:\n%s", err, stderr.String())
	}
	return printed, false
}

// walSealed is raft-wal v0.4.2's error (types.ErrSealed) for every
// StoreLogs after a kill between the append that sealed a segment
// (acknowledged, fsynced) and the rotation that follows it in the
// background: the reopened tail is sealed and raft-wal alone never
// rotates it, so the store keeps what it has but never appends again.
// OpenWAL finishes the rotation (RepairSealedTail), so a child that
// opened through it and still gets this error fails the test.
// BENCHMARKS.md, "Issue 14: raft-wal vs raft-boltdb", has the story.
const walSealed = "segment is sealed"

// TestLogStoreCheckCatches shows that checkLog can fail: each case
// builds a store as a writer would (batches up to index 40 or more,
// two elections), then breaks it or claims more than was acknowledged,
// and checkLog must say so — or, for the states a kill legitimately
// leaves, must not.
func TestLogStoreCheckCatches(t *testing.T) {
	type fixture struct {
		s    logStore
		dir  string
		ends []uint64 // last index of each batch
		ack  acked    // everything written, acknowledged
	}
	cases := map[string]struct {
		change  func(t *testing.T, f *fixture) // may reopen f.s
		wantErr bool
	}{
		"nothing wrong": {change: func(*testing.T, *fixture) {}},
		"one batch stored but not acknowledged": {change: func(t *testing.T, f *fixture) {
			f.ack.index = f.ends[len(f.ends)-2]
		}},
		"two batches stored but not acknowledged": {wantErr: true, change: func(t *testing.T, f *fixture) {
			f.ack.index = f.ends[len(f.ends)-3]
		}},
		"acknowledged past the end": {wantErr: true, change: func(t *testing.T, f *fixture) {
			f.ack.index += batchLen(f.ack.index + 1)
		}},
		"entry rewritten": {wantErr: true, change: func(t *testing.T, f *fixture) {
			last := f.ack.index
			if err := f.s.DeleteRange(last, last); err != nil {
				t.Fatal(err)
			}
			l := entry(last)
			l.Data[len(l.Data)/2] ^= 1
			if err := f.s.StoreLogs([]*raft.Log{l}); err != nil {
				t.Fatal(err)
			}
		}},
		"head deleted": {wantErr: true, change: func(t *testing.T, f *fixture) {
			if err := f.s.DeleteRange(1, 5); err != nil {
				t.Fatal(err)
			}
		}},
		"byte flipped on disk": {wantErr: true, change: func(t *testing.T, f *fixture) {
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			flipOnDisk(t, f.dir, entryData(16)[64:96])
			s, err := logStores[filepath.Base(f.dir)](f.dir, crashSegment)
			if err != nil {
				t.Logf("the store refuses to open: caught before checkLog runs: %v", err)
				s = nil
			}
			f.s = s
		}},
		"term lost": {wantErr: true, change: func(t *testing.T, f *fixture) {
			f.ack.cur, f.ack.vote, f.ack.cand = f.ack.cur+1, f.ack.cur+1, f.ack.cur+1
		}},
		"election half written": {change: func(t *testing.T, f *fixture) {
			if err := f.s.SetUint64(keyCurrentTerm, f.ack.cur+1); err != nil {
				t.Fatal(err)
			}
		}},
		"vote ahead of the current term": {wantErr: true, change: func(t *testing.T, f *fixture) {
			if err := f.s.SetUint64(keyLastVoteTerm, f.ack.cur+1); err != nil {
				t.Fatal(err)
			}
		}},
		"candidate of another term": {wantErr: true, change: func(t *testing.T, f *fixture) {
			if err := f.s.Set(keyLastVoteCand, voteCand(f.ack.cur-1)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for kind, open := range logStores {
		t.Run(kind, func(t *testing.T) {
			for name, c := range cases {
				t.Run(name, func(t *testing.T) {
					f := &fixture{dir: filepath.Join(t.TempDir(), kind)}
					var err error
					if f.s, err = open(f.dir, crashSegment); err != nil {
						t.Fatal(err)
					}
					defer func() {
						if f.s != nil {
							f.s.Close()
						}
					}()
					for n := 1; f.ack.index < 40 || len(f.ends) < 4; n++ {
						if f.ack.index, err = appendBatch(f.s, f.ack.index+1); err != nil {
							t.Fatal(err)
						}
						f.ends = append(f.ends, f.ack.index)
						if n%2 == 0 && f.ack.cur < 2 {
							f.ack.cur++
							if err := setTerm(f.s, f.ack.cur); err != nil {
								t.Fatal(err)
							}
						}
					}
					f.ack.vote, f.ack.cand = f.ack.cur, f.ack.cur
					c.change(t, f)
					if f.s == nil {
						if !c.wantErr {
							t.Fatal("the store does not open")
						}
						return
					}
					_, err = checkLog(f.s, f.ack)
					if c.wantErr && err == nil {
						t.Fatal("checkLog found nothing wrong")
					}
					if !c.wantErr && err != nil {
						t.Fatalf("checkLog: %v", err)
					}
					t.Logf("checkLog: %v", err)
				})
			}
		})
	}
}

// flipOnDisk flips one bit of the first copy of pattern in the files
// under dir, behind the store's back.
func flipOnDisk(t *testing.T, dir string, pattern []byte) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if i := bytes.Index(b, pattern); i >= 0 {
			b[i+len(pattern)/2] ^= 0x10
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no file under %s holds the entry's bytes", dir)
}

// TestLogStoreWALKillAtSegmentEnd kills a raft-wal writer (1 MiB
// segments, 60 KiB entries, one per StoreLogs) right after its n-th
// StoreLogs returned, for each n around the first segment's end (the
// kill races the background rotation that follows the append which
// sealed the segment), and checks that the store reopens through
// OpenWAL with all n entries, byte for byte, and appends. raft-wal
// v0.4.2 alone refuses every StoreLogs after a kill that beats the
// rotation (walSealed), on every reopen; how many kills did is logged
// (it is a race), TestRepairSealedTail builds that state every time.
func TestLogStoreWALKillAtSegmentEnd(t *testing.T) {
	data := make([]byte, 60<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if dir := os.Getenv(crashEnvDir); os.Getenv(crashEnvKind) == "wal-segment-end" {
		n, _ := strconv.ParseUint(os.Getenv(crashEnvSeed), 10, 64)
		w, err := logStores["wal"](dir, crashSegment)
		if err != nil {
			os.Exit(2)
		}
		for i := uint64(1); i <= n; i++ {
			if err := w.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
				os.Exit(2)
			}
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	repaired := 0
	for n := uint64(14); n <= 22; n++ {
		dir := filepath.Join(t.TempDir(), "wal")
		cmd := exec.Command(os.Args[0], "-test.run=^TestLogStoreWALKillAtSegmentEnd$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnvKind+"=wal-segment-end", crashEnvDir+"="+dir, crashEnvSeed+"="+strconv.FormatUint(n, 10))
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("n=%d: the writer did not kill itself: %v", n, err)
		}
		next, err := RepairSealedTail(dir, crashSegment)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if next.ID != 0 {
			repaired++
		}
		s, err := logStores["wal"](dir, crashSegment)
		if err != nil {
			t.Fatalf("n=%d: the store does not open: %v", n, err)
		}
		last, err := s.LastIndex()
		if err != nil || last != n {
			t.Fatalf("n=%d: last index %d (%v), want %d", n, last, err, n)
		}
		var l raft.Log
		for i := uint64(1); i <= n; i++ {
			if err := s.GetLog(i, &l); err != nil || !bytes.Equal(l.Data, data) {
				t.Fatalf("n=%d: index %d: %v, %d bytes", n, i, err, len(l.Data))
			}
		}
		if err := s.StoreLogs([]*raft.Log{{Index: n + 1, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
			t.Fatalf("n=%d: all %d entries kept, but the next StoreLogs: %v", n, n, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d of 9 kills left the rotation for OpenWAL to finish", repaired)
}
