package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"jobsuite/transport"
)

// Config configures a benchmark run. The zero value (with Sizes from
// DefaultSizes) runs everything.
type Config struct {
	// Dir holds the PKI, the data directories and the logs: it should be
	// on the disk a controller would use. Empty: a new directory under
	// the system temporary directory, removed at the end unless Keep.
	Dir  string
	Keep bool
	// Sizes of every benchmark; see DefaultSizes and SmokeSizes.
	Sizes Sizes
	// Groups to run (submit, capacity, real, latency, log, scale, deep,
	// faults, and the opt-in cluster); empty runs all of Groups.
	Groups []string
	// Jobsuite is the jobsuite binary the cluster group's failover rows
	// run; empty: built with `go build` into Dir.
	Jobsuite string
	// LogLevel of the controller and agent children, which log to files
	// in Dir; default "info", what the controller runs with by default.
	LogLevel string
	// ProfileDir, when set, receives a CPU profile of every controller
	// child: ProfileDir/<group>.pprof.
	ProfileDir string
	// Progress receives a line as each benchmark starts and ends; nil
	// discards them.
	Progress io.Writer
}

// Sizes are the amounts of work each benchmark does.
type Sizes struct {
	Probe time.Duration // length of each machine-limit probe (fsync, Pebble, spawn)
	Phase time.Duration // length of each timed submit phase

	Clients      []int // concurrent keep-alive clients of POST /jobs
	BatchSize    int   // jobs per POST /jobs/batch
	BatchClients int   // concurrent batch clients

	BurnDown   int // jobs burned down by fake agents (capacity)
	FakeAgents int // fake agents in the capacity, latency and deep-queue benchmarks
	FakeSlots  int // slots of each fake agent

	RealAgents int // real agents (each its own process)
	RealSlots  int // slots of each real agent
	TrueJobs   int // `true` jobs run through the real agents

	Rate        int           // offered jobs/s for the latency benchmarks
	RealRate    int           // offered jobs/s of row 4d; 0: half of row 3's rate, at most Rate/2
	LatencyJobs int           // jobs submitted at Rate for the dispatch latency
	TimerJobs   int           // jobs that fail once and are retried after a backoff
	TimerBase   time.Duration // their backoff base (the delay is base ±20%)
	Schedules   int           // schedules firing together (schedule lateness)
	SchedCron   string        // their timing: every minute ("* * * * *"); smoke: @every 1s

	LogBytes int64 // output of the log throughput job

	IdleAgents int           // connected idle fake agents (scale)
	IdleWindow time.Duration // CPU measuring window; also the settling pauses (up to 1s)
	IdleLease  time.Duration // controller lease TTL in the scale benchmark (heartbeats every third)

	DeepQueue int // queued jobs in the deep-queue benchmark
	DeepProbe int // jobs burned down ahead of them (and in an empty queue)

	FaultLease time.Duration // controller lease TTL of the fault benchmark (heartbeats every third)
	FaultKills int           // agents killed (kill -9) while running a job
}

// DefaultSizes are the sizes of `make bench`; full selects the issue's
// large sizes (1M jobs, 10k agents), which take longer.
func DefaultSizes(full bool) Sizes {
	s := Sizes{
		Probe: 2 * time.Second, Phase: 5 * time.Second,
		Clients: []int{1, 16, 64}, BatchSize: 1000, BatchClients: 4,
		BurnDown: 100_000, FakeAgents: 4, FakeSlots: 128,
		RealAgents: 2, RealSlots: 4, TrueJobs: 3000,
		Rate: 1000, LatencyJobs: 5000, TimerJobs: 2000, TimerBase: time.Second, Schedules: 1000, SchedCron: "* * * * *",
		LogBytes:   1 << 30,
		IdleAgents: 1000, IdleWindow: 10 * time.Second, IdleLease: 15 * time.Second,
		DeepQueue: 100_000, DeepProbe: 10_000,
		FaultLease: 3 * time.Second, FaultKills: 5,
	}
	if full {
		s.BurnDown = 1_000_000
		s.IdleAgents = 10_000
		s.DeepQueue = 1_000_000
	}
	return s
}

// SmokeSizes are tiny sizes that run every benchmark in seconds: they
// check the harness works, not how fast anything is.
func SmokeSizes() Sizes {
	return Sizes{
		Probe: 200 * time.Millisecond, Phase: 300 * time.Millisecond,
		Clients: []int{1, 4}, BatchSize: 50, BatchClients: 2,
		BurnDown: 300, FakeAgents: 2, FakeSlots: 16,
		RealAgents: 1, RealSlots: 2, TrueJobs: 20,
		Rate: 200, LatencyJobs: 40, TimerJobs: 20, TimerBase: 200 * time.Millisecond, Schedules: 10, SchedCron: "@every 1s",
		LogBytes:   1 << 20,
		IdleAgents: 5, IdleWindow: 300 * time.Millisecond, IdleLease: 600 * time.Millisecond,
		DeepQueue: 500, DeepProbe: 100,
		FaultLease: 600 * time.Millisecond, FaultKills: 1,
	}
}

