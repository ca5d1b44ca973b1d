package controller_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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

	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/api"
	"jobsuite/controller/store"
	"jobsuite/transport"
)

// Environment knobs for longer crash runs, e.g.
//
//	JOBSUITE_CRASH_JOBS=20000 JOBSUITE_CRASH_KILLS=20 go test -run TestCrash -timeout 30m ./controller/
const (
	crashJobsEnv  = "JOBSUITE_CRASH_JOBS"  // acknowledged jobs to reach; default 2500
	crashKillsEnv = "JOBSUITE_CRASH_KILLS" // kill -9s of the controller; default 4
	crashSeedEnv  = "JOBSUITE_CRASH_SEED"  // seed for the job mix and kill moments; default: the clock
)

func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// crashJob is what the test knows about one submission: what it asked
// for and what the job must print.
type crashJob struct {
	n       int
	command string
	retries int
	fails   bool   // exits 1 on every attempt
	out     string // output of one attempt
}

// newCrashJob builds submission n of the mix: most jobs print a line,
// some print several or to stderr, some sleep so that a crash finds them
// running, one in seven fails, one in four may retry once.
func newCrashJob(n int) crashJob {
	j := crashJob{n: n, fails: n%7 == 0}
	var cmd strings.Builder
	if n%10 == 3 {
		cmd.WriteString("sleep 0.3; ")
	}
	switch n % 5 {
	case 1:
		fmt.Fprintf(&cmd, "printf 'job-%d\\nline2-%d\\nline3-%d\\n'", n, n, n)
		j.out = fmt.Sprintf("job-%d\nline2-%d\nline3-%d\n", n, n, n)
	case 2:
		fmt.Fprintf(&cmd, "echo job-%d >&2", n)
		j.out = fmt.Sprintf("job-%d\n", n)
	default:
		fmt.Fprintf(&cmd, "echo job-%d", n)
		j.out = fmt.Sprintf("job-%d\n", n)
	}
	fmt.Fprintf(&cmd, "; test $((%d %% 7)) -ne 0", n)
	j.command = cmd.String()
	if n%4 == 0 {
		j.retries = 1
	}
	return j
}

func (j crashJob) body() string {
	prio := []string{"low", "mid", "high"}[j.n%3]
	return fmt.Sprintf(`{"name":"crash-%d","command":%q,"priority":%q,"retries":%d,"backoff":{"base":0.2,"max":1}}`, j.n, j.command, prio, j.retries)
}

// controllerProc is the real jobsuite binary running a controller.
type controllerProc struct {
	t                   *testing.T
	bin, dir, pki, data string
	httpAddr, agentAddr string
	extra               []string // flags after the defaults below (later ones win)
	// prefix, if set, is a command the binary runs under, such as
	// "ip netns exec NS" (which execs it: the PID is the controller's).
	prefix []string
	starts int

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	err    error         // cmd.Wait's error, after exited
	killed atomic.Bool   // the test killed or stopped it on purpose
}

func (p *controllerProc) logFile(n int) string {
	return filepath.Join(p.dir, fmt.Sprintf("controller-%d.log", n))
}

