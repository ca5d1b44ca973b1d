package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/transport"
)

// The partition test cuts an agent off the network and brings it back.
//
// The agent runs as a real jobsuite process in a network namespace of
// its own, joined to the root namespace (where an in-process controller
// listens) by a veth pair with a private /30 that exists only on that
// pair. The cut is `ip link set <peer> down` on the namespace's end of
// the pair: the agent's host loses its link. The root end is left up on
// purpose. Taking it down would remove the /30 route on the host, and
// the controller's packets for the agent's address would follow the
// host's default route out of its real interface; with the root end up
// and without carrier, they are dropped at the veth instead. Nothing
// else on the host is touched, and t.Cleanup deletes the namespace and
// the pair.
//
// Three scenarios run on each transport, each with a controller and an
// agent of its own:
//
//   - blip: the link is down for several heartbeats but well inside the
//     lease. The job must not be restarted (one attempt) and its stored
//     log must hold every line it printed exactly once, in order.
//   - flap: the same with the production lease (15s) and heartbeat (5s)
//     and a 5s outage, with the agent's default reconnect backoff: up to
//     10s of the lease may be gone when the link returns, so the agent
//     must come back within the 5s left however its backoff grew.
//   - past-lease: the link stays down past the lease. The attempt is
//     lost, the retry runs on a second agent and completes; when the
//     link returns, the stale agent's late report is refused and the
//     job does not change.
//
// Heartbeats are set explicitly (not LeaseTTL/3) so that a short outage
// spans many of them while leaving the lease a wide margin: the agent's
// reconnect backoff is not configurable from the command line (it starts
// at 500ms and doubles), so after an outage that made it fail a few
// dials it may wait several seconds more before it dials again.
//
// The jobs print until the test creates a gate file instead of a fixed
// number of lines, so that the outage always falls in the middle of the
// job however slow the machine is; the job writes how many lines it
// printed to a file, and the stored log is compared with exactly that.
const (
	partitionHeartbeat = 500 * time.Millisecond

	blipTTL    = 12 * time.Second // the outage plus the worst reconnect backoff fit in it with seconds to spare
	blipOutage = 3 * time.Second  // six heartbeats

	// flap: the production lease (15s) and heartbeat (5s), and a 5s
	// outage: the agent's last heartbeat may be 5s before the cut, so
	// it must be back within 5s of the link's return, whatever its
	// reconnect backoff grew to while the link was down.
	flapOutage = 5 * time.Second

	pastTTL = 3 * time.Second // short, so the outage past it is short too

	// maxLines bounds the jobs' loops (a few minutes of output) so that
	// they end even if a failed run never opens their gate.
	maxLines = 30000
)

func TestPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("partition test: builds the binary and cuts network links for about half a minute; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("partition test: needs root to create a network namespace and a veth pair; run it as root, e.g. sudo go test -run TestPartition ./controller/")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("partition test: needs the ip command (iproute2; on Debian: apt-get install iproute2)")
	}
	sweepStaleNamespaces(t)
	bin := buildJobsuite(t, t.TempDir())
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel() // the two transports share nothing; halves the wall time
			t.Run("blip", func(t *testing.T) { partitionBlip(t, bin, mode, blipTTL, partitionHeartbeat, blipOutage) })
			t.Run("flap", func(t *testing.T) { partitionBlip(t, bin, mode, 0, 0, flapOutage) })
			t.Run("past-lease", func(t *testing.T) { partitionPastLease(t, bin, mode) })
		})
	}
}

