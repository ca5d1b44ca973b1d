package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"jobsuite/controller/store"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// cluster is a controller child and the clients of one benchmark.
type cluster struct {
	e      *env
	name   string
	ctl    *proc
	api    *api
	agents []*proc
	slots  int // the real agents' slots in all (realAgents); 0: none
}

// startCluster starts a controller child with a fresh data directory
// under Dir/name; lease 0 is the controller's default.
func (e *env) startCluster(ctx context.Context, name string, lease time.Duration) (*cluster, error) {
	base, err := scratch(e.dir, name)
	if err != nil {
		return nil, err
	}
	c := &cluster{e: e, name: name}
	cfg := childConfig{Mode: "controller", PKI: e.pki.dir, Data: filepath.Join(base, "data"),
		Log: filepath.Join(base, "controller.log"), LogLevel: e.cfg.LogLevel, LeaseTTL: lease}
	if e.cfg.ProfileDir != "" {
		cfg.Profile = filepath.Join(e.cfg.ProfileDir, name+".pprof")
	}
	if err := c.start(ctx, cfg); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cluster) start(ctx context.Context, cfg childConfig) error {
	p, err := startChild(ctx, cfg, 5*time.Minute)
	if err != nil {
		return err
	}
	c.ctl = p
	c.api = newAPI(c.e.pki, p.info.HTTP, 128)
	if err := c.api.waitHealthy(ctx, time.Minute); err != nil {
		c.close()
		return err
	}
	return nil
}

// restart stops the controller and starts it again on the same data;
// it returns the time from exec to the first /health answer.
func (c *cluster) restart(ctx context.Context) (time.Duration, error) {
	cfg := c.ctlConfig()
	c.api.close()
	if err := c.ctl.stop(); err != nil {
		return 0, fmt.Errorf("stopping the controller: %w", err)
	}
	if cfg.Profile != "" {
		cfg.Profile = filepath.Join(c.e.cfg.ProfileDir, c.name+"-restart.pprof")
	}
	start := time.Now()
	p, err := startChild(ctx, cfg, 5*time.Minute)
	if err != nil {
		return 0, err
	}
	c.ctl = p
	c.api = newAPI(c.e.pki, p.info.HTTP, 128)
	if err := c.api.waitHealthy(ctx, time.Minute); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (c *cluster) ctlConfig() childConfig {
	return c.ctl.cfg
}

// realAgents starts n real agent children with slots each and waits
// until the controller lists them.
func (c *cluster) realAgents(ctx context.Context, n, slots int, mode transport.Mode) error {
	base := filepath.Dir(c.ctlConfig().Data)
	for i := 1; i <= n; i++ {
		name := agentName(i)
		cfg := childConfig{Mode: "agent", PKI: c.e.pki.dir, Data: filepath.Join(base, name),
			Log: filepath.Join(base, name+".log"), LogLevel: c.e.cfg.LogLevel, Name: name,
			Controller: c.ctl.info.Agent, Slots: slots, Transport: string(mode)}
		if c.e.cfg.ProfileDir != "" {
			cfg.Profile = filepath.Join(c.e.cfg.ProfileDir, c.name+"-"+name+".pprof")
		}
		p, err := startChild(ctx, cfg, time.Minute)
		if err != nil {
			return err
		}
		c.agents = append(c.agents, p)
		c.slots += slots
	}
	return c.api.waitAgents(ctx, n, time.Minute)
}

// cpuMeter starts measuring the CPU time of the controller and of this
// process (the clients, fake agents); the function it returns formats
// both per job for jobs done since, with the share of the machine used.
func (c *cluster) cpuMeter() func(jobs float64) string {
	ctl0, self0, t0 := c.ctl.cpu(), selfCPU(), time.Now()
	return func(jobs float64) string {
		ctl, self, wall := c.ctl.cpu()-ctl0, selfCPU()-self0, time.Since(t0)
		return fmt.Sprintf("CPU per job: controller %.0f µs, clients %.0f µs (%.2f of %d cores busy)",
			float64(ctl.Microseconds())/jobs, float64(self.Microseconds())/jobs, (ctl+self).Seconds()/wall.Seconds(), runtime.NumCPU())
	}
}

// agentCPU sums the CPU time of the real agents and of the job
// processes they have reaped.
func (c *cluster) agentCPU() cpuTimes {
	var sum cpuTimes
	for _, a := range c.agents {
		t, _ := procCPUs(a.pid())
		sum.self += t.self
		sum.children += t.children
	}
	return sum
}

func (c *cluster) close() {
	for _, a := range c.agents {
		_ = a.stop()
	}
	c.agents = nil
	if c.api != nil {
		c.api.close()
	}
	if c.ctl != nil {
		_ = c.ctl.stop()
	}
}

// counter counts acknowledged attempts and says when a goal is reached.
type counter struct {
	n    atomic.Int64
	goal int64
	done chan struct{}
	once sync.Once
}

func newCounter(goal int) *counter {
	return &counter{goal: int64(goal), done: make(chan struct{})}
}

func (c *counter) add() {
	if c.n.Add(1) == c.goal {
		c.once.Do(func() { close(c.done) })
	}
}

// wait waits for the goal, ctx or within.
func (c *counter) wait(ctx context.Context, within time.Duration) error {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%d of %d jobs acknowledged after %s", c.n.Load(), c.goal, within)
	}
}

// burnWithin is a generous bound for n jobs to finish.
func burnWithin(n int) time.Duration {
	return 2*time.Minute + time.Duration(n)*time.Millisecond
}

const trueJob = `{"command":"true"}`

// ---------------------------------------------------------------------
// 1. Durable submit