// start runs the controller and waits until its API answers.
func (p *controllerProc) start(client *apiClient) {
	p.t.Helper()
	p.starts++
	logf, err := os.Create(p.logFile(p.starts))
	if err != nil {
		p.t.Fatal(err)
	}
	defer logf.Close()
	args := []string{p.bin, "controller",
		"-data-dir", p.data,
		"-ca", filepath.Join(p.pki, "ca.pem"),
		"-cert", filepath.Join(p.pki, "controller.pem"),
		"-key", filepath.Join(p.pki, "controller-key.pem"),
		"-http", p.httpAddr, "-listen", p.agentAddr,
		"-lease-ttl", "2s", "-kill-grace", "500ms", "-log-level", "info"}
	args = append(append(slices.Clone(p.prefix), args...), p.extra...)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.killed.Store(false)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}, start int) {
		err := cmd.Wait()
		// Read the flag before closing exited: once exited is closed,
		// kill returns and the next start clears the flag.
		onPurpose := p.killed.Load()
		p.err = err
		close(exited)
		if !onPurpose {
			p.t.Errorf("controller exited on its own: %v\n%s", p.err, p.tail(start, 40))
		}
	}(p.cmd, p.exited, p.starts)

	deadline := time.Now().Add(waitLimit)
	for {
		code, _, err := client.do("GET", "/health", "")
		if err == nil && code == 200 {
			return
		}
		select {
		case <-p.exited:
			p.t.Fatalf("controller start %d failed: %v\n%s", p.starts, p.err, p.tail(p.starts, 40))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("controller start %d: API not up after %v (%v)\n%s", p.starts, waitLimit, err, p.tail(p.starts, 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startCrashController builds the jobsuite binary into work and starts
// a controller process of it on fresh loopback addresses, with extra
// flags after the defaults; when the test ends the process is killed
// (if still running) and, if the test failed, its log's tail shown.
func startCrashController(t *testing.T, work string, extra ...string) (*controllerProc, *apiClient) {
	t.Helper()
	p := &controllerProc{t: t, bin: buildJobsuite(t, work), dir: work, pki: newPKI(t), data: filepath.Join(work, "data"), extra: extra}
	p.httpAddr, p.agentAddr = freeAddrs(t)
	client := newAPIClient(t, p.pki, "operator", "https://"+p.httpAddr)
	p.start(client)
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.kill()
		}
		if t.Failed() {
			t.Log(p.tail(p.starts, 80))
		}
	})
	return p, client
}

// kill is kill -9.
func (p *controllerProc) kill() {
	p.t.Helper()
	p.killed.Store(true)
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	<-p.exited
}

// stop asks the controller to shut down cleanly and checks it did.
func (p *controllerProc) stop() {
	p.t.Helper()
	p.killed.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			p.t.Errorf("controller did not stop cleanly: %v\n%s", p.err, p.tail(p.starts, 40))
		}
	case <-time.After(waitLimit):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("controller took over %v to stop on SIGTERM\n%s", waitLimit, p.tail(p.starts, 40))
	}
}

// tail returns the last n lines of a start's log.
func (p *controllerProc) tail(start, n int) string {
	b, _ := os.ReadFile(p.logFile(start))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- controller-%d.log, last %d lines ---\n%s", start, len(lines), strings.Join(lines, "\n"))
}

// grepLogs returns the log lines of every start that contain any of
// words, at most max of them.
func (p *controllerProc) grepLogs(max int, words ...string) []string {
	var out []string
	for i := 1; i <= p.starts && len(out) < max; i++ {
		for _, l := range grepFile(p.logFile(i), max-len(out), words...) {
			out = append(out, fmt.Sprintf("controller-%d.log: %s", i, l))
		}
	}
	return out
}

// grepFile returns the lines of path that contain any of words, at
// most max of them.
func grepFile(path string, max int, words ...string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() && len(out) < max {
		for _, w := range words {
			if strings.Contains(sc.Text(), w) {
				out = append(out, sc.Text())
				break
			}
		}
	}
	return out
}

// buildJobsuite builds the jobsuite binary into dir.
func buildJobsuite(t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go build jobsuite: no go on PATH: %v", err)
	}
	bin := filepath.Join(dir, "jobsuite")
	start := time.Now()
	cmd := exec.Command(goTool, "build", "-o", bin, "jobsuite")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build jobsuite: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// checkStore opens the data directory the controller left behind,
