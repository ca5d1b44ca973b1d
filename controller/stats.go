package controller

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// GET /stats is the dashboard's overview: jobs per state, the queue by
// priority, slots, and an hour of history sampled from the metrics the
// controller keeps anyway (metrics.go), so the page draws its queue and
// throughput charts without a Prometheus server.

// Defaults of the history.
const (
	defaultStatsInterval = 10 * time.Second
	statsSamples         = 360 // an hour at the default interval
)

// history is a ring of the last statsSamples samples.
type history struct {
	mu      sync.Mutex
	samples []api.StatsSample
	next    int // where the next sample goes once samples is full
}

func (h *history) add(s api.StatsSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) < statsSamples {
		h.samples = append(h.samples, s)
		return
	}
	h.samples[h.next] = s
	h.next = (h.next + 1) % statsSamples
}

// all returns the samples, oldest first.
func (h *history) all() []api.StatsSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]api.StatsSample, 0, len(h.samples)+1)
	out = append(out, h.samples[h.next:]...)
	return append(out, h.samples[:h.next]...)
}

// metricValue reads a gauge's or counter's value.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return 0
	}
	switch {
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Counter != nil:
		return d.Counter.GetValue()
	}
	return 0
}

// agentStats sums up the connected agents.
func (s *Server) agentStats() api.AgentStats {
	c, _ := s.sched.Capacity(false)
	return api.AgentStats{Connected: c.Agents, Draining: c.Draining, Slots: c.Slots, SlotsUsed: c.Used, SlotsFree: c.Free}
}

// sample reads the current values of the metrics the history keeps.
func (s *Server) sample(now time.Time) api.StatsSample {
	m := s.metrics
	gauge := func(st store.State) int { return int(metricValue(m.jobs.WithLabelValues(string(st)))) }
	done := func(st store.State) uint64 { return uint64(metricValue(m.completions.WithLabelValues(string(st)))) }
	slots := s.agentStats()
	return api.StatsSample{
		Time: now.UTC(), Queued: gauge(store.Queued), Waiting: gauge(store.Waiting),
		Dispatched: gauge(store.Dispatched), Running: gauge(store.Running), Blocked: gauge(store.Blocked),
		SlotsUsed: slots.SlotsUsed, Slots: slots.Slots,
		Submitted: uint64(metricValue(m.submissions)),
		Completed: done(store.Completed), Failed: done(store.Failed), Timeout: done(store.Timeout), Cancelled: done(store.Cancelled),
	}
}

// statsLoop samples the metrics into the history every interval until
// ctx is done.
func (s *Server) statsLoop(ctx context.Context) {
	s.history.add(s.sample(time.Now()))
	t := time.NewTicker(s.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.history.add(s.sample(now))
		}
	}
}

// handleStats answers GET /stats; ?history=0 leaves the samples out
// (the jobs page wants only the counts, every 2s).
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q := r.URL.Query()
	withHistory := true
	switch h := q.Get("history"); h {
	case "", "1", "true":
	case "0", "false":
		withHistory = false
	default:
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "history must be 1 or 0, got " + strconv.Quote(h), Field: "history"})
		return
	}
	counts, err := s.st.StateCounts()
	if err != nil {
		s.log.Error("counting jobs", "error", err)
		writeError(w, http.StatusInternalServerError, "counting jobs failed")
		return
	}
	jobs := make(map[string]int, len(counts))
	for st, n := range counts {
		jobs[string(st)] = n
	}
	v := api.StatsView{
		Jobs: jobs, QueueDepth: map[string]int{}, Agents: s.agentStats(), Followers: s.hub.Followers(),
		Interval: s.cfg.StatsInterval.Seconds(), History: []api.StatsSample{},
	}
	if withHistory {
		v.History = append(s.history.all(), s.sample(time.Now()))
	}
	for _, n := range counts {
		v.Total += n
	}
	for _, p := range metricPriorities {
		v.QueueDepth[p] = int(metricValue(s.metrics.queueDepth.WithLabelValues(p)))
	}
	writeJSON(w, http.StatusOK, v)
}