func (e *env) submit(ctx context.Context) {
	rate, lat, err := e.fsync()
	if err != nil {
		e.fail("1", "durable submit", err)
		return
	}
	_ = lat
	c, err := e.startCluster(ctx, "submit", 0)
	if err != nil {
		e.fail("1", "durable submit", err)
		return
	}
	defer c.close()
	var lastLimit float64 // the busiest row's, for its HTTP/2 variant
	for i, n := range e.sz.Clients {
		id := fmt.Sprintf("1%c", 'a'+i)
		name := fmt.Sprintf("durable submit: POST /jobs, %d keep-alive client(s)", n)
		limit, _, err := e.pebbleRate(n, 1)
		if err != nil {
			e.fail(id, name, err)
			continue
		}
		lastLimit = limit
		cpu := c.cpuMeter()
		got, err := submitLoad(ctx, newAPI(e.pki, c.ctl.info.HTTP, n), n, e.sz.Phase, false, 1)
		if err != nil {
			e.fail(id, name, err)
			continue
		}
		r := Row{ID: id, Name: name, Value: got, Unit: "jobs/s",
			Detail: fmt.Sprintf("%.2f× the disk's %s fdatasync/s; %s", got/rate, num(rate), cpu(got*e.sz.Phase.Seconds())),
			Limit:  limit, LimitUnit: "jobs/s", LimitName: fmt.Sprintf("Pebble synced Apply, %d writer(s) × 1 job", n)}
		if n == 64 {
			r.Target, r.Verdict = "≥ 15,000 jobs/s at 64 clients", atLeast(got, 15000, "jobs/s")
		}
		e.add(r)
	}
	// The busiest of those rows again with the clients on HTTP/2 (one
	// connection, a stream per request), as the CLI and net/http
	// clients that ask for h2 send them; the rows above stay HTTP/1.1,
	// comparable with earlier runs.
	if n := e.sz.Clients[len(e.sz.Clients)-1]; n > 1 {
		name := fmt.Sprintf("durable submit: POST /jobs, %d clients over HTTP/2", n)
		cpu := c.cpuMeter()
		got, err := submitLoad(ctx, newAPIH2(e.pki, c.ctl.info.HTTP, n), n, e.sz.Phase, false, 1)
		if err != nil {
			e.fail("1h", name, err)
		} else {
			e.add(Row{ID: "1h", Name: name, Value: got, Unit: "jobs/s",
				Detail: fmt.Sprintf("%.2f× the disk's %s fdatasync/s; %s", got/rate, num(rate), cpu(got*e.sz.Phase.Seconds())),
				Limit:  lastLimit, LimitUnit: "jobs/s", LimitName: fmt.Sprintf("Pebble synced Apply, %d writer(s) × 1 job", n)})
		}
	}
	id := fmt.Sprintf("1%c", 'a'+len(e.sz.Clients))
	name := fmt.Sprintf("durable submit: POST /jobs/batch, %d jobs per request, %d client(s)", e.sz.BatchSize, e.sz.BatchClients)
	limit, _, err := e.pebbleRate(e.sz.BatchClients, e.sz.BatchSize)
	if err != nil {
		e.fail(id, name, err)
		return
	}
	cpu := c.cpuMeter()
	got, err := submitLoad(ctx, newAPI(e.pki, c.ctl.info.HTTP, e.sz.BatchClients), e.sz.BatchClients, e.sz.Phase, true, e.sz.BatchSize)
	if err != nil {
		e.fail(id, name, err)
		return
	}
	e.add(Row{ID: id, Name: name, Value: got, Unit: "jobs/s",
		Detail: fmt.Sprintf("%s requests/s; %s", num(got/float64(e.sz.BatchSize)), cpu(got*e.sz.Phase.Seconds())),
		Limit:  limit, LimitUnit: "jobs/s", LimitName: fmt.Sprintf("Pebble synced Apply, %d writers × %d jobs", e.sz.BatchClients, e.sz.BatchSize),
		Target: "≥ 100,000 jobs/s batched", Verdict: atLeast(got, 100000, "jobs/s")})
}

