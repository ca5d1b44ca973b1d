package controller_test

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"jobsuite/api"
	"jobsuite/certs"
)

// The issue's HA tests 1, 3 and 4 with real processes: three jobsuite
// controller processes form a cluster, two real agents know all three,
// eight clients submit through random nodes with idempotency keys, and
// a fault is applied several times:
//
//   - kill: the leader is killed with SIGKILL (and restarted), 5 times;
//   - pause: the leader is stopped with SIGSTOP for three election
//     timeouts, then continued, twice;
//   - rolling: each controller in turn is stopped with SIGTERM and
//     started again (a rolling restart);
//   - partition (issue test 2, root only): each controller runs in a
//     network namespace of its own (haNet), and the leader's link to its
//     peers is cut while its clients and agents still reach it, twice,
//     each for six seconds (three election timeouts), then healed. The
//     cut-off leader must step down within its leader lease + 1 s: the
//     time from the cut to raft's "failed to contact quorum of nodes,
//     stepping down" line in its log, which is when raft leaves the
//     leader state, and from then on the send gate refuses every
//     Dispatch and Cancel (node.go). The bound is asserted because it is
//     the issue's correctness bound, not a speed target: raft checks
//     the lease (1 s at -raft-multiplier 2) when the oldest peer contact
//     would expire, so the step-down comes about one lease after the
//     last heartbeat answered; the issue's extra second is the slack
//     for a loaded machine's timers, and nothing tighter is asserted.
//     The step-down and the time until the term's Server stopped are
//     logged. While cut off it still answers its clients a stale read
//     (?stale=1) from its own store. After healing, the old leader must rejoin as a follower
//     that has applied what the leader had, without an election (raft's
//     pre-vote keeps the isolated node's campaigns from raising the
//     term): the leader and its term stay as they were.
//
// Then: every acknowledged submission is exactly one job (clients retry
// with their key until acknowledged, so no operation fails after its
// retries), every job ends completed, its attempt numbers are 1..n, no
// two attempts of a job ran at the same time (each job records its
// start and end), its stored log is byte-exact on every node, no agent
// dropped a Dispatch or Cancel of a deposed leader (none was sent), and
// the agents were back with the new leader within 10 s of each fault.

const (
	failoverKills   = 5
	failoverClients = 8
)

// clusterProc is a controller process of the test cluster.
type clusterProc struct {
	*controllerProc
	name, clusterAddr string
	client            *apiClient
}

func TestClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster fault tests: real controllers and agents through leader kills, pauses and a rolling restart, a few minutes; skipped with -short")
	}
	bin := buildJobsuite(t, t.TempDir())
	for _, mode := range []string{"kill", "pause", "rolling", "partition", "kill-output-in-raft"} {
		t.Run(mode, func(t *testing.T) { clusterFaults(t, bin, mode) })
	}
	t.Run("watch", func(t *testing.T) { leaderWatchKill(t, bin) })
}

