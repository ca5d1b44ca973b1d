package controller_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"jobsuite/agent"
	"jobsuite/api"
)

// getSnapshot saves a snapshot through url's GET /operator/snapshot.
func getSnapshot(t *testing.T, cl *http.Client, url string) string {
	t.Helper()
	code, b := doWith(t, cl, "GET", url, "")
	if code != 200 {
		t.Fatalf("GET %s: %d %s", url, code, b)
	}
	return string(b)
}

// staleJobs is each node's own list of jobs (?stale=1): ID -> command.
func staleJobs(t *testing.T, c *nodeCluster, i int) map[uint64]string {
	t.Helper()
	code, b := doWith(t, c.client, "GET", c.url(i, "/jobs?stale=1"), "")
	if code != 200 {
		return nil
	}
	var list []job
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("GET /jobs?stale=1 on node %d: %v: %s", i, err, b)
	}
	out := map[uint64]string{}
	for _, j := range list {
		out[j.JobID] = j.Command
	}
	return out
}

// waitAllNodesHold waits until every node's own store lists exactly
// want, and each of those jobs' logs reads "<command without echo>\n".
func waitAllNodesHold(t *testing.T, c *nodeCluster, want map[uint64]string) {
	t.Helper()
	for i := range c.nodes {
		(&cluster{t: t}).waitFor(fmt.Sprintf("node %d to hold jobs %v", i, want), func() bool {
			got := staleJobs(t, c, i)
			if len(got) != len(want) {
				return false
			}
			for id, cmd := range want {
				if got[id] != cmd {
					return false
				}
				code, b := doWith(t, c.client, "GET", c.url(i, fmt.Sprintf("/jobs/%d/logs?stale=1", id)), "")
				if code != 200 || string(b) != strings.TrimPrefix(cmd, "echo ")+"\n" {
					return false
				}
			}
			return true
		})
	}
}

// restoreVia posts a snapshot to node i's POST /operator/snapshot/restore.
func restoreVia(t *testing.T, c *nodeCluster, i int, snap string) (int, api.SnapshotRestored, string) {
	t.Helper()
	code, b := doWith(t, c.client, "POST", c.url(i, "/operator/snapshot/restore"), snap)
	var res api.SnapshotRestored
	if code == 200 {
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatalf("restore answer: %v: %s", err, b)
		}
	}
	return code, res, string(b)
}

// submitVia submits command through node i and waits until it completed.
func submitVia(t *testing.T, c *nodeCluster, i int, command string) uint64 {
	t.Helper()
	code, b := doWith(t, c.client, "POST", c.url(i, "/jobs"), fmt.Sprintf(`{"command":%q}`, command))
	if code != 201 {
		t.Fatalf("POST /jobs on node %d: %d %s", i, code, b)
	}
	var j job
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	waitNodeState(t, c, i, j.JobID, "completed")
	return j.JobID
}

