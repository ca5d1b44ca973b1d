package controller

import (
	"net/http"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// A cluster node's plain-HTTP metrics listener (Config.MetricsAddr).
//
// On the HTTPS API a follower forwards GET /metrics to the leader, so
// one scrape target shows the cluster's jobs. A Prometheus scraping
// every node on the plain listener wants each node's own view instead:
// whether it leads, its term and how far its log and store have got.
// So the node owns the listener for its lifetime (a term's Server is
// built with no MetricsAddr) and answers each scrape with what it is
// at that moment: while it leads, its term Server's full registry (the
// job series and the cluster figures); otherwise a registry of its own
// with the cluster figures, build info and the Go and process series.
//
// The job counters (submissions, completions, retries …) belong to a
// term's Server: they start again from 0 when a node starts leading.
// Prometheus's rate() and increase() treat that as a counter reset;
// jobsuite_jobs and jobsuite_queue_depth are gauges rebuilt from the
// store at each term's start, so they are right from the first scrape.

// followerMetrics builds the registry a node answers with while it does
// not lead.
func (n *Node) followerMetrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		buildInfo(n.cfg.Version),
		clusterCollector{n},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	n.registerRepairMetrics(reg)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            n.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: 4,
	})
}

// metricsHandler answers a scrape of the plain listener: the term
// Server's registry while this node leads, the follower's otherwise.
func (n *Node) metricsHandler() http.Handler {
	follower := n.followerMetrics()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t := n.term.Load(); t != nil && !t.ended() && t.srv.metrics != nil {
			t.srv.metrics.handler.ServeHTTP(w, r)
			return
		}
		follower.ServeHTTP(w, r)
	})
}

// MetricsAddr is the address of the node's plain-HTTP metrics listener,
// or "" without Config.MetricsAddr.
func (n *Node) MetricsAddr() string { return n.plain.addr() }