// leaderWatchKill: with a lease of 10 minutes, an agent's session to a
// leader that is killed (SIGKILL: over QUIC nothing tells the agent)
// would only time out after a quarter of it, 2.5 minutes. Its watch
// session with a follower (PROTOCOL.md §2.4) makes it leave for the new
// leader as soon as one is elected: it must be attached to the new
// leader well within the 30 s poll, and the job it ran through the
// failover — reattached, not lost, since no lease ran out — completes
// with all its output.
func leaderWatchKill(t *testing.T, bin string) {
	c := startClusterProcs(t, bin, nil, "-lease-ttl", "10m")
	startClusterAgentProc(t, bin, c.pki, filepath.Join(c.work, "agents"), "agent-1", strings.Join(c.agentAddrs, ","))
	lead := clusterLeader(t, c.procs, nil)
	attached := func(p *clusterProc) (bool, string) {
		var list []api.AgentInfo
		if err := p.client.get("/agents", &list); err != nil {
			return false, err.Error()
		}
		return len(list) == 1, fmt.Sprintf("%d agents", len(list))
	}
	poll(t, "the agent at the leader", 30*time.Second, func() (bool, string) { return attached(lead) })
	poll(t, "the agent watching a follower", 30*time.Second, func() (bool, string) {
		watches := 0
		for _, p := range c.procs {
			if p != lead {
				watches += memberOf(t, lead, p.name).WatchSessions
			}
		}
		return watches == 1, fmt.Sprintf("%d watch sessions on the followers", watches)
	})
	code, b, err := lead.client.do("POST", "/jobs", `{"command":"echo before; sleep 4; echo after"}`)
	var j api.JobView
	if err != nil || code != 201 || json.Unmarshal(b, &j) != nil {
		t.Fatalf("POST /jobs: %d %s %v", code, b, err)
	}
	poll(t, "the job running", 30*time.Second, func() (bool, string) {
		err := lead.client.get(fmt.Sprintf("/jobs/%d", j.JobID), &j)
		return err == nil && j.Status == "running", fmt.Sprint(j.Status, err)
	})
	killed := time.Now()
	lead.kill()
	next := clusterLeader(t, c.procs, lead)
	poll(t, "the agent at the new leader "+next.name, 30*time.Second, func() (bool, string) { return attached(next) })
	t.Logf("the agent was attached to the new leader %s %s after the kill", next.name, time.Since(killed).Round(time.Millisecond))
	poll(t, "the job to end", 60*time.Second, func() (bool, string) {
		err := next.client.get(fmt.Sprintf("/jobs/%d", j.JobID), &j)
		return err == nil && j.Status != "running" && j.Status != "queued", fmt.Sprint(j.Status, err)
	})
	if j.Status != "completed" || len(j.Attempts) != 1 {
		t.Errorf("the job through the failover: %s, %d attempts; want completed in its one attempt", j.Status, len(j.Attempts))
	}
	code, out, err := next.client.do("GET", fmt.Sprintf("/jobs/%d/logs", j.JobID), "")
	if err != nil || code != 200 || string(out) != "before\nafter\n" {
		t.Errorf("the job's log: %d %q %v", code, out, err)
	}
}