// killed or stopped, and checks the indexes against the job records:
// every indexed job is non-terminal and indexed once, every
// acknowledged job is there with the command it was submitted with,
// and every non-terminal job is indexed. It returns the jobs by ID.
func checkStore(t *testing.T, data string, acked map[uint64]crashJob) map[uint64]*store.Job {
	t.Helper()
	var warnings bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: &warnings})
	st, err := store.Open(data, store.Options{Logger: log})
	if err != nil {
		t.Fatalf("reopening the store: %v", err)
	}
	defer st.Close()
	active, err := st.Active()
	if err != nil {
		t.Fatalf("store.Active: %v", err)
	}
	indexed := map[uint64]bool{}
	for _, j := range active {
		if indexed[j.ID] {
			t.Errorf("store: job %d is in two indexes (or twice in one)", j.ID)
		}
		indexed[j.ID] = true
		if j.State.Terminal() {
			t.Errorf("store: job %d is %s but indexed as active", j.ID, j.State)
		}
	}
	var maxID uint64
	for id := range acked {
		maxID = max(maxID, id)
	}
	jobs := map[uint64]*store.Job{}
	for id := uint64(1); id <= maxID+64; id++ {
		j, err := st.Get(id)
		if errors.Is(err, store.ErrNotFound) {
			if want, ok := acked[id]; ok {
				t.Errorf("store: acknowledged job %d (submission %d) is missing", id, want.n)
			}
			continue
		}
		if err != nil {
			t.Fatalf("store: job %d: %v", id, err)
		}
		jobs[id] = j
		if want, ok := acked[id]; ok && j.Command != want.command {
			t.Errorf("store: job %d has command %q, acknowledged with %q", id, j.Command, want.command)
		}
		if !j.State.Terminal() && !indexed[id] {
			t.Errorf("store: job %d is %s but in no index", id, j.State)
		}
	}
	if warnings.Len() > 0 {
		t.Errorf("store warnings on reopening:\n%s", warnings.String())
	}
	return jobs
}

