package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	dto "github.com/prometheus/client_model/go"

	"jobsuite/certs"
	"jobsuite/protocol"
	"jobsuite/transport"
)

func TestParseControllers(t *testing.T) {
	for name, tt := range map[string]struct {
		in   string
		want []string
		err  string
	}{
		"one":            {in: "ctl:7443", want: []string{"ctl:7443"}},
		"several":        {in: "a:7443,b:7443,c:7443", want: []string{"a:7443", "b:7443", "c:7443"}},
		"blanks":         {in: " a:1 , ,b:2,", want: []string{"a:1", "b:2"}},
		"repeats":        {in: "a:1,b:2,a:1", want: []string{"a:1", "b:2"}},
		"ipv6":           {in: "[::1]:7443,127.0.0.1:7443", want: []string{"[::1]:7443", "127.0.0.1:7443"}},
		"no port":        {in: "a:1,ctl", err: `"ctl"`},
		"empty":          {in: " , ", err: "no controller address"},
		"space in list":  {in: "a:1 b:2", err: `"a:1 b:2"`},
		"empty host ok":  {in: ":7443", want: []string{":7443"}},
		"port only list": {in: ":1,:2", want: []string{":1", ":2"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseControllers(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseControllers(%q) = %v, %v; want an error naming %s", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseControllers(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestControllersDone drives the dial plan through sequences of tries:
// which address comes next and how long the agent waits before it.
func TestControllersDone(t *testing.T) {
	type try struct {
		res       tryResult
		wantNext  string
		wantPause pause
	}
	fail := func(addr string) tryResult { return tryResult{addr: addr} }
	welcomed := func(addr string) tryResult { return tryResult{addr: addr, welcomed: true} }
	redirect := func(addr, leader string, welcomedFirst bool, members ...string) tryResult {
		return tryResult{addr: addr, welcomed: welcomedFirst, redirect: &protocol.Redirect{Leader: leader, Members: members}}
	}
	now := pause{kind: pauseNone}
	noLeader := pause{kind: pauseNoLeader}
	backoffAfterRound := func(n int) pause { return pause{kind: pauseBackoff, n: n, roundFailed: true} }
	afterSession := pause{kind: pauseBackoff, n: 1}
	for name, tt := range map[string]struct {
		configured []string
		tries      []try
		wantList   []string
	}{
		"one address: every failure is a round, as before": {
			configured: []string{"a:1"},
			tries: []try{
				{fail("a:1"), "a:1", backoffAfterRound(1)},
				{fail("a:1"), "a:1", backoffAfterRound(2)},
				{welcomed("a:1"), "a:1", afterSession},
				{fail("a:1"), "a:1", backoffAfterRound(1)},
			},
		},
		"a dead first address: the second at once": {
			configured: []string{"a:1", "b:2", "c:3"},
			tries: []try{
				{fail("a:1"), "b:2", now},
				{welcomed("b:2"), "c:3", afterSession},
			},
		},
		"backoff grows only per failed round": {
			configured: []string{"a:1", "b:2", "c:3"},
			tries: []try{
				{fail("a:1"), "b:2", now},
				{fail("b:2"), "c:3", now},
				{fail("c:3"), "a:1", backoffAfterRound(1)},
				{fail("a:1"), "b:2", now},
				{fail("b:2"), "c:3", now},
				{fail("c:3"), "a:1", backoffAfterRound(2)},
				{welcomed("a:1"), "b:2", afterSession},
				{fail("b:2"), "c:3", now},
				{fail("c:3"), "a:1", now},
				{fail("a:1"), "b:2", backoffAfterRound(1)},
			},
		},
		"redirect to a leader: at once, and not a failure": {
			configured: []string{"a:1", "b:2", "c:3"},
			tries: []try{
				{fail("a:1"), "b:2", now},
				{redirect("b:2", "a:1", false), "a:1", now},
				{fail("a:1"), "b:2", now},
				{fail("b:2"), "c:3", now},
				{fail("c:3"), "a:1", backoffAfterRound(1)},
			},
		},
		"redirect loop: at most maxRedirects, then backoff": {
			configured: []string{"a:1", "b:2"},
			tries: []try{
				{redirect("a:1", "b:2", false), "b:2", now},
				{redirect("b:2", "a:1", false), "a:1", now},
				{redirect("a:1", "b:2", false), "b:2", now},
				{redirect("b:2", "a:1", false), "a:1", backoffAfterRound(1)},
				{redirect("a:1", "b:2", false), "b:2", now}, // a new row
				{redirect("b:2", "a:1", false), "a:1", now},
				{redirect("a:1", "b:2", false), "b:2", now},
				{redirect("b:2", "a:1", false), "a:1", backoffAfterRound(2)},
				{welcomed("a:1"), "b:2", afterSession},
			},
		},
		"no leader: a short wait, counted in the round": {
			configured: []string{"a:1", "b:2"},
			tries: []try{
				{redirect("a:1", "", false), "b:2", noLeader},
				{redirect("b:2", "", false), "a:1", backoffAfterRound(1)},
				{welcomed("a:1"), "b:2", afterSession},
			},
		},
		"lost leadership mid-session: follow at once, backoff reset": {
			configured: []string{"a:1", "b:2", "c:3"},
			tries: []try{
				{fail("a:1"), "b:2", now},
				{fail("b:2"), "c:3", now},
				{fail("c:3"), "a:1", backoffAfterRound(1)},
				{redirect("a:1", "c:3", true), "c:3", now},
				{fail("c:3"), "a:1", now},
				{redirect("a:1", "", true), "b:2", noLeader},
				{fail("b:2"), "c:3", now},
			},
		},
		"members learned from a redirect are dialled": {
			configured: []string{"a:1"},
			tries: []try{
				{redirect("a:1", "d:4", false, "a:1", "d:4", "e:5"), "d:4", now},
				{fail("d:4"), "e:5", now},
				{fail("e:5"), "a:1", now},
				{fail("a:1"), "d:4", backoffAfterRound(1)},
			},
			wantList: []string{"a:1", "d:4", "e:5"},
		},
		"a leader address that is no address is not followed": {
			configured: []string{"a:1", "b:2"},
			tries: []try{
				{redirect("a:1", "nonsense", false), "b:2", backoffAfterRound(1)},
			},
			wantList: []string{"a:1", "b:2"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := newControllers(tt.configured)
			if got := c.next(); got != tt.configured[0] {
				t.Fatalf("first address %s, want %s", got, tt.configured[0])
			}
			for i, tr := range tt.tries {
				if got := c.next(); got != tr.res.addr {
					t.Fatalf("try %d: the plan dials %s, the step says %s", i+1, got, tr.res.addr)
				}
				p := c.done(tr.res)
				if next := c.next(); next != tr.wantNext || p != tr.wantPause {
					t.Fatalf("try %d (%+v): next %s after %+v; want %s after %+v", i+1, tr.res, next, p, tr.wantNext, tr.wantPause)
				}
			}
			if tt.wantList != nil && !slices.Equal(c.list(), tt.wantList) {
				t.Fatalf("list %v, want %v", c.list(), tt.wantList)
			}
		})
	}
}

func TestControllersLearn(t *testing.T) {
	c := newControllers([]string{"a:1", "b:2"})
	c.learn([]string{"b:2", "c:3", "bad", "", "c:3", "d:4"}, false)
	if want := []string{"a:1", "b:2", "c:3", "d:4"}; !slices.Equal(c.list(), want) {
		t.Fatalf("after a redirect: %v, want %v", c.list(), want)
	}
	c.done(tryResult{addr: "a:1"}) // next: b:2
	c.done(tryResult{addr: "b:2"}) // next: c:3
	// The leader's Welcome replaces what was learned; configured ones stay,
	// and so does the address to dial next when it is still listed.
	c.learn([]string{"a:1", "c:3", "e:5"}, true)
	if want := []string{"a:1", "b:2", "c:3", "e:5"}; !slices.Equal(c.list(), want) {
		t.Fatalf("after a welcome: %v, want %v", c.list(), want)
	}
	if c.next() != "c:3" {
		t.Fatalf("next %s, want c:3 still", c.next())
	}
	c.learn([]string{"a:1"}, true) // c:3 is gone: start over at the top
	if want := []string{"a:1", "b:2"}; !slices.Equal(c.list(), want) || c.next() != "a:1" {
		t.Fatalf("after members shrank: %v next %s, want %v next a:1", c.list(), c.next(), want)
	}
	many := make([]string, 100)
	for i := range many {
		many[i] = net.JoinHostPort("h", strconv.Itoa(i+1))
	}
	c.learn(many, false)
	if n := len(c.list()); n != 2+maxLearned {
		t.Fatalf("learned %d addresses, want at most %d", n-2, maxLearned)
	}
}

// fakeCtl is a controller on loopback that answers each agent session
// with a script.
type fakeCtl struct {
	name string
	ln   *transport.Listener
	// script serves one session after its Hello; it returns when it is
	// done with the session, which is then closed.
	script func(s *fakeSession)
	events chan<- ctlEvent
}

type ctlEvent struct {
	ctl   string
	hello *protocol.Hello
}

// fakeSession is one agent session as a fakeCtl sees it.
type fakeSession struct {
	t     *testing.T
	ctx   context.Context
	sess  transport.Session
	hello *protocol.Hello
	r     *protocol.Reader
	w     *protocol.Writer
	n     int // sessions this controller served before this one
}

// send writes m. An error is not checked: the agent may close the
// session as soon as it has read m, before the transport tells the
// writer that m went out; what the agent did is checked instead.
func (s *fakeSession) send(m protocol.Message) {
	_ = s.w.Write(m)
}

// untilClosed reads the control stream until the agent ends the
// session, and returns what it read.
func (s *fakeSession) untilClosed() []protocol.Message {
	var ms []protocol.Message
	for {
		m, err := s.r.Read()
		if err != nil {
			return ms
		}
		ms = append(ms, m)
	}
}

func newFakeCtl(t *testing.T, pki, name string, events chan<- ctlEvent, script func(*fakeSession)) *fakeCtl {
	t.Helper()
	pool, cert, err := certs.Files{CA: certs.CAFile(pki), Cert: certs.CertFile(pki, "controller"), Key: certs.KeyFile(pki, "controller")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := transport.Listen("127.0.0.1:0", certs.ServerTLS(pool, cert), transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCtl{name: name, ln: ln, script: script, events: events}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			sess, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func(n int) {
				defer wg.Done()
				defer sess.Close("fake controller done")
				f.serve(t, ctx, sess, n)
			}(n)
		}
	}()
	return f
}

func (f *fakeCtl) serve(t *testing.T, ctx context.Context, sess transport.Session, n int) {
	ctrl, err := sess.AcceptStream(ctx)
	if err != nil {
		return
	}
	r, w := protocol.NewReader(ctrl, 0), protocol.NewWriter(ctrl)
	m, err := r.Read()
	if err != nil {
		return
	}
	h, ok := m.(*protocol.Hello)
	if !ok {
		t.Errorf("%s: first message %s, want Hello", f.name, m.Type())
		return
	}
	select {
	case f.events <- ctlEvent{ctl: f.name, hello: h}:
	case <-ctx.Done():
		return
	}
	f.script(&fakeSession{t: t, ctx: ctx, sess: sess, hello: h, r: r, w: w, n: n})
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// waits records connectLoop's waits instead of sleeping them. A wait
// longer than zero blocks until the test releases it (release) or ends,
// so the test sees where the agent backs off.
type waits struct {
	mu      sync.Mutex
	all     []time.Duration
	block   bool
	blocked chan time.Duration
	release chan struct{}
}

func newWaits(block bool) *waits {
	return &waits{block: block, blocked: make(chan time.Duration, 16), release: make(chan struct{})}
}

func (w *waits) sleep(ctx context.Context, d time.Duration) bool {
	w.mu.Lock()
	w.all = append(w.all, d)
	w.mu.Unlock()
	if d > 0 && w.block {
		w.blocked <- d
		select {
		case <-w.release:
		case <-ctx.Done():
		}
	}
	return ctx.Err() == nil
}

func (w *waits) positive() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Duration
	for _, d := range w.all {
		if d > 0 {
			out = append(out, d)
		}
	}
	return out
}

// runAgent starts an agent dialling addrs, its waits recorded by w.
func runAgent(t *testing.T, pki string, addrs []string, w *waits) *Agent {
	t.Helper()
	state := t.TempDir()
	a, err := New(Config{
		Controller: strings.Join(addrs, ","),
		TLS:        certs.Files{CA: certs.CAFile(pki), Cert: certs.CertFile(pki, "agent-1"), Key: certs.KeyFile(pki, "agent-1")},
		Slots:      1, Transport: transport.ModeTCP, StateDir: state, WorkDir: state,
		ReconnectMin: 400 * time.Millisecond, ReconnectMax: 10 * time.Second,
		Logger: hclog.NewNullLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	a.sleep = w.sleep
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a
}

// nextEvent waits for the next Hello any fake controller received.
func nextEvent(t *testing.T, events <-chan ctlEvent) ctlEvent {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(time.Minute):
		t.Fatal("no agent session reached a controller")
	}
	return ctlEvent{}
}

// TestAgentFailover runs an agent against fake controllers on loopback:
// which one it reaches, in which order, and how long it waits before
// each (the waits are recorded, not slept).
func TestAgentFailover(t *testing.T) {
	pki := testPKI(t)
	welcome := func(term uint64, members ...string) *protocol.Welcome {
		return &protocol.Welcome{Version: protocol.Version, HeartbeatInterval: time.Hour, LeaseTTL: time.Hour, Term: term, Members: members}
	}

	t.Run("dead first address", func(t *testing.T) {
		events := make(chan ctlEvent, 16)
		b := newFakeCtl(t, pki, "b", events, func(s *fakeSession) {
			s.send(welcome(0))
			s.untilClosed()
		})
		w := newWaits(false)
		runAgent(t, pki, []string{deadAddr(t), b.ln.Addr()}, w)
		e := nextEvent(t, events)
		if e.ctl != "b" || !e.hello.Features.Has(protocol.FeatureRedirect) {
			t.Fatalf("first session at %s with features %b; want b, announcing FeatureRedirect", e.ctl, e.hello.Features)
		}
		if p := w.positive(); len(p) != 0 {
			t.Fatalf("waited %v before dialling the second address; want no wait", p)
		}
	})

	t.Run("redirect to the leader, then lost leadership", func(t *testing.T) {
		events := make(chan ctlEvent, 16)
		var aAddr, bAddr, cAddr string
		addrs := make(chan struct{})
		a := newFakeCtl(t, pki, "a", events, func(s *fakeSession) {
			<-addrs
			s.send(&protocol.Redirect{Leader: bAddr, Members: []string{aAddr, bAddr, cAddr}})
			s.untilClosed()
		})
		b := newFakeCtl(t, pki, "b", events, func(s *fakeSession) {
			<-addrs
			s.send(welcome(4, aAddr, bAddr, cAddr))
			// The agent takes the session up: its Credit.
			if m, err := s.r.Read(); err != nil {
				t.Errorf("b: reading the first credit: %v", err)
			} else if _, ok := m.(*protocol.Credit); !ok {
				t.Errorf("b: first message %s, want Credit", m.Type())
			}
			// b loses its leadership to c, which the agent has not
			// been configured with: it learned it from the members.
			s.send(&protocol.Redirect{Leader: cAddr, Members: []string{aAddr, bAddr, cAddr}})
			s.untilClosed()
		})
		c := newFakeCtl(t, pki, "c", events, func(s *fakeSession) {
			s.send(welcome(5))
			s.untilClosed()
		})
		aAddr, bAddr, cAddr = a.ln.Addr(), b.ln.Addr(), c.ln.Addr()
		close(addrs)
		w := newWaits(false)
		ag := runAgent(t, pki, []string{aAddr, bAddr}, w)
		for i, want := range []string{"a", "b", "c"} {
			if e := nextEvent(t, events); e.ctl != want {
				t.Fatalf("session %d at %s, want %s", i+1, e.ctl, want)
			}
		}
		if p := w.positive(); len(p) != 0 {
			t.Fatalf("waited %v on the way to the leader; want no wait", p)
		}
		if got, want := ag.ctrls.list(), []string{aAddr, bAddr, cAddr}; !slices.Equal(got, want) {
			t.Fatalf("controllers %v, want %v", got, want)
		}
		waitUntil(t, "the term of c's welcome", func() bool { return ag.term.Load() == 5 })
	})

	t.Run("redirect loop", func(t *testing.T) {
		events := make(chan ctlEvent, 16)
		var aAddr, bAddr string
		addrs := make(chan struct{})
		a := newFakeCtl(t, pki, "a", events, func(s *fakeSession) {
			<-addrs
			s.send(&protocol.Redirect{Leader: bAddr})
			s.untilClosed()
		})
		b := newFakeCtl(t, pki, "b", events, func(s *fakeSession) {
			<-addrs
			s.send(&protocol.Redirect{Leader: aAddr})
			s.untilClosed()
		})
		aAddr, bAddr = a.ln.Addr(), b.ln.Addr()
		close(addrs)
		w := newWaits(true)
		runAgent(t, pki, []string{aAddr, bAddr}, w)
		var d time.Duration
		select {
		case d = <-w.blocked:
		case <-time.After(time.Minute):
			t.Fatal("the agent never backed off")
		}
		var sessions []string
		for len(events) > 0 {
			sessions = append(sessions, (<-events).ctl)
		}
		// The first try plus maxRedirects redirects followed at once;
		// the next redirect is a failed round.
		if want := []string{"a", "b", "a", "b"}; !slices.Equal(sessions, want) {
			t.Fatalf("sessions %v before the first wait, want %v", sessions, want)
		}
		if d < 200*time.Millisecond || d > 400*time.Millisecond {
			t.Fatalf("first wait %v, want the first backoff step (200-400ms)", d)
		}
		if p := w.positive(); len(p) != 1 {
			t.Fatalf("waits %v, want one", p)
		}
	})

	t.Run("no leader", func(t *testing.T) {
		events := make(chan ctlEvent, 16)
		a := newFakeCtl(t, pki, "a", events, func(s *fakeSession) {
			s.send(&protocol.Redirect{})
			s.untilClosed()
		})
		b := newFakeCtl(t, pki, "b", events, func(s *fakeSession) {
			s.send(welcome(2))
			s.untilClosed()
		})
		w := newWaits(false)
		runAgent(t, pki, []string{a.ln.Addr(), b.ln.Addr()}, w)
		for i, want := range []string{"a", "b"} {
			if e := nextEvent(t, events); e.ctl != want {
				t.Fatalf("session %d at %s, want %s", i+1, e.ctl, want)
			}
		}
		if p := w.positive(); len(p) != 1 || p[0] < 100*time.Millisecond || p[0] > 500*time.Millisecond {
			t.Fatalf("waits %v before b, want one of 100-500ms", p)
		}
	})
}

// TestAgentTermFencing: after a Welcome of term 7, a Dispatch of term 6
// is dropped (nothing runs, the session ends) and a controller that
// welcomes the agent with term 6 is left at once; a Dispatch of term 7
// runs.
func TestAgentTermFencing(t *testing.T) {
	pki := testPKI(t)
	events := make(chan ctlEvent, 16)
	marker := filepath.Join(t.TempDir(), "ran")
	jobStreams := make(chan uint64, 16)
	afterB := make(chan []protocol.Message, 1)
	accept := func(s *fakeSession) {
		for {
			st, err := s.sess.AcceptStream(s.ctx)
			if err != nil {
				return
			}
			r := protocol.NewReader(st, 0)
			if m, err := r.Read(); err == nil {
				if o, ok := m.(*protocol.JobOpen); ok {
					jobStreams <- o.JobID
				}
			}
			for { // acknowledge the result, so the agent forgets the attempt
				m, err := r.Read()
				if err != nil {
					break
				}
				if _, ok := m.(*protocol.Finished); ok {
					_ = protocol.NewWriter(st).Write(&protocol.FinishAck{})
					break
				}
			}
		}
	}
	welcome := func(term uint64) *protocol.Welcome {
		return &protocol.Welcome{Version: protocol.Version, HeartbeatInterval: time.Hour, LeaseTTL: time.Hour, Term: term}
	}
	a := newFakeCtl(t, pki, "a", events, func(s *fakeSession) {
		go accept(s)
		s.send(welcome(7))
		if s.n == 0 {
			// A deposed leader's dispatch, after a newer welcome.
			s.send(&protocol.Dispatch{JobID: 1, Attempt: 1, Command: "touch " + marker, KillGrace: time.Second, Term: 6})
		} else {
			s.send(&protocol.Dispatch{JobID: 2, Attempt: 1, Command: "true", KillGrace: time.Second, Term: 7})
		}
		s.untilClosed()
	})
	b := newFakeCtl(t, pki, "b", events, func(s *fakeSession) {
		s.send(welcome(6))
		afterB <- s.untilClosed()
	})
	w := newWaits(false)
	ag := runAgent(t, pki, []string{a.ln.Addr(), b.ln.Addr()}, w)
	for i, want := range []string{"a", "b", "a"} {
		if e := nextEvent(t, events); e.ctl != want {
			t.Fatalf("session %d at %s, want %s", i+1, e.ctl, want)
		}
	}
	if ms := <-afterB; len(ms) != 0 {
		t.Fatalf("the agent sent %v to a controller of an old term; want nothing", ms)
	}
	select {
	case id := <-jobStreams:
		if id != 2 {
			t.Fatalf("job stream of job %d, want only job 2's", id)
		}
	case <-time.After(time.Minute):
		t.Fatal("the dispatch of the current term did not run")
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the fenced dispatch ran (stat: %v)", err)
	}
	if got := ag.term.Load(); got != 7 {
		t.Fatalf("term %d, want 7", got)
	}
	var m dto.Metric
	if err := ag.metrics.fencedMsgs.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("fenced messages counted %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
}

// TestIdleTimeouts: a session is given up after a quarter of the lease
// (at least 2 s), with keep-alives every third of that.
func TestIdleTimeouts(t *testing.T) {
	for lease, want := range map[time.Duration][2]time.Duration{
		15 * time.Second: {3750 * time.Millisecond, 1250 * time.Millisecond},
		60 * time.Second: {15 * time.Second, 5 * time.Second},
		3 * time.Second:  {2 * time.Second, 2 * time.Second / 3},
	} {
		a := &Agent{}
		a.lease.Store(int64(lease))
		if idle, ka := a.idleTimeouts(); idle != want[0] || ka != want[1] {
			t.Errorf("lease %s: idle %s, keep-alive %s; want %s, %s", lease, idle, ka, want[0], want[1])
		}
	}
}