func clusterFaults(t *testing.T, bin, mode string) {
	var hn *haNet
	if mode == "partition" {
		hn = newHANet(t) // first: its cleanup runs after the processes stopped
	}
	// kill-output-in-raft: the kills, with output in the raft rounds
	// (-output-channel=false) instead of on the output channel. Every
	// mode checks every node's own copy of each log (?stale=1), and a
	// plain read through each node (which, with the channel, serves it
	// from that copy).
	var extra []string
	if mode == "kill-output-in-raft" {
		mode, extra = "kill", []string{"-output-channel=false"}
	}
	c := startClusterProcs(t, bin, hn, extra...)
	procs, agentAddrs, pki, work := c.procs, c.agentAddrs, c.pki, c.work

	leader := func(skip *clusterProc) *clusterProc { t.Helper(); return clusterLeader(t, procs, skip) }

	agentsDir := filepath.Join(work, "agents")
	for _, name := range []string{"agent-1", "agent-2"} {
		startClusterAgentProc(t, bin, pki, agentsDir, name, strings.Join(agentAddrs, ","))
	}
	agentsBack := func(via *clusterProc) (bool, string) {
		var list []api.AgentInfo
		if err := via.client.get("/agents", &list); err != nil {
			return false, err.Error()
		}
		if len(list) != 2 {
			return false, fmt.Sprintf("%d agents connected", len(list))
		}
		return true, ""
	}
	lead := leader(nil)
	poll(t, "both agents at the leader", waitLimit, func() (bool, string) { return agentsBack(lead) })

	// Clients: each submits jobs with its own keys through random
	// nodes, retrying (same key) on errors and 503s until acknowledged.
	type submitted struct {
		id  uint64
		out string
	}
	var (
		mu      sync.Mutex
		acked   = map[string]submitted{}
		keys    []string              // acked's keys, for the reader
		history []porcupine.Operation // for the linearizability check
		stop    atomic.Bool
		cwg     sync.WaitGroup
	)
	// A fault that fails the test (t.Fatal in a poll) must not leave the
	// clients running past its end: their t.Errorf would panic and take
	// the whole package's run down with it.
	defer func() { stop.Store(true); cwg.Wait() }()
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	runs := filepath.Join(work, "runs") // "s|e JOB ATTEMPT NANOS" lines the jobs append
	for c := range failoverClients {
		cwg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				key := fmt.Sprintf("c%d-%d", c, n)
				out := fmt.Sprintf("%s\n%s\n", key, strings.Repeat(key, 1+n%20))
				mark := func(what string) string {
					return fmt.Sprintf(`echo %s $JOBSUITE_JOB_ID $JOBSUITE_ATTEMPT $(date +%%s%%N) >> %s`, what, runs)
				}
				body := fmt.Sprintf(`{"name":%q,"command":%q,"idempotency_key":%q,"retries":3,"backoff":{"base":0.2,"max":1}}`,
					key, fmt.Sprintf("%s; printf '%%s\\n%%s\\n' %s %s; sleep 0.%d; %s", mark("s"), key, strings.Repeat(key, 1+n%20), n%4, mark("e")), key)
				// submit posts body through random nodes until one
				// acknowledges it, and records the operation.
				submit := func() (uint64, bool) {
					called := now()
					for try := 0; ; try++ {
						p := procs[rand.IntN(len(procs))]
						code, b, err := p.client.do("POST", "/jobs", body)
						if err == nil && (code == 201 || code == 200) {
							var j api.JobView
							if err := json.Unmarshal(b, &j); err != nil {
								t.Errorf("submit %s: %v: %s", key, err, b)
								return 0, false
							}
							mu.Lock()
							history = append(history, porcupine.Operation{ClientId: c, Input: linOp{key: key}, Call: called, Output: linOut{id: j.JobID}, Return: now()})
							mu.Unlock()
							return j.JobID, true
						}
						if err == nil && code != 503 && code != 502 {
							t.Errorf("submit %s through %s: %d %s", key, p.name, code, b)
							return 0, false
						}
						if try > 300 {
							t.Errorf("submit %s: no success after %d tries (last %d %v)", key, try, code, err)
							return 0, false
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
				id, ok := submit()
				if !ok {
					return
				}
				mu.Lock()
				acked[key] = submitted{id: id, out: out}
				keys = append(keys, key)
				mu.Unlock()
				if n%3 == 0 {
					// The same submission again, through any node, as a
					// client that missed the answer would: the same job
					// (the model checks it too).
					if again, ok := submit(); !ok {
						return
					} else if again != id {
						t.Errorf("submit %s again: job %d, first %d", key, again, id)
					}
				}
				time.Sleep(300 * time.Millisecond) // about 25 jobs/s in all: the agents keep up
			}
		})
	}

	// A reader: GET /jobs/:id of acknowledged jobs through random nodes.
	cwg.Go(func() {
		for !stop.Load() {
			mu.Lock()
			if len(keys) == 0 {
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
				continue
			}
			key := keys[rand.IntN(len(keys))]
			id := acked[key].id
			mu.Unlock()
			// Retried through random nodes, as a client does, until
			// it has an answer: test 4 wants no operation failing after
			// its retries. A read has no effect, so the operation spans
			// the first call to the answer.
			called := now()
			var (
				code int
				b    []byte
				err  error
			)
			for try := 0; ; try++ {
				p := procs[rand.IntN(len(procs))]
				code, b, err = p.client.do("GET", fmt.Sprintf("/jobs/%d", id), "")
				if err == nil && (code == 200 || code == 404) || stop.Load() {
					break
				}
				if try == 600 {
					t.Errorf("GET /jobs/%d: no answer after %d tries (last %d %s %v)", id, try, code, b, err)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			returned := now()
			if err != nil || (code != 200 && code != 404) {
				continue // stopped before an answer
			}
			out := linOut{found: code == 200}
			if out.found {
				var j api.JobView
				if err := json.Unmarshal(b, &j); err != nil {
					t.Errorf("GET /jobs/%d: %v", id, err)
					return
				}
				out.status, out.attempts = j.Status, len(j.Attempts)
				out.phase = phaseOf(j.Status, out.attempts)
			}
			mu.Lock()
			history = append(history, porcupine.Operation{ClientId: failoverClients, Input: linOp{key: key, read: true, id: id}, Call: called, Output: out, Return: returned})
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})

	var failovers []time.Duration
	switch mode {
	case "kill":
		for k := 1; k <= failoverKills; k++ {
			time.Sleep(time.Second) // let the clients and agents work under this leader
			old := leader(nil)
			killed := time.Now()
			old.kill()
			lead = leader(old)
			poll(t, fmt.Sprintf("kill %d: both agents at the new leader %s", k, lead.name), 10*time.Second, func() (bool, string) { return agentsBack(lead) })
			failovers = append(failovers, time.Since(killed))
			old.start(old.client)
		}
	case "pause":
		for k := 1; k <= 2; k++ {
			time.Sleep(time.Second)
			old := leader(nil)
			paused := time.Now()
			if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			lead = leader(old)
			poll(t, fmt.Sprintf("pause %d: both agents at the new leader %s", k, lead.name), 10*time.Second, func() (bool, string) { return agentsBack(lead) })
			failovers = append(failovers, time.Since(paused))
			// Three election timeouts (2 s at -raft-multiplier 2) in all.
			time.Sleep(time.Until(paused.Add(6 * time.Second)))
			if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
	case "rolling":
		for _, p := range procs {
			time.Sleep(time.Second)
			stopped := time.Now()
			p.stop()
			lead = leader(p)
			poll(t, fmt.Sprintf("%s stopped: both agents at the leader %s", p.name, lead.name), 10*time.Second, func() (bool, string) { return agentsBack(lead) })
			failovers = append(failovers, time.Since(stopped))
			p.start(p.client)
		}
	case "partition":
		for k := 1; k <= 2; k++ {
			time.Sleep(time.Second)
			old := leader(nil)
			i := slices.Index(procs, old)
			cut := hn.cut(i)
			raftDown, srvDown := stepDown(t, old, cut)
			// Its clients still reach it: it answers a stale read from
			// its own store, knowing no leader.
			if code, b, err := old.client.do("GET", "/jobs?stale=1&limit=1", ""); err != nil || code != 200 {
				t.Errorf("cut %d: %s, cut off from its peers, did not answer a stale read through its access link: %d %s %v", k, old.name, code, b, err)
			}
			lead = leader(old)
			poll(t, fmt.Sprintf("cut %d: both agents at the new leader %s", k, lead.name), 10*time.Second, func() (bool, string) { return agentsBack(lead) })
			failovers = append(failovers, time.Since(cut))
			t.Logf("cut %d: %s cut off from its peers; raft stepped down after %s, its term's Server stopped after %s; %s leads",
				k, old.name, raftDown.Sub(cut).Round(time.Millisecond), srvDown.Sub(cut).Round(time.Millisecond), lead.name)
			if bound := partitionLease + time.Second; raftDown.Sub(cut) > bound {
				t.Errorf("cut %d: %s stepped down %s after the cut, over its leader lease + 1 s (%s)", k, old.name, raftDown.Sub(cut).Round(time.Millisecond), bound)
			}
			time.Sleep(time.Until(cut.Add(6 * time.Second))) // holding the cut is the point
			before := memberOf(t, lead, lead.name)
			hn.heal(i)
			healed := time.Now()
			poll(t, fmt.Sprintf("cut %d: %s back as a follower that caught up", k, old.name), waitLimit, func() (bool, string) {
				m, l := memberOf(t, lead, old.name), memberOf(t, lead, lead.name)
				return m.Role == "follower" && m.Term == l.Term && m.AppliedIndex >= before.AppliedIndex,
					fmt.Sprintf("%s: %s, term %d, applied %d; leader term %d, applied %d before the heal", old.name, m.Role, m.Term, m.AppliedIndex, l.Term, before.AppliedIndex)
			})
			t.Logf("cut %d: %s rejoined as a follower %s after the heal", k, old.name, time.Since(healed).Round(time.Millisecond))
			if after := memberOf(t, lead, lead.name); after.Role != "leader" || after.Term != before.Term {
				t.Errorf("cut %d: healing disrupted the cluster: %s was leader of term %d, now %s of term %d", k, lead.name, before.Term, after.Role, after.Term)
			}
		}
	}
	stop.Store(true)
	cwg.Wait()
	t.Logf("%d jobs acknowledged; %s → agents back at the leader: %v", len(acked), mode, failovers)

	// Every acknowledged job ends completed, once, with its own output.
	lead = leader(nil)
	for key, s := range acked {
		var j api.JobView
		poll(t, fmt.Sprintf("job %d (%s) to finish", s.id, key), 60*time.Second, func() (bool, string) {
			if err := lead.client.get(fmt.Sprintf("/jobs/%d", s.id), &j); err != nil {
				return false, err.Error()
			}
			return j.Status == "completed" || j.Status == "failed" || j.Status == "cancelled" || j.Status == "timeout", j.Status
		})
		if j.Status != "completed" || j.Name != key {
			t.Errorf("job %d (%s): %s %q (%s)", s.id, key, j.Status, j.Name, j.Reason)
		}
		for i, a := range j.Attempts {
			if int(a.Number) != i+1 {
				t.Errorf("job %d: attempt numbers %v", s.id, j.Attempts)
				break
			}
		}
		// The job's log: each lost attempt's output up to its recorded
		// end (a prefix of the job's deterministic output), then the
		// completed attempt's whole output.
		wantLog, ok := expectedLog(j.Attempts, s.out)
		if !ok {
			t.Errorf("job %d: attempts' log ranges %+v do not fit its output of %d bytes", s.id, j.Attempts, len(s.out))
		}
		want := sha256.Sum256([]byte(wantLog))
		for _, p := range procs {
			var got []byte
			poll(t, fmt.Sprintf("job %d's log on %s", s.id, p.name), waitLimit, func() (bool, string) {
				path := fmt.Sprintf("/jobs/%d/logs?stale=1", s.id) // this node's own copy
				code, b, err := p.client.do("GET", path, "")
				if err != nil || code != 200 {
					return false, fmt.Sprint(code, err)
				}
				got = b
				// A node's own copy may still be applying or repairing.
				return sha256.Sum256(b) == want, fmt.Sprintf("%d of %d bytes", len(b), len(wantLog))
			})
			if sha256.Sum256(got) != want {
				t.Errorf("job %d's log through %s: %q, want %q", s.id, p.name, got, wantLog)
			}
			// A plain read: with the channel served by the node from its
			// own copy, or forwarded while that copy lacks something;
			// whole either way.
			code, b, err := p.client.do("GET", fmt.Sprintf("/jobs/%d/logs", s.id), "")
			if err != nil || code != 200 || sha256.Sum256(b) != want {
				t.Errorf("job %d's log through %s (not stale): %d %q %v, want %q", s.id, p.name, code, b, err, wantLog)
			}
		}
	}
	// The histories are linearizable.
	if res := linearizable(history); res != porcupine.Ok {
		t.Errorf("the job histories (%d operations) are not linearizable: %v", len(history), res)
	} else {
		t.Logf("%d operations (submissions and reads) linearizable", len(history))
	}
	// No two attempts of a job ran at the same time.
	checkNoOverlap(t, runs)
	// No Dispatch or Cancel of a deposed leader reached an agent.
	for _, name := range []string{"agent-1", "agent-2"} {
		if l := grepFile(filepath.Join(agentsDir, name+".log"), 5, "deposed leader"); len(l) > 0 {
			t.Errorf("%s received messages of a deposed leader: %v", name, l)
		}
	}

	// No key made two jobs.
	all := listAllJobs(t, lead.client)
	names := map[string]int{}
	for _, j := range all {
		names[j.Name]++
	}
	for name, n := range names {
		if n > 1 {
			t.Errorf("%d jobs named %s: a retried submission made a second job", n, name)
		}
	}
	if len(all) != len(acked) {
		t.Errorf("%d jobs stored, %d acknowledged", len(all), len(acked))
	}
}

// clusterProcs are the three controller processes of a cluster test.
type clusterProcs struct {
	procs      []*clusterProc
	agentAddrs []string
	pki, work  string
}

// startClusterProcs starts three controller processes that form a
// cluster (each in its namespace of hn if hn is set, else on loopback),
// with extra flags after the common ones, and kills them when the test
// ends.
func startClusterProcs(t *testing.T, bin string, hn *haNet, extra ...string) clusterProcs {
	t.Helper()
	work := t.TempDir()
	pki := newPKI(t)
	var procs []*clusterProc
	var join, agentAddrs []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("ctl-%d", i)
		ips := []net.IP{net.IPv4(127, 0, 0, 1)}
		if hn != nil {
			ips = append(ips, hn.accessIP(i-1), hn.peerIP(i-1))
		}
		if _, _, err := certs.IssueFiles(pki, certs.Request{Role: certs.RoleController, Name: name, IPs: ips}); err != nil {
			t.Fatal(err)
		}
		p := &clusterProc{name: name, controllerProc: &controllerProc{t: t, bin: bin, dir: filepath.Join(work, name), pki: pki, data: filepath.Join(work, name, "data")}}
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if hn != nil { // a namespace of its own: fixed ports
			p.httpAddr = net.JoinHostPort(hn.accessIP(i-1).String(), "8443")
			p.agentAddr = net.JoinHostPort(hn.accessIP(i-1).String(), "8444")
			p.clusterAddr = net.JoinHostPort(hn.peerIP(i-1).String(), "8445")
			p.prefix = hn.prefix(i - 1)
		} else {
			p.httpAddr, p.agentAddr = freeAddrs(t)
			p.clusterAddr = freeAddr(t)
		}
		p.client = newAPIClient(t, pki, "operator", "https://"+p.httpAddr)
		join = append(join, p.clusterAddr)
		agentAddrs = append(agentAddrs, p.agentAddr)
		procs = append(procs, p)
	}
	for _, p := range procs {
		p.extra = append([]string{"-cert", filepath.Join(pki, p.name+".pem"), "-key", filepath.Join(pki, p.name+"-key.pem"),
			"-cluster-addr", p.clusterAddr, "-bootstrap-expect", "3", "-join", strings.Join(join, ","),
			"-lease-ttl", "3s", "-raft-multiplier", "2"}, extra...)
	}
	// The three must start together: each waits for the others to form.
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.start(p.client) })
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, p := range procs {
			select {
			case <-p.exited:
			default:
				p.kill()
			}
			if t.Failed() {
				t.Log(p.tail(p.starts, 30))
			}
		}
	})
	return clusterProcs{procs: procs, agentAddrs: agentAddrs, pki: pki, work: work}
}

