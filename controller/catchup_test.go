package controller_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"jobsuite/api"
)

// TestClusterSnapshotCatchUp is the HA test 5 with real
// processes: three jobsuite controller processes with a small snapshot
// policy (-raft-snapshot-threshold 64, -raft-snapshot-interval 1s,
// -raft-trailing-logs 32, where raft's defaults are 8192, 120 s and
// 10240 entries: the flags exist for operators too, as Consul's do), 16
// KiB raft-wal segments (raft-wal drops a compacted head only a whole
// segment at a time and serves the entries of a segment it keeps: with
// its 64 MiB default the follower catches up from the log, as the
// second try of this test showed) and a real agent. A follower is stopped (SIGTERM) while the others run
// jobs with output until the leader has compacted its log past the
// follower's last entry; started again, the follower can only catch up
// by installing the leader's snapshot, and its log must say it did.
// (Not SIGSTOP: a stopped process's kernel still takes in what the
// leader sends over loopback, megabytes of socket buffer, so it can
// catch up from entries it received before the leader compacted them;
// the first try of this test did just that.) Then its own store (read with ?stale=1, which it answers without
// asking the leader) holds the same jobs as the leader's, byte for
// byte: every job's record as the API shows it, its log, and the list.
// Last, the follower is killed (SIGKILL) and started again: its store
// is past its newest snapshot, so it starts without restoring it and
// replays only what it missed (design 5.4's start-up check). And it
// can lead: leadership moves to it and it runs jobs.
func TestClusterSnapshotCatchUp(t *testing.T) {
	if testing.Short() {
		t.Skip("snapshot catch-up test: real controllers and an agent, about a minute; skipped with -short")
	}
	bin := buildJobsuite(t, t.TempDir())
	c := startClusterProcs(t, bin, nil, "-raft-snapshot-threshold", "64", "-raft-snapshot-interval", "1s", "-raft-trailing-logs", "32", "-raft-wal-segment-bytes", "16384")
	startClusterAgentProc(t, bin, c.pki, filepath.Join(c.work, "agents"), "agent-1", strings.Join(c.agentAddrs, ","))
	lead := clusterLeader(t, c.procs, nil)
	var fol *clusterProc
	for _, p := range c.procs {
		if p != lead {
			fol = p
			break
		}
	}

	var ids []uint64
	run := func(from, n int) {
		t.Helper()
		var batch []uint64
		for k := from; k < from+n; k++ {
			body := fmt.Sprintf(`{"name":"catchup-%d","command":"printf 'job %d\\n'; seq 1 %d"}`, k, k, k%50)
			code, b, err := lead.client.do("POST", "/jobs", body)
			var j api.JobView
			if err != nil || code != 201 || json.Unmarshal(b, &j) != nil {
				t.Fatalf("POST /jobs %d: %d %s %v", k, code, b, err)
			}
			batch = append(batch, j.JobID)
		}
		for _, id := range batch {
			poll(t, fmt.Sprintf("job %d to complete", id), 60*time.Second, func() (bool, string) {
				var j api.JobView
				if err := lead.client.get(fmt.Sprintf("/jobs/%d", id), &j); err != nil {
					return false, err.Error()
				}
				return j.Status == "completed", j.Status
			})
		}
		ids = append(ids, batch...)
	}
	run(0, 10)
	poll(t, fol.name+" to apply what the leader has", waitLimit, func() (bool, string) {
		f, l := memberOf(t, lead, fol.name), memberOf(t, lead, lead.name)
		return f.AppliedIndex >= l.AppliedIndex, fmt.Sprintf("%d of %d", f.AppliedIndex, l.AppliedIndex)
	})
	last := memberOf(t, lead, fol.name).LastIndex

	fol.stop()
	// Jobs until the leader's log no longer holds the entry after the
	// follower's last one.
	compacted := regexp.MustCompile(`compacting logs: from=(\d+) to=(\d+)`)
	pastFollower := func() (uint64, bool) {
		for _, l := range lead.grepLogs(10000, "compacting logs") {
			if m := compacted.FindStringSubmatch(l); m != nil {
				if to, _ := strconv.ParseUint(m[2], 10, 64); to > last+16 { // a margin for entries that reached it before it stopped
					return to, true
				}
			}
		}
		return 0, false
	}
	var to uint64
	next := 10 // the next job's number
	for round := 0; ; round++ {
		run(next, 40)
		next += 40
		var ok bool
		if to, ok = pastFollower(); ok {
			break
		}
		if round == 10 {
			t.Fatalf("after %d jobs the leader had not compacted its log past %s's last entry %d", len(ids), fol.name, last)
		}
	}
	t.Logf("%d jobs; %s stopped at entry %d, the leader compacted its log up to %d", len(ids), fol.name, last, to)

	want := memberOf(t, lead, lead.name).AppliedIndex
	started := time.Now()
	fol.start(fol.client)
	poll(t, fol.name+" to catch up", 60*time.Second, func() (bool, string) {
		f := memberOf(t, lead, fol.name)
		return f.AppliedIndex >= want, fmt.Sprintf("%s: applied %d of %d", f.Role, f.AppliedIndex, want)
	})
	t.Logf("%s caught up %s after it was started again", fol.name, time.Since(started).Round(time.Millisecond))
	// The log is written in the background: wait for the lines.
	poll(t, fol.name+"'s log to say it installed the leader's snapshot", 10*time.Second, func() (bool, string) {
		installed, restored := fol.grepLogs(1, "Installed remote snapshot"), fol.grepLogs(1, "snapshot restored")
		return len(installed) > 0 && len(restored) > 0, fmt.Sprintf("raft installed: %v, store restored: %v", installed, restored)
	})

	// Its own store holds the leader's jobs, byte for byte.
	same := func(path string) {
		t.Helper()
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		code, mine, err := fol.client.do("GET", path+sep+"stale=1", "")
		if err != nil || code != 200 {
			t.Fatalf("GET %s?stale=1 on %s: %d %s %v", path, fol.name, code, mine, err)
		}
		code, theirs, err := lead.client.do("GET", path, "")
		if err != nil || code != 200 {
			t.Fatalf("GET %s on the leader: %d %s %v", path, code, theirs, err)
		}
		if !bytes.Equal(mine, theirs) {
			t.Errorf("GET %s: %s's store says\n%s\nthe leader's\n%s", path, fol.name, mine, theirs)
		}
	}
	for _, id := range ids {
		same(fmt.Sprintf("/jobs/%d", id))
		same(fmt.Sprintf("/jobs/%d/logs", id))
	}
	same("/jobs?limit=1000")

	// Design 5.4 through a real crash: the follower now holds the
	// installed snapshot and the entries after it. Killed (SIGKILL)
	// while the others go on, it restarts with its store at or past its
	// newest snapshot, so it must start without restoring the snapshot
	// (which would throw away what its store holds and rewrite it) and
	// apply only the entries it missed — few enough that the leader
	// still has them in its log.
	run(next, 2)
	next += 2
	poll(t, fol.name+" to apply the jobs after the snapshot", 30*time.Second, func() (bool, string) {
		f, l := memberOf(t, lead, fol.name), memberOf(t, lead, lead.name)
		return f.AppliedIndex >= l.AppliedIndex, fmt.Sprintf("%d of %d", f.AppliedIndex, l.AppliedIndex)
	})
	fol.kill()
	run(next, 2)
	want = memberOf(t, lead, lead.name).AppliedIndex
	fol.start(fol.client)
	poll(t, fol.name+" to catch up after the crash", 60*time.Second, func() (bool, string) {
		f := memberOf(t, lead, fol.name)
		return f.AppliedIndex >= want, fmt.Sprintf("%s: applied %d of %d", f.Role, f.AppliedIndex, want)
	})
	thisStart := fol.logFile(fol.starts)
	poll(t, fol.name+"'s log to say how it started", 10*time.Second, func() (bool, string) {
		return len(grepFile(thisStart, 1, "replaying the log after it")) > 0, fmt.Sprint(grepFile(thisStart, 3, "snapshot"))
	})
	if l := grepFile(thisStart, 3, "the store is behind the newest snapshot", "snapshot restored", "Installed remote snapshot"); len(l) > 0 {
		t.Errorf("%s restored a snapshot after a crash that left its store ahead of it: %v", fol.name, l)
	}
	for _, id := range ids {
		same(fmt.Sprintf("/jobs/%d", id))
		same(fmt.Sprintf("/jobs/%d/logs", id))
	}
	same("/jobs?limit=1000")

	// And it can lead: leadership is handed on (operator
	// transfer-leadership; raft picks the most up-to-date voter) until it
	// lands on the follower, which then runs jobs.
	for try := 0; ; try++ {
		cur := clusterLeader(t, c.procs, nil)
		if cur == fol {
			break
		}
		if try == 10 {
			t.Fatalf("leadership did not land on %s in %d transfers", fol.name, try)
		}
		if code, b, err := cur.client.do("POST", "/operator/transfer-leadership", ""); err != nil || code != 200 {
			t.Fatalf("transfer-leadership on %s: %d %s %v", cur.name, code, b, err)
		}
		poll(t, cur.name+" to hand the leadership on", 30*time.Second, func() (bool, string) {
			m := memberOf(t, fol, cur.name)
			return m.Role != "leader", m.Role
		})
	}
	t.Logf("%s leads", fol.name)
	lead = fol
	first := len(ids)
	run(next, 3)
	for _, id := range ids[first:] {
		code, b, err := fol.client.do("GET", fmt.Sprintf("/jobs/%d/logs", id), "")
		if err != nil || code != 200 || !strings.HasPrefix(string(b), "job ") {
			t.Errorf("job %d run under %s: log %d %q %v", id, fol.name, code, b, err)
		}
	}
}
