package controller_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"jobsuite/controller"
)

// missed is a cluster in which node holey holds none of a completed
// job's output, although it applied the job's rounds, its end included,
// and its repair has not run: the situation the repair queue is for.
type missed struct {
	c       *nodeCluster
	holey   int    // the node that missed the job's output
	release func() // lets holey's repair run
	job     uint64
	want    string // the job's output
}

// nodeID is node i's ID (its certificate's name).
func nodeID(i int) string { return fmt.Sprintf("ctl-%d", i+1) }

// staleState reads job id's status from node i's own store.
func staleState(t *testing.T, c *nodeCluster, i int, id uint64) string {
	t.Helper()
	code, b := doWith(t, c.client, "GET", c.url(i, fmt.Sprintf("/jobs/%d?stale=1", id)), "")
	if code != 200 {
		return fmt.Sprintf("HTTP %d", code)
	}
	var j job
	_ = json.Unmarshal(b, &j)
	return j.Status
}

// missedOutput builds a missed: three nodes with the output channel and
// an agent; holey is stopped while a job writes its output and
// completes under the first leader; leadership moves to the third node
// (a new term: the first term's resend buffer goes with it); holey
// starts again with its repair held, and applies the job's rounds.
func missedOutput(t *testing.T, set func(*controller.Config)) *missed {
	t.Helper()
	c := startNodesWith(t, 3, set)
	lead := c.leader()
	holey := c.other(lead)
	third := 3 - lead - holey
	var addrs []string
	for _, cfg := range c.cfgs {
		addrs = append(addrs, cfg.AgentAddr)
	}
	startClusterAgent(t, c, "agent-1", strings.Join(addrs, ","))

	c.stop(holey)
	code, body := doWith(t, c.client, "POST", c.url(lead, "/jobs"), `{"command":"seq 1 20000"}`)
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var j job
	_ = json.Unmarshal(body, &j)
	waitNodeState(t, c, lead, j.JobID, "completed")
	transferTo(t, c, lead, third)

	m := &missed{c: c, holey: holey, job: j.JobID, want: string(seqOutput(20000))}
	c.before = func(i int, nd *controller.Node) {
		if i == holey {
			m.release = nd.HoldRepair()
		}
	}
	c.start(holey)
	c.before = nil
	t.Cleanup(m.release)
	(&cluster{t: t}).waitFor(fmt.Sprintf("node %d to apply job %d's end", holey, j.JobID), func() bool {
		return staleState(t, c, holey, j.JobID) == "completed"
	})
	if code, b := staleLog(t, c, holey, j.JobID); code != 200 || string(b) == m.want {
		t.Fatalf("node %d's copy of job %d before any repair: %d, %d bytes: it missed nothing", holey, j.JobID, code, len(b))
	}
	return m
}

// transferTo hands node from's leadership to node to and waits until
// to alone leads.
func transferTo(t *testing.T, c *nodeCluster, from, to int) {
	t.Helper()
	if err := c.nodes[from].TransferLeadershipTo(nodeID(to)); err != nil {
		t.Fatal(err)
	}
	(&cluster{t: t}).waitFor(fmt.Sprintf("node %d to lead alone", to), func() bool {
		for i, nd := range c.nodes {
			if c.stops[i] != nil && nd.Leading() != (i == to) {
				return false
			}
		}
		return true
	})
}

// waitOwnLog waits until node i's own copy of job id is want.
func waitOwnLog(t *testing.T, c *nodeCluster, i int, id uint64, want string) {
	t.Helper()
	(&cluster{t: t}).waitFor(fmt.Sprintf("node %d's own copy of job %d", i, id), func() bool {
		code, b := staleLog(t, c, i, id)
		return code == 200 && string(b) == want
	})
}

// plainMetric reads a metric without labels from node i's plain
// metrics listener.
func plainMetric(t *testing.T, c *nodeCluster, i int, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.nodes[i].MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("node %d's metrics lack %s", i, name)
	return 0
}