// clusterLeader polls the nodes (except skip) until one names a leader
// other than skip, and returns it.
func clusterLeader(t *testing.T, procs []*clusterProc, skip *clusterProc) *clusterProc {
	t.Helper()
	var lead *clusterProc
	poll(t, "a leader", waitLimit, func() (bool, string) {
		for _, p := range procs {
			if p == skip {
				continue
			}
			var ms []api.Member
			if err := p.client.get("/operator/members", &ms); err != nil {
				continue
			}
			for _, m := range ms {
				if m.Role == "leader" {
					for _, q := range procs {
						if q.name == m.ID && q != skip {
							lead = q
							return true, ""
						}
					}
				}
			}
		}
		return false, "no node names a leader"
	})
	return lead
}

// partitionLease is the raft leader lease of the fault tests' nodes:
// 500 ms at -raft-multiplier 1, times 2.
const partitionLease = time.Second

// stepDown returns when the controller p, cut off from its peers at
// cut, left raft's leader state and when its term's Server stopped,
// from the times of its log lines.
func stepDown(t *testing.T, p *clusterProc, cut time.Time) (raftDown, srvDown time.Time) {
	t.Helper()
	find := func(what string) (time.Time, bool) {
		for _, l := range grepFile(p.logFile(p.starts), 1000, what) {
			if ts, err := logTime(l); err == nil && ts.After(cut.Add(-500*time.Millisecond)) {
				return ts, true
			}
		}
		return time.Time{}, false
	}
	poll(t, p.name+"'s step-down in its log", waitLimit, func() (bool, string) {
		var ok1, ok2 bool
		raftDown, ok1 = find("failed to contact quorum of nodes, stepping down")
		srvDown, ok2 = find("stopped leading")
		return ok1 && ok2, fmt.Sprintf("raft stepped down: %v, Server stopped: %v", ok1, ok2)
	})
	return raftDown, srvDown
}

