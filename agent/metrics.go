package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the agent's Prometheus instrumentation, in a registry of
// its own (never the global one), served over plain HTTP at
// Config.MetricsAddr. Counters are bumped where things happen; the
// gauges are read from the agent's state at scrape time. The README's
// Metrics section lists every metric; keep it in step.
//
// Every method is safe on a nil *metrics.
type metrics struct {
	reg *prometheus.Registry

	started    prometheus.Counter
	finished   *prometheus.CounterVec // outcome
	outputB    prometheus.Counter
	reconnects prometheus.Counter
	redirects  prometheus.Counter
	fencedMsgs prometheus.Counter
	spoolErrs  prometheus.Counter

	ln  net.Listener
	srv *http.Server
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_agent_jobs_started_total",
			Help: "Job processes started.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobsuite_agent_jobs_finished_total",
			Help: "Attempts that ended on this agent, by outcome (completed, failed, timeout, cancelled).",
		}, []string{"outcome"}),
		outputB: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_agent_output_bytes_total",
			Help: "Output bytes jobs wrote (stdout and stderr), before any -max-log-bytes cap.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_agent_reconnects_total",
			Help: "Times the connection to the controller was lost (or could not be made) and the agent tried again.",
		}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_agent_redirects_total",
			Help: "Redirects received from controllers that were not the leader of their cluster.",
		}),
		fencedMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_agent_fenced_messages_total",
			Help: "Dispatch and Cancel messages dropped because they came from a deposed leader (a term older than one seen).",
		}),
		spoolErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jobsuite_agent_spool_write_errors_total",
			Help: "Writes of job output to the state directory that failed (disk full or failing); each is tried again.",
		}),
	}
	for _, o := range []Outcome{OutcomeCompleted, OutcomeFailed, OutcomeTimeout, OutcomeCancelled} {
		m.finished.WithLabelValues(o.String())
	}
	m.reg.MustRegister(m.started, m.finished, m.outputB, m.reconnects, m.redirects, m.fencedMsgs, m.spoolErrs,
		&stateCollector{a: a,
			running:   prometheus.NewDesc("jobsuite_agent_jobs_running", "Jobs whose process has not ended yet.", nil, nil),
			held:      prometheus.NewDesc("jobsuite_agent_attempts_held", "Attempts held: running, or ended with a result the controller has not acknowledged.", nil, nil),
			slots:     prometheus.NewDesc("jobsuite_agent_slots", "Jobs the agent runs at once (-slots).", nil, nil),
			unacked:   prometheus.NewDesc("jobsuite_agent_spool_unacked_bytes", "Output bytes spooled on disk that the controller has not acknowledged yet.", nil, nil),
			connected: prometheus.NewDesc("jobsuite_agent_connected", "1 while a session with the controller is up, else 0.", nil, nil),
			paused:    prometheus.NewDesc("jobsuite_agent_output_paused_jobs", "Jobs whose output (and so the job) waits because the state directory's disk refuses writes.", nil, nil),
		},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) jobStarted() {
	if m != nil {
		m.started.Inc()
	}
}

func (m *metrics) jobFinished(o Outcome) {
	if m != nil {
		m.finished.WithLabelValues(o.String()).Inc()
	}
}

func (m *metrics) output(n int) {
	if m != nil {
		m.outputB.Add(float64(n))
	}
}

func (m *metrics) redirect() {
	if m != nil {
		m.redirects.Inc()
	}
}

func (m *metrics) fenced() {
	if m != nil {
		m.fencedMsgs.Inc()
	}
}

func (m *metrics) spoolWriteError() {
	if m != nil {
		m.spoolErrs.Inc()
	}
}

func (m *metrics) reconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

// stateCollector reads the agent's gauges at scrape time.
type stateCollector struct {
	a                                                *Agent
	running, held, slots, unacked, connected, paused *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.running, c.held, c.slots, c.unacked, c.connected, c.paused} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	running, connected := 0, 0
	spools := make([]*spool, 0, len(a.jobs))
	for _, j := range a.jobs {
		if j.result == nil {
			running++
		}
		spools = append(spools, j.sp)
	}
	held := len(a.jobs)
	if a.sess != nil {
		connected = 1
	}
	a.mu.Unlock()
	var unacked uint64
	paused := 0
	for _, sp := range spools {
		end, acked, _ := sp.state()
		unacked += end - min(acked, end)
		if sp.isPaused() {
			paused++
		}
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(c.running, float64(running))
	gauge(c.held, float64(held))
	gauge(c.slots, float64(a.cfg.Slots))
	gauge(c.unacked, float64(unacked))
	gauge(c.connected, float64(connected))
	gauge(c.paused, float64(paused))
}

// listenMetrics binds the plain-HTTP metrics listener of
// Config.MetricsAddr, if set.
func (a *Agent) listenMetrics() error {
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:            a.log.Named("metrics").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            a.metrics.reg,
		MaxRequestsInFlight: 4,
	}))
	a.metrics.ln = ln
	a.metrics.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          a.log.Named("metrics").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Debug}),
	}
	return nil
}

// MetricsAddr is the address the metrics listener is bound to, or ""
// without Config.MetricsAddr.
func (a *Agent) MetricsAddr() string {
	if a.metrics == nil || a.metrics.ln == nil {
		return ""
	}
	return a.metrics.ln.Addr().String()
}

// serveMetrics serves the metrics listener, if any, in the background;
// the function it returns stops it and waits.
func (a *Agent) serveMetrics() (stop func()) {
	m := a.metrics
	if m == nil || m.srv == nil {
		return func() {}
	}
	log := a.log.Named("metrics")
	log.Info("serving metrics over plain HTTP", "addr", "http://"+m.ln.Addr().String()+"/metrics")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "error", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.srv.Shutdown(ctx)
		_ = m.srv.Close()
		<-done
	}
}