// Groups lists the benchmark groups in the order they run, keyed by
// the item number.
var Groups = []string{"submit", "capacity", "real", "latency", "log", "scale", "deep", "faults"}

// OptInGroups run only when named: cluster (issue 14's rows 9a–9h and
// 9p, three controllers in cluster mode, about 10 more minutes),
// cluster-output (its rows 9h, 9p and 9d alone), cluster-log (row 9d
// alone, without a limit: for before/after pairs), cluster-log-raft (row
// 9d-raft: 9d with the nodes' -output-channel=false, output in the raft
// rounds as before the channel was the default), cluster-capacity (row
// 9c alone) and cluster-capacity-raft (9c-raft: 9c with
// -output-channel=false), cluster-logstore (rows 9l-wal and 9l-bolt:
// raft-wal and raft-boltdb/v2 alone, logstore.go), and cluster-failover (rows
// 9e and 9f alone, QUIC and TCP agents).
var OptInGroups = []string{"cluster", "cluster-output", "cluster-log", "cluster-log-raft", "cluster-capacity", "cluster-capacity-raft", "cluster-failover", "cluster-logstore"}

// Row is one line of the report: a figure, the machine limit it is
// compared with (measured in the same run) and the target.
type Row struct {
	ID     string // issue item and letter, e.g. "1a"
	Name   string
	Value  float64 // NaN when the benchmark failed
	Unit   string
	Detail string // more figures (percentiles, per-agent costs)

	Limit     float64 // 0 when there is no limit to compare with
	LimitUnit string
	LimitName string

	Target  string // the target, if any
	Verdict string // "met", "missed …", or "" without a target

	Err error
}

// Ratio is Value/Limit, or NaN without a limit. For throughputs it is
// the share of the machine limit reached; for latencies, times and
// memory it is how many times the limit the figure is.
func (r Row) Ratio() float64 {
	if r.Limit <= 0 || math.IsNaN(r.Value) {
		return math.NaN()
	}
	return r.Value / r.Limit
}

// Report is the result of a run.
type Report struct {
	Machine Machine
	Sizes   Sizes
	Rows    []Row
	Limits  []Row // the machine limits measured, for reference
	Took    time.Duration
	// LoadAfter is /proc/loadavg at the end.
	LoadAfter string
}

// env is the state shared by the benchmark groups of one run.
type env struct {
	cfg Config
	sz  Sizes
	dir string
	pki *pki
	out io.Writer

	rows   []Row
	limits limits
	// outputInRaft starts cluster nodes with -output-channel=false
	// (group cluster-log-raft).
	outputInRaft bool
}

