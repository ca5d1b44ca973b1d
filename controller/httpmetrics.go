package controller

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
)

// HTTP request metrics: every route the API registers is counted under
// its pattern ("/jobs/:id", never "/jobs/12"), so the label values are
// bounded by the routes in api.go, the methods they take and the status
// codes their handlers write. Requests to no route (404, 405) are not
// counted. The log WebSocket is counted when it ends; its duration, the
// life of the connection, is left out of the histogram.

// defaultMetricsAgents is Config.MetricsAgents' default.
const defaultMetricsAgents = 100

// httpMetrics are the API's request counters.
type httpMetrics struct {
	requests *prometheus.CounterVec   // method, route, code
	duration *prometheus.HistogramVec // method, route, code
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobsuite_http_requests_total",
			Help: "API requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jobsuite_http_request_duration_seconds",
			Help:    "Time to answer an API request, by method, route pattern and status code (log WebSockets excluded).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method", "route", "code"}),
	}
}

// router is httprouter's Router whose GET, POST and DELETE count the
// requests of each route (with a nil *httpMetrics, they do not).
type router struct {
	*httprouter.Router
	m *httpMetrics
}

// instrument returns r with request metrics.
func (s *Server) instrument(r *httprouter.Router) router {
	var m *httpMetrics
	if s.metrics != nil {
		m = s.metrics.http
	}
	return router{Router: r, m: m}
}

func (r router) GET(path string, h httprouter.Handle)    { r.handle(http.MethodGet, path, h) }
func (r router) POST(path string, h httprouter.Handle)   { r.handle(http.MethodPost, path, h) }
func (r router) DELETE(path string, h httprouter.Handle) { r.handle(http.MethodDelete, path, h) }

// handle registers h, counted. (Method and path are variables here, so
// the OpenAPI test, which reads the routes from api.go, skips this call.)
func (r router) handle(method, path string, h httprouter.Handle) {
	r.Router.Handle(method, path, r.count(method, path, h))
}

// count wraps h to count its requests under route.
func (r router) count(method, route string, h httprouter.Handle) httprouter.Handle {
	if r.m == nil {
		return h
	}
	rm := &routeMetrics{m: r.m, method: method, route: route, timed: route != "/ws/jobs/:id/logs"}
	return func(w http.ResponseWriter, req *http.Request, p httprouter.Params) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h(sw, req, p)
		c := rm.code(sw.status())
		c.requests.Inc()
		if rm.timed {
			c.duration.Observe(time.Since(start).Seconds())
		}
	}
}

// routeMetrics are one route's series, looked up once per status code
// it answers with rather than on every request (WithLabelValues hashes
// the three labels and takes the vector's lock; the code's label is a
// string to format).
type routeMetrics struct {
	m             *httpMetrics
	method, route string
	timed         bool

	codes atomic.Pointer[[]codeMetrics] // copied on write; a route answers few codes
	mu    sync.Mutex                    // serialises the writes
}

// codeMetrics are a route's series for one status code.
type codeMetrics struct {
	code     int
	requests prometheus.Counter
	duration prometheus.Observer // nil for an untimed route
}

// code returns the route's series for status code, creating them on
// its first use.
func (rm *routeMetrics) code(code int) *codeMetrics {
	if cs := rm.codes.Load(); cs != nil {
		for i := range *cs {
			if (*cs)[i].code == code {
				return &(*cs)[i]
			}
		}
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	var cs []codeMetrics
	if p := rm.codes.Load(); p != nil {
		for i := range *p {
			if (*p)[i].code == code {
				return &(*p)[i]
			}
		}
		cs = append(cs, *p...)
	}
	label := strconv.Itoa(code)
	c := codeMetrics{code: code, requests: rm.m.requests.WithLabelValues(rm.method, rm.route, label)}
	if rm.timed {
		c.duration = rm.m.duration.WithLabelValues(rm.method, rm.route, label)
	}
	cs = append(cs, c)
	rm.codes.Store(&cs)
	return &cs[len(cs)-1]
}

// statusWriter records the status code a handler writes. It passes
// Hijack on (the log WebSocket) and unwraps for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// status is the code written: 200 if the handler wrote nothing.
func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the response cannot be hijacked")
	}
	conn, rw, err := h.Hijack()
	if err == nil && w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
	return conn, rw, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