// submitLoad runs n clients that submit for d (each after one warm-up
// request) and returns jobs accepted per second.
func submitLoad(ctx context.Context, a *api, n int, d time.Duration, batch bool, per int) (float64, error) {
	defer a.close()
	body := []byte(trueJob)
	if batch {
		body = batchBody(trueJob, per)
	}
	send := func() (int, error) {
		if batch {
			ids, err := a.batch(ctx, body)
			return len(ids), err
		}
		_, err := a.submit(ctx, body)
		return 1, err
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	go_ := make(chan struct{})
	errs := make(chan error, n)
	var stop atomic.Bool
	for range n {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			_, err := send() // warm-up: TLS handshake, connection
			ready.Done()
			if err != nil {
				errs <- err
				return
			}
			<-go_
			for !stop.Load() {
				k, err := send()
				if err != nil {
					errs <- err
					return
				}
				total.Add(int64(k))
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	close(go_)
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(total.Load()) / took.Seconds(), nil
}

// ---------------------------------------------------------------------
// 2. Controller capacity with simulated agents

func (e *env) capacity(ctx context.Context) {
	for i, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		id := fmt.Sprintf("2%c", 'a'+i)
		name := fmt.Sprintf("capacity: burn-down of %s queued jobs by %d fake agents × %d slots (%s)", count(e.sz.BurnDown), e.sz.FakeAgents, e.sz.FakeSlots, mode)
		limit, _, err := e.pebbleRate(e.sz.BatchClients, e.sz.BatchSize)
		if err != nil {
			e.fail(id, name, err)
			continue
		}
		got, detail, err := e.burnDown(ctx, "capacity-"+string(mode), mode)
		if err != nil {
			e.fail(id, name, err)
			continue
		}
		e.add(Row{ID: id, Name: name, Value: got, Unit: "jobs/s", Detail: detail,
			Limit: limit / 3, LimitUnit: "jobs/s", LimitName: "Pebble batched Apply rate ÷ 3 synced transitions per job",
			Target: "≥ 20,000 jobs/s", Verdict: atLeast(got, 20000, "jobs/s")})
	}
}

func (e *env) burnDown(ctx context.Context, name string, mode transport.Mode) (float64, string, error) {
	c, err := e.startCluster(ctx, name, 0)
	if err != nil {
		return 0, "", err
	}
	defer c.close()
	t := time.Now()
	if _, err := c.api.submitMany(ctx, trueJob, e.sz.BurnDown, e.sz.BatchSize); err != nil {
		return 0, "", err
	}
	load := time.Since(t)
	cnt := newCounter(e.sz.BurnDown)
	start := time.Now()
	fl, err := dialFleet(ctx, e.pki, c.ctl.info.Agent, mode, name, e.sz.FakeAgents, e.sz.FakeSlots, e.sz.FakeAgents, true,
		fakeHooks{done: func(*protocol.Dispatch, protocol.Outcome) { cnt.add() }})
	if err != nil {
		return 0, "", err
	}
	defer fl.close()
	cpu0, self0 := c.ctl.cpu(), selfCPU()
	if err := cnt.wait(ctx, burnWithin(e.sz.BurnDown)); err != nil {
		return 0, "", err
	}
	took := time.Since(start)
	cpu, self := c.ctl.cpu()-cpu0, selfCPU()-self0
	n := float64(e.sz.BurnDown)
	rate := n / took.Seconds()
	return rate, fmt.Sprintf("dispatched, started and completed durably in %s; CPU per job: controller %.0f µs, fake agents %.0f µs (%.2f of %d cores busy); queue filled by batch at %s jobs/s",
		took.Round(time.Millisecond), float64(cpu.Microseconds())/n, float64(self.Microseconds())/n,
		(cpu+self).Seconds()/took.Seconds(), runtime.NumCPU(), num(n/load.Seconds())), nil
}

// ---------------------------------------------------------------------
// 3. Real end-to-end, and 4a: dispatch latency through real agents

func (e *env) real(ctx context.Context) {
	slots := e.sz.RealAgents * e.sz.RealSlots
	name := fmt.Sprintf("real: `true` jobs through %d real agents × %d slots (quic)", e.sz.RealAgents, e.sz.RealSlots)
	c, err := e.startCluster(ctx, "real", 0)
	if err != nil {
		e.fail("3", name, err)
		return
	}
	defer c.close()
	if err := c.realAgents(ctx, e.sz.RealAgents, e.sz.RealSlots, transport.ModeQUIC); err != nil {
		e.fail("3", name, err)
		return
	}
	spawn, spawnCPU, err := e.spawnRate(ctx, slots)
	if err != nil {
		e.fail("3", name, err)
		return
	}
	c.ctl.profilePhase("3")
	agents0, ctl0 := c.agentCPU(), c.ctl.cpu()
	ids, err := c.api.submitMany(ctx, trueJob, e.sz.TrueJobs, e.sz.BatchSize)
	if err != nil {
		e.fail("3", name, err)
		return
	}
	// The last job submitted is among the last to end (one priority,
	// dispatched in order): wait for it with cheap reads, then make sure.
	if len(ids) > 0 {
		if err := c.api.waitEnded(ctx, ids[len(ids)-1], burnWithin(e.sz.TrueJobs*5)); err != nil {
			e.fail("3", name, err)
			return
		}
	}
	if err := c.api.waitIdle(ctx, burnWithin(e.sz.TrueJobs*5)); err != nil {
		e.fail("3", name, err)
		return
	}
	agentsCPU, ctlCPU := c.agentCPU().sub(agents0), c.ctl.cpu()-ctl0
	c.ctl.profilePhase("3-records")
	recs, err := c.api.records(ctx, ids)
	if err != nil {
		e.fail("3", name, err)
		return
	}
	var first, last time.Time
	failed := 0
	for _, r := range recs {
		if r.Status != store.Completed {
			failed++
		}
		if first.IsZero() || r.CreatedAt.Before(first) {
			first = r.CreatedAt
		}
		if r.FinishedAt != nil && r.FinishedAt.After(last) {
			last = *r.FinishedAt
		}
	}
	if failed > 0 {
		e.fail("3", name, fmt.Errorf("%d of %d jobs did not complete", failed, len(ids)))
		return
	}
	got := float64(len(ids)) / last.Sub(first).Seconds()
	e.add(Row{ID: "3", Name: name, Value: got, Unit: "jobs/s",
		Detail: fmt.Sprintf("%d jobs from first submit to last finish in %s", len(ids), last.Sub(first).Round(time.Millisecond)),
		Limit:  spawn, LimitUnit: "processes/s", LimitName: fmt.Sprintf("raw /bin/sh -c true, %d at a time", slots),
		Target: "≥ 75% of the raw spawn rate", Verdict: atLeast(got/spawn*100, 75, "%")})
	e.add(agentOverheadRow(agentsCPU, len(ids), spawnCPU, slots))
	e.add(controllerPerJobRow("3c", "real: controller CPU per job at row 3's rate", ctlCPU, len(ids),
		fmt.Sprintf("%d jobs submitted in batches of %d and run at %s jobs/s", len(ids), e.sz.BatchSize, num(got)), 150))

	// 4a on the same cluster.
	name = fmt.Sprintf("dispatch latency: submit → process start, real agents, offered %s jobs/s", count(e.sz.Rate))
	started := func(r *jobRecord) (time.Duration, bool) {
		if len(r.Attempts) == 0 || r.Attempts[0].StartedAt == nil {
			return 0, false
		}
		return r.Attempts[0].StartedAt.Sub(r.CreatedAt), true
	}
	lat, detail, err := e.pacedLatency(ctx, c, trueJob, e.sz.LatencyJobs, e.sz.Rate, started,
		func() error { c.ctl.profilePhase("4a"); return nil },
		func() error {
			err := c.api.waitIdle(ctx, burnWithin(e.sz.LatencyJobs*5))
			c.ctl.profilePhase("4a-records")
			return err
		})
	e.latencyRow("4a", name, lat, detail, err, latencyTarget{p99: 10 * time.Millisecond})

	// The same below the real agents' capacity (row 3): half of it,
	// and at most the 500 jobs/s. Row 4f is the controller's
	// CPU per job over this run: at a low rate its group commit has
	// little to group, which is what issue 16's second CPU target is
	// about ("≤ 300 µs at 500 jobs/s offered").
	rate := min(int(got/2), e.sz.Rate/2)
	if e.sz.RealRate > 0 {
		rate = e.sz.RealRate // pinned for before/after pairs (-real-rate)
	}
	if rate > 0 {
		n := max(50, int(float64(rate)*e.sz.Phase.Seconds()))
		how := fmt.Sprintf("half of row 3, at most %s", count(e.sz.Rate/2))
		if e.sz.RealRate > 0 {
			how = "set by -real-rate"
		}
		name = fmt.Sprintf("dispatch latency: submit → process start, real agents, offered %s jobs/s (%s)", count(rate), how)
		// The CPU is read once the jobs are done, before the records
		// are listed: listing every job of the group (≈ 10,000 with
		// rows 3 and 4a's) is the benchmark's reading, not the jobs'.
		var cpu, cpu0 time.Duration
		lat, detail, err := e.pacedLatency(ctx, c, trueJob, n, rate, started,
			func() error {
				c.ctl.profilePhase("4d")
				cpu0 = c.ctl.cpu()
				return nil
			},
			func() error {
				err := c.api.waitIdle(ctx, burnWithin(n*5))
				cpu = c.ctl.cpu() - cpu0
				c.ctl.profilePhase("4d-records")
				return err
			})
		e.latencyRow("4d", name, lat, detail, err, latencyTarget{p99: 5 * time.Millisecond, p999: 10 * time.Millisecond})
		if err == nil {
			e.add(controllerPerJobRow("4f", fmt.Sprintf("real: controller CPU per job, offered %s jobs/s (row 4d)", count(rate)), cpu, n,
				fmt.Sprintf("%d jobs, each its own POST /jobs from 64 keep-alive clients, paced", n), 300))
		}
	}
}

// controllerPerJobRow is rows 3c and 4f: the controller process's CPU
// (user + system, from /proc) over a run of real jobs, divided by the
// jobs: their submit, dispatch, start, output and result together.
// Issue 16's targets: ≤ 150 µs at row 3's rate, ≤ 300 µs at 500 jobs/s
// offered. There is no machine limit to divide by; the detail says the
// rate it was taken at.
func controllerPerJobRow(id, name string, used time.Duration, jobs int, detail string, target float64) Row {
	per := us(used / time.Duration(max(jobs, 1)))
	return Row{ID: id, Name: name, Value: per, Unit: "µs",
		Detail: fmt.Sprintf("%s; controller CPU %s in all", detail, used.Round(time.Millisecond)),
		Target: fmt.Sprintf("≤ %.0f µs", target), Verdict: atMost(per, target, "µs")}
}

// agentOverheadRow is row 3b: what the real agents cost per job beyond
// a bare spawn. used is the agents' CPU time over row 3 (their own and
// their reaped jobs'), jobs the jobs they ran; spawn is the CPU of one
// bare /bin/sh -c true through os/exec measured in the same run (the
// spawner's and the shell's), which every job costs at the least.
func agentOverheadRow(used cpuTimes, jobs int, spawn spawnCost, par int) Row {
	n := time.Duration(max(jobs, 1))
	self, shell := used.self/n, used.children/n
	over := self + shell - spawn.total()
	return Row{ID: "3b", Name: "real: agent CPU per job over a bare spawn (row 3)", Value: us(over), Unit: "µs",
		Detail: fmt.Sprintf("per job: agent processes %.0f µs + their shells %.0f µs; a bare spawn: spawner %.0f µs + shell %.0f µs; agent over the spawner %.0f µs",
			us(self), us(shell), us(spawn.spawner), us(spawn.shell), us(self-spawn.spawner)),
		Limit: us(spawn.total()), LimitUnit: "µs", LimitName: fmt.Sprintf("CPU of one bare /bin/sh -c true through os/exec, %d at a time: spawner + shell", par),
		Target: "≤ 120 µs", Verdict: atMost(us(over), 120, "µs")}
}

// pacedLatency submits n copies of body at the offered rate, waits with
// wait, and measures each job with measure.
//
// The pacer's 64 connections are opened first (api.warm); begin, if not
// nil, is called once they are, just before the first submit.
func (e *env) pacedLatency(ctx context.Context, c *cluster, body string, n, rate int, measure func(*jobRecord) (time.Duration, bool), begin, wait func() error) ([]time.Duration, string, error) {
	a := newAPI(e.pki, c.ctl.info.HTTP, 64)
	if err := a.warm(ctx, 64); err != nil {
		a.close()
		return nil, "", err
	}
	if begin != nil {
		if err := begin(); err != nil {
			a.close()
			return nil, "", err
		}
	}
	ids, offered, accepted, err := paced(ctx, a, n, rate, 64, []byte(body))
	if err != nil {
		return nil, "", err
	}
	if err := wait(); err != nil {
		return nil, "", err
	}
	recs, err := c.api.records(ctx, ids)
	if err != nil {
		return nil, "", err
	}
	lat := make([]time.Duration, 0, len(recs))
	var decide, start []time.Duration // the two hops: submit → dispatch decided → started
	for _, r := range recs {
		if d, ok := measure(r); ok {
			lat = append(lat, d)
			if a := r.Attempts[0]; a.StartedAt != nil {
				decide = append(decide, a.DispatchedAt.Sub(r.CreatedAt))
				start = append(start, a.StartedAt.Sub(a.DispatchedAt))
			}
		}
	}
	if len(lat) == 0 {
		return nil, "", errors.New("no job has a start time")
	}
	hop := func(ds []time.Duration) string {
		return fmt.Sprintf("p50 %.2f / p99 %.2f / max %.2f ms", ms(percentile(ds, 0.5)), ms(percentile(ds, 0.99)), ms(percentile(ds, 1)))
	}
	detail := fmt.Sprintf("%d jobs, offered %s/s, accepted %s/s; submit → dispatch decided %s; dispatch decided → started %s",
		len(lat), num(offered), num(accepted), hop(decide), hop(start))
	if c.slots > 0 {
		late, full := slotWaits(recs, c.slots, lateDecision)
		detail += fmt.Sprintf("; %d jobs decided ≥ %s after their submit, %d of them submitted while all %d slots were held", late, lateDecision, full, c.slots)
	}
	return lat, detail, nil
}

// lateDecision is how long after its submit a job's dispatch decision
// counts as late in slotWaits.
const lateDecision = 5 * time.Millisecond

// slotWaits says why jobs waited for their dispatch: of the jobs whose
// first attempt was decided late or later after their submit, how many
// were submitted while every one of the slots was held. A slot is held,
// as the controller counts it, from an attempt's dispatch decision to
// the controller's receipt of its result (the attempt's finished_at:
// the agent frees the slot at the process's exit and says so with the
// result). A late job submitted while a slot was free waited for
// something else: the dispatch loop, a lock, the machine.
func slotWaits(recs map[uint64]*jobRecord, slots int, late time.Duration) (n, full int) {
	type hold struct{ from, to time.Time }
	var holds []hold
	for _, r := range recs {
		for _, a := range r.Attempts {
			if a.FinishedAt != nil {
				holds = append(holds, hold{a.DispatchedAt, *a.FinishedAt})
			}
		}
	}
	for _, r := range recs {
		if len(r.Attempts) == 0 || r.Attempts[0].DispatchedAt.Sub(r.CreatedAt) < late {
			continue
		}
		n++
		held := 0
		for _, h := range holds {
			if !h.from.After(r.CreatedAt) && h.to.After(r.CreatedAt) {
				held++
			}
		}
		if held >= slots {
			full++
		}
	}
	return n, full
}

// latencyTarget is what a latency row must meet: each percentile set
// (non-zero) is a bound.
type latencyTarget struct {
	p50, p99, p999 time.Duration
	at             string // where the target applies, e.g. "at 1k jobs/s"
}

// latencyBound is one percentile bound of a latencyTarget.
type latencyBound struct {
	name string // "p99"
	q    float64
	max  time.Duration
}

// bounds lists the target's percentile bounds, lowest percentile first.
func (t latencyTarget) bounds() []latencyBound {
	var out []latencyBound
	for _, b := range []latencyBound{{"p50", 0.5, t.p50}, {"p99", 0.99, t.p99}, {"p99.9", 0.999, t.p999}} {
		if b.max > 0 {
			out = append(out, b)
		}
	}
	return out
}

func (e *env) latencyRow(id, name string, lat []time.Duration, detail string, err error, target latencyTarget) {
	if err != nil {
		e.fail(id, name, err)
		return
	}
	_, plat, perr := e.pebbleRate(1, 1)
	if perr != nil {
		e.fail(id, name, perr)
		return
	}
	var texts, missed []string
	for _, b := range target.bounds() {
		texts = append(texts, fmt.Sprintf("%s ≤ %s ms", b.name, num(ms(b.max))))
		if v := atMost(ms(percentile(lat, b.q)), ms(b.max), "ms"); v != "met" {
			missed = append(missed, b.name+" "+v)
		}
	}
	verdict := "met"
	if len(missed) > 0 {
		verdict = strings.Join(missed, "; ")
	}
	text := strings.Join(texts, ", ")
	if target.at != "" {
		text += " " + target.at
	}
	p50 := percentile(lat, 0.5)
	e.add(Row{ID: id, Name: name, Value: ms(p50), Unit: "ms p50",
		Detail: fmt.Sprintf("p50 %.2f / p95 %.2f / p99 %.2f / p99.9 %.2f / max %.2f ms; %s", ms(p50), ms(percentile(lat, 0.95)),
			ms(percentile(lat, 0.99)), ms(percentile(lat, 0.999)), ms(percentile(lat, 1)), detail),
		Limit: 2 * ms(percentile(plat, 0.5)), LimitUnit: "ms", LimitName: "two synced commits (submit, dispatch): 2 × Pebble synced Apply p50, 1 writer",
		Target: text, Verdict: verdict})
}

// paced submits n jobs through POST /jobs at rate jobs/s (open loop:
// a job is handed to one of workers clients at its scheduled time) and
// returns their IDs, the rate offered and the rate accepted.
func paced(ctx context.Context, a *api, n, rate, workers int, body []byte) ([]uint64, float64, float64, error) {
	defer a.close()
	ids := make([]uint64, n)
	work := make(chan int, n)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				id, err := a.submit(ctx, body)
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		}()
	}
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		work <- i
	}
	offered := float64(n) / time.Since(start).Seconds()
	close(work)
	wg.Wait()
	accepted := float64(n) / time.Since(start).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, 0, err
	}
	return ids, offered, accepted, nil
}

