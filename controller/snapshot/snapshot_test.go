package snapshot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"jobsuite/controller/store"
)

var t0 = time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)

// fill adds n queued jobs to the store in dir (created if need be) and
// returns the IDs of all its jobs.
func fill(t *testing.T, dir string, n int) []uint64 {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for range n {
		j := &store.Job{ID: st.NextID(), Name: "job", Command: "true", State: store.Queued, CreatedAt: t0, QueuedAt: t0}
		if _, err := st.Apply(store.NewTransition(j, store.Event{Time: t0, Type: "submitted"})); err != nil {
			t.Fatal(err)
		}
	}
	jobs, _, err := st.List(store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	slices.Sort(ids)
	return ids
}

// jobIDs lists the jobs of the store in dir.
func jobIDs(t *testing.T, dir string) []uint64 { return fill(t, dir, 0) }

// streamOf is a snapshot of a store with n jobs.
func streamOf(t *testing.T, n int) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	fill(t, dir, n)
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cp := filepath.Join(t.TempDir(), "cp")
	if err := st.Checkpoint(cp); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, cp); err != nil {
		t.Fatal(err)
	}
	if size, err := Size(cp); err != nil || size != int64(buf.Len()) {
		t.Fatalf("Size = %d, %v; Write wrote %d bytes", size, err, buf.Len())
	}
	return buf.Bytes()
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestReadAndVerify(t *testing.T) {
	good := streamOf(t, 3)
	flip := func(i int) []byte {
		b := slices.Clone(good)
		b[i] ^= 1
		return b
	}
	cases := map[string]struct {
		data []byte
		ok   bool
	}{
		"whole":              {good, true},
		"empty":              {nil, false},
		"header only":        {good[:len(Magic)+1], false},
		"truncated in files": {good[:len(good)/2], false},
		"no checksum":        {good[:len(good)-32], false},
		"checksum cut":       {good[:len(good)-1], false},
		"byte flipped":       {flip(len(good) / 2), false},
		"checksum flipped":   {flip(len(good) - 1), false},
		"trailing byte":      {append(slices.Clone(good), 0), false},
		"not a snapshot":     {append([]byte("jobsuite-snapshoX"), good[len(Magic):]...), false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			info, err := Verify(bytes.NewReader(c.data))
			if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrSnapshot)) {
				t.Fatalf("Verify = %v, want ok %v or ErrSnapshot", err, c.ok)
			}
			dir := filepath.Join(t.TempDir(), "out")
			rinfo, rerr := Read(bytes.NewReader(c.data), dir)
			if c.ok != (rerr == nil) || (rerr != nil && !errors.Is(rerr, ErrSnapshot)) {
				t.Fatalf("Read = %v, want ok %v or ErrSnapshot", rerr, c.ok)
			}
			if !c.ok {
				return
			}
			if info != rinfo || info.StreamBytes != int64(len(good)) || info.Files == 0 {
				t.Fatalf("Verify %+v, Read %+v; stream of %d bytes", info, rinfo, len(good))
			}
			if got := jobIDs(t, dir); !slices.Equal(got, []uint64{1, 2, 3}) {
				t.Fatalf("the read store holds jobs %v, want 1-3", got)
			}
		})
	}
}

