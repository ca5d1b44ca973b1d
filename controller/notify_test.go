package controller_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/api"
	"jobsuite/controller"
	"jobsuite/controller/store"
	"jobsuite/controller/webhook"
)

// hookReceiver is a webhook receiver on a local HTTPS test server: it
// keeps every request, and answers 503 to the first fail[path]
// requests of a path.
type hookReceiver struct {
	srv  *httptest.Server
	fail map[string]int

	mu   sync.Mutex
	got  []hookRequest
	seen map[string]int // requests per path
}

type hookRequest struct {
	path   string
	header http.Header
	body   []byte
	status int
}

func newHookReceiver(t *testing.T, fail map[string]int) *hookReceiver {
	r := &hookReceiver{fail: fail, seen: map[string]int{}}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.seen[req.URL.Path]++
		status := http.StatusOK
		if r.seen[req.URL.Path] <= r.fail[req.URL.Path] {
			status = http.StatusServiceUnavailable
		}
		r.got = append(r.got, hookRequest{path: req.URL.Path, header: req.Header.Clone(), body: body, status: status})
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// requests returns the requests to path so far.
func (r *hookReceiver) requests(path string) []hookRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []hookRequest
	for _, q := range r.got {
		if q.path == path {
			out = append(out, q)
		}
	}
	return out
}

// notifyConfig points the controller's webhook client at r: its
// certificate trusted, its loopback address allowed, fast retries.
func (r *hookReceiver) notifyConfig(cfg *controller.Config) {
	pool := x509.NewCertPool()
	pool.AddCert(r.srv.Certificate())
	cfg.NotifyTLS = &tls.Config{RootCAs: pool}
	cfg.NotifyAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.NotifyRetryBase, cfg.NotifyRetryMax = 20*time.Millisecond, 100*time.Millisecond
}

// events returns job id's events.
func (c *cluster) events(id uint64) []api.Event {
	c.t.Helper()
	var evs []api.Event
	c.getJSON(fmt.Sprintf("/jobs/%d/events", id), &evs)
	return evs
}

// waitEvent waits until job id has an event of type typ whose message
// holds substr and returns the events of that type and message.
func (c *cluster) waitEvent(id uint64, typ, substr string) []api.Event {
	c.t.Helper()
	var out []api.Event
	c.waitFor(fmt.Sprintf("a %s event on job %d about %s", typ, id, substr), func() bool {
		out = out[:0]
		for _, e := range c.events(id) {
			if e.Type == typ && strings.Contains(e.Message, substr) {
				out = append(out, e)
			}
		}
		return len(out) > 0
	})
	return out
}

// verifyDelivery checks a delivery's signature with secret and returns
// its body.
func verifyDelivery(t *testing.T, q hookRequest, secret []byte) api.Notification {
	t.Helper()
	if err := webhook.Verify(secret, q.header.Get(webhook.HeaderSignature), q.body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("delivery to %s: the signature does not verify: %v", q.path, err)
	}
	var n api.Notification
	if err := json.Unmarshal(q.body, &n); err != nil {
		t.Fatalf("delivery body %s: %v", q.body, err)
	}
	if n.ID != q.header.Get(webhook.HeaderDelivery) || n.Event != q.header.Get(webhook.HeaderEvent) {
		t.Errorf("body id %s event %s, headers %v", n.ID, n.Event, q.header)
	}
	return n
}

const hookSecret = "hook-secret-0123456789abcdef"

