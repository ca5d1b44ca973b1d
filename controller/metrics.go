package controller

import (
	"context"
	"errors"
	"iter"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"jobsuite/controller/hub"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
	"jobsuite/controller/webhook"
)

// metrics is the controller's Prometheus instrumentation, in a registry
// of its own (never the global one), served at GET /metrics on the API
// and, with Config.MetricsAddr, on a plain-HTTP listener.
//
// Job counts are kept up to date by the scheduler, which reports each
// transition (the sched.Metrics interface: Transition, under the
// scheduler's mutex, with atomic Prometheus updates), so a scrape never
// scans the store or the queue. Agents, followers and Pebble's figures
// are read at scrape time by liveCollector. The README's Metrics section
// lists every metric; keep it in step.
//
// Every method is safe on a nil *metrics (schedulers built by tests
// without a Server have none).
type metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	jobs            *prometheus.GaugeVec   // state: non-terminal states
	queueDepth      *prometheus.GaugeVec   // priority: low, mid, high, other
	submissions     prometheus.Counter     // jobs created
	completions     *prometheus.CounterVec // result: terminal states
	retries         prometheus.Counter     // attempts that ended with a retry scheduled
	lost            prometheus.Counter     // attempts that ended lost
	dispatchLatency prometheus.Histogram   // queued → dispatched, seconds
	runTime         prometheus.Histogram   // attempt run time, seconds
	logBytesTotal   prometheus.Counter     // output bytes stored
	http            *httpMetrics           // API requests (httpmetrics.go)

	// Schedules (issue 17): lateness of every firing, and per schedule
	// the jobs fired and the occurrences skipped. The schedule label is
	// bounded: the first maxScheduleSeries names seen get their own
	// series, later ones share schedule="_other" (scheduleLabel).
	scheduleLateness prometheus.Histogram
	scheduleFired    *prometheus.CounterVec // schedule
	scheduleSkipped  *prometheus.CounterVec // schedule, reason
	schedMu          sync.Mutex
	schedNames       map[string]bool // the names with series of their own

	// The plain-HTTP listener of Config.MetricsAddr, if any.
	plain plainMetrics
}

// Label values the vectors are created with, so every series exists
// (at 0) from the start.
var (
	metricStates     = []store.State{store.Queued, store.Waiting, store.Dispatched, store.Running, store.Blocked}
	metricResults    = []store.State{store.Completed, store.Failed, store.Timeout, store.Cancelled}
	metricPriorities = []string{"low", "mid", "high", "other"}
)