// TestCrashController submits thousands of jobs to a real controller
// process while agents run them, kill -9s the controller several times
// at random moments and restarts it on the same ports and data. Every
// acknowledged job must survive and end exactly once, in one index, with
// its output complete.
func TestCrashController(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds the binary and runs for about a minute; skipped with -short")
	}
	total := envInt(t, crashJobsEnv, 2500)
	kills := envInt(t, crashKillsEnv, 4)
	seed := uint64(envInt(t, crashSeedEnv, int(time.Now().UnixNano()%1e9)))
	t.Logf("%d jobs, %d kills, %s=%d", total, kills, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	testStart := time.Now()

	work := t.TempDir()
	p := &controllerProc{t: t, bin: buildJobsuite(t, work), dir: work, pki: newPKI(t), data: filepath.Join(work, "data")}
	p.httpAddr, p.agentAddr = freeAddrs(t)
	client := newAPIClient(t, p.pki, "operator", "https://"+p.httpAddr)
	client.cl.Timeout = 10 * time.Second
	p.start(client)
	defer func() {
		select {
		case <-p.exited:
		default:
			p.kill()
		}
		if t.Failed() {
			t.Log(p.tail(p.starts, 60))
			for _, l := range p.grepLogs(40, "panic", "[ERROR]", "fatal") {
				t.Log(l)
			}
			for _, l := range grepFile(filepath.Join(work, "agents.log"), 1000, "[WARN]", "[ERROR]", "panic") {
				if !strings.Contains(l, "reconnecting") {
					t.Log("agents.log: " + l)
				}
			}
		}
	}()

	// Agents: in this process, one per transport, reconnecting fast.
	agentLog, err := os.Create(filepath.Join(work, "agents.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer agentLog.Close()
	agentCtx, stopAgents := context.WithCancel(context.Background())
	var agentWG sync.WaitGroup
	defer func() { stopAgents(); agentWG.Wait() }()
	for name, mode := range map[string]transport.Mode{"agent-1": transport.ModeTCP, "agent-2": transport.ModeQUIC, "agent-3": transport.ModeAuto} {
		a, err := agent.New(agent.Config{
			Controller: p.agentAddr, TLS: files(p.pki, name), Slots: 8, Transport: mode,
			StateDir: filepath.Join(work, name), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 250 * time.Millisecond,
			Logger: hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: agentLog}),
		})
		if err != nil {
			t.Fatal(err)
		}
		agentWG.Add(1)
		go func() {
			defer agentWG.Done()
			if err := a.Run(agentCtx); err != nil {
				t.Errorf("agent %s: %v", name, err)
			}
		}()
	}

	// Clients: submit until total jobs are acknowledged. Only a 201 with
	// a job ID counts; connection errors while the controller is down
	// are expected and the submission is simply not acknowledged.
	var (
		mu       sync.Mutex
		acked    = map[uint64]crashJob{}
		next     atomic.Int64
		nAcked   atomic.Int64
		connErrs atomic.Int64
	)
	clientsDone, quit := make(chan struct{}), make(chan struct{})
	var clientWG sync.WaitGroup
	defer func() { close(quit); clientWG.Wait() }() // on an early failure too
	for range 4 {
		clientWG.Add(1)
		go func() {
			defer clientWG.Done()
			for nAcked.Load() < int64(total) {
				select {
				case <-quit:
					return
				default:
				}
				j := newCrashJob(int(next.Add(1)))
				code, b, err := client.do("POST", "/jobs", j.body())
				if err != nil {
					connErrs.Add(1)
					time.Sleep(10 * time.Millisecond) // pacing while the controller is down
					continue
				}
				if code != 201 {
					t.Errorf("submission %d: %d %s", j.n, code, b)
					return
				}
				var v api.JobView
				if err := json.Unmarshal(b, &v); err != nil || v.JobID == 0 {
					t.Errorf("submission %d: 201 without a job id: %s", j.n, b)
					return
				}
				mu.Lock()
				if prev, dup := acked[v.JobID]; dup {
					t.Errorf("job id %d acknowledged twice: submissions %d and %d", v.JobID, prev.n, j.n)
				}
				acked[v.JobID] = j
				mu.Unlock()
				nAcked.Add(1)
			}
		}()
	}
	go func() { clientWG.Wait(); close(clientsDone) }()
	snapshot := func() map[uint64]crashJob {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[uint64]crashJob, len(acked))
		for id, j := range acked {
			out[id] = j
		}
		return out
	}

	// Kill -9 at random moments spread over the submissions; between a
	// kill and the restart, check the store as the controller left it.
	for k := range kills {
		lo, hi := total*(2*k+1)/(2*kills+1), total*(2*k+2)/(2*kills+1)
		target := int64(lo + rng.IntN(max(hi-lo, 1)))
		deadline := time.Now().Add(60 * time.Second)
		for nAcked.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: only %d of %d jobs acknowledged after 60s", k+1, nAcked.Load(), target)
			}
			select {
			case <-clientsDone:
				t.Fatalf("clients stopped at %d jobs", nAcked.Load())
			case <-time.After(5 * time.Millisecond):
			}
		}
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond) // not on a submission boundary
		p.kill()
		seen := snapshot()
		jobs := checkStore(t, p.data, seen)
		states := map[store.State]int{}
		for _, j := range jobs {
			states[j.State]++
		}
		t.Logf("kill %d at %d acknowledged jobs (%s): store holds %v", k+1, len(seen), time.Since(testStart).Round(time.Millisecond), states)
		if t.Failed() {
			t.FailNow()
		}
		p.start(client)
	}
	select {
	case <-clientsDone:
	case <-time.After(90 * time.Second):
		t.Fatalf("clients not done after 90s: %d of %d acknowledged", nAcked.Load(), total)
	}
	if t.Failed() {
		t.FailNow()
	}
	submitted := time.Since(testStart)
	acks := snapshot()

	// Every acknowledged job ends.
	var all []api.JobView
	poll(t, "every acknowledged job to finish", 90*time.Second, func() (bool, string) {
		var err error
		if all, err = client.list(""); err != nil {
			return false, err.Error()
		}
		return unfinished(all)
	})
	finished := time.Since(testStart)
	byID := map[uint64]api.JobView{}
	for _, j := range all {
		if _, dup := byID[j.JobID]; dup {
			t.Errorf("job %d listed twice", j.JobID)
		}
		byID[j.JobID] = j
	}

	// Status lists are disjoint, agree with each job, and cover all.
	inList := map[uint64]store.State{}
	for _, st := range []store.State{store.Queued, store.Waiting, store.Dispatched, store.Running, store.Completed, store.Failed, store.Timeout, store.Cancelled} {
		list, err := client.list(string(st))
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range list {
			if prev, dup := inList[j.JobID]; dup {
				t.Errorf("job %d is listed as %s and as %s", j.JobID, prev, st)
			}
			inList[j.JobID] = st
			if store.State(j.Status) != st || store.State(byID[j.JobID].Status) != st {
				t.Errorf("job %d in the %s list has status %s (%s in the full list)", j.JobID, st, j.Status, byID[j.JobID].Status)
			}
		}
	}
	for id, j := range byID {
		if _, ok := inList[id]; !ok {
			t.Errorf("job %d (%s) is in no status list", id, j.Status)
		}
	}

	// Each acknowledged job: present, right end state, one terminal
	// event, output complete.
	type result struct {
		id     uint64
		events []store.Event
		logs   string
		err    error
	}
	ids := make([]uint64, 0, len(acks))
	for id := range acks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	results := make(chan result)
	go func() {
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				r := result{id: id}
				if r.err = client.get(fmt.Sprintf("/jobs/%d/events", id), &r.events); r.err == nil {
					var code int
					var b []byte
					code, b, r.err = client.do("GET", fmt.Sprintf("/jobs/%d/logs", id), "")
					if r.err == nil && code != 200 {
						r.err = fmt.Errorf("logs: %d %s", code, b)
					}
					r.logs = string(b)
				}
				results <- r
			}()
		}
		wg.Wait()
		close(results)
	}()
	var (
		outcomes             = map[string]int{}
		lostAttempts, multi  int
		exact, repeat, loose int
	)
	for r := range results {
		want := acks[r.id]
		j, ok := byID[r.id]
		switch {
		case !ok:
			t.Errorf("acknowledged job %d (submission %d) is missing", r.id, want.n)
			continue
		case r.err != nil:
			t.Errorf("job %d: %v", r.id, r.err)
			continue
		case j.Command != want.command:
			t.Errorf("job %d: command %q, submitted %q", r.id, j.Command, want.command)
			continue
		}
		outcomes[string(j.Status)]++
		if err := checkEvents(j, r.events); err != nil {
			t.Errorf("job %d: %v", r.id, err)
		}
		lost := 0
		for _, a := range j.Attempts {
			if a.Outcome == "lost" {
				lost++
			}
		}
		lostAttempts += lost
		if len(j.Attempts) > 1 {
			multi++
		}
		if err := checkCrashJob(want, j, lost, r.logs); err != nil {
			t.Errorf("job %d (submission %d): %v", r.id, want.n, err)
			continue
		}
		switch {
		case lost > 0:
			loose++
		case len(j.Attempts) == 1:
			exact++
		default:
			repeat++
		}
	}
	t.Logf("%d acknowledged jobs, %d submissions lost to connection errors; ends %v; %d lost attempts, %d jobs with several attempts",
		len(acks), connErrs.Load(), outcomes, lostAttempts, multi)
	t.Logf("logs checked exactly for %d single-attempt jobs, as repeats for %d retried ones, by lines (and suffix if completed) for %d with a lost attempt", exact, repeat, loose)

	// The agents hold nothing and have every slot free again.
	poll(t, "agents idle with all slots free", 15*time.Second, func() (bool, string) {
		var agents []api.AgentInfo
		if err := client.get("/agents", &agents); err != nil {
			return false, err.Error()
		}
		idle := len(agents) == 3
		var state []string
		for _, a := range agents {
			idle = idle && a.Running == 0 && a.Credits == a.Slots
			state = append(state, fmt.Sprintf("%s: running %v, free %d of %d", a.Name, a.Jobs, a.Credits, a.Slots))
		}
		return idle, strings.Join(state, "; ")
	})

	// Agents stop first, as on a real host; then the controller stops
	// cleanly, and its store holds no active job and agrees with the API.
	stopStart := time.Now()
	stopAgents()
	agentWG.Wait()
	t.Logf("agents stopped in %s", time.Since(stopStart).Round(time.Millisecond))
	client.cl.CloseIdleConnections()
	stopStart = time.Now()
	p.stop()
	t.Logf("controller stopped in %s", time.Since(stopStart).Round(time.Millisecond))
	jobs := checkStore(t, p.data, acks)
	for id, j := range jobs {
		if !j.State.Terminal() {
			t.Errorf("store: job %d is %s after everything finished", id, j.State)
		}
		if v, ok := byID[id]; ok && (store.State(v.Status) != j.State || len(v.Attempts) != len(j.Attempts)) {
			t.Errorf("store: job %d is %s with %d attempts, the API said %s with %d", id, j.State, len(j.Attempts), v.Status, len(v.Attempts))
		}
	}
	t.Logf("timing: submissions and %d kills %s, all finished %s, checked %s", kills, submitted.Round(time.Millisecond),
		finished.Round(time.Millisecond), time.Since(testStart).Round(time.Millisecond))
}