// TestClusterSnapshotRestore (issue 14: operator snapshot restore of a
// live cluster, and a single controller's jobs moved into a cluster):
// a single controller's backup is restored into a running 3-node
// cluster through a follower — every node's own store then holds
// exactly the backup's jobs and logs (the job the cluster ran before is
// gone), and the leader, rebuilt from the restored store, runs new jobs
// with the IDs that follow. Then the cluster's own snapshot is restored
// after more work: the cluster goes back to it. A snapshot that is not
// whole is refused and changes nothing, a single controller refuses the
// online restore (it restores offline), and the restore is in the
// restored store's audit log.
func TestClusterSnapshotRestore(t *testing.T) {
	single := startCluster(t, "agent-1")
	for _, cmd := range []string{"echo single-1", "echo single-2"} {
		j := single.submit(fmt.Sprintf(`{"command":%q}`, cmd))
		single.waitFor("a single controller's job", func() bool { return single.job(j.JobID).Status == "completed" })
	}
	backup := getSnapshot(t, single.client, single.base+"/operator/snapshot")
	if code, b := single.do("POST", "/operator/snapshot/restore", backup); code != http.StatusConflict || !strings.Contains(string(b), "-data-dir") {
		t.Fatalf("online restore on a single controller: %d %s; want 409 naming the offline restore", code, b)
	}

	c := startNodes(t, 3)
	lead := c.leader()
	fol := c.other(lead)
	startClusterAgent(t, c, "agent-1", c.cfgs[lead].AgentAddr)
	submitVia(t, c, fol, "echo cluster-before")

	// Not a whole snapshot: refused, nothing changed.
	if code, _, b := restoreVia(t, c, fol, backup[:len(backup)-1]); code != http.StatusBadRequest {
		t.Fatalf("restore of a truncated snapshot: %d %s; want 400", code, b)
	}
	waitAllNodesHold(t, c, map[uint64]string{1: "echo cluster-before"})

	code, res, b := restoreVia(t, c, fol, backup)
	if code != 200 {
		t.Fatalf("restore of the single controller's backup through a follower: %d %s", code, b)
	}
	if res.Index == 0 || res.SnapshotIndex != 0 || res.Jobs["completed"] != 2 || res.Bytes != int64(len(backup)) {
		t.Errorf("restore answer %+v; want a raft index, none in the file, 2 completed jobs, %d bytes", res, len(backup))
	}
	waitAllNodesHold(t, c, map[uint64]string{1: "echo single-1", 2: "echo single-2"})
	lead = c.leader()
	fol = c.other(lead)
	if id := submitVia(t, c, fol, "echo cluster-3"); id != 3 {
		t.Errorf("the first job after the restore got ID %d, want 3 (after the restored jobs)", id)
	}

	// The cluster's own snapshot, then more work, then back to it.
	own := getSnapshot(t, c.client, c.url(fol, "/operator/snapshot"))
	submitVia(t, c, fol, "echo cluster-4")
	code, res, b = restoreVia(t, c, lead, own)
	if code != 200 {
		t.Fatalf("restore of the cluster's own snapshot: %d %s", code, b)
	}
	if res.SnapshotIndex == 0 || res.Index <= res.SnapshotIndex {
		t.Errorf("restore answer %+v; want the file's raft index, and a new one past it", res)
	}
	waitAllNodesHold(t, c, map[uint64]string{1: "echo single-1", 2: "echo single-2", 3: "echo cluster-3"})
	lead = c.leader()
	if id := submitVia(t, c, c.other(lead), "echo cluster-4-again"); id != 4 {
		t.Errorf("the first job after going back got ID %d, want 4", id)
	}
	code, b2 := doWith(t, c.client, "GET", c.url(lead, "/audit"), "")
	// The first restore's entry is in the snapshot taken after it; the
	// second's was written into the store it restored.
	if code != 200 || strings.Count(string(b2), `"snapshot-restore"`) != 2 {
		t.Errorf("audit log after the second restore: %d, %d snapshot-restore entries, want 2: %s",
			code, strings.Count(string(b2), `"snapshot-restore"`), b2)
	}
}

// TestRestoreBringsAgentsBack: the leader stays leader through an
// operator's restore, but its term's Server (and so every agent
// session) is rebuilt. Its agents are told to come straight back (a
// farewell Redirect naming the leader) and are held until the restored
// term serves them, so they do not sit out their reconnect backoff: the
// agent here would wait 5–10 minutes after a session that merely ended,
// and must be running jobs for the restored cluster well before that.
func TestRestoreBringsAgentsBack(t *testing.T) {
	c := startNodes(t, 3)
	lead := c.leader()
	startClusterAgentWith(t, c, "agent-1", c.cfgs[lead].AgentAddr, func(cfg *agent.Config) {
		cfg.ReconnectMin, cfg.ReconnectMax = 10*time.Minute, 10*time.Minute
	})
	submitVia(t, c, lead, "echo before")
	snap := getSnapshot(t, c.client, c.url(lead, "/operator/snapshot"))
	if code, _, b := restoreVia(t, c, lead, snap); code != 200 {
		t.Fatalf("restore: %d %s", code, b)
	}
	if now := c.leader(); now != lead {
		t.Fatalf("leadership moved from node %d to %d during the restore", lead, now)
	}
	if id := submitVia(t, c, lead, "echo after"); id != 2 {
		t.Errorf("the first job after the restore got ID %d, want 2", id)
	}
}