// newMetrics builds the registry and hooks it into the scheduler: job
// counts start from what the scheduler loaded and follow its
// transitions from then on.
func newMetrics(log hclog.Logger, sched *sched.Scheduler, h *hub.Hub, st storeStats, o metricsOptions) *metrics {
	m := &metrics{
		reg:  prometheus.NewRegistry(),
		http: newHTTPMetrics(),
		jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jobsuite_jobs",
			Help: "Jobs not yet finished, by state (queued, waiting, dispatched, running, blocked).",
		}, []string{"state"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jobsuite_queue_depth",
			Help: "Queued jobs by priority: low (25), mid (50), high (75), other (any other number).",
		}, []string{"priority"}),
		submissions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_submissions_total",
			Help: "Jobs submitted (a repeated idempotency key does not count).",
		}),
		completions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobsuite_completions_total",
			Help: "Jobs that finished, by result (completed, failed, timeout, cancelled).",
		}, []string{"result"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_retries_total",
			Help: "Attempts that failed, timed out or were lost and were followed by a retry.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_lost_attempts_total",
			Help: "Attempts lost: their agent disconnected or stopped renewing the lease.",
		}),
		dispatchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobsuite_dispatch_latency_seconds",
			Help:    "Time from entering the queue to being dispatched to an agent, per attempt.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}),
		runTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobsuite_attempt_duration_seconds",
			Help:    "Run time of ended attempts: process start to exit as the agent measured it (start to loss for a lost attempt).",
			Buckets: []float64{.01, .1, .5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 24 * 3600},
		}),
		logBytesTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_log_bytes_total",
			Help: "Job output bytes stored.",
		}),
		scheduleLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jobsuite_schedule_lateness_seconds",
			Help:    "How long after its occurrence a schedule's job was created (run-now not counted; a caught-up occurrence counts the downtime).",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}),
		scheduleFired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobsuite_schedule_fired_total",
			Help: "Jobs created by each schedule (run-now included). The first 100 schedule names seen have a series each; the rest share schedule=\"_other\".",
		}, []string{"schedule"}),
		scheduleSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobsuite_schedule_skipped_total",
			Help: "Occurrences of each schedule that created no job, by reason: overlap (the previous job had not ended), catch_up (missed while no controller ran), disk (the disk was nearly full). Schedule names bounded as for jobsuite_schedule_fired_total.",
		}, []string{"schedule", "reason"}),
		schedNames: map[string]bool{},
	}
	for _, st := range metricStates {
		m.jobs.WithLabelValues(string(st))
	}
	for _, st := range metricResults {
		m.completions.WithLabelValues(string(st))
	}
	for _, p := range metricPriorities {
		m.queueDepth.WithLabelValues(p)
	}
	m.reg.MustRegister(
		m.jobs, m.queueDepth, m.submissions, m.completions, m.retries, m.lost,
		m.dispatchLatency, m.runTime, m.logBytesTotal,
		m.scheduleLateness, m.scheduleFired, m.scheduleSkipped,
		m.http.requests, m.http.duration, buildInfo(o.version),
		newLiveCollector(sched, h, st, o.disk, o.maxAgents),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg, // adds promhttp_metric_handler_errors_total
		MaxRequestsInFlight: 4,
	})

	if o.cluster != nil {
		m.reg.MustRegister(clusterCollector{o.cluster})
	}
	if o.outbox != nil {
		m.reg.MustRegister(outboxCollector{o.outbox})
	}
	sched.SetMetrics(m)
	return m
}

// clusterCollector reads the node's raft figures at scrape time.
type clusterCollector struct{ c clusterView }

