package controller_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/cli/logsink"
	"jobsuite/controller"
)

// submitBody is the job BenchmarkSubmit posts: bench row 1's job, with a
// name and a label so the decoder's maps and strings are exercised.
const submitBody = `{"command": "true", "name": "bench", "priority": "high", "labels": {"team": "bench"}}`

// BenchmarkSubmit is POST /jobs end to end on a real controller: the
// real handler chain (router, metrics, auth, decode, the scheduler and
// its committer on a real Pebble store, synced, the audit entry and its
// log line, the 201's encoding). No agent: the jobs stay queued.
//
//   - handler: the API's http.Handler called directly, with the
//     operator's certificate in the request's TLS state: the
//     controller's own per-request cost, without TLS or net/http.
//   - http1, h2: over TLS on loopback with keep-alive connections, the
//     client in the same process (its cost is in the figures).
//
// Each runs 64 concurrent submitters (SetParallelism), as bench row 1c
// does, so the committer groups their syncs. Besides ns/op (wall, set by
// fsync) it reports allocs/op and cpu-µs/op: the process's user+system
// CPU time over the run divided by the requests. The controller logs at
// info level through a logsink, as the real command does, to a discarded
// output. Profile one with, e.g.
//
//	go test -run '^$' -bench 'Submit/handler' -benchtime 20000x \
//	  -cpuprofile cpu.out -memprofile mem.out ./controller/
func BenchmarkSubmit(b *testing.B) {
	for _, mode := range []string{"handler", "http1", "h2"} {
		b.Run(mode, func(b *testing.B) { benchSubmit(b, mode) })
	}
}

func benchSubmit(b *testing.B, mode string) {
	pki := newPKI(b)
	sink := logsink.New(io.Discard, 0)
	defer sink.Close()
	log := hclog.New(&hclog.LoggerOptions{Name: "controller", Level: hclog.Info, Output: sink, DisableTime: true})
	srv, err := controller.New(controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: filepath.Join(b.TempDir(), "data"),
		TLS: files(pki, "controller"), Logger: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("controller Run: %v", err)
		}
	}()
	pool, cert, err := files(pki, "operator").Load()
	if err != nil {
		b.Fatal(err)
	}

	var post func() (int, error)
	switch mode {
	case "handler":
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			b.Fatal(err)
		}
		state := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}
		h := srv.Handler()
		post = func() (int, error) {
			req, err := http.NewRequest(http.MethodPost, "/jobs", bytes.NewReader([]byte(submitBody)))
			if err != nil {
				return 0, err
			}
			req.TLS, req.RemoteAddr = state, "127.0.0.1:40000"
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			return w.code, nil
		}
	case "http1", "h2":
		protos := []string{"http/1.1"}
		if mode == "h2" {
			protos = []string{"h2", "http/1.1"}
		}
		tr := &http.Transport{
			TLSClientConfig:     certs.ClientTLS(pool, cert, "127.0.0.1", protos...),
			ForceAttemptHTTP2:   mode == "h2",
			MaxIdleConnsPerHost: 64,
		}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Timeout: 30 * time.Second, Transport: tr}
		url := "https://" + srv.HTTPAddr() + "/jobs"
		want := 2
		if mode == "http1" {
			want = 1
		}
		post = func() (int, error) {
			resp, err := cl.Post(url, "application/json", bytes.NewReader([]byte(submitBody)))
			if err != nil {
				return 0, err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != want {
				b.Errorf("answered over %s, want HTTP/%d", resp.Proto, want)
			}
			return resp.StatusCode, nil
		}
	}
	// A warm-up: connections open, the route's metrics series exist.
	for range 64 {
		if code, err := post(); err != nil || code != http.StatusCreated {
			b.Fatalf("warm-up POST /jobs: %d %v", code, err)
		}
	}

	var failed atomic.Int64
	b.SetParallelism(32) // 64 submitters on 2 cores
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code, err := post(); err != nil || code != http.StatusCreated {
				if failed.Add(1) == 1 {
					b.Errorf("POST /jobs: %d %v", code, err)
				}
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discardWriter is a ResponseWriter that keeps the status code only.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

// SetReadDeadline is net/http's, which the API's body timeout sets
// through http.ResponseController: without it the controller would make
// an error per request that a real connection does not.
func (w *discardWriter) SetReadDeadline(time.Time) error { return nil }

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(p), nil
}
