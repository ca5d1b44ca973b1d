package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"jobsuite/certs"
	"jobsuite/protocol"
)

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// TestRecordReuse checks the record files: a record written, read back,
// freed, and taken again by the next attempt without a new file.
func TestRecordReuse(t *testing.T) {
	dir := t.TempDir()
	pool := &recPool{dir: dir, keep: 2}
	long := &meta{Dispatch: protocol.Dispatch{JobID: 5, Attempt: 1, Command: "a long command line, longer than the next one"}, PID: 42}
	mf := &metaFile{pool: pool}
	if err := mf.write(long); err != nil {
		t.Fatal(err)
	}
	res := &meta{Dispatch: long.Dispatch, PID: 42, Result: &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 3}}
	if err := mf.write(res); err != nil {
		t.Fatal(err)
	}
	if err := mf.sync(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "rec-0"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := readRecord(f); err != nil || got.Result == nil || got.Result.LogBytes != 3 || got.Dispatch.JobID != 5 {
		t.Fatalf("readRecord = %+v, %v; want the result of job 5", got, err)
	}
	mf.remove()
	if got, err := readRecord(f); got != nil || err != nil {
		t.Fatalf("freed record reads %+v, %v; want free", got, err)
	}
	if err := mf.write(res); err != nil || mf.sync() != nil {
		t.Fatal("a forgotten attempt's write or sync failed")
	}
	if got, _ := readRecord(f); got != nil {
		t.Fatal("a forgotten attempt wrote its record again")
	}

	// The next attempt takes the same file; a shorter record leaves the
	// longer one's tail behind, which reading ignores.
	next := &metaFile{pool: pool}
	short := &meta{Dispatch: protocol.Dispatch{JobID: 6, Attempt: 2, Command: "x"}, PID: 7}
	if err := next.write(short); err != nil {
		t.Fatal(err)
	}
	if got, err := readRecord(f); err != nil || got.Dispatch.JobID != 6 || got.PID != 7 {
		t.Fatalf("reused record reads %+v, %v; want job 6", got, err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"rec-0"}) {
		t.Fatalf("state directory holds %v, want only rec-0", names)
	}
}