var (
	descClusterLeader      = prometheus.NewDesc("jobsuite_cluster_leader", "1 if this controller leads the cluster (on the API a follower forwards /metrics to the leader; the plain-HTTP -metrics listener answers for its own node).", nil, nil)
	descClusterTerm        = prometheus.NewDesc("jobsuite_cluster_term", "The current raft term.", nil, nil)
	descClusterCommitIndex = prometheus.NewDesc("jobsuite_cluster_commit_index", "The last raft entry known committed.", nil, nil)
	descClusterApplied     = prometheus.NewDesc("jobsuite_cluster_applied_index", "The last raft entry this controller's store applied.", nil, nil)
	descClusterLastIndex   = prometheus.NewDesc("jobsuite_cluster_last_index", "The last entry in this controller's raft log.", nil, nil)
	descClusterVoters      = prometheus.NewDesc("jobsuite_cluster_voters", "Voting members of the cluster's configuration.", nil, nil)
	descClusterContact     = prometheus.NewDesc("jobsuite_cluster_last_contact_seconds", "How long ago this follower last heard from the leader (absent on the leader and before any contact); scrape each node's -metrics listener to see every follower's.", nil, nil)
	descClusterLag         = prometheus.NewDesc("jobsuite_cluster_follower_lag_entries", "On the leader: how many entries each voter's store is behind the leader's last index, as last reported (at most 100 ms old).", []string{"peer"}, nil)
	descClusterLagBytes    = prometheus.NewDesc("jobsuite_cluster_follower_lag_bytes", "On the leader: the bytes of this term's entries past each voter's applied index.", []string{"peer"}, nil)
	descClusterPeerContact = prometheus.NewDesc("jobsuite_cluster_peer_last_contact_seconds", "On the leader: how long ago each voter last heard from the leader — what the voter said in its last status report (at most 100 ms old) plus that report's age, so it grows while a voter does not answer.", []string{"peer"}, nil)
	descClusterLagLive     = prometheus.NewDesc("jobsuite_cluster_follower_live", "On the leader: 1 if the voter counts for the follower-lag bound (reported in the last 2 s and, while behind, applying), 0 if it is ignored as dead or stuck.", []string{"peer"}, nil)
	descClusterHeld        = prometheus.NewDesc("jobsuite_cluster_admission_held_seconds_total", "Time the follower-lag bound held new rounds (a voter was too far behind) since this controller started.", nil, nil)
	descClusterHolds       = prometheus.NewDesc("jobsuite_cluster_admission_holds_total", "Times the follower-lag bound began to hold new rounds since this controller started.", nil, nil)
	descClusterWatches     = prometheus.NewDesc("jobsuite_cluster_watch_sessions", "Agents' watch sessions this controller serves: agents attached to the leader that it will tell when another leader takes over (on a follower; scrape each node's -metrics listener).", nil, nil)
)

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterLeader, descClusterTerm, descClusterCommitIndex, descClusterApplied, descClusterLastIndex, descClusterVoters, descClusterContact, descClusterLag, descClusterLagBytes, descClusterLagLive, descClusterPeerContact, descClusterHeld, descClusterHolds, descClusterWatches} {
		ch <- d
	}
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.c.stats()
	leader := 0.0
	if s.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descClusterLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descClusterTerm, prometheus.GaugeValue, float64(s.Term))
	ch <- prometheus.MustNewConstMetric(descClusterCommitIndex, prometheus.GaugeValue, float64(s.CommitIndex))
	ch <- prometheus.MustNewConstMetric(descClusterApplied, prometheus.GaugeValue, float64(s.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(descClusterLastIndex, prometheus.GaugeValue, float64(s.LastIndex))
	ch <- prometheus.MustNewConstMetric(descClusterVoters, prometheus.GaugeValue, float64(s.Voters))
	if s.LastContact >= 0 {
		ch <- prometheus.MustNewConstMetric(descClusterContact, prometheus.GaugeValue, s.LastContact.Seconds())
	}
	for _, l := range s.Lags {
		live := 0.0
		if l.Live {
			live = 1
		}
		ch <- prometheus.MustNewConstMetric(descClusterLag, prometheus.GaugeValue, float64(l.Entries), l.Peer)
		ch <- prometheus.MustNewConstMetric(descClusterLagBytes, prometheus.GaugeValue, float64(l.Bytes), l.Peer)
		ch <- prometheus.MustNewConstMetric(descClusterLagLive, prometheus.GaugeValue, live, l.Peer)
		if l.LastContact >= 0 {
			ch <- prometheus.MustNewConstMetric(descClusterPeerContact, prometheus.GaugeValue, l.LastContact.Seconds(), l.Peer)
		}
	}
	ch <- prometheus.MustNewConstMetric(descClusterHeld, prometheus.CounterValue, s.Held.Seconds())
	ch <- prometheus.MustNewConstMetric(descClusterHolds, prometheus.CounterValue, float64(s.Holds))
	ch <- prometheus.MustNewConstMetric(descClusterWatches, prometheus.GaugeValue, float64(s.Watches))
}

// outboxCollector reads the webhook outbox's figures at scrape time.
type outboxCollector struct{ stats func() webhook.Stats }

var (
	descWebhookPending    = prometheus.NewDesc("jobsuite_webhook_deliveries_pending", "Webhook deliveries waiting in the outbox or in flight.", nil, nil)
	descWebhookDeliveries = prometheus.NewDesc("jobsuite_webhook_deliveries_total", "Webhook delivery outcomes since this controller started leading: delivered, retried (a try failed and was scheduled again), failed (given up).", []string{"result"}, nil)
)

func (c outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWebhookPending
	ch <- descWebhookDeliveries
}

func (c outboxCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(descWebhookPending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(descWebhookDeliveries, prometheus.CounterValue, float64(s.Delivered), "delivered")
	ch <- prometheus.MustNewConstMetric(descWebhookDeliveries, prometheus.CounterValue, float64(s.Retried), "retried")
	ch <- prometheus.MustNewConstMetric(descWebhookDeliveries, prometheus.CounterValue, float64(s.Failed), "failed")
}

// CountAll adds jobs to the state and queue depth gauges, as count(j, 1)
// for each would, counting in plain maps and setting each gauge once: a
// labelled gauge's lookup costs more than the rest, and a controller
// starts with up to millions of jobs (scheduler.load).
func (m *metrics) CountAll(jobs iter.Seq[*store.Job]) {
	states := map[store.State]float64{}
	depth := map[string]float64{}
	for j := range jobs {
		if j.State.Terminal() {
			continue
		}
		states[j.State]++
		if j.State == store.Queued {
			depth[priorityBucket(j.Priority)]++
		}
	}
	for st, n := range states {
		m.jobs.WithLabelValues(string(st)).Add(n)
	}
	for p, n := range depth {
		m.queueDepth.WithLabelValues(p).Add(n)
	}
}

// count adds d to the gauges job j's state counts in.
func (m *metrics) count(j *store.Job, d float64) {
	if j.State.Terminal() {
		return
	}
	m.jobs.WithLabelValues(string(j.State)).Add(d)
	if j.State == store.Queued {
		m.queueDepth.WithLabelValues(priorityBucket(j.Priority)).Add(d)
	}
}

// priorityBucket is the queue-depth label of priority p.
func priorityBucket(p int) string {
	if name := priorityName(p); name != "" {
		return name
	}
	return "other"
}

// transition counts one job transition (prev is nil for a submission).
// The scheduler calls it from transition, under its mutex.
// maxScheduleSeries bounds the schedule label of the schedule metrics:
// the first this many names seen (since the controller started) get
// series of their own, the others share "_other". Deleted schedules
// keep theirs until a restart.
const maxScheduleSeries = 100

// scheduleLabel is name's value of the schedule label.
func (m *metrics) scheduleLabel(name string) string {
	m.schedMu.Lock()
	defer m.schedMu.Unlock()
	if m.schedNames[name] {
		return name
	}
	if len(m.schedNames) < maxScheduleSeries {
		m.schedNames[name] = true
		return name
	}
	return "_other"
}

// ScheduleFired is sched.ScheduleMetrics'.
func (m *metrics) ScheduleFired(name string, lateness time.Duration, manual bool) {
	if m == nil {
		return
	}
	m.scheduleFired.WithLabelValues(m.scheduleLabel(name)).Inc()
	if !manual {
		m.scheduleLateness.Observe(max(lateness, 0).Seconds())
	}
}

// ScheduleSkipped is sched.ScheduleMetrics'.
func (m *metrics) ScheduleSkipped(name, why string, n int) {
	if m == nil {
		return
	}
	m.scheduleSkipped.WithLabelValues(m.scheduleLabel(name), why).Add(float64(n))
}

func (m *metrics) Transition(prev, next *store.Job) {
	if m == nil {
		return
	}
	var prevState store.State
	var pc *store.Attempt
	if prev == nil {
		m.submissions.Inc()
	} else {
		prevState = prev.State
		pc = prev.Current()
		m.count(prev, -1)
	}
	m.count(next, 1)
	if next.State.Terminal() && !prevState.Terminal() {
		m.completions.WithLabelValues(string(next.State)).Inc()
	}
	if next.State == store.Waiting && prevState != store.Waiting {
		m.retries.Inc()
	}
	c := next.Current()
	if c == nil {
		return
	}
	newAttempt := pc == nil || pc.Number != c.Number
	if next.State == store.Dispatched && newAttempt && !c.QueuedAt.IsZero() && !c.DispatchedAt.IsZero() {
		m.dispatchLatency.Observe(max(c.DispatchedAt.Sub(c.QueuedAt), 0).Seconds())
	}
	if c.Outcome != "" && (newAttempt || pc.Outcome == "") {
		if c.Outcome == store.OutcomeLost {
			m.lost.Inc()
		}
		switch {
		case c.Duration > 0:
			m.runTime.Observe(c.Duration.Seconds())
		case !c.StartedAt.IsZero() && c.FinishedAt.After(c.StartedAt):
			m.runTime.Observe(c.FinishedAt.Sub(c.StartedAt).Seconds())
		}
	}
}

// logBytes counts n bytes of output stored.
func (m *metrics) LogBytes(n int) {
	if m == nil {
		return
	}
	m.logBytesTotal.Add(float64(n))
}

// metricsOptions are the Config settings the metrics use.
type metricsOptions struct {
	version   string               // jobsuite_build_info's version
	maxAgents int                  // per-agent series for at most this many agents; 0: none
	disk      *diskGuard           // the jobsuite_disk_* series; nil: zeros
	cluster   clusterView          // the jobsuite_cluster_* series; nil (a single controller): none
	outbox    func() webhook.Stats // the jobsuite_webhook_* series; nil: none
}

// buildInfo is jobsuite_build_info: 1, with the release, the Go version
// and the VCS revision the binary was built from (if Go recorded one).
func buildInfo(version string) prometheus.Collector {
	if version == "" {
		version = "unknown"
	}
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" {
				revision = kv.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "jobsuite_build_info",
		Help:        "Always 1: the jobsuite release, Go version and VCS revision of this controller.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "revision": revision},
	})
	g.Set(1)
	return g
}