// Webhooks end to end, with a real agent and a local HTTPS receiver: a
// job's own notify URL whose receiver fails three times then answers
// gets exactly one successful delivery recorded, signed with the
// controller's notify secret; a configured webhook asking for starts
// and failures gets those, signed with its own secret; http:// and a
// host outside the allowlist are refused at submit.
func TestWebhooksEndToEnd(t *testing.T) {
	r := newHookReceiver(t, map[string]int{"/job": 3})
	c := startClusterWith(t, func(cfg *controller.Config) {
		r.notifyConfig(cfg)
		cfg.NotifyHosts = []string{"127.0.0.1"}
		cfg.Webhooks = []controller.Webhook{{Name: "ops", URL: r.srv.URL + "/ops", Events: []string{"started", "failed"}, Secret: []byte(hookSecret)}}
	}, "agent-1")
	var sec api.NotifySecretView
	c.getJSON("/webhooks/secret", &sec)
	if len(sec.Secret) < 32 {
		t.Fatalf("notify secret %q", sec.Secret)
	}

	ok := c.submit(fmt.Sprintf(`{"command": "echo hi", "notify": [%q]}`, r.srv.URL+"/job?token=abc"))
	c.waitState(ok.JobID, "completed")
	evs := c.waitEvent(ok.JobID, "notified", "/job")
	if len(evs) != 1 || !strings.Contains(evs[0].Message, "delivered (200) after 4 tries") || strings.Contains(evs[0].Message, "token=abc") {
		t.Errorf("notified events %+v, want one saying delivered (200) after 4 tries, without the query string", evs)
	}
	got := r.requests("/job")
	if len(got) != 4 {
		t.Fatalf("the receiver got %d requests, want 4 (3 failed, 1 answered); events %+v", len(got), evs)
	}
	for i, q := range got {
		if q.header.Get(webhook.HeaderDelivery) != got[0].header.Get(webhook.HeaderDelivery) {
			t.Errorf("try %d has delivery ID %s, try 1 %s: a retry keeps its ID", i+1, q.header.Get(webhook.HeaderDelivery), got[0].header.Get(webhook.HeaderDelivery))
		}
		n := verifyDelivery(t, q, []byte(sec.Secret))
		if n.Event != api.EventJobFinished || n.Job.JobID != ok.JobID || n.Job.Status != "completed" || n.Job.ExitCode == nil || *n.Job.ExitCode != 0 || n.Job.Attempt != 1 || n.Job.FinishedAt == nil {
			t.Errorf("notification %+v", n)
		}
	}

	// /metrics counts the outcomes: the /job receiver's three failures
	// were retried (the ops webhook's receiver answers at once).
	if code, b := c.do("GET", "/metrics", ""); code != 200 || !strings.Contains(string(b), `jobsuite_webhook_deliveries_total{result="retried"} 3`+"\n") ||
		!strings.Contains(string(b), `jobsuite_webhook_deliveries_total{result="failed"} 0`+"\n") || !strings.Contains(string(b), "jobsuite_webhook_deliveries_pending ") {
		t.Errorf("webhook metrics: %d\n%s", code, grepLines(string(b), "jobsuite_webhook"))
	}

	bad := c.submit(`{"command": "exit 3"}`)
	c.waitState(bad.JobID, "failed")
	// The ops webhook asked for starts and failures: both jobs' starts,
	// the second one's end, nothing of the first one's end.
	c.waitFor("the ops webhook's deliveries", func() bool { return len(r.requests("/ops")) >= 3 })
	c.waitEvent(bad.JobID, "notified", "job.finished webhook to "+r.srv.URL+"/ops")
	events := map[string]api.Notification{}
	for _, q := range r.requests("/ops") {
		n := verifyDelivery(t, q, []byte(hookSecret))
		events[fmt.Sprintf("%d %s", n.Job.JobID, n.Event)] = n
	}
	if len(events) != 3 || len(r.requests("/ops")) != 3 {
		t.Errorf("the ops webhook got %v, want the starts of jobs %d and %d and the end of %d", events, ok.JobID, bad.JobID, bad.JobID)
	}
	if n := events[fmt.Sprintf("%d %s", ok.JobID, api.EventJobStarted)]; n.Job.Status != "running" {
		t.Errorf("the first start's notification %+v", n)
	}
	if n := events[fmt.Sprintf("%d %s", bad.JobID, api.EventJobFinished)]; n.Job.Status != "failed" || n.Job.ExitCode == nil || *n.Job.ExitCode != 3 {
		t.Errorf("the failure's notification %+v", n)
	}
	if n := events[fmt.Sprintf("%d %s", bad.JobID, api.EventJobStarted)]; n.Job.Status != "running" || n.Job.Agent != "agent-1" {
		t.Errorf("the start's notification %+v", n)
	}

	refusals := map[string]struct {
		url  string
		want string
	}{
		"http":            {strings.Replace(r.srv.URL, "https:", "http:", 1) + "/job", "only https"},
		"not allowlisted": {"https://hooks.example.com/job", "not in the controller's notify_hosts"},
		"credentials":     {"https://u:p@127.0.0.1/job", "credentials"},
	}
	for name, tc := range refusals {
		t.Run(name, func(t *testing.T) {
			code, body := c.do("POST", "/jobs", fmt.Sprintf(`{"command": "true", "notify": [%q]}`, tc.url))
			var e api.Error
			_ = json.Unmarshal(body, &e)
			if code != http.StatusBadRequest || e.Field != "notify" || !strings.Contains(e.Error, tc.want) {
				t.Errorf("notify %s: %d %s, want 400 on field notify mentioning %q", tc.url, code, body, tc.want)
			}
		})
	}
}