// memberOf returns what the cluster, asked through p, says of member id.
func memberOf(t *testing.T, p *clusterProc, id string) api.Member {
	t.Helper()
	var ms []api.Member
	if err := p.client.get("/operator/members", &ms); err != nil {
		return api.Member{Role: "unknown: " + err.Error()}
	}
	for _, m := range ms {
		if m.ID == id {
			return m
		}
	}
	return api.Member{Role: "not a member"}
}

// checkNoOverlap reads the "s|e JOB ATTEMPT NANOS" lines the jobs
// appended and fails if two attempts of one job overlap in time.
func checkNoOverlap(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ start, end int64 }
	runs := map[string]map[string]*span{} // job → attempt → span
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("runs file: bad line %q", line)
		}
		ns, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			t.Fatalf("runs file: bad line %q", line)
		}
		if runs[f[1]] == nil {
			runs[f[1]] = map[string]*span{}
		}
		sp := runs[f[1]][f[2]]
		if sp == nil {
			sp = &span{}
			runs[f[1]][f[2]] = sp
		}
		if f[0] == "s" {
			sp.start = ns
		} else {
			sp.end = ns
		}
	}
	for job, attempts := range runs {
		var spans []span
		for _, sp := range attempts {
			if sp.end == 0 {
				sp.end = math.MaxInt64 // never ended: overlaps anything after it
			}
			spans = append(spans, *sp)
		}
		slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
		for i := 1; i < len(spans); i++ {
			if spans[i].start < spans[i-1].end {
				t.Errorf("job %s: two attempts ran at the same time: %v", job, spans)
				break
			}
		}
	}
}