// TestScanState reads a state directory as a restarted agent does:
// attempts in record files and in the directories of earlier agents,
// free records back in the pool, a spool whose attempt is gone removed.
func TestScanState(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := &recPool{dir: dir, keep: 4}
	held := &metaFile{pool: pool}
	if err := held.write(&meta{Dispatch: protocol.Dispatch{JobID: 5, Attempt: 1}, PID: 1}); err != nil {
		t.Fatal(err)
	}
	freed := &metaFile{pool: pool}
	if err := freed.write(&meta{Dispatch: protocol.Dispatch{JobID: 9, Attempt: 1}}); err != nil {
		t.Fatal(err)
	}
	freed.remove() // rec-1
	write("5-1.out", nil)
	write("9-1.out", nil)     // its attempt was forgotten
	write("9-1.out.ack", nil) // likewise
	write("rec-7", []byte{0, 0, 0, 9, '{'})
	legacy := filepath.Join(dir, "3-2")
	if err := os.Mkdir(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(&meta{Dispatch: protocol.Dispatch{JobID: 3, Attempt: 2}, Result: &protocol.Finished{Outcome: protocol.OutcomeFailed}})
	if err := os.WriteFile(filepath.Join(legacy, "meta.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	fresh := &recPool{dir: dir, keep: 4}
	entries, err := scanState(dir, fresh)
	if err != nil {
		t.Fatal(err)
	}
	found := map[protocol.AttemptRef]stateEntry{}
	bad := 0
	for _, e := range entries {
		if e.m == nil {
			bad++
			continue
		}
		found[e.ref] = e
	}
	if e := found[protocol.AttemptRef{JobID: 5, Attempt: 1}]; e.m == nil || e.rec == nil || e.spool != filepath.Join(dir, "5-1.out") || e.m.PID != 1 {
		t.Errorf("attempt 5/1: %+v", e)
	}
	if e := found[protocol.AttemptRef{JobID: 3, Attempt: 2}]; e.m == nil || e.dir != legacy || e.spool != filepath.Join(legacy, "output") || e.m.Result == nil {
		t.Errorf("attempt 3/2 (old layout): %+v", e)
	}
	if len(found) != 2 || bad != 1 {
		t.Errorf("found %d attempts and %d unreadable records, want 2 and 1 (rec-7)", len(found), bad)
	}
	if len(fresh.free) != 1 || fresh.next != 8 {
		t.Errorf("pool: %d free, next %d; want 1 free (rec-1), next 8", len(fresh.free), fresh.next)
	}
	want := []string{"3-2", "5-1.out", "rec-0", "rec-1", "rec-7"}
	if names := dirNames(t, dir); !slices.Equal(names, want) {
		t.Errorf("state directory holds %v, want %v", names, want)
	}
}

// testAgent returns an agent that is not connected (Run is not called),
// on stateDir, to drive start, forget and recover directly.
func testAgent(t *testing.T, pki, stateDir string) *Agent {
	t.Helper()
	a, err := New(Config{
		Controller: "127.0.0.1:1", StateDir: stateDir, Slots: 2, WorkDir: stateDir,
		TLS: certs.Files{CA: certs.CAFile(pki), Cert: certs.CertFile(pki, "agent-1"), Key: certs.KeyFile(pki, "agent-1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func testPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := certs.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	for _, r := range []certs.Request{
		{Role: certs.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}},
		{Role: certs.RoleAgent, Name: "agent-1"},
	} {
		if _, _, err := certs.IssueFiles(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestResultSurvivesRestart ends an attempt that the controller has not
// acknowledged and reads the state directory as an agent restarted at
// that moment would (the first agent's files as it left them, unsynced:
// what an agent crash keeps): the attempt is there with its real result
// and output, not reported as cut short. Once forgotten, nothing of it
// is left but a free record.
func TestResultSurvivesRestart(t *testing.T) {
	pki, state := testPKI(t), t.TempDir()
	a := testAgent(t, pki, state)
	ref := protocol.AttemptRef{JobID: 11, Attempt: 2}
	d := &protocol.Dispatch{JobID: ref.JobID, Attempt: ref.Attempt, Command: "echo out; exit 3", CaptureLogs: true, KillGrace: time.Second}
	if err := a.start(context.Background(), nil, d); err != nil {
		t.Fatal(err)
	}
	var j *job
	waitUntil(t, "the attempt to end", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		j = a.jobs[ref]
		return j != nil && j.released
	})

	b := testAgent(t, pki, state)
	if err := b.recover(); err != nil {
		t.Fatal(err)
	}
	rj := b.jobs[ref]
	if rj == nil || len(b.jobs) != 1 {
		t.Fatalf("restarted agent holds %v, want attempt %v", b.jobs, ref)
	}
	if r := rj.result; r.Outcome != protocol.OutcomeFailed || r.ExitCode != 3 || r.Error != "" || r.LogBytes != 4 {
		t.Fatalf("recovered result %+v, want exit code 3 with 4 bytes of output", r)
	}
	if !rj.released || rj.d.Command != d.Command {
		t.Errorf("recovered attempt: released %v, command %q", rj.released, rj.d.Command)
	}
	if got, _ := readAll(t, rj.sp, 0); got != "out\n" {
		t.Errorf("recovered output %q, want \"out\\n\"", got)
	}

	a.forget(j)
	c := testAgent(t, pki, state)
	if err := c.recover(); err != nil {
		t.Fatal(err)
	}
	if len(c.jobs) != 0 {
		t.Errorf("after the attempt was forgotten, a restarted agent holds %v", c.jobs)
	}
	if names := dirNames(t, state); !slices.Equal(names, []string{"rec-0"}) {
		t.Errorf("state directory holds %v, want only the free record", names)
	}
}

func TestReadProcStat(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.pgrp != syscall.Getpgrp() || st.startTick == 0 || st.rssPages <= 0 {
		t.Errorf("own /proc stat: %+v (pgrp %d)", st, syscall.Getpgrp())
	}
	if startTick(os.Getpid()) != st.startTick {
		t.Error("startTick differs from readProcStat")
	}
	if _, err := readProcStat(1 << 30); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing process: %v, want ErrNotExist", err)
	}
}

// TestRecoverKillsOrphans reads the state directory as an agent that
// restarts while an attempt's process still runs: the process group is
// killed if its leader is the attempt's process (its start time lies
// where the record says), and left alone if the PID now names another
// process; the attempt is reported failed either way.
func TestRecoverKillsOrphans(t *testing.T) {
	pki := testPKI(t)
	for name, theirs := range map[string]bool{"the attempt's process": true, "a reused PID": false} {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			a := testAgent(t, pki, state)
			ref := protocol.AttemptRef{JobID: 12, Attempt: 1}
			// A job whose process group holds two processes.
			d := &protocol.Dispatch{JobID: ref.JobID, Attempt: ref.Attempt, Command: "sleep 300 & exec sleep 300", KillGrace: time.Second}
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			if err := a.start(ctx, nil, d); err != nil {
				t.Fatal(err)
			}
			var j *job
			waitUntil(t, "the process to start", func() bool {
				a.mu.Lock()
				defer a.mu.Unlock()
				j = a.jobs[ref]
				return j != nil && j.pid > 0
			})
			pid := j.pid
			killAtEnd(t, -pid)
			rec := func() *meta { // as on disk: the first agent left it there
				t.Helper()
				j.mf.mu.Lock()
				defer j.mf.mu.Unlock()
				if j.mf.f == nil {
					return nil
				}
				m, err := readRecord(j.mf.f)
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			waitUntil(t, "the record of the process", func() bool { m := rec(); return m != nil && m.PID == pid })
			if m := rec(); !(Process{PID: pid, StartTick: m.StartTick, StartTickMax: m.StartTickMax}).Is(startTick(pid)) {
				t.Fatalf("record says the process started at ticks %d to %d; /proc says %d", m.StartTick, m.StartTickMax, startTick(pid))
			}
			if !theirs {
				// The record of an earlier process with this PID.
				m := rec()
				m.StartTick, m.StartTickMax = startTick(pid)-10, startTick(pid)-5
				if err := j.mf.write(m); err != nil {
					t.Fatal(err)
				}
			}

			b := testAgent(t, pki, state)
			if err := b.recover(); err != nil {
				t.Fatal(err)
			}
			rj := b.jobs[ref]
			if rj == nil || rj.result.Outcome != protocol.OutcomeFailed || !strings.Contains(rj.result.Error, "agent stopped while the job ran") {
				t.Fatalf("restarted agent holds %+v", rj)
			}
			if theirs {
				waitGone(t, pid)
			} else if gone(pid) {
				t.Fatal("the process of another PID's owner was killed")
			}
			stop() // the first agent's job ends
			waitUntil(t, "the first agent's job to end", func() bool {
				a.mu.Lock()
				defer a.mu.Unlock()
				return j.released
			})
		})
	}
}

// TestMetaEncode checks that a record's JSON, with the dispatch encoded
// once per attempt, is what json.Marshal gives for the whole meta.
func TestMetaEncode(t *testing.T) {
	d := protocol.Dispatch{JobID: 7, Attempt: 2, Name: "n", Command: `echo "a" <&2 \ é`, Env: []string{"A=1", ""}, Timeout: time.Second, CaptureLogs: true, Output: protocol.OutputOrdered}
	fin := &protocol.Finished{Outcome: protocol.OutcomeFailed, ExitCode: -1, Error: "x", Duration: time.Millisecond, LogBytes: 3}
	for name, m := range map[string]*meta{
		"dispatch only":   {Dispatch: d},
		"started":         {Dispatch: d, PID: 42, StartTick: 100},
		"started bracket": {Dispatch: d, PID: 42, StartTick: 100, StartTickMax: 101},
		"result":          {Dispatch: d, PID: 42, Result: fin},
		"negative pid":    {Dispatch: d, PID: -1, Result: fin},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			mf := &metaFile{}
			for i := range 2 { // the second write reuses the dispatch's JSON
				if got := mf.encode(nil, m); string(got) != string(want) {
					t.Fatalf("write %d: encode = %s; want %s", i, got, want)
				}
			}
		})
	}
}