// storeStats is what the metrics need of the store.
type storeStats interface {
	Metrics() store.Stats
}

// liveCollector reads, at scrape time, what is cheap to read then and
// awkward to keep counted: the connected agents and their slots, the log
// followers, and Pebble's figures.
type liveCollector struct {
	sched     *sched.Scheduler
	hub       *hub.Hub
	guard     *diskGuard
	st        storeStats
	maxAgents int // per-agent series for at most this many agents

	agents, slotsUsed, slotsFree, followers       *prometheus.Desc
	disk, compactions, writeStalls, memtableBytes *prometheus.Desc
	diskFree, diskFloor, diskLow, diskRefused     *prometheus.Desc

	// Per connected agent (label agent), the first maxAgents by name.
	agentInfo, agentSlots, agentRunning, agentDraining, agentHeartbeat *prometheus.Desc
	agentsUnexported                                                   *prometheus.Desc
}

func newLiveCollector(sched *sched.Scheduler, h *hub.Hub, st storeStats, disk *diskGuard, maxAgents int) *liveCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	a := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{"agent"}, labels...), nil)
	}
	return &liveCollector{
		sched: sched, hub: h, st: st, guard: disk, maxAgents: maxAgents,
		agents:        d("jobsuite_agents_connected", "Agents connected now."),
		slotsUsed:     d("jobsuite_agent_slots_used", "Slots of connected agents that hold an attempt, summed over agents."),
		slotsFree:     d("jobsuite_agent_slots_free", "Slots of connected agents that could take a job now (draining agents have none), summed over agents."),
		followers:     d("jobsuite_websocket_followers", "WebSocket log followers connected now (CLI logs -f, browsers)."),
		disk:          d("jobsuite_store_disk_usage_bytes", "Bytes the Pebble store uses on disk."),
		compactions:   d("jobsuite_store_compactions_total", "Pebble compactions since the controller started."),
		writeStalls:   d("jobsuite_store_write_stalls_total", "Pebble write stalls (writes held back for compactions to catch up) since the controller started."),
		memtableBytes: d("jobsuite_store_memtable_bytes", "Bytes held by Pebble's memtables."),
		diskFree:      d("jobsuite_disk_free_bytes", "Free bytes on the data directory's file system, at the last reading."),
		diskFloor:     d("jobsuite_disk_min_free_bytes", "The floor of free space (-min-free-bytes): below it new jobs, output and dispatch are refused; 0: off."),
		diskLow:       d("jobsuite_disk_low", "1 while new jobs, output and dispatch are refused because free space is below the floor, else 0."),
		diskRefused:   d("jobsuite_disk_refusals_total", "New jobs and output chunks refused because free space was below the floor."),

		// Per agent (metricsAgents bounds them).
		agentInfo:        a("jobsuite_connected_agent_info", "Always 1, per connected agent: its version and transport (quic or tcp).", "version", "transport"),
		agentSlots:       a("jobsuite_connected_agent_slots", "Jobs the connected agent runs at once."),
		agentRunning:     a("jobsuite_connected_agent_running", "Attempts the connected agent holds."),
		agentDraining:    a("jobsuite_connected_agent_draining", "1 while the connected agent is draining (it gets no new jobs), else 0."),
		agentHeartbeat:   a("jobsuite_connected_agent_last_heartbeat_timestamp_seconds", "When the connected agent was last heard from, in Unix seconds."),
		agentsUnexported: d("jobsuite_connected_agents_unexported", "Connected agents beyond the controller's -metrics-agents, which have no per-agent series."),
	}
}

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.agents, c.slotsUsed, c.slotsFree, c.followers, c.disk, c.compactions, c.writeStalls, c.memtableBytes,
		c.diskFree, c.diskFloor, c.diskLow, c.diskRefused,
		c.agentInfo, c.agentSlots, c.agentRunning, c.agentDraining, c.agentHeartbeat, c.agentsUnexported} {
		ch <- d
	}
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	load, each := c.sched.Capacity(c.maxAgents > 0)
	agents, used, free := load.Agents, load.Used, load.Free
	followers := c.hub.Followers()
	st := c.st.Metrics()

	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(c.agents, float64(agents))
	gauge(c.slotsUsed, float64(used))
	gauge(c.slotsFree, float64(free))
	gauge(c.followers, float64(followers))
	gauge(c.disk, float64(st.DiskBytes))
	ch <- prometheus.MustNewConstMetric(c.compactions, prometheus.CounterValue, float64(st.Compactions))
	ch <- prometheus.MustNewConstMetric(c.writeStalls, prometheus.CounterValue, float64(st.WriteStalls))
	gauge(c.memtableBytes, float64(st.MemtableBytes))
	diskFree, floor, low, refused := c.guard.state()
	gauge(c.diskFree, float64(diskFree))
	gauge(c.diskFloor, float64(floor))
	lowV := 0.0
	if low {
		lowV = 1
	}
	gauge(c.diskLow, lowV)
	ch <- prometheus.MustNewConstMetric(c.diskRefused, prometheus.CounterValue, float64(refused))

	// Per agent: the first maxAgents by name, so the series stay bounded
	// however many agents connect (and stable from scrape to scrape).
	slices.SortFunc(each, func(a, b sched.Agent) int { return strings.Compare(a.Session.Name(), b.Session.Name()) })
	unexported := max(agents-c.maxAgents, 0)
	if len(each) > c.maxAgents {
		each = each[:c.maxAgents]
	}
	for _, ag := range each {
		a := conn(ag.Session)
		agent := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{a.name}, labels...)...)
		}
		agent(c.agentInfo, 1, a.version, a.transport)
		agent(c.agentSlots, float64(a.slots))
		agent(c.agentRunning, float64(ag.Running))
		draining := 0.0
		if ag.Draining {
			draining = 1
		}
		agent(c.agentDraining, draining)
		agent(c.agentHeartbeat, float64(ag.LastSeen.UnixNano())/1e9)
	}
	gauge(c.agentsUnexported, float64(unexported))
}