// listAllJobs pages through GET /jobs.
func listAllJobs(t *testing.T, c *apiClient) []api.JobView {
	t.Helper()
	var all []api.JobView
	cursor := ""
	for range 1000 {
		req, err := http.NewRequest("GET", c.base+"/jobs?limit=1000"+cursor, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page []api.JobView
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /jobs: %d %v", resp.StatusCode, err)
		}
		all = append(all, page...)
		next := resp.Header.Get("X-Next-Cursor")
		if next == "" {
			return all
		}
		cursor = "&cursor=" + next
	}
	t.Fatal("GET /jobs: more than 1000 pages")
	return nil
}

// startClusterAgentProc runs a real agent process that knows every
// controller; it is stopped when the test ends.
func startClusterAgentProc(t *testing.T, bin, pki, dir, name, controllers string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "-controller", controllers,
		"-ca", filepath.Join(pki, "ca.pem"), "-cert", filepath.Join(pki, name+".pem"), "-key", filepath.Join(pki, name+"-key.pem"),
		"-slots", "4", "-state-dir", filepath.Join(dir, name+"-state"), "-drain-timeout", "0s", "-log-level", "info")
	runAgentProc(t, cmd, logf, name)
}

// expectedLog is the log of a job whose every attempt writes out: each
// attempt but the last ended (lost) somewhere in out, at the next
// attempt's LogStart; the last completed with all of out. ok is false
// when the ranges cannot be that.
func expectedLog(attempts []api.AttemptView, out string) (string, bool) {
	var b strings.Builder
	for i, a := range attempts {
		if a.LogStart != uint64(b.Len()) {
			return "", false
		}
		if i == len(attempts)-1 {
			b.WriteString(out)
			break
		}
		n := attempts[i+1].LogStart - a.LogStart
		if attempts[i+1].LogStart < a.LogStart || n > uint64(len(out)) {
			return "", false
		}
		b.WriteString(out[:n])
	}
	return b.String(), true
}

func TestExpectedLog(t *testing.T) {
	for name, c := range map[string]struct {
		starts []uint64
		want   string
		ok     bool
	}{
		"one attempt":              {[]uint64{0}, "abc", true},
		"a lost attempt cut early": {[]uint64{0, 2}, "ababc", true},
		"a lost attempt with none": {[]uint64{0, 0}, "abc", true},
		"a lost attempt whole":     {[]uint64{0, 3}, "abcabc", true},
		"longer than the output":   {[]uint64{0, 4}, "", false},
		"not starting at 0":        {[]uint64{1}, "", false},
		"ranges going back":        {[]uint64{0, 2, 1}, "", false},
	} {
		var as []api.AttemptView
		for i, s := range c.starts {
			as = append(as, api.AttemptView{Number: uint32(i + 1), LogStart: s})
		}
		got, ok := expectedLog(as, "abc")
		if got != c.want || ok != c.ok {
			t.Errorf("%s: expectedLog = %q, %v; want %q, %v", name, got, ok, c.want, c.ok)
		}
	}
}