// checkCrashJob checks one finished job against its submission. Each
// attempt prints the same output, so:
//   - a job with one attempt has exactly that output;
//   - a job whose attempts all ended with a report has it once per
//     attempt;
//   - a job with a lost attempt may also hold what the lost attempt
//     printed before it was lost: every line is one of the output's
//     lines, and a completed job's log ends with the whole output.
func checkCrashJob(want crashJob, j api.JobView, lost int, logs string) error {
	n := len(j.Attempts)
	last := ""
	if n > 0 {
		last = j.Attempts[n-1].Outcome
	}
	switch {
	case n == 0 || n > want.retries+1:
		return fmt.Errorf("%s after %d attempts, retries %d", j.Status, n, want.retries)
	case store.State(j.Status) == store.Completed && want.fails:
		return fmt.Errorf("completed, but its command always fails")
	case store.State(j.Status) == store.Completed && last != "completed":
		return fmt.Errorf("completed, but the last attempt's outcome is %q", last)
	case store.State(j.Status) == store.Failed && !want.fails && last != "lost":
		return fmt.Errorf("failed with last outcome %q (%s), but its command succeeds", last, j.Reason)
	case store.State(j.Status) != store.Completed && store.State(j.Status) != store.Failed:
		return fmt.Errorf("ended %s (%s)", j.Status, j.Reason)
	}
	for i, a := range j.Attempts {
		switch {
		case a.Outcome == "completed" && (i != n-1 || want.fails):
			return fmt.Errorf("attempt %d completed (of %d)", i+1, n)
		case a.Outcome != "completed" && a.Outcome != "failed" && a.Outcome != "lost":
			return fmt.Errorf("attempt %d outcome %q", i+1, a.Outcome)
		}
	}
	switch {
	case lost == 0 && logs != strings.Repeat(want.out, n):
		return fmt.Errorf("logs %q, want %q %d time(s)", logs, want.out, n)
	case lost > 0 && store.State(j.Status) == store.Completed && !strings.HasSuffix(logs, want.out):
		return fmt.Errorf("logs %q do not end with the output %q", logs, want.out)
	}
	lines := strings.SplitAfter(want.out, "\n")
	for _, l := range strings.SplitAfter(logs, "\n") {
		if l != "" && !slices.Contains(lines, l) {
			return fmt.Errorf("logs %q hold %q, not a line of the output %q", logs, l, want.out)
		}
	}
	return nil
}