// TestOutputRepairSurvivesRestart: a node that applied the end of a job
// whose output it missed, and stopped before it repaired it, repairs it
// after a restart, although its raft log no longer holds the end (a
// snapshot covers it, so the restart replays nothing of it): the repair
// queue is in its store.
func TestOutputRepairSurvivesRestart(t *testing.T) {
	m := missedOutput(t, nil)
	c := m.c
	if err := c.nodes[m.holey].TakeSnapshot(); err != nil {
		t.Fatal(err)
	}
	c.stop(m.holey)
	c.start(m.holey)
	waitOwnLog(t, c, m.holey, m.job, m.want)
	if got := plainMetric(t, c, m.holey, "jobsuite_cluster_output_repaired_bytes_total"); got != float64(len(m.want)) {
		t.Errorf("node %d repaired %g bytes, want %d", m.holey, got, len(m.want))
	}
	(&cluster{t: t}).waitFor("an empty repair queue", func() bool {
		return plainMetric(t, c, m.holey, "jobsuite_cluster_output_repair_pending") == 0
	})
}

// TestOutputRepairAfterSnapshotInstall: a leader's copy of a job's
// output has holes it has not repaired yet (it missed the output as a
// follower, and its repair is held); a follower stopped while the
// cluster writes past its log catches up by installing the leader's
// snapshot, holes included, and repairs them from the third node, which
// holds the output: the snapshot carries the leader's repair queue.
// Then every node ends with every job's output byte for byte.
func TestOutputRepairAfterSnapshotInstall(t *testing.T) {
	m := missedOutput(t, func(cfg *controller.Config) {
		cfg.RaftSnapshotThreshold = 64
		cfg.RaftSnapshotInterval = 500 * time.Millisecond
		cfg.RaftTrailingLogs = 32
		cfg.RaftWALSegmentBytes = 16 << 10
	})
	c := m.c
	transferTo(t, c, c.leader(), m.holey)
	inst := c.other(m.holey)
	_, last := c.nodes[inst].RaftIndexes()
	c.stop(inst)

	// Jobs until the leader's log no longer holds inst's next entry.
	wants := map[uint64]string{m.job: m.want}
	for round := 0; c.nodes[m.holey].RaftFirstIndex() <= last+1; round++ {
		if round == 20 {
			t.Fatalf("after %d jobs the leader's log still starts at %d, node %d stopped at %d", len(wants), c.nodes[m.holey].RaftFirstIndex(), inst, last)
		}
		var ids []uint64
		for k := range 10 {
			n := round*10 + k + 1
			code, body := doWith(t, c.client, "POST", c.url(m.holey, "/jobs"), fmt.Sprintf(`{"command":"echo job-%d; seq 1 %d"}`, n, n))
			if code != 201 {
				t.Fatalf("POST /jobs: %d %s", code, body)
			}
			var j job
			_ = json.Unmarshal(body, &j)
			ids = append(ids, j.JobID)
			wants[j.JobID] = fmt.Sprintf("job-%d\n", n) + string(seqOutput(n))
		}
		for _, id := range ids {
			waitNodeState(t, c, m.holey, id, "completed")
		}
	}

	c.start(inst)
	(&cluster{t: t}).waitFor(fmt.Sprintf("node %d to install the leader's snapshot", inst), func() bool {
		return c.nodes[inst].Restores() > 0
	})
	waitOwnLog(t, c, inst, m.job, m.want)
	if got := plainMetric(t, c, inst, "jobsuite_cluster_output_repaired_bytes_total"); got < float64(len(m.want)) {
		t.Errorf("node %d repaired %g bytes, want at least %d", inst, got, len(m.want))
	}

	// The leader repairs its own copy once its repair runs; then all
	// three hold every job's output.
	m.release()
	for i := range c.nodes {
		for id, want := range wants {
			waitOwnLog(t, c, i, id, want)
		}
	}
}
