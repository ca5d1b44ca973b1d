package cli

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
)

// fakeClock is the clock of a Client under test: sleeping advances it
// at once, and every wait is kept.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	c.t = c.t.Add(d)
	return ctx.Err()
}

func (c *fakeClock) waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.slept)
}

// scriptedServer is a controller API on loopback TLS that answers its
// n-th request with answers[n] (the last one again after the end), and
// counts requests.
type scriptedServer struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   int
	got []string // METHOD PATH of each request
}

// answer is one scripted response: status, Retry-After ("" for none).
type answer struct {
	status     int
	retryAfter string
}

func newScriptedServer(t *testing.T, p *testPKI, answers ...answer) *scriptedServer {
	t.Helper()
	pool, err := certs.LoadPool(p.ca())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(p.ctlCert, p.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		a := answers[min(s.n, len(answers)-1)]
		s.n++
		s.got = append(s.got, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		if a.status == http.StatusOK {
			fakeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
			return
		}
		fakeError(w, a.status, "no controller is leader right now")
	}))
	s.srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scriptedServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// refusedAddr is a loopback address that refuses connections.
func refusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "https://" + addr
}

// retryClient is a client of addrs (URLs) with an operator certificate
// of p, retrying for retryFor on a fake clock.
func retryClient(t *testing.T, p *testPKI, retryFor time.Duration, addrs ...string) (*Client, *fakeClock) {
	t.Helper()
	us, err := normalizeAddrs(strings.Join(addrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	pool, cert, err := certs.Files{CA: p.ca(), Cert: p.opCert, Key: p.opKey}.Load()
	if err != nil {
		t.Fatal(err)
	}
	c := newClientAddrs(us, pool, cert)
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	c.retryFor, c.now, c.sleep = retryFor, clock.now, clock.sleep
	t.Cleanup(c.close)
	return c, clock
}

func TestClientRetries(t *testing.T) {
	p := newTestPKI(t)
	ok := answer{status: http.StatusOK}
	noLeader := answer{status: http.StatusServiceUnavailable, retryAfter: "1"}
	keyed := api.SubmitRequest{Command: "true", IdempotencyKey: "k1"}
	for name, tt := range map[string]struct {
		servers  [][]answer // nil: an address that refuses connections
		method   string
		path     string
		body     any
		retryFor time.Duration

		wantErr   string          // "" for success
		wantReqs  []int           // requests each server saw
		wantWaits []time.Duration // nil: none; {-1}: one backoff wait (checked by range)
	}{
		"connection refused on the first": {
			servers: [][]answer{nil, {ok}}, method: "GET", path: "/health", retryFor: 30 * time.Second,
			wantReqs: []int{0, 1},
		},
		"refused, even a POST without a key moves on: nothing was sent": {
			servers: [][]answer{nil, {ok}}, method: "POST", path: "/tokens", body: map[string]string{"role": "viewer"}, retryFor: 30 * time.Second,
			wantReqs: []int{0, 1},
		},
		"every address refused: an error at once": {
			servers: [][]answer{nil, nil}, method: "GET", path: "/health", retryFor: 30 * time.Second,
			wantErr: "none of the controllers", wantReqs: []int{0, 0},
		},
		"503 with Retry-After, then 200": {
			servers: [][]answer{{noLeader, ok}}, method: "GET", path: "/jobs/1", retryFor: 30 * time.Second,
			wantReqs: []int{2}, wantWaits: []time.Duration{time.Second},
		},
		"503 on one controller: the next at once": {
			servers: [][]answer{{noLeader}, {ok}}, method: "DELETE", path: "/jobs/1", retryFor: 30 * time.Second,
			wantReqs: []int{1, 1},
		},
		"503 as an HTTP date": {
			servers: [][]answer{{{status: 503, retryAfter: time.Unix(1_800_000_003, 0).UTC().Format(http.TimeFormat)}, ok}}, method: "GET", path: "/jobs", retryFor: 30 * time.Second,
			wantReqs: []int{2}, wantWaits: []time.Duration{3 * time.Second},
		},
		"a submit with a key is retried": {
			servers: [][]answer{{noLeader, noLeader, ok}}, method: "POST", path: "/jobs", body: keyed, retryFor: 30 * time.Second,
			wantReqs: []int{3}, wantWaits: []time.Duration{time.Second, time.Second},
		},
		"a batch whose every job has a key is retried": {
			servers: [][]answer{{noLeader, ok}}, method: "POST", path: "/jobs/batch", body: []api.SubmitRequest{keyed, {Command: "b", IdempotencyKey: "k2"}}, retryFor: 30 * time.Second,
			wantReqs: []int{2}, wantWaits: []time.Duration{time.Second},
		},
		"no retry of a POST without a key": {
			servers: [][]answer{{noLeader, ok}}, method: "POST", path: "/jobs", body: api.SubmitRequest{Command: "true"}, retryFor: 30 * time.Second,
			wantErr: "no controller is leader right now", wantReqs: []int{1},
		},
		"no retry of a batch with a job without a key": {
			servers: [][]answer{{noLeader}, {ok}}, method: "POST", path: "/jobs/batch", body: []api.SubmitRequest{keyed, {Command: "b"}}, retryFor: 30 * time.Second,
			wantErr: "no controller is leader right now", wantReqs: []int{1, 0},
		},
		"no retry of other writes": {
			servers: [][]answer{{noLeader, ok}}, method: "POST", path: "/tokens", body: map[string]string{"role": "viewer"}, retryFor: 30 * time.Second,
			wantErr: "no controller is leader right now", wantReqs: []int{1},
		},
		"503 without Retry-After is not retried": {
			servers: [][]answer{{{status: 503}, ok}}, method: "GET", path: "/jobs", retryFor: 30 * time.Second,
			wantErr: "no controller is leader right now", wantReqs: []int{1},
		},
		"502 from a proxy: backoff, then 200": {
			servers: [][]answer{{{status: 502}, ok}}, method: "GET", path: "/jobs", retryFor: 30 * time.Second,
			wantReqs: []int{2}, wantWaits: []time.Duration{-1},
		},
		"the deadline": {
			servers: [][]answer{{noLeader}}, method: "GET", path: "/jobs", retryFor: 5 * time.Second,
			wantErr:  "still so after retrying for 5s",
			wantReqs: []int{6}, wantWaits: []time.Duration{time.Second, time.Second, time.Second, time.Second, time.Second},
		},
		"a Retry-After past the deadline ends it": {
			servers: [][]answer{{{status: 503, retryAfter: "10"}}}, method: "GET", path: "/jobs", retryFor: 5 * time.Second,
			wantErr: "still so after retrying for 5s", wantReqs: []int{1},
		},
		"-retry-timeout 0: each address once": {
			servers: [][]answer{{noLeader}, {noLeader}}, method: "GET", path: "/jobs", retryFor: 0,
			wantErr: "no controller is leader right now", wantReqs: []int{1, 1},
		},
	} {
		t.Run(name, func(t *testing.T) {
			var addrs []string
			var srvs []*scriptedServer
			for _, as := range tt.servers {
				if as == nil {
					addrs = append(addrs, refusedAddr(t))
					srvs = append(srvs, nil)
					continue
				}
				s := newScriptedServer(t, p, as...)
				addrs = append(addrs, s.srv.URL)
				srvs = append(srvs, s)
			}
			c, clock := retryClient(t, p, tt.retryFor, addrs...)
			_, err := c.request(context.Background(), tt.method, tt.path, tt.body, nil)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error %v, want success", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			for i, s := range srvs {
				n := 0
				if s != nil {
					n = len(s.requests())
				}
				if n != tt.wantReqs[i] {
					t.Errorf("server %d saw %d requests, want %d", i, n, tt.wantReqs[i])
				}
			}
			waits := clock.waits()
			if slices.Equal(tt.wantWaits, []time.Duration{-1}) {
				if len(waits) != 1 || waits[0] < retryPolicy.Base/2 || waits[0] > retryPolicy.Base {
					t.Fatalf("waits %v, want one first backoff step (%v-%v)", waits, retryPolicy.Base/2, retryPolicy.Base)
				}
				return
			}
			if !slices.Equal(waits, tt.wantWaits) {
				t.Fatalf("waits %v, want %v", waits, tt.wantWaits)
			}
		})
	}
}

// TestClientSticksToWhatAnswered: after the first address refused, the
// next requests go to the one that answered.
func TestClientSticksToWhatAnswered(t *testing.T) {
	p := newTestPKI(t)
	s := newScriptedServer(t, p, answer{status: http.StatusOK})
	c, _ := retryClient(t, p, time.Minute, refusedAddr(t), s.srv.URL)
	for range 3 {
		if err := c.do(context.Background(), "GET", "/health", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if c.first() != 1 {
		t.Fatalf("first address %d, want 1", c.first())
	}
}

func TestRetryable(t *testing.T) {
	for name, tt := range map[string]struct {
		method, path string
		body         any
		want         bool
	}{
		"get":                   {"GET", "/jobs", nil, true},
		"delete":                {"DELETE", "/jobs/3", nil, true},
		"submit with key":       {"POST", "/jobs", api.SubmitRequest{IdempotencyKey: "k"}, true},
		"submit pointer":        {"POST", "/jobs", &api.SubmitRequest{IdempotencyKey: "k"}, true},
		"submit without key":    {"POST", "/jobs", api.SubmitRequest{}, false},
		"key on another path":   {"POST", "/jobs/resubmit", api.SubmitRequest{IdempotencyKey: "k"}, false},
		"batch all keyed":       {"POST", "/jobs/batch", []api.SubmitRequest{{IdempotencyKey: "a"}, {IdempotencyKey: "b"}}, true},
		"batch one without":     {"POST", "/jobs/batch", []api.SubmitRequest{{IdempotencyKey: "a"}, {}}, false},
		"empty batch":           {"POST", "/jobs/batch", []api.SubmitRequest{}, false},
		"other post":            {"POST", "/tokens", map[string]string{}, false},
		"put":                   {"PUT", "/jobs", nil, false},
		"nil submit pointer":    {"POST", "/jobs", (*api.SubmitRequest)(nil), false},
		"batch on the job path": {"POST", "/jobs", []api.SubmitRequest{{IdempotencyKey: "a"}}, false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := retryable(tt.method, tt.path, tt.body); got != tt.want {
				t.Fatalf("retryable(%s %s) = %v, want %v", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

// TestSubmitMakesAKey: a submit given no -idempotency-key sends one of
// its own, new for each invocation, and says nothing of it.
func TestSubmitMakesAKey(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	var keys []string
	for range 2 {
		m, out, errb := clientTestMeta()
		if code := (&SubmitCommand{Meta: m}).Run([]string{"--", "true"}); code != ExitOK {
			t.Fatalf("exit %d, stderr %q", code, errb)
		}
		if want := "Job 12 queued (priority mid)\n"; out.String() != want {
			t.Fatalf("stdout %q, want %q", out, want)
		}
		f.mu.Lock()
		k, _ := f.submits[len(f.submits)-1]["idempotency_key"].(string)
		f.mu.Unlock()
		if !generatedKey.MatchString(k) {
			t.Fatalf("idempotency key %q, want cli- and 32 hex digits", k)
		}
		keys = append(keys, k)
	}
	if keys[0] == keys[1] {
		t.Fatalf("two submits sent the same key %q", keys[0])
	}
}

// TestFollowMovesOn: a log stream that breaks reconnects to the next
// controller and resumes from the last byte it printed.
func TestFollowMovesOn(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	// A second door to the same fake: the log is the same on both, as on
	// the controllers of a cluster.
	var mu sync.Mutex
	hits := map[string]int{}
	second := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		f.serve(w, r)
	}))
	second.TLS = f.srv.TLS
	second.StartTLS()
	t.Cleanup(second.Close)
	t.Setenv(envAddr, f.srv.URL+","+second.URL)
	f.drops = 1 // the first connection breaks after its first message
	m, out, errb := clientTestMeta()
	client, err := newClient(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.close()
	fl := &follower{client: client, id: 12, follow: true, stdout: m.Stdout, stderr: m.Stderr, tries: 2, backoff: time.Millisecond}
	finishFollow(context.Background(), m, fl)
	if out.String() != "hello\nbye\n" {
		t.Errorf("stdout %q, want every byte once; stderr %q", out, errb)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits["/ws/jobs/12/logs"] != 1 {
		t.Fatalf("the second controller served %d log streams, want 1 (the reconnect)", hits["/ws/jobs/12/logs"])
	}
	q, err := url.ParseQuery(f.lastQuery())
	if err != nil || q.Get("offset") == "" || q.Get("offset") == "0" {
		t.Fatalf("the reconnect asked for %q, want a resume offset", f.lastQuery())
	}
}

// TestWebsocketSkipsRefused: a log stream opens at the next address
// when the first refuses the connection.
func TestWebsocketSkipsRefused(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	t.Setenv(envAddr, refusedAddr(t)+","+f.srv.URL)
	m, out, errb := clientTestMeta()
	if code := (&LogsCommand{Meta: m}).Run([]string{"12"}); code != ExitOK {
		t.Fatalf("exit %d; stderr %q", code, errb)
	}
	if out.String() != "hello\nbye\n" {
		t.Fatalf("stdout %q", out)
	}
}