// ---------------------------------------------------------------------
// 4. Dispatch latency with fake agents, and timer lateness

func (e *env) latency(ctx context.Context) {
	name := fmt.Sprintf("dispatch latency: submit → dispatch received, %d fake agents, offered %s jobs/s", e.sz.FakeAgents, count(e.sz.Rate))
	tname := fmt.Sprintf("timer lateness: retry due (retry_at) → requeued, %d jobs failing once, backoff %s ±20%%", e.sz.TimerJobs, e.sz.TimerBase)
	c, err := e.startCluster(ctx, "latency", 0)
	if err != nil {
		e.fail("4b", name, err)
		e.fail("4c", tname, err)
		return
	}
	defer c.close()

	latDone := newCounter(e.sz.LatencyJobs)
	timerDone := newCounter(e.sz.TimerJobs)
	var mu sync.Mutex
	retryAt := map[uint64]time.Time{}
	var lookups sync.WaitGroup
	hooks := fakeHooks{
		outcome: func(d *protocol.Dispatch) protocol.Outcome {
			if d.Name == "timer" && d.Attempt == 1 {
				return protocol.OutcomeFailed
			}
			return protocol.OutcomeCompleted
		},
		done: func(d *protocol.Dispatch, o protocol.Outcome) {
			switch {
			case d.Name == "lat":
				latDone.add()
			case d.Name == "timer" && o == protocol.OutcomeFailed:
				// The retry is durable: read when it is due.
				lookups.Add(1)
				go func() {
					defer lookups.Done()
					var r jobRecord
					if err := c.api.getJSON(ctx, fmt.Sprintf("/jobs/%d", d.JobID), &r); err == nil && r.RetryAt != nil {
						mu.Lock()
						retryAt[d.JobID] = *r.RetryAt
						mu.Unlock()
					}
				}()
			case d.Name == "timer":
				timerDone.add()
			}
		},
	}
	fl, err := dialFleet(ctx, e.pki, c.ctl.info.Agent, transport.ModeQUIC, "latency", e.sz.FakeAgents, e.sz.FakeSlots, e.sz.FakeAgents, true, hooks)
	if err != nil {
		e.fail("4b", name, err)
		e.fail("4c", tname, err)
		return
	}
	defer fl.close()
	defer e.scheduleLateness(ctx, c) // before the fleet closes: the fired jobs run

	lat, detail, err := e.pacedLatency(ctx, c, `{"command":"true","name":"lat"}`, e.sz.LatencyJobs, e.sz.Rate, func(r *jobRecord) (time.Duration, bool) {
		if len(r.Attempts) == 0 || r.Attempts[0].StartedAt == nil {
			return 0, false
		}
		return r.Attempts[0].StartedAt.Sub(r.CreatedAt), true
	}, nil, func() error { return latDone.wait(ctx, burnWithin(e.sz.LatencyJobs)) })
	e.latencyRow("4b", name, lat, detail, err, latencyTarget{p50: time.Millisecond, p99: 5 * time.Millisecond, at: "at 1k jobs/s"})

	// Timer lateness, with bare Go timers over the same spread measured
	// in this process at the same time as the floor.
	bare := make(chan []time.Duration, 1)
	go func() { bare <- timerProbe(e.sz.TimerJobs, e.sz.TimerBase*8/10, e.sz.TimerBase*12/10) }()
	body := fmt.Sprintf(`{"command":"false","name":"timer","retries":1,"backoff":{"base":%g}}`, e.sz.TimerBase.Seconds())
	ids, _, _, err := paced(ctx, newAPI(e.pki, c.ctl.info.HTTP, 64), e.sz.TimerJobs, e.sz.Rate, 64, []byte(body))
	if err == nil {
		err = timerDone.wait(ctx, burnWithin(e.sz.TimerJobs)+2*e.sz.TimerBase)
	}
	lookups.Wait()
	floor := <-bare
	if err != nil {
		e.fail("4c", tname, err)
		return
	}
	recs, err := c.api.records(ctx, ids)
	if err != nil {
		e.fail("4c", tname, err)
		return
	}
	var late, redispatch []time.Duration
	for _, id := range ids {
		due, ok := retryAt[id]
		if !ok {
			continue
		}
		evs, err := c.api.events(ctx, id)
		if err != nil {
			e.fail("4c", tname, err)
			return
		}
		if at, ok := eventTime(evs, "requeued"); ok {
			late = append(late, at.Sub(due))
		}
		if r := recs[id]; r != nil && len(r.Attempts) > 1 {
			redispatch = append(redispatch, r.Attempts[1].DispatchedAt.Sub(due))
		}
	}
	if len(late) == 0 {
		e.fail("4c", tname, errors.New("no retry was observed"))
		return
	}
	p99 := percentile(late, 0.99)
	e.add(Row{ID: "4c", Name: tname, Value: ms(p99), Unit: "ms p99",
		Detail: fmt.Sprintf("p50 %.2f / p99 %.2f / max %.2f ms over %d retries; due → re-dispatched p50 %.2f / p99 %.2f ms",
			ms(percentile(late, 0.5)), ms(p99), ms(percentile(late, 1)), len(late), ms(percentile(redispatch, 0.5)), ms(percentile(redispatch, 0.99))),
		Limit: ms(percentile(floor, 0.99)), LimitUnit: "ms", LimitName: fmt.Sprintf("bare Go timers p99 (p50 %.2f ms), same spread, same time", ms(percentile(floor, 0.5))),
		Target: "p99 ≤ 10 ms", Verdict: atMost(ms(p99), 10, "ms")})
}