func TestRestore(t *testing.T) {
	snap := streamOf(t, 3)
	cases := map[string]struct {
		setup      func(t *testing.T, parent string) string // returns -data-dir
		discardOld bool
		wantBefore bool
	}{
		"plain directory": {setup: func(t *testing.T, parent string) string {
			dir := filepath.Join(parent, "data")
			fill(t, dir, 5)
			return dir
		}, wantBefore: true},
		"discard the old store": {setup: func(t *testing.T, parent string) string {
			dir := filepath.Join(parent, "data")
			fill(t, dir, 5)
			return dir
		}, discardOld: true},
		"symlink to a directory": {setup: func(t *testing.T, parent string) string {
			real := filepath.Join(parent, "real")
			fill(t, real, 5)
			link := filepath.Join(parent, "data")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, wantBefore: true},
		"no data directory yet": {setup: func(t *testing.T, parent string) string {
			return filepath.Join(parent, "data")
		}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := c.setup(t, parent)
			var secret []byte
			if _, err := os.Stat(dir); err == nil {
				st, err := store.Open(dir, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if secret, err = st.Secret("reset", 32); err != nil {
					t.Fatal(err)
				}
				st.Close()
			}
			res, err := Restore(bytes.NewReader(snap), dir, RestoreOptions{Now: t0, DiscardOld: c.discardOld})
			if err != nil {
				t.Fatal(err)
			}
			if got := jobIDs(t, dir); !slices.Equal(got, []uint64{1, 2, 3}) {
				t.Fatalf("after the restore the store holds jobs %v, want 1-3", got)
			}
			if res.Jobs[string(store.Queued)] != 3 || res.Info.StreamBytes != int64(len(snap)) {
				t.Errorf("Restored = %+v, want 3 queued jobs and %d stream bytes", res, len(snap))
			}
			if (res.Before != "") != c.wantBefore {
				t.Fatalf("Before = %q, want one: %v", res.Before, c.wantBefore)
			}
			if c.wantBefore {
				if got := jobIDs(t, res.Before); len(got) != 5 {
					t.Errorf("the kept store %s holds jobs %v, want the 5 it had", res.Before, got)
				}
			}
			if secret != nil {
				st, err := store.Open(dir, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				got, err := st.Secret("reset", 32)
				st.Close()
				if err != nil || !bytes.Equal(got, secret) {
					t.Errorf("the node's secret after the restore: %x, %v; want the one it had (%x)", got, err, secret)
				}
			}
			for _, n := range names(t, parent) {
				if filepath.Ext(n) == stagingSuffix {
					t.Errorf("%s left beside the data directory", n)
				}
			}
		})
	}
}

// A bad stream, a running controller: the data directory is as it was
// and nothing is left beside it.
func TestRestoreRefused(t *testing.T) {
	good := streamOf(t, 3)
	cases := map[string]struct {
		data    []byte
		locked  bool
		cluster string // a subdirectory that makes it a cluster node's
		want    error
	}{
		"cluster node's fsm":  {data: good, cluster: "fsm", want: ErrClusterNode},
		"cluster node's raft": {data: good, cluster: "raft", want: ErrClusterNode},
		"truncated":           {data: good[:len(good)-10], want: ErrSnapshot},
		"corrupt":             {data: append(slices.Clone(good[:100]), append([]byte{good[100] ^ 0xff}, good[101:]...)...), want: ErrSnapshot},
		"store is in use":     {data: good, locked: true, want: store.ErrLocked},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "data")
			fill(t, dir, 5)
			if c.cluster != "" {
				if err := os.Mkdir(filepath.Join(dir, c.cluster), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if c.locked {
				st, err := store.Open(dir, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
			}
			before := names(t, parent)
			_, err := Restore(bytes.NewReader(c.data), dir, RestoreOptions{Now: t0})
			if !errors.Is(err, c.want) {
				t.Fatalf("Restore = %v, want %v", err, c.want)
			}
			if got := names(t, parent); !slices.Equal(got, before) {
				t.Errorf("beside the data directory: %v, want %v", got, before)
			}
			if c.locked {
				return
			}
			if got := jobIDs(t, dir); len(got) != 5 {
				t.Errorf("the store holds jobs %v, want its 5", got)
			}
		})
	}
}

// A crash leaves DIR.restore-STAMP.tmp holding either the new store
// (never swapped in) or the old one (swapped out): the next restore
// tells them apart by the marker and removes the first, keeps the second.
func TestRestoreFinishesInterruptedOne(t *testing.T) {
	snap := streamOf(t, 3)
	const stamp = "20261205T070000.000Z"
	cases := map[string]struct {
		marker   string // in the leftover; "" for none
		wantKept bool
	}{
		"new store, never swapped in":     {marker: stamp, wantKept: false},
		"old store without a marker":      {marker: "", wantKept: true},
		"old store of an earlier restore": {marker: "20261101T000000.000Z", wantKept: true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "data")
			fill(t, dir, 5)
			left := filepath.Join(parent, "data"+restoreInfix+stamp+stagingSuffix)
			fill(t, left, 2)
			if c.marker != "" {
				if err := os.WriteFile(filepath.Join(left, markerName), []byte(c.marker+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			res, err := Restore(bytes.NewReader(snap), dir, RestoreOptions{Now: t0})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Recovered) != 1 {
				t.Errorf("Recovered = %q, want one line", res.Recovered)
			}
			if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the leftover is still there: %v", err)
			}
			kept := filepath.Join(parent, "data"+beforeInfix+stamp)
			_, err = os.Stat(kept)
			if (err == nil) != c.wantKept {
				t.Fatalf("kept as %s: %v, want kept %v", kept, err, c.wantKept)
			}
			if c.wantKept {
				if got := jobIDs(t, kept); len(got) != 2 {
					t.Errorf("the kept store holds %v, want its 2 jobs", got)
				}
			}
		})
	}
}

// holdEnv makes the test binary a process that opens the store in the
// directory it names, says "open" and waits for its stdin to close: a
// controller in another process.
const holdEnv = "JOBSUITE_SNAPSHOT_TEST_HOLD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holdEnv); dir != "" {
		st, err := store.Open(dir, store.Options{})
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("open")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		st.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A controller in another process holds the data directory: the restore
// is refused (the kernel's lock on Pebble's LOCK file) and changes nothing.
func TestRestoreRefusedWhileAnotherProcessHoldsTheStore(t *testing.T) {
	snap := streamOf(t, 3)
	parent := t.TempDir()
	dir := filepath.Join(parent, "data")
	fill(t, dir, 5)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+dir)
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
		if err := cmd.Wait(); err != nil {
			t.Errorf("the holding process: %v", err)
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "open\n" {
		t.Fatalf("the holding process said %q, %v", line, err)
	}
	before := names(t, parent)
	_, err = Restore(bytes.NewReader(snap), dir, RestoreOptions{Now: t0})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Restore = %v, want store.ErrLocked", err)
	}
	if got := names(t, parent); !slices.Equal(got, before) {
		t.Errorf("beside the data directory: %v, want %v", got, before)
	}
}