// Run runs the benchmarks and returns the report. A benchmark that
// fails records its error in its row; Run itself fails only when it
// cannot start at all or ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Sizes.Probe == 0 {
		cfg.Sizes = DefaultSizes(false)
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	groups := cfg.Groups
	if len(groups) == 0 {
		groups = Groups
	}
	all := append(slices.Clone(Groups), OptInGroups...)
	for _, g := range groups {
		if !contains(all, g) {
			return nil, fmt.Errorf("bench: unknown group %q (have %s)", g, strings.Join(all, ", "))
		}
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "jobsuite-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		dir = d
		if !cfg.Keep {
			defer os.RemoveAll(dir)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		if cfg.ProfileDir, err = filepath.Abs(cfg.ProfileDir); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	p, err := newPKI(filepath.Join(dir, "pki"), cfg.Sizes.RealAgents)
	if err != nil {
		return nil, fmt.Errorf("bench: PKI: %w", err)
	}
	e := &env{cfg: cfg, sz: cfg.Sizes, dir: dir, pki: p, out: cfg.Progress}
	rep := &Report{Machine: describeMachine(dir), Sizes: cfg.Sizes}
	start := time.Now()
	for _, g := range all {
		if !contains(groups, g) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e.progress("== %s", g)
		t := time.Now()
		e.run(ctx, g)
		e.progress("== %s done in %s", g, time.Since(t).Round(time.Millisecond))
	}
	rep.Rows = e.rows
	rep.Limits = e.limits.rows()
	rep.Took = time.Since(start)
	rep.LoadAfter = loadAvg()
	return rep, ctx.Err()
}

func (e *env) run(ctx context.Context, group string) {
	switch group {
	case "submit":
		e.submit(ctx)
	case "capacity":
		e.capacity(ctx)
	case "real":
		e.real(ctx)
	case "latency":
		e.latency(ctx)
	case "log":
		e.logs(ctx)
	case "scale":
		e.scale(ctx)
	case "deep":
		e.deep(ctx)
	case "faults":
		e.faults(ctx)
	case "cluster":
		e.cluster(ctx)
	case "cluster-output":
		e.clusterOutput(ctx)
	case "cluster-log":
		e.clusterLog(ctx, 0, 1)
	case "cluster-failover":
		e.failover(ctx, transport.ModeQUIC, "")
		e.failover(ctx, transport.ModeTCP, "-tcp")
	case "cluster-log-raft":
		e.outputInRaft = true
		e.clusterLog(ctx, 0, 1)
		e.outputInRaft = false
	case "cluster-capacity":
		e.clusterCapacity(ctx)
	case "cluster-logstore":
		e.logStores(ctx)
	case "cluster-capacity-raft":
		e.outputInRaft = true
		e.clusterCapacity(ctx)
		e.outputInRaft = false
	}
}

func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(e.out, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// add records a row and prints it as progress.
func (e *env) add(r Row) {
	e.rows = append(e.rows, r)
	if r.Err != nil {
		e.progress("%s %s: error: %v", r.ID, r.Name, r.Err)
		return
	}
	e.progress("%s %s: %s %s  %s", r.ID, r.Name, num(r.Value), r.Unit, r.Detail)
}

// fail records a failed row.
func (e *env) fail(id, name string, err error) {
	e.add(Row{ID: id, Name: name, Value: math.NaN(), Err: err})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// num formats a figure: thousands separators from 100 up, three
// significant digits below.
func num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case math.Abs(v) >= 100:
		s := fmt.Sprintf("%.0f", v)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		if neg {
			return "-" + b.String()
		}
		return b.String()
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// count formats an integer with thousands separators.
func count(n int) string {
	if n < 100 && n > -100 {
		return fmt.Sprint(n)
	}
	return num(float64(n))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// atLeast and atMost judge a figure against a target.
func atLeast(v, target float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	if v >= target {
		return "met"
	}
	return fmt.Sprintf("missed by %.0f%% (%s of %s %s)", 100*(1-v/target), num(v), num(target), unit)
}

func atMost(v, target float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	if v <= target {
		return "met"
	}
	return fmt.Sprintf("missed: %s %s is %.1f× the %s %s allowed", num(v), unit, v/target, num(target), unit)
}

// Markdown writes the report as Markdown: the machine, the table and
// the limits measured.
func (r *Report) Markdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "Machine: %s, %d logical CPUs, %.1f GiB RAM, %s, %s. Data directory %s on %s.\n",
		m.CPU, m.Cores, float64(m.MemTotal)/(1<<30), m.Kernel, m.Go, m.DataDir, m.DataFS)
	fmt.Fprintf(w, "Run started %s, took %s; load average %s at the start, %s at the end. Durability on: every transition is a synced Pebble batch.\n\n",
		m.StartedAt.Format(time.RFC3339), r.Took.Round(time.Second), m.LoadAvg, r.LoadAfter)
	fmt.Fprintln(w, "| # | benchmark | result | detail | machine limit (same run) | ratio | target | verdict |")
	fmt.Fprintln(w, "|---|---|--:|---|---|--:|---|---|")
	for _, row := range r.Rows {
		result := num(row.Value) + " " + row.Unit
		if row.Err != nil {
			result = "error"
			row.Detail = row.Err.Error()
		}
		limit, ratio := "—", "—"
		if row.Limit > 0 {
			limit = fmt.Sprintf("%s %s (%s)", num(row.Limit), row.LimitUnit, row.LimitName)
			if !math.IsNaN(row.Ratio()) {
				ratio = fmt.Sprintf("%.2f", row.Ratio())
				if row.Ratio() < 0.1 {
					ratio = fmt.Sprintf("%.2g", row.Ratio())
				}
			}
		}
		target, verdict := row.Target, row.Verdict
		if target == "" {
			target, verdict = "—", ""
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			row.ID, cell(row.Name), cell(result), cell(row.Detail), cell(limit), ratio, cell(target), cell(verdict))
	}
	if len(r.Limits) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Machine limits measured in this run:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| limit | value | detail |")
		fmt.Fprintln(w, "|---|--:|---|")
		for _, l := range r.Limits {
			fmt.Fprintf(w, "| %s | %s %s | %s |\n", cell(l.Name), num(l.Value), l.Unit, cell(l.Detail))
		}
	}
}

// cell escapes the pipes of a table cell.
func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