// ---------------------------------------------------------------------
// 5. Log throughput

func (e *env) logs(ctx context.Context) {
	size := e.sz.LogBytes
	name := fmt.Sprintf("log throughput: one job writing %s to stdout, stored and followed by 1 WebSocket client", bytesName(size))
	c, err := e.startCluster(ctx, "log", 0)
	if err != nil {
		e.fail("5a", name, err)
		return
	}
	defer c.close()
	if err := c.realAgents(ctx, 1, 1, transport.ModeQUIC); err != nil {
		e.fail("5a", name, err)
		return
	}
	pipe, err := pipeProbe(ctx, size)
	if err != nil {
		e.fail("5a", name, err)
		return
	}
	e.limits.measured = append(e.limits.measured, Row{Name: fmt.Sprintf("pipe: head -c %d /dev/zero | cat > /dev/null", size), Value: pipe / 1e6, Unit: "MB/s"})
	diskDir, err := scratch(e.dir, "limits")
	if err != nil {
		e.fail("5a", name, err)
		return
	}
	disk, err := diskProbe(diskDir, min(size, 512<<20))
	if err != nil {
		e.fail("5a", name, err)
		return
	}
	e.limits.measured = append(e.limits.measured, Row{Name: fmt.Sprintf("disk: %s written sequentially in 1 MiB blocks, then fdatasync", bytesName(min(size, 512<<20))), Value: disk / 1e6, Unit: "MB/s"})
	_ = resetPeak(c.ctl.pid())
	_ = resetPeak(c.agents[0].pid())
	ctlW0, agentW0 := c.ctl.written(), c.agents[0].written()
	ctlC0, agentC0, selfC0 := c.ctl.cpu(), c.agents[0].cpu(), selfCPU()
	start := time.Now()
	id, err := c.api.submit(ctx, []byte(fmt.Sprintf(`{"command":"head -c %d /dev/zero","name":"log"}`, size)))
	if err != nil {
		e.fail("5a", name, err)
		return
	}
	got, err := c.api.follow(ctx, id)
	took := time.Since(start)
	if err == nil && got != size {
		err = fmt.Errorf("the WebSocket delivered %d bytes, want %d", got, size)
	}
	if err != nil {
		e.fail("5a", name, err)
		return
	}
	var rec jobRecord
	if err := c.api.getJSON(ctx, fmt.Sprintf("/jobs/%d", id), &rec); err != nil || rec.Status != store.Completed || rec.LogBytes != uint64(size) {
		e.fail("5a", name, fmt.Errorf("job %d: %s with %d bytes stored (%v)", id, rec.Status, rec.LogBytes, err))
		return
	}
	_, ctlPeak := c.ctl.mem()
	_, agentPeak := c.agents[0].mem()
	ctlW, agentW := c.ctl.written()-ctlW0, c.agents[0].written()-agentW0
	ctlC, agentC, selfC := c.ctl.cpu()-ctlC0, c.agents[0].cpu()-agentC0, selfCPU()-selfC0
	rate := float64(size) / took.Seconds() / 1e6
	share := func(d time.Duration) float64 { return d.Seconds() / took.Seconds() }
	e.add(Row{ID: "5a", Name: name, Value: rate, Unit: "MB/s",
		Detail: fmt.Sprintf("submit → WebSocket closed in %s; all %d bytes stored and delivered; cores busy: controller %.2f, agent %.2f, WebSocket client %.2f (the job's head not counted); disk writes: controller %.1f× the output, agent spool %.1f×, the disk takes %s MB/s",
			took.Round(time.Millisecond), size, share(ctlC), share(agentC), share(selfC), float64(ctlW)/float64(size), float64(agentW)/float64(size), num(disk/1e6)),
		Limit: pipe / 1e6, LimitUnit: "MB/s", LimitName: "head | cat through a pipe",
		Target: "≥ 200 MB/s with bounded memory", Verdict: atLeast(rate, 200, "MB/s")})
	e.add(Row{ID: "5b", Name: "log throughput: controller peak RSS during it (its own process)", Value: mib(ctlPeak), Unit: "MiB",
		Detail: "VmHWM of the controller process, reset before the job", Limit: mib(e.memTotal()), LimitUnit: "MiB", LimitName: "RAM"})
	e.add(Row{ID: "5c", Name: "log throughput: agent peak RSS during it (its own process)", Value: mib(agentPeak), Unit: "MiB",
		Detail: "VmHWM of the agent process, reset before the job", Limit: mib(e.memTotal()), LimitUnit: "MiB", LimitName: "RAM"})
}