// TestCrashWebhook: a real controller process is killed (kill -9)
// between the commit of a job's end — its outbox entry with it — and
// the delivery's answer; the restarted controller delivers it, with the
// same delivery ID, and the job's events record one delivery.
func TestCrashWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds the binary; skipped with -short")
	}
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	var ids []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.ReadAll(req.Body)
		mu.Lock()
		ids = append(ids, req.Header.Get(webhook.HeaderDelivery))
		first := len(ids) == 1
		mu.Unlock()
		if first {
			// Hold the first delivery unanswered while the test kills
			// the controller.
			arrived <- struct{}{}
			<-release
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	work := t.TempDir()
	caFile := filepath.Join(work, "receiver-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p, client := startCrashController(t, work, "-notify-ca", caFile, "-notify-allow", "127.0.0.1", "-notify-retry-base", "100ms")

	// No agent: the job stays queued until it is cancelled, which ends
	// it and writes its outbox entry in the same round.
	j, err := client.submit(fmt.Sprintf(`{"command": "true", "notify": [%q]}`, srv.URL+"/hook"))
	if err != nil {
		t.Fatal(err)
	}
	if code, body, err := client.do("DELETE", fmt.Sprintf("/jobs/%d", j.JobID), ""); err != nil || code != http.StatusOK {
		t.Fatalf("cancel: %d %s %v", code, body, err)
	}
	select {
	case <-arrived: // the entry is durable: the worker gets it only then
	case <-time.After(waitLimit):
		t.Fatalf("no delivery within %v", waitLimit)
	}
	p.kill()
	close(release)
	p.start(client)

	var notified []api.Event
	deadline := time.Now().Add(waitLimit)
	for len(notified) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery recorded within %v of the restart", waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
		var evs []api.Event
		if err := client.get(fmt.Sprintf("/jobs/%d/events", j.JobID), &evs); err != nil {
			continue
		}
		for _, e := range evs {
			if e.Type == "notified" || e.Type == "notify_failed" {
				notified = append(notified, e)
			}
		}
	}
	p.stop()
	if len(notified) != 1 || notified[0].Type != "notified" || !strings.Contains(notified[0].Message, "delivered (200)") {
		t.Errorf("events %+v, want one delivery", notified)
	}
	mu.Lock()
	if len(ids) != 2 || ids[0] != ids[1] || ids[0] == "" {
		t.Errorf("delivery IDs %v, want the same one twice (before and after the kill)", ids)
	}
	mu.Unlock()
	st, err := store.Open(p.data, store.Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if left, err := st.Deliveries(); err != nil || len(left) != 0 {
		t.Errorf("outbox after the delivery: %+v %v", left, err)
	}
}

// grepLines returns the lines of text that contain word.
func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