// handleMetrics serves the metrics in the Prometheus text format.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if s.metrics == nil {
		writeError(w, http.StatusServiceUnavailable, "metrics are not set up")
		return
	}
	s.metrics.handler.ServeHTTP(w, r) // answers 503 when too many scrapes run at once
}

// MetricsAddr is the address of the plain-HTTP metrics listener, or ""
// without Config.MetricsAddr.
func (s *Server) MetricsAddr() string {
	if s.metrics == nil {
		return ""
	}
	return s.metrics.plain.addr()
}

// listen binds the plain-HTTP metrics listener when addr is set.
func (m *metrics) listen(addr string, log hclog.Logger) error {
	return m.plain.listen(addr, m.handler, log)
}

// serve serves the plain-HTTP listener, if any, until ctx is done.
func (m *metrics) serve(ctx context.Context, log hclog.Logger) {
	if m == nil {
		return
	}
	m.plain.serve(ctx, log)
}

// plainMetrics is a plain-HTTP listener serving GET /metrics only,
// without TLS or authentication (Config.MetricsAddr): a single
// controller's, or a cluster node's, which outlives its terms.
type plainMetrics struct {
	ln  net.Listener
	srv *http.Server
}

// listen binds the listener when addr is set.
func (p *plainMetrics) listen(addr string, h http.Handler, log hclog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	p.ln = ln
	p.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Debug}),
	}
	return nil
}

// addr is the bound address, or "" without a listener.
func (p *plainMetrics) addr() string {
	if p.ln == nil {
		return ""
	}
	return p.ln.Addr().String()
}

// serve serves the listener, if any, until ctx is done.
func (p *plainMetrics) serve(ctx context.Context, log hclog.Logger) {
	if p.srv == nil {
		return
	}
	log.Warn("serving metrics over plain HTTP without authentication", "addr", "http://"+p.ln.Addr().String()+"/metrics")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "error", err)
		}
	}()
	<-ctx.Done()
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(shutCtx)
	_ = p.srv.Close()
	<-done
}