// partitionBlip: a link outage shorter than the lease neither restarts
// the job nor loses or repeats a line of its output. A zero ttl or
// heartbeat is the controller's default.
func partitionBlip(t *testing.T, bin string, mode transport.Mode, ttl, heartbeat, outage time.Duration) {
	start := time.Now()
	e := newPartition(t, bin, mode, ttl, heartbeat)
	dir := t.TempDir()
	gate, count := filepath.Join(dir, "gate"), filepath.Join(dir, "count")
	j := e.submit(partitionJob("blip", fmt.Sprintf(
		`i=0; while [ ! -e %s ] && [ $i -lt %d ]; do i=$((i+1)); echo "line $i"; sleep 0.005; done; echo $i > %s`, gate, maxLines, count), 0))

	poll(t, "the job's output to flow", waitLimit, func() (bool, string) {
		n := strings.Count(e.logs(j.JobID), "\n")
		return n >= 50, fmt.Sprintf("%d lines", n)
	})
	if v := e.view(j.JobID); len(v.Attempts) != 1 || v.Attempts[0].Agent != "agent-1" {
		t.Fatalf("the job is not running on the agent in the namespace: %+v", v.Attempts)
	}

	down := e.linkDown()
	// What was in flight lands: the stored log stops growing (the same
	// length on 3 reads in a row, poll's growing interval apart). A
	// partition that does not hold keeps it growing, and the check below
	// fails.
	during, same := -1, 0
	poll(t, "the stored log to stop growing after the cut", waitLimit, func() (bool, string) {
		n := len(e.logs(j.JobID))
		if n == during {
			same++
		} else {
			during, same = n, 0
		}
		return same >= 2, fmt.Sprintf("%d bytes", n)
	})
	time.Sleep(time.Until(down.Add(outage))) // holding the link down is the point
	// The partition holds: nothing arrived while the link was down.
	if n := len(e.logs(j.JobID)); n != during {
		t.Fatalf("the controller stored output while the link was down (%d bytes, then %d): the partition does not hold", during, n)
	}
	// The agent was silent for several heartbeats, and the attempt is
	// still the job's.
	var agents []api.AgentInfo
	e.getJSON("/agents", &agents)
	for _, a := range agents {
		if a.Name == "agent-1" && heartbeat > 0 && time.Since(a.LastSeen) < 4*heartbeat {
			t.Fatalf("agent-1 was heard %s ago, in the middle of the outage", time.Since(a.LastSeen).Round(time.Millisecond))
		}
	}
	if v := e.view(j.JobID); v.Status != "running" || len(v.Attempts) != 1 {
		t.Fatalf("after a %s outage within the lease: %s with %d attempts (%s)", outage, v.Status, len(v.Attempts), v.Reason)
	}
	e.linkUp()
	up := time.Now()

	poll(t, "output to resume after the link came back", waitLimit, func() (bool, string) {
		n := len(e.logs(j.JobID))
		return n > during, fmt.Sprintf("%d bytes, %d at the cut", n, during)
	})
	t.Logf("output resumed %s after the link came back", time.Since(up).Round(time.Millisecond))
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.waitState(j.JobID, "completed", "failed", "timeout", "cancelled")
	v := e.view(j.JobID)
	if v.Status != "completed" || v.ExitCode == nil || *v.ExitCode != 0 {
		t.Errorf("job ended %s, exit code %v (%s)", v.Status, v.ExitCode, v.Reason)
	}
	if len(v.Attempts) != 1 || v.Attempts[0].Outcome != "completed" || v.Attempts[0].Agent != "agent-1" {
		t.Errorf("the job was restarted or moved: attempts %+v", v.Attempts)
	}
	b, err := os.ReadFile(count)
	if err != nil {
		t.Fatalf("the job did not say how many lines it printed: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("line count %q: %v", b, err)
	}
	got := e.logs(j.JobID)
	if want := numberedLines("line", 1, n); got != want {
		t.Errorf("stored log differs from the %d lines the job printed: %s", n, describeNumbered(got, "line", n))
	}
	e.agent.checkAlive()
	t.Logf("%s: %d lines, %s outage, %d attempt(s), %s in all", mode, n, outage, len(v.Attempts), time.Since(start).Round(time.Millisecond))
}

// partitionPastLease: a link outage past the lease makes the attempt
// lost; the retry runs on another agent; the stale agent's late report
// is refused and the job stays as the retry left it.
func partitionPastLease(t *testing.T, bin string, mode transport.Mode) {
	start := time.Now()
	e := newPartition(t, bin, mode, pastTTL, partitionHeartbeat)
	dir := t.TempDir()
	gate, exited := filepath.Join(dir, "gate"), filepath.Join(dir, "exited")
	// Attempt 1 prints until the gate exists, then fails with exit code 3;
	// any later attempt prints one line and succeeds. Were the stale
	// attempt's report accepted, the job would fail with code 3 and its
	// log would hold lines printed during the outage.
	j := e.submit(partitionJob("past-lease", fmt.Sprintf(
		`if [ "$JOBSUITE_ATTEMPT" = 1 ]; then i=0; while [ ! -e %s ] && [ $i -lt %d ]; do i=$((i+1)); echo "a1 line $i"; sleep 0.005; done; touch %s; exit 3; fi; echo "attempt $JOBSUITE_ATTEMPT on $JOBSUITE_AGENT"`,
		gate, maxLines, exited), 1))

	poll(t, "the job's output to flow", waitLimit, func() (bool, string) {
		n := strings.Count(e.logs(j.JobID), "\n")
		return n >= 50, fmt.Sprintf("%d lines", n)
	})
	if v := e.view(j.JobID); len(v.Attempts) != 1 || v.Attempts[0].Agent != "agent-1" {
		t.Fatalf("the job is not running on the agent in the namespace: %+v", v.Attempts)
	}

	down := e.linkDown()
	linesAtCut := strings.Count(e.logs(j.JobID), "\n")
	// A second agent, on the controller's side of the cut, for the retry.
	e.startAgent("agent-2", 1, nil, mode)

	v := e.waitState(j.JobID, "completed", "failed", "timeout", "cancelled")
	lostAfter := time.Since(down)
	if v.Status != "completed" {
		t.Fatalf("job ended %s (%s); want completed by the retry on agent-2", v.Status, v.Reason)
	}
	final := e.view(j.JobID)
	if len(final.Attempts) != 2 {
		t.Fatalf("attempts %+v, want 2", final.Attempts)
	}
	a1, a2 := final.Attempts[0], final.Attempts[1]
	if a1.Agent != "agent-1" || a1.Outcome != "lost" {
		t.Errorf("attempt 1: agent %s, outcome %q; want agent-1, lost", a1.Agent, a1.Outcome)
	}
	if a2.Agent != "agent-2" || a2.Outcome != "completed" || final.ExitCode == nil || *final.ExitCode != 0 {
		t.Errorf("attempt 2: agent %s, outcome %q, job exit code %v; want agent-2, completed, 0", a2.Agent, a2.Outcome, final.ExitCode)
	}
	// The lease was not cut short: the retry was dispatched no earlier
	// than one lease after the agent's last heartbeat before the cut.
	if early := down.Add(pastTTL - 2*partitionHeartbeat); a2.DispatchedAt.Before(early) {
		t.Errorf("attempt 2 was dispatched %s after the cut, within the %s lease", a2.DispatchedAt.Sub(down).Round(time.Millisecond), pastTTL)
	}
	log := e.logs(j.JobID)
	const retryLine = "attempt 2 on agent-2\n"
	if !strings.HasSuffix(log, retryLine) {
		t.Errorf("log does not end with the retry's output %q: ...%q", retryLine, lastBytes(log, 200))
	} else {
		// Before it: what attempt 1 sent before the cut, lines 1 to k in order.
		lost := strings.TrimSuffix(log, retryLine)
		k := strings.Count(lost, "\n")
		if want := numberedLines("a1 line", 1, k); lost != want || k < linesAtCut {
			t.Errorf("attempt 1's part of the log (%d lines, %d stored at the cut): %s", k, linesAtCut, describeNumbered(lost, "a1 line", k))
		}
	}
	snap := e.snapshot(j.JobID)

	// The controller has given up on agent-1.
	poll(t, "the controller to drop agent-1's session", waitLimit, func() (bool, string) {
		var agents []api.AgentInfo
		e.getJSON("/agents", &agents)
		for _, a := range agents {
			if a.Name == "agent-1" {
				return false, fmt.Sprintf("agent-1 still listed, last heard %s ago", time.Since(a.LastSeen).Round(time.Millisecond))
			}
		}
		return true, ""
	})
	// Attempt 1 ends while the link is still down, so its result waits in
	// the agent's state directory with its output: that is the late
	// report. The link stays down at least two seconds past the lease.
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	poll(t, "attempt 1's process to end", waitLimit, func() (bool, string) {
		_, err := os.Stat(exited)
		return err == nil, fmt.Sprint(err)
	})
	time.Sleep(time.Until(down.Add(pastTTL + 2*time.Second))) // holding the link down is the point
	outage := time.Since(down)
	e.linkUp()
	up := time.Now()

	// The agent reconnects, reports the attempt, and is refused.
	poll(t, "agent-1 to report its stale attempt and be refused", 45*time.Second, func() (bool, string) {
		e.agent.checkAlive()
		lines := grepFile(e.agent.logPath, 5, "controller refused the attempt")
		for _, l := range lines {
			if strings.Contains(l, "not current") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("refusals in its log: %q", lines)
	})
	refused := time.Since(up)
	// Once refused, agent-1 drops the attempt and offers its slot again.
	poll(t, "agent-1 back and idle", waitLimit, func() (bool, string) {
		var agents []api.AgentInfo
		e.getJSON("/agents", &agents)
		for _, a := range agents {
			if a.Name == "agent-1" {
				return a.Running == 0 && a.Credits == a.Slots, fmt.Sprintf("running %v, free %d of %d", a.Jobs, a.Credits, a.Slots)
			}
		}
		return false, "agent-1 not connected"
	})
	if after := e.snapshot(j.JobID); after != snap {
		t.Errorf("the job changed after the stale agent reported:\nbefore: %s\nafter:  %s", snap, after)
	}
	var events []struct {
		Type    string `json:"type"`
		Attempt uint32 `json:"attempt"`
	}
	e.getJSON(fmt.Sprintf("/jobs/%d/events", j.JobID), &events)
	var types []string
	for _, ev := range events {
		types = append(types, ev.Type)
	}
	if want := "submitted dispatched started retry requeued dispatched started finished"; strings.Join(types, " ") != want {
		t.Errorf("events %v, want %s", types, want)
	}
	e.agent.checkAlive()
	t.Logf("%s: attempt 1 lost and retried %s after the cut; link down %s; refusal %s after it came back; %s in all",
		mode, lostAfter.Round(time.Millisecond), outage.Round(time.Millisecond), refused.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// partitionEnv is a controller in the root network namespace and an
// agent process ("agent-1") in a namespace of its own, joined by a veth
// pair.
type partitionEnv struct {
	*cluster
	ns             string // network namespace
	hostIf, peerIf string // veth ends: root namespace, agent's namespace
	hostIP, peerIP net.IP
	agent          *nsAgent
}

var (
	partitionMu   sync.Mutex
	partitionSeq  int
	partitionBase = rand.IntN(256) // third octet of the first 10.213.x.0/30
)

// newPartition sets up the namespace, the pair, a controller listening
// for agents on the root end's address, and the agent in the namespace.
func newPartition(t *testing.T, bin string, mode transport.Mode, ttl, heartbeat time.Duration) *partitionEnv {
	t.Helper()
	e := &partitionEnv{}
	octet, n := netnsAlloc(t, 1, "the veth pair's /30")
	e.hostIP, e.peerIP = net.IPv4(10, 213, byte(octet), 1), net.IPv4(10, 213, byte(octet), 2)
	e.ns, e.hostIf = netnsName(n), netnsRootIf(n)
	e.peerIf = fmt.Sprintf("jsp%d-%dn", os.Getpid(), n) // at most 15 bytes

	if out, err := exec.Command("ip", "netns", "add", e.ns).CombinedOutput(); err != nil {
		t.Skipf("partition test: cannot create a network namespace (ip netns add: %v: %s); it needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(e.removeNetwork) // runs last: after the agent and the controller stopped
	ipCmd(t, "link", "add", e.hostIf, "type", "veth", "peer", "name", e.peerIf)
	ipCmd(t, "link", "set", e.peerIf, "netns", e.ns)
	ipCmd(t, "addr", "add", e.hostIP.String()+"/30", "dev", e.hostIf)
	ipCmd(t, "link", "set", e.hostIf, "up")
	ipCmd(t, "-n", e.ns, "addr", "add", e.peerIP.String()+"/30", "dev", e.peerIf)
	ipCmd(t, "-n", e.ns, "link", "set", e.peerIf, "up")
	ipCmd(t, "-n", e.ns, "link", "set", "lo", "up")
	t.Logf("namespace %s: %s %s <-> %s %s", e.ns, e.hostIf, e.hostIP, e.peerIf, e.peerIP)

	pki := partitionPKI(t, e.hostIP)
	e.cluster = &cluster{t: t, dir: pki, data: filepath.Join(t.TempDir(), "data"), agents: map[string]context.CancelFunc{}}
	e.cfg = controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: net.JoinHostPort(e.hostIP.String(), "0"), DataDir: e.data,
		TLS: files(pki, "controller"), LeaseTTL: ttl, HeartbeatInterval: heartbeat,
		KillGrace: 500 * time.Millisecond, BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}
	e.startController()
	e.client = e.httpClient("operator")
	t.Cleanup(e.close)

	e.agent = startNSAgent(t, bin, e.ns, e.srv.AgentAddr(), pki, mode)
	poll(t, "agent-1 to connect from the namespace", waitLimit, func() (bool, string) {
		e.agent.checkAlive()
		var agents []api.AgentInfo
		e.getJSON("/agents", &agents)
		for _, a := range agents {
			if a.Name == "agent-1" {
				return a.Transport == string(mode), "connected over " + a.Transport
			}
		}
		return false, "not connected"
	})
	return e
}

// linkDown takes the namespace's end of the pair down and returns when.
func (e *partitionEnv) linkDown() time.Time {
	e.t.Helper()
	ipCmd(e.t, "-n", e.ns, "link", "set", e.peerIf, "down")
	return time.Now()
}

func (e *partitionEnv) linkUp() {
	e.t.Helper()
	ipCmd(e.t, "-n", e.ns, "link", "set", e.peerIf, "up")
}

// removeNetwork deletes the namespace, which takes its veth end and with
// it the root end, and the root end too should it still be there.
func (e *partitionEnv) removeNetwork() { removeNetns(e.t, []string{e.ns}, e.hostIf) }

func (e *partitionEnv) view(id uint64) api.JobView {
	e.t.Helper()
	var v api.JobView
	e.getJSON(fmt.Sprintf("/jobs/%d", id), &v)
	return v
}

// snapshot is everything the API says about a job: record, events, log.
func (e *partitionEnv) snapshot(id uint64) string {
	e.t.Helper()
	var b strings.Builder
	for _, p := range []string{"", "/events", "/logs"} {
		code, body := e.do("GET", fmt.Sprintf("/jobs/%d%s", id, p), "")
		if code != 200 {
			e.t.Fatalf("GET /jobs/%d%s: %d %s", id, p, code, body)
		}
		fmt.Fprintf(&b, "%s: %s\n", p, body)
	}
	return b.String()
}

// nsAgent is a jobsuite agent process running in a network namespace.
type nsAgent struct {
	t        *testing.T
	cmd      *exec.Cmd
	logPath  string
	exited   chan struct{}
	err      error // cmd.Wait's, once exited is closed
	stopping atomic.Bool
}

func startNSAgent(t *testing.T, bin, ns, controllerAddr, pki string, mode transport.Mode) *nsAgent {
	t.Helper()
	a := &nsAgent{t: t, logPath: filepath.Join(t.TempDir(), "agent-1.log"), exited: make(chan struct{})}
	logf, err := os.Create(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// ip netns exec execs the agent: the PID is the agent's own.
	a.cmd = exec.Command("ip", "netns", "exec", ns, bin, "agent",
		"-controller", controllerAddr,
		"-ca", certs.CAFile(pki), "-cert", certs.CertFile(pki, "agent-1"), "-key", certs.KeyFile(pki, "agent-1"),
		"-slots", "1", "-transport", string(mode), "-state-dir", t.TempDir(),
		"-drain-timeout", "0s", "-log-level", "debug")
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.exited)
	}()
	t.Cleanup(a.stop)
	return a
}

// checkAlive fails the test if the agent exited on its own.
func (a *nsAgent) checkAlive() {
	a.t.Helper()
	select {
	case <-a.exited:
		a.t.Fatalf("the agent in the namespace exited: %v\n%s", a.err, a.tail(40))
	default:
	}
}

// stop ends the agent as its operator would: SIGTERM (its running jobs
// are cancelled at once: -drain-timeout 0s), SIGKILL if that takes over
// 20 seconds. On failure it prints the end of the agent's log.
func (a *nsAgent) stop() {
	if a.stopping.Swap(true) {
		return
	}
	select {
	case <-a.exited:
		a.t.Errorf("the agent in the namespace had exited: %v", a.err)
	default:
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
			if a.err != nil {
				a.t.Errorf("the agent in the namespace exited with %v after SIGTERM", a.err)
			}
		case <-time.After(20 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.exited
			a.t.Errorf("the agent took over 20s to stop on SIGTERM")
		}
	}
	if a.t.Failed() {
		a.t.Log(a.tail(80))
	}
}

// tail returns the last n lines of the agent's log.
func (a *nsAgent) tail(n int) string {
	b, _ := os.ReadFile(a.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- agent-1 (in the namespace) log, last %d lines ---\n%s", len(lines), strings.Join(lines, "\n"))
}

// partitionPKI is newPKI with the controller certificate also valid for
// ctlIP, the address the agent in the namespace dials.
func partitionPKI(t *testing.T, ctlIP net.IP) string {
	t.Helper()
	dir := t.TempDir()
	if err := certs.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	for _, r := range []certs.Request{
		{Role: certs.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1), ctlIP}},
		{Role: certs.RoleOperator, Name: "operator"},
		{Role: certs.RoleAgent, Name: "agent-1"},
		{Role: certs.RoleAgent, Name: "agent-2"},
	} {
		if _, _, err := certs.IssueFiles(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sweepStaleNamespaces removes what an earlier run that died before its
// cleanups ran (a test binary killed on timeout) left behind: namespaces
// named js-part-PID-N whose PID no longer runs, the processes in them
// (an agent and its job) and the root end of their veth pair.
func sweepStaleNamespaces(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		var pid, n int
		if len(f) == 0 {
			continue
		}
		if _, err := fmt.Sscanf(f[0], "js-part-%d-%d", &pid, &n); err != nil || f[0] != fmt.Sprintf("js-part-%d-%d", pid, n) {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // the run that made it is still going
		}
		if pids, err := exec.Command("ip", "netns", "pids", f[0]).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				if id, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(id, syscall.SIGKILL)
				}
			}
		}
		_ = exec.Command("ip", "netns", "del", f[0]).Run()
		_ = exec.Command("ip", "link", "del", "dev", fmt.Sprintf("jsp%d-%dh", pid, n)).Run() // netnsRootIf of that run
		t.Logf("removed namespace %s, left behind by an earlier run", f[0])
	}
}

// netnsAlloc reserves, for a test's network, a 10.213.X.0/24 no
// interface here uses and n consecutive numbers for the names of its
// namespaces (netnsName) and root-side link (netnsRootIf); it returns X
// and the first number. what names the network in the failure.
func netnsAlloc(t *testing.T, n int, what string) (octet, first int) {
	t.Helper()
	partitionMu.Lock()
	defer partitionMu.Unlock()
	for tries := 1; ; tries++ {
		partitionSeq++
		octet = (partitionBase + partitionSeq) % 256
		if tries > 256 {
			t.Fatalf("no free 10.213.x.0/24 for %s", what)
		}
		if !addrInUse(fmt.Sprintf("10.213.%d.", octet)) {
			break
		}
	}
	first = partitionSeq
	partitionSeq += n - 1
	return octet, first
}

// netnsName is the name of a test's namespace number n: js-part-PID-N,
// which sweepStaleNamespaces recognises once PID is gone.
func netnsName(n int) string { return fmt.Sprintf("js-part-%d-%d", os.Getpid(), n) }

// netnsRootIf is the root namespace's end of the veth pair of
// namespace number n (at most 15 bytes; sweepStaleNamespaces removes
// it too).
func netnsRootIf(n int) string { return fmt.Sprintf("jsp%d-%dh", os.Getpid(), n) }

// removeNetns deletes the namespaces (their links go with them) and
// then waits for rootIf, the root end of a veth pair into one of them,
// to go too — the kernel removes a deleted namespace's devices
// asynchronously — deleting it itself after 5 s.
func removeNetns(t *testing.T, namespaces []string, rootIf string) {
	for _, ns := range namespaces {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			t.Errorf("deleting namespace %s: %v: %s", ns, err, out)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for exec.Command("ip", "link", "show", "dev", rootIf).Run() == nil {
		if time.Now().After(deadline) {
			if out, err := exec.Command("ip", "link", "del", "dev", rootIf).CombinedOutput(); err != nil {
				t.Errorf("deleting %s: %v: %s", rootIf, err, out)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ipCmd runs the ip command and fails the test if it fails.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addrInUse reports whether any interface of this namespace has an
// address starting with prefix.
func addrInUse(prefix string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if strings.HasPrefix(a.String(), prefix) {
			return true
		}
	}
	return false
}

func partitionJob(name, command string, retries int) string {
	b, err := json.Marshal(map[string]any{"name": name, "command": command, "retries": retries})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// numberedLines is "prefix from\n" … "prefix to\n".
func numberedLines(prefix string, from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "%s %d\n", prefix, i)
	}
	return b.String()
}

// describeNumbered says how log differs from numberedLines(prefix, 1, n):
// the first line out of place, repeats and gaps.
func describeNumbered(log, prefix string, n int) string {
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	if log == "" {
		lines = nil
	}
	seen := map[int]int{}
	first := -1
	for i, l := range lines {
		if l != fmt.Sprintf("%s %d", prefix, i+1) && first < 0 {
			first = i
		}
		if v, err := strconv.Atoi(strings.TrimPrefix(l, prefix+" ")); err == nil {
			seen[v]++
		}
	}
	var dups, missing []int
	for i := 1; i <= n; i++ {
		switch {
		case seen[i] == 0:
			missing = append(missing, i)
		case seen[i] > 1:
			dups = append(dups, i)
		}
	}
	msg := fmt.Sprintf("%d lines stored, %d expected; missing %s, repeated %s", len(lines), n, shortInts(missing), shortInts(dups))
	if first >= 0 {
		msg += fmt.Sprintf("; line %d is %q", first+1, lines[first])
	}
	if !strings.HasSuffix(log, "\n") && log != "" {
		msg += "; the log does not end with a newline"
	}
	return msg
}

func shortInts(v []int) string {
	if len(v) > 10 {
		return fmt.Sprintf("%v… (%d)", v[:10], len(v))
	}
	return fmt.Sprint(v)
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
