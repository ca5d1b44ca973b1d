package controller_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"jobsuite/controller"
)

// staleLog reads job id's log from node i's own store (?stale=1).
func staleLog(t *testing.T, c *nodeCluster, i int, id uint64) (int, []byte) {
	t.Helper()
	return doWith(t, c.client, "GET", c.url(i, fmt.Sprintf("/jobs/%d/logs?stale=1", id)), "")
}

// TestOutputChannelFailover: with the output channel (the default) a job's output reaches
// every node's own store byte for byte; when the leader stops while the
// job runs, the new leader fills the running attempt's output from the
// others, takes the agent's reopened stream and the job ends with its
// whole output, exactly once, on every node — the stopped one too, once
// it is back and has repaired what it missed.
func TestOutputChannelFailover(t *testing.T) {
	c := channelCluster(t)
	lead := c.leader()

	// A short job: its log on every node, from each one's own store.
	code, body := doWith(t, c.client, "POST", c.url(lead, "/jobs"), `{"command":"seq 1 3000"}`)
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var short job
	_ = json.Unmarshal(body, &short)
	waitNodeState(t, c, lead, short.JobID, "completed")
	var want strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	for i := range c.nodes {
		(&cluster{t: t}).waitFor(fmt.Sprintf("node %d's own copy of job %d", i, short.JobID), func() bool {
			code, b := staleLog(t, c, i, short.JobID)
			return code == 200 && string(b) == want.String()
		})
	}

	// The leader counts the chunks a quorum holds.
	code, body = doWith(t, c.client, "GET", c.url(lead, "/metrics"), "")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	var durable, last float64
	for _, line := range strings.Split(string(body), "\n") {
		fmt.Sscanf(line, "jobsuite_cluster_output_durable_seq %g", &durable)
		fmt.Sscanf(line, "jobsuite_cluster_output_last_seq %g", &last)
	}
	if durable == 0 || durable != last {
		t.Errorf("output seqs on the leader after the job: durable %g, last %g", durable, last)
	}

	// A job that runs across a failover: output before and after.
	gate := filepath.Join(t.TempDir(), "gate")
	code, body = doWith(t, c.client, "POST", c.url(lead, "/jobs"),
		fmt.Sprintf(`{"command":"seq 1 50000; while [ ! -e %s ]; do sleep 0.05; done; seq 50001 100000"}`, gate))
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var long job
	_ = json.Unmarshal(body, &long)
	var first strings.Builder
	for i := 1; i <= 50000; i++ {
		fmt.Fprintf(&first, "%d\n", i)
	}
	(&cluster{t: t}).waitFor("the first half on the leader", func() bool {
		code, b := staleLog(t, c, lead, long.JobID)
		return code == 200 && len(b) == first.Len()
	})
	c.stop(lead)
	lead2 := c.leader()
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	done := waitNodeState(t, c, lead2, long.JobID, "completed")
	if len(done.Attempts) != 1 {
		t.Fatalf("the job ran %d attempts, want 1 (its agent reattached)", len(done.Attempts))
	}
	full := first.String()
	var second strings.Builder
	for i := 50001; i <= 100000; i++ {
		fmt.Fprintf(&second, "%d\n", i)
	}
	full += second.String()
	wantSum := sha256.Sum256([]byte(full))
	// The old leader comes back: it missed the second half, and repairs
	// it from the others once it applies the attempt's end.
	c.start(lead)
	for i := range c.nodes {
		(&cluster{t: t}).waitFor(fmt.Sprintf("node %d's own copy of job %d", i, long.JobID), func() bool {
			code, b := staleLog(t, c, i, long.JobID)
			return code == 200 && sha256.Sum256(b) == wantSum
		})
	}
}

// TestOutputChannelSticky: each member reports how it would send output
// if it led (`operator members`, OUTPUT). A cluster whose nodes all run
// with -output-channel=false sends output in the raft rounds and says
// "raft"; once a node set to the channel has led, the store records it,
// and every node, the ones set to the rounds included, says "channel"
// and uses the channel when it leads (its metrics have the channel's
// gauges): a leader in the rounds could not fill the gap of an
// attempt an earlier leader acknowledged on the channel.
func TestOutputChannelSticky(t *testing.T) {
	c := startNodesWith(t, 3, func(cfg *controller.Config) { cfg.OutputInRaft = true })
	members := func(want map[string]string) {
		t.Helper()
		poll(t, fmt.Sprintf("members' output settings %v", want), waitLimit, func() (bool, string) {
			got := map[string]string{}
			for _, m := range nodeMembers(t, c, c.leader()) {
				got[m.ID] = m.Output
			}
			return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprint(got)
		})
	}
	members(map[string]string{"ctl-1": "raft", "ctl-2": "raft", "ctl-3": "raft"})
	if _, ok := scrape(t, c.nodes[c.leader()].MetricsAddr())["jobsuite_cluster_output_durable_seq"]; ok {
		t.Fatal("a leader set to send output in the rounds runs the output channel in a cluster that never used it")
	}

	// ctl-1 restarts set to the channel; it leads at some point (a leader
	// that is not ctl-1 is restarted until ctl-1 wins an election).
	c.stop(0)
	c.cfgs[0].OutputInRaft = false
	c.start(0)
	members(map[string]string{"ctl-1": "channel", "ctl-2": "raft", "ctl-3": "raft"})
	c.leadBy(0)
	members(map[string]string{"ctl-1": "channel", "ctl-2": "channel", "ctl-3": "channel"})

	// ctl-1 goes: the leader after it, set to the rounds, uses the
	// channel all the same.
	c.stop(0)
	lead := c.leader()
	poll(t, "the channel's gauges on the new leader", waitLimit, func() (bool, string) {
		m := scrape(t, c.nodes[lead].MetricsAddr())
		_, ok := m["jobsuite_cluster_output_durable_seq"]
		return ok, fmt.Sprintf("ctl-%d's metrics have no jobsuite_cluster_output_durable_seq", lead+1)
	})
}