func bytesName(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

func (e *env) memTotal() uint64 {
	m := describeMachine(e.dir)
	return m.MemTotal
}

// ---------------------------------------------------------------------
// 6. Scale: idle agents

func (e *env) scale(ctx context.Context) {
	for i, mode := range []transport.Mode{transport.ModeTCP, transport.ModeQUIC} {
		e.scaleOne(ctx, fmt.Sprintf("6%c", 'a'+2*i), fmt.Sprintf("6%c", 'b'+2*i), mode)
	}
}

func (e *env) scaleOne(ctx context.Context, idRSS, idCPU string, mode transport.Mode) {
	k := e.sz.IdleAgents
	nameRSS := fmt.Sprintf("scale: %s idle agents (%s): controller RSS", count(k), mode)
	nameCPU := fmt.Sprintf("scale: %s idle agents (%s): controller CPU for heartbeats", count(k), mode)
	failBoth := func(err error) {
		e.fail(idRSS, nameRSS, err)
		e.fail(idCPU, nameCPU, err)
	}
	c, err := e.startCluster(ctx, "scale-"+string(mode), e.sz.IdleLease)
	if err != nil {
		failBoth(err)
		return
	}
	defer c.close()
	settle := min(time.Second, e.sz.IdleWindow)
	time.Sleep(settle)
	rss0, _ := c.ctl.mem()
	cpuA := c.ctl.cpu()
	time.Sleep(e.sz.IdleWindow)
	idle := c.ctl.cpu() - cpuA

	t := time.Now()
	fl, err := dialFleet(ctx, e.pki, c.ctl.info.Agent, mode, "idle-"+string(mode), k, 4, 32, true, fakeHooks{})
	if err != nil {
		failBoth(err)
		return
	}
	defer fl.close()
	if err := c.api.waitAgents(ctx, k, 2*time.Minute); err != nil {
		failBoth(err)
		return
	}
	connect := time.Since(t)
	time.Sleep(settle)
	cpuB := c.ctl.cpu()
	time.Sleep(e.sz.IdleWindow)
	busy := c.ctl.cpu() - cpuB
	rss1, _ := c.ctl.mem()
	c.ctl.heapProfile()

	per := (float64(rss1) - float64(rss0)) / float64(k)
	at10k := float64(rss0) + per*10000
	detail := fmt.Sprintf("%s MiB before the agents; +%.1f KiB per agent; %s agents connected in %s",
		num(mib(rss0)), per/1024, count(k), connect.Round(time.Millisecond))
	target, verdict := "10k idle agents ≤ 1 GiB", ""
	if k >= 10000 {
		verdict = atMost(mib(rss1), 1024, "MiB")
	} else {
		detail += fmt.Sprintf("; extrapolated to 10k: %s MiB", num(at10k/(1<<20)))
		verdict = atMost(at10k/(1<<20), 1024, "MiB") + " (extrapolated)"
	}
	e.add(Row{ID: idRSS, Name: nameRSS, Value: mib(rss1), Unit: "MiB", Detail: detail,
		Limit: mib(e.memTotal()), LimitUnit: "MiB", LimitName: "RAM", Target: target, Verdict: verdict})

	hbEvery := e.sz.IdleLease / 3
	beats := float64(k) * e.sz.IdleWindow.Seconds() / hbEvery.Seconds()
	net := busy - idle
	e.add(Row{ID: idCPU, Name: nameCPU, Value: 100 * net.Seconds() / e.sz.IdleWindow.Seconds(), Unit: "% of a core",
		Detail: fmt.Sprintf("heartbeat every %s; %.1f µs CPU per heartbeat (transport keep-alives included); idle controller %.2f%%",
			hbEvery, float64(net.Microseconds())/beats, 100*idle.Seconds()/e.sz.IdleWindow.Seconds()),
		Limit: 100 * float64(runtime.NumCPU()), LimitUnit: "% of a core", LimitName: "all cores"})
}

// ---------------------------------------------------------------------
// 7. Deep queue

func (e *env) deep(ctx context.Context) {
	d := count(e.sz.DeepQueue)
	nameDispatch := fmt.Sprintf("deep queue: burn-down of %s high-priority jobs with %s low-priority jobs queued behind them", count(e.sz.DeepProbe), d)
	nameRestart := fmt.Sprintf("deep queue: controller restart to ready with %s jobs queued", d)
	nameRSS := fmt.Sprintf("deep queue: controller RSS with %s jobs queued, after restart", d)
	failAll := func(err error) {
		e.fail("7a", nameDispatch, err)
		e.fail("7b", nameRestart, err)
		e.fail("7c", nameRSS, err)
	}
	c, err := e.startCluster(ctx, "deep", 0)
	if err != nil {
		failAll(err)
		return
	}
	defer c.close()
	settle := min(time.Second, e.sz.IdleWindow)
	time.Sleep(settle)
	rssEmpty, _ := c.ctl.mem()

	hi := `{"command":"true","name":"hi","priority":"high"}`
	var quiet []string // how long each burn-down waited for the controller to be idle
	burn := func(tag string) (float64, error) {
		if _, err := c.api.submitMany(ctx, hi, e.sz.DeepProbe, e.sz.BatchSize); err != nil {
			return 0, err
		}
		// The dispatch cost, not Pebble compacting the jobs just queued:
		// both burn-downs start on an idle controller.
		waited, ok := c.ctl.waitQuiet(ctx, time.Minute)
		q := waited.Round(100 * time.Millisecond).String()
		if !ok {
			q += " (not idle after a minute)"
		}
		quiet = append(quiet, q)
		cnt := newCounter(e.sz.DeepProbe)
		start := time.Now()
		fl, err := dialFleet(ctx, e.pki, c.ctl.info.Agent, transport.ModeQUIC, "deep-"+tag, e.sz.FakeAgents, e.sz.FakeSlots, e.sz.FakeAgents, true,
			fakeHooks{done: func(d *protocol.Dispatch, _ protocol.Outcome) {
				if d.Name == "hi" {
					cnt.add()
				}
			}})
		if err != nil {
			return 0, err
		}
		defer fl.close()
		if err := cnt.wait(ctx, burnWithin(e.sz.DeepProbe)); err != nil {
			return 0, err
		}
		return float64(e.sz.DeepProbe) / time.Since(start).Seconds(), nil
	}
	empty, err := burn("empty")
	if err != nil {
		failAll(err)
		return
	}
	t := time.Now()
	if _, err := c.api.submitMany(ctx, `{"command":"true","name":"deep","priority":"low"}`, e.sz.DeepQueue, e.sz.BatchSize); err != nil {
		failAll(err)
		return
	}
	load := time.Since(t)
	deep, err := burn("deep")
	if err != nil {
		failAll(err)
		return
	}
	e.add(Row{ID: "7a", Name: nameDispatch, Value: deep, Unit: "jobs/s",
		Detail: fmt.Sprintf("%s low-priority jobs queued by batch in %s; each burn-down started once the controller was idle (waited %s)",
			d, load.Round(time.Millisecond), strings.Join(quiet, " and ")),
		Limit: empty, LimitUnit: "jobs/s", LimitName: "the same burn-down with the queue otherwise empty",
		Target: "dispatch cost within 2× of an empty queue (ratio ≥ 0.5)", Verdict: atLeast(deep/empty, 0.5, "× the empty-queue rate")})

	// Restart as an operator would: stop, start, wait for /health. The
	// floor is reading the active jobs straight from the store, measured
	// after the controller stopped again (so on warm, flushed data).
	took, err := c.restart(ctx)
	if err != nil {
		e.fail("7b", nameRestart, err)
		e.fail("7c", nameRSS, err)
		return
	}
	newTook := c.ctl.info.New
	time.Sleep(settle)
	rss, _ := c.ctl.mem()
	c.ctl.heapProfile()
	c.api.close()
	_ = c.ctl.stop()
	t = time.Now()
	queued, err := activeJobs(c.ctlConfig().Data)
	scan := time.Since(t)
	if err != nil {
		e.fail("7b", nameRestart, err)
		e.fail("7c", nameRSS, err)
		return
	}
	verdict := atMost(took.Seconds(), 5, "s")
	if e.sz.DeepQueue < 1_000_000 {
		verdict += " (target is for 1M)"
	}
	e.add(Row{ID: "7b", Name: nameRestart, Value: took.Seconds(), Unit: "s",
		Detail: fmt.Sprintf("exec → /health 200 with %s active jobs; controller.New (store open, WAL replay, queue load) %s", count(queued), newTook.Round(time.Millisecond)),
		Limit:  scan.Seconds(), LimitUnit: "s", LimitName: "store.Open + Active() of the same data afterwards, no controller",
		Target: "≤ 5 s with 1M queued", Verdict: verdict})
	per := math.NaN()
	if queued > 0 {
		per = (float64(rss) - float64(rssEmpty)) / float64(queued)
	}
	e.add(Row{ID: "7c", Name: nameRSS, Value: mib(rss), Unit: "MiB",
		Detail: fmt.Sprintf("empty controller %s MiB; ≈ %s bytes per queued job", num(mib(rssEmpty)), num(per)),
		Limit:  mib(e.memTotal()), LimitUnit: "MiB", LimitName: "RAM"})
}

// activeJobs opens the store in dir and reads what a controller loads
// at start.
func activeJobs(dir string) (int, error) {
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	jobs, err := st.Active()
	return len(jobs), err
}

// scheduleLateness is row 4e: Schedules cron schedules firing every
// minute (SchedCron), all at the same instant, for two occurrences; the lateness of
// each firing is its job's "submitted" event (the scheduler's clock
// when it made the job, in the round that advanced the schedule) minus
// the occurrence. Real clock: it waits for two minute boundaries.
func (e *env) scheduleLateness(ctx context.Context, c *cluster) {
	n := e.sz.Schedules
	name := fmt.Sprintf("schedule lateness: occurrence → job created, %d schedules %q (2 occurrences)", n, e.sz.SchedCron)
	for i := range n {
		body := fmt.Sprintf(`{"name":"bench-%05d","cron":%q,"overlap":"allow","job":{"command":"true","name":"sched"}}`, i, e.sz.SchedCron)
		code, b, err := c.api.do(ctx, "POST", "/schedules", []byte(body))
		if err == nil && code != 201 {
			err = fmt.Errorf("POST /schedules: %d %.200s", code, b)
		}
		if err != nil {
			e.fail("4e", name, err)
			return
		}
	}
	type view struct {
		LastJob   uint64     `json:"last_job"`
		LastFired *time.Time `json:"last_fired"`
		Fired     uint64     `json:"fired"`
	}
	var late []time.Duration
	for round := uint64(1); round <= 2; round++ {
		deadline := time.Now().Add(150 * time.Second)
		var list []view
		for {
			if err := c.api.getJSON(ctx, "/schedules", &list); err != nil {
				e.fail("4e", name, err)
				return
			}
			all := len(list) == n
			for _, v := range list {
				all = all && v.Fired >= round
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				e.fail("4e", name, fmt.Errorf("occurrence %d did not fire for every schedule within 150s", round))
				return
			}
			select {
			case <-ctx.Done():
				e.fail("4e", name, ctx.Err())
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
		for _, v := range list {
			if v.LastFired == nil {
				continue
			}
			// The schedule is read from the scheduler's memory, which
			// is ahead of the store by the firing's commit: a job just
			// made may not be readable for a few milliseconds.
			var evs []store.Event
			var err error
			for try := 0; try < 100; try++ {
				if evs, err = c.api.events(ctx, v.LastJob); err == nil || !strings.Contains(err.Error(), ": 404 ") {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil {
				e.fail("4e", name, err)
				return
			}
			if at, ok := eventTime(evs, "submitted"); ok {
				late = append(late, at.Sub(*v.LastFired))
			}
		}
	}
	if len(late) == 0 {
		e.fail("4e", name, errors.New("no firing was observed"))
		return
	}
	p99 := percentile(late, 0.99)
	e.add(Row{ID: "4e", Name: name, Value: ms(p99), Unit: "ms p99",
		Detail: fmt.Sprintf("p50 %.2f / p99 %.2f / max %.2f ms over %d firings", ms(percentile(late, 0.5)), ms(p99), ms(percentile(late, 1)), len(late)),
		Target: "p99 ≤ 10 ms (as retries)", Verdict: atMost(ms(p99), 10, "ms")})
}
