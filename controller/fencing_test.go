package controller_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/controller/store"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// fakeAgent speaks the agent protocol by hand, so a test can send what
// a real agent never would: stale attempts, late results, silence.
type fakeAgent struct {
	t       *testing.T
	sess    transport.Session
	w       *protocol.Writer      // control stream
	ctrl    chan protocol.Message // control messages from the controller; closed when the stream ends
	welcome *protocol.Welcome

	mu      sync.Mutex
	running []protocol.AttemptRef // listed in heartbeats
	ended   []protocol.AttemptRef // listed in heartbeats as ended (slot granted again)
	beating bool
	stopHB  chan struct{}
}

// dialSession opens a transport session to the controller's agent port
// with the named certificate.
func dialSession(t *testing.T, c *cluster, cert string, mode transport.Mode) (transport.Session, error) {
	t.Helper()
	return dialSessionWithin(t, c, cert, mode, waitLimit)
}

func dialSessionWithin(t *testing.T, c *cluster, cert string, mode transport.Mode, timeout time.Duration) (transport.Session, error) {
	t.Helper()
	pool, kp, err := files(c.dir, cert).Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return transport.Dial(ctx, c.srv.AgentAddr(), certs.ClientTLS(pool, kp, "127.0.0.1"), mode, transport.Options{})
}

// controlReply opens the control stream, sends first and returns the
// controller's answer (Welcome or Error) and the stream's reader and
// writer.
func controlReply(sess transport.Session, first protocol.Message) (protocol.Message, *protocol.Reader, *protocol.Writer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	st, err := sess.OpenStream(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	w, r := protocol.NewWriter(st), protocol.NewReader(st, 0)
	if err := w.Write(first); err != nil {
		return nil, nil, nil, err
	}
	_ = st.SetReadDeadline(time.Now().Add(waitLimit))
	m, err := r.Read()
	_ = st.SetReadDeadline(time.Time{})
	return m, r, w, err
}

// connectFake connects a fake agent with the named certificate (its
// name too) and slots, and starts heartbeating.
func connectFake(t *testing.T, c *cluster, name string, slots uint32, mode transport.Mode) *fakeAgent {
	t.Helper()
	return connectFakeWith(t, c, name, slots, mode, 0)
}

// connectFakeWith is connectFake with a Hello that announces features.
func connectFakeWith(t *testing.T, c *cluster, name string, slots uint32, mode transport.Mode, features protocol.Features) *fakeAgent {
	t.Helper()
	sess, err := dialSession(t, c, name, mode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close("test over") })
	m, r, w, err := controlReply(sess, &protocol.Hello{Version: protocol.Version, Name: name, Slots: slots, AgentVersion: "fake", Features: features})
	if err != nil {
		t.Fatalf("%s: hello: %v", name, err)
	}
	welcome, ok := m.(*protocol.Welcome)
	if !ok {
		t.Fatalf("%s: answer to hello is %#v, want a welcome", name, m)
	}
	f := &fakeAgent{t: t, sess: sess, w: w, ctrl: make(chan protocol.Message, 64), welcome: welcome, beating: true, stopHB: make(chan struct{})}
	go func() {
		defer close(f.ctrl)
		for {
			m, err := r.Read()
			if err != nil {
				return
			}
			if d, ok := m.(*protocol.Dispatch); ok { // the Reader reuses nothing but LogChunk data; copy anyway
				cp := *d
				m = &cp
			}
			f.ctrl <- m
		}
	}()
	go f.heartbeat()
	t.Cleanup(f.silence)
	return f
}

func (f *fakeAgent) heartbeat() {
	tick := time.NewTicker(f.welcome.HeartbeatInterval)
	defer tick.Stop()
	var seq uint64
	for {
		select {
		case <-f.stopHB:
			return
		case <-f.sess.Done():
			return
		case <-tick.C:
		}
		f.mu.Lock()
		running := append([]protocol.AttemptRef(nil), f.running...)
		ended := append([]protocol.AttemptRef(nil), f.ended...)
		f.mu.Unlock()
		seq++
		if err := f.w.Write(&protocol.Heartbeat{Seq: seq, Running: running, Ended: ended}); err != nil {
			return
		}
	}
}

// renew sets the attempts the heartbeats list (and so keep alive).
func (f *fakeAgent) renew(refs ...protocol.AttemptRef) {
	f.mu.Lock()
	f.running = refs
	f.mu.Unlock()
}

// silence stops heartbeats altogether.
func (f *fakeAgent) silence() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.beating {
		f.beating = false
		close(f.stopHB)
	}
}

func (f *fakeAgent) credit(n uint32) {
	f.t.Helper()
	if err := f.w.Write(&protocol.Credit{Slots: n}); err != nil {
		f.t.Fatalf("credit: %v", err)
	}
}

// dispatch waits for the next Dispatch on the control stream, passing
// over Cancels.
func (f *fakeAgent) dispatch() *protocol.Dispatch {
	f.t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case m, ok := <-f.ctrl:
			if !ok {
				f.t.Fatal("control stream ended while waiting for a dispatch")
			}
			if d, ok := m.(*protocol.Dispatch); ok {
				return d
			}
		case <-timeout:
			f.t.Fatalf("no dispatch within %v", waitLimit)
		}
	}
}

// jobStream is an attempt's stream, agent side.
type jobStream struct {
	st transport.Stream
	r  *protocol.Reader
	w  *protocol.Writer
}

func (f *fakeAgent) openJob(id uint64, attempt uint32) *jobStream {
	f.t.Helper()
	return f.openJobAt(id, attempt, 0)
}

// openJobAt opens a job stream that resumes the attempt's output at
// offset.
func (f *fakeAgent) openJobAt(id uint64, attempt uint32, offset uint64) *jobStream {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	st, err := f.sess.OpenStream(ctx)
	if err != nil {
		f.t.Fatalf("open job stream: %v", err)
	}
	js := &jobStream{st: st, r: protocol.NewReader(st, 0), w: protocol.NewWriter(st)}
	if err := js.w.Write(&protocol.JobOpen{JobID: id, Attempt: attempt, Offset: offset}); err != nil {
		f.t.Fatalf("job open: %v", err)
	}
	return js
}

// reply returns the controller's next message on the stream other than
// a LogAck, or the read error (a closed or reset stream).
func (js *jobStream) reply() (protocol.Message, error) {
	_ = js.st.SetReadDeadline(time.Now().Add(waitLimit))
	defer js.st.SetReadDeadline(time.Time{})
	for {
		m, err := js.r.Read()
		if err != nil {
			return nil, err
		}
		if _, ack := m.(*protocol.LogAck); !ack {
			return m, nil
		}
	}
}

func isError(m protocol.Message, code uint16) bool {
	e, ok := m.(*protocol.Error)
	return ok && e.Code == code
}

// snapshot is what a late report must not change.
type snapshot struct {
	job    api.JobView
	events int
	logs   string
}

func (c *cluster) snapshot(id uint64) snapshot {
	c.t.Helper()
	var s snapshot
	c.getJSON(fmt.Sprintf("/jobs/%d", id), &s.job)
	var evs []store.Event
	c.getJSON(fmt.Sprintf("/jobs/%d/events", id), &evs)
	s.events = len(evs)
	s.logs = c.logs(id)
	return s
}

func (s snapshot) same(o snapshot) error {
	a, b := s.job, o.job
	switch {
	case a.Status != b.Status || a.Reason != b.Reason:
		return fmt.Errorf("state %s (%s) became %s (%s)", a.Status, a.Reason, b.Status, b.Reason)
	case len(a.Attempts) != len(b.Attempts) || a.LogBytes != b.LogBytes:
		return fmt.Errorf("attempts %d, log bytes %d became %d, %d", len(a.Attempts), a.LogBytes, len(b.Attempts), b.LogBytes)
	case s.events != o.events:
		return fmt.Errorf("%d events became %d", s.events, o.events)
	case s.logs != o.logs:
		return fmt.Errorf("logs %q became %q", s.logs, o.logs)
	}
	for i := range a.Attempts {
		if x, y := a.Attempts[i], b.Attempts[i]; x.Outcome != y.Outcome || x.Agent != y.Agent || x.PID != y.PID {
			return fmt.Errorf("attempt %d %+v became %+v", i+1, x, y)
		}
	}
	return nil
}

// TestFencingStaleAttemptRefused: a job stream quoting an attempt that
// is not current (wrong number, unknown job, another agent) is refused
// with CodeStaleAttempt and changes nothing; the current attempt's
// stream records start, output and result; a report after the job
// ended changes nothing.
func TestFencingStaleAttemptRefused(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeTCP, transport.ModeQUIC} {
		t.Run(string(mode), func(t *testing.T) {
			c := startCluster(t)
			a1 := connectFake(t, c, "agent-1", 1, mode)
			a2 := connectFake(t, c, "agent-2", 1, mode) // connected, never given credit
			j := c.submit(`{"command":"echo real","retries":0}`)
			a1.credit(1)
			d := a1.dispatch()
			if d.JobID != j.JobID || d.Attempt != 1 || d.Command != "echo real" {
				t.Fatalf("dispatch %+v, want job %d attempt 1", d, j.JobID)
			}
			a1.renew(protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt})
			before := c.snapshot(j.JobID)
			if store.State(before.job.Status) != store.Dispatched {
				t.Fatalf("job is %s after dispatch", before.job.Status)
			}

			stale := map[string]struct {
				agent   *fakeAgent
				id      uint64
				attempt uint32
			}{
				"next attempt number":          {a1, d.JobID, d.Attempt + 1},
				"attempt zero":                 {a1, d.JobID, 0},
				"unknown job":                  {a1, d.JobID + 1000, 1},
				"current attempt, other agent": {a2, d.JobID, d.Attempt},
			}
			for name, tc := range stale {
				t.Run(name, func(t *testing.T) {
					js := tc.agent.openJob(tc.id, tc.attempt)
					// A stale agent goes on as if it had not noticed.
					_ = js.w.Write(&protocol.Started{PID: 666, StartedAt: time.Now()})
					_ = js.w.Write(&protocol.LogChunk{Stream: protocol.Stdout, Offset: 0, Data: []byte("stale\n")})
					_ = js.w.Write(&protocol.Finished{Outcome: protocol.OutcomeFailed, ExitCode: 1, LogBytes: 6})
					m, err := js.reply()
					if err != nil || !isError(m, protocol.CodeStaleAttempt) {
						t.Fatalf("JobOpen{%d, %d}: answer %#v, %v; want Error{Code: %d}", tc.id, tc.attempt, m, err, protocol.CodeStaleAttempt)
					}
					if err := before.same(c.snapshot(j.JobID)); err != nil {
						t.Errorf("stale stream changed the job: %v", err)
					}
				})
			}

			// The current attempt reports normally.
			js := a1.openJob(d.JobID, d.Attempt)
			mustWrite(t, js.w, &protocol.Started{PID: 4242, StartedAt: time.Now()})
			c.waitState(j.JobID, "running")
			mustWrite(t, js.w, &protocol.LogChunk{Stream: protocol.Stdout, Offset: 0, Data: []byte("out\n")})
			mustWrite(t, js.w, &protocol.LogChunk{Stream: protocol.Stderr, Offset: 4, Data: []byte("err\n")})
			mustWrite(t, js.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, ExitCode: 0, Duration: 10 * time.Millisecond, LogBytes: 8})
			if m, err := js.reply(); err != nil {
				t.Fatalf("waiting for FinishAck: %v", err)
			} else if _, ok := m.(*protocol.FinishAck); !ok {
				t.Fatalf("answer to Finished: %#v, want FinishAck", m)
			}
			_ = js.st.Close()
			a1.renew()
			done := c.snapshot(j.JobID)
			if store.State(done.job.Status) != store.Completed || done.logs != "out\nerr\n" || len(done.job.Attempts) != 1 ||
				done.job.Attempts[0].Agent != "agent-1" || done.job.Attempts[0].PID != 4242 ||
				done.job.ExitCode == nil || *done.job.ExitCode != 0 {
				t.Fatalf("after the current attempt's report: %+v, logs %q", done.job, done.logs)
			}

			// A second report of the finished attempt, on a new stream, and
			// a report quoting the next attempt: neither changes the job.
			// The controller may refuse the repeat or acknowledge it again
			// (the agent may have missed the first FinishAck), but must not
			// record it twice or take its output.
			for _, attempt := range []uint32{d.Attempt, d.Attempt + 1} {
				js := a1.openJob(d.JobID, attempt)
				_ = js.w.Write(&protocol.LogChunk{Stream: protocol.Stdout, Offset: 8, Data: []byte("late\n")})
				_ = js.w.Write(&protocol.Finished{Outcome: protocol.OutcomeFailed, ExitCode: 3, LogBytes: 13})
				m, err := js.reply()
				_, acked := m.(*protocol.FinishAck)
				if err == nil && !isError(m, protocol.CodeStaleAttempt) && !(acked && attempt == d.Attempt) {
					t.Errorf("late report of attempt %d: answer %#v", attempt, m)
				}
				_ = js.st.Close()
				if err := done.same(c.snapshot(j.JobID)); err != nil {
					t.Errorf("late report of attempt %d changed the job: %v", attempt, err)
				}
			}
			checkJobEvents(t, c, j.JobID)
		})
	}
}

func mustWrite(t *testing.T, w *protocol.Writer, m protocol.Message) {
	t.Helper()
	if err := w.Write(m); err != nil {
		t.Fatalf("write %s: %v", m.Type(), err)
	}
}

func checkJobEvents(t *testing.T, c *cluster, id uint64) {
	t.Helper()
	var j api.JobView
	c.getJSON(fmt.Sprintf("/jobs/%d", id), &j)
	var evs []store.Event
	c.getJSON(fmt.Sprintf("/jobs/%d/events", id), &evs)
	if err := checkEvents(j, evs); err != nil {
		t.Errorf("job %d events: %v", id, err)
	}
}

// TestFencingLostAttemptRetriedElsewhere: an agent that stops renewing
// an attempt's lease loses it after the lease TTL; the job is retried on
// another (real) agent and completes there; the first agent's late
// output and result on its old stream are refused and change nothing.
func TestFencingLostAttemptRetriedElsewhere(t *testing.T) {
	tests := map[string]struct {
		silent bool // no heartbeats at all (the session is dropped), or heartbeats without the attempt
	}{
		"heartbeats without the attempt": {silent: false},
		"no heartbeats at all":           {silent: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := startCluster(t)
			c.stopController()
			c.cfg.LeaseTTL = time.Second
			c.startController()

			fake := connectFake(t, c, "agent-1", 1, transport.ModeTCP)
			j := c.submit(`{"command":"echo second","retries":1}`)
			fake.credit(1)
			d := fake.dispatch()
			if d.JobID != j.JobID || d.Attempt != 1 {
				t.Fatalf("dispatch %+v, want job %d attempt 1", d, j.JobID)
			}
			fake.renew(protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt})
			js := fake.openJob(d.JobID, d.Attempt)
			mustWrite(t, js.w, &protocol.Started{PID: 777, StartedAt: time.Now()})
			mustWrite(t, js.w, &protocol.LogChunk{Stream: protocol.Stdout, Offset: 0, Data: []byte("partial\n")})
			c.waitState(j.JobID, "running")
			c.waitFor("partial output stored", func() bool { return c.logs(j.JobID) == "partial\n" })

			if tc.silent {
				fake.silence()
			} else {
				// Alive but without the attempt. It drains first: the
				// lost attempt's slot comes back to it, and the retry
				// sent there (a fake that runs nothing) would be lost too
				// — under load, before agent-2 had connected.
				mustWrite(t, fake.w, &protocol.Drain{})
				fake.renew()
			}
			c.startAgent("agent-2", 2, nil, transport.ModeTCP)
			done := c.waitState(j.JobID, "completed", "failed")
			var full api.JobView
			c.getJSON(fmt.Sprintf("/jobs/%d", j.JobID), &full)
			if store.State(full.Status) != store.Completed || len(full.Attempts) != 2 ||
				full.Attempts[0].Agent != "agent-1" || full.Attempts[0].Outcome != "lost" ||
				full.Attempts[1].Agent != "agent-2" || full.Attempts[1].Outcome != "completed" {
				t.Fatalf("retried job: %s (%s), attempts %+v", done.Status, done.Reason, full.Attempts)
			}
			before := c.snapshot(j.JobID)
			if before.logs != "partial\nsecond\n" && before.logs != "second\n" {
				t.Errorf("logs %q, want the retry's output after the lost attempt's", before.logs)
			}

			// The first agent wakes up and reports on its old stream.
			_ = js.w.Write(&protocol.LogChunk{Stream: protocol.Stdout, Offset: 8, Data: []byte("LATE\n")})
			_ = js.w.Write(&protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 13})
			m, err := js.reply()
			if err == nil && !isError(m, protocol.CodeStaleAttempt) {
				t.Errorf("late Finished of the lost attempt: answer %#v, want Error{Code: %d} or a dead stream", m, protocol.CodeStaleAttempt)
			}
			if err := before.same(c.snapshot(j.JobID)); err != nil {
				t.Errorf("late report of the lost attempt changed the job: %v", err)
			}
			checkJobEvents(t, c, j.JobID)
		})
	}
}

// TestAgentPortGarbage: garbage on the agent port — before, inside and
// after TLS, on the control stream and on a job stream — gets the
// connection closed or a protocol error, never a crash or a hang: a
// connected agent keeps its session and keeps running jobs, and new
// agents still connect while idle connections hold the port.
func TestAgentPortGarbage(t *testing.T) {
	c := startCluster(t, "agent-1")
	var agents []api.AgentInfo
	c.getJSON("/agents", &agents)
	if len(agents) != 1 {
		t.Fatalf("agents: %+v", agents)
	}
	connectedAt := agents[0].ConnectedAt
	addr := c.srv.AgentAddr()
	pool, agentCert, err := files(c.dir, "agent-3").Load()
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 64<<10)
	_, _ = rand.Read(junk)
	junk[0] = 0xFF // invalid at once as a TLS record, a yamux header or a frame length

	// Raw connections: the controller must close them promptly.
	raw := map[string]func(t *testing.T) net.Conn{
		"plaintext HTTP request": func(t *testing.T) net.Conn {
			conn := dialTCP(t, addr)
			_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
			return conn
		},
		"random bytes before TLS": func(t *testing.T) net.Conn {
			conn := dialTCP(t, addr)
			_, _ = conn.Write(junk[:4096])
			return conn
		},
		"random bytes after the TLS handshake": func(t *testing.T) net.Conn {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
				certs.ClientTLS(pool, agentCert, "127.0.0.1", protocol.ALPN))
			if err != nil {
				t.Fatalf("TLS handshake: %v", err)
			}
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write(junk) // may fail once the controller hangs up
			return conn
		},
	}
	for name, open := range raw {
		t.Run(name, func(t *testing.T) {
			conn := open(t)
			defer conn.Close()
			if err := readUntilClosed(conn, 5*time.Second); err != nil {
				t.Errorf("controller did not hang up: %v", err)
			}
		})
	}

	// Valid sessions that send nonsense on the control stream.
	oversized := make([]byte, 5)
	binary.BigEndian.PutUint32(oversized, 0xFFFFFFF0)
	oversized[4] = byte(protocol.TypeHello)
	randomHello := binary.BigEndian.AppendUint32(nil, 201)
	randomHello = append(randomHello, byte(protocol.TypeHello))
	randomHello = append(randomHello, junk[1:201]...)
	control := map[string]struct {
		cert  string
		first []byte // raw bytes, or
		msg   protocol.Message
		code  uint16 // the Error expected; 0: any Error, or the stream closed
	}{
		"random bytes":          {cert: "agent-3", first: junk[:4096]},
		"random hello payload":  {cert: "agent-3", first: randomHello},
		"oversized frame":       {cert: "agent-3", first: oversized, code: protocol.CodeProtocol},
		"zero-length frame":     {cert: "agent-3", first: []byte{0, 0, 0, 0}, code: protocol.CodeProtocol},
		"credit before hello":   {cert: "agent-3", msg: &protocol.Credit{Slots: 1}, code: protocol.CodeProtocol},
		"unsupported version":   {cert: "agent-3", msg: &protocol.Hello{Version: 99, Name: "agent-3", Slots: 1}, code: protocol.CodeVersion},
		"name of another agent": {cert: "agent-3", msg: &protocol.Hello{Version: protocol.Version, Name: "agent-1", Slots: 1}, code: protocol.CodeForbidden},
		"operator certificate":  {cert: "operator", msg: &protocol.Hello{Version: protocol.Version, Name: "operator", Slots: 1}, code: protocol.CodeForbidden},
		// One agent key must not take every queued job.
		"2^32-1 slots": {cert: "agent-3", msg: &protocol.Hello{Version: protocol.Version, Name: "agent-3", Slots: math.MaxUint32}, code: protocol.CodeForbidden},
		"1025 slots":   {cert: "agent-3", msg: &protocol.Hello{Version: protocol.Version, Name: "agent-3", Slots: controller.DefaultMaxAgentSlots + 1}, code: protocol.CodeForbidden},
	}
	for name, tc := range control {
		for _, mode := range []transport.Mode{transport.ModeTCP, transport.ModeQUIC} {
			t.Run(name+"/"+string(mode), func(t *testing.T) {
				sess, err := dialSession(t, c, tc.cert, mode)
				if err != nil {
					if tc.cert == "operator" && errors.Is(err, transport.ErrHandshake) {
						return // refused even earlier: fine
					}
					t.Fatal(err)
				}
				defer sess.Close("test over")
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				st, err := sess.OpenStream(ctx)
				if err != nil {
					t.Fatal(err)
				}
				// A write may fail when the controller has already answered
				// and hung up; the answer is still to be read.
				if tc.msg != nil {
					_ = protocol.NewWriter(st).Write(tc.msg)
				} else {
					_, _ = st.Write(tc.first)
				}
				_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
				m, err := protocol.NewReader(st, 0).Read()
				_, anyError := m.(*protocol.Error)
				switch {
				case tc.code == 0 && err != nil && !isTimeout(err):
				case tc.code == 0 && anyError:
				case tc.code != 0 && isError(m, tc.code):
				default:
					t.Fatalf("answer %#v, %v; want Error{Code: %d}", m, err, tc.code)
				}
				_ = st.Close() // done writing, as an agent that read the Error is
				select {
				case <-sess.Done():
				case <-time.After(5 * time.Second):
					t.Error("the controller kept the session open after refusing it")
				}
			})
		}
	}

	// A good session whose job stream carries nonsense loses that stream
	// only; it stays connected.
	t.Run("garbage on a job stream", func(t *testing.T) {
		fake := connectFake(t, c, "agent-3", 1, transport.ModeTCP)
		for name, first := range map[string][]byte{
			"random bytes":      junk[:1024],
			"chunk before open": protocol.Append(nil, &protocol.LogChunk{Stream: protocol.Stdout, Data: []byte("x")}),
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := fake.sess.OpenStream(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(first); err != nil {
				t.Fatal(err)
			}
			js := &jobStream{st: st, r: protocol.NewReader(st, 0)}
			if m, err := js.reply(); (err == nil && !isError(m, protocol.CodeProtocol)) || isTimeout(err) {
				t.Errorf("%s: answer %#v, %v; want Error{Code: %d} or a closed stream", name, m, err, protocol.CodeProtocol)
			}
		}
		// The session still serves: a stale job stream gets its answer.
		js := fake.openJob(999999, 1)
		if m, err := js.reply(); err != nil || !isError(m, protocol.CodeStaleAttempt) {
			t.Errorf("after the bad job streams: answer %#v, %v; want Error{Code: %d} on a working session", m, err, protocol.CodeStaleAttempt)
		}
	})

	// UDP junk at the QUIC port is dropped.
	if uc, err := net.Dial("udp", addr); err == nil {
		for i := range 64 {
			_, _ = uc.Write(junk[i*1000 : i*1000+1200])
		}
		uc.Close()
	}

	// Idle connections that never finish a handshake do not lock agents
	// out: more of them than the listener handshakes at once.
	for range 80 {
		conn := dialTCP(t, addr)
		t.Cleanup(func() { conn.Close() })
	}
	for name, mode := range map[string]transport.Mode{"agent-2": transport.ModeTCP, "agent-3": transport.ModeQUIC} {
		start := time.Now()
		sess, err := dialSessionWithin(t, c, name, mode, 5*time.Second)
		if err != nil {
			t.Errorf("%s (%s) cannot connect while idle connections are open: %v (after %s)", name, mode, err, time.Since(start).Round(time.Millisecond))
			continue
		}
		sess.Close("test over")
	}

	// The agent connected at the start never noticed any of it.
	c.getJSON("/agents", &agents)
	var still bool
	for _, a := range agents {
		still = still || a.Name == "agent-1" && a.ConnectedAt.Equal(connectedAt)
	}
	if !still {
		t.Errorf("agent-1 lost its session: %+v", agents)
	}
	for i := range 3 {
		j := c.submit(fmt.Sprintf(`{"command":"echo alive-%d","labels":{}}`, i))
		c.waitState(j.JobID, "completed")
		if got, want := c.logs(j.JobID), fmt.Sprintf("alive-%d\n", i); got != want {
			t.Errorf("logs %q, want %q", got, want)
		}
	}
	if code, b := c.do("GET", "/health", ""); code != 200 || !bytes.Contains(b, []byte("ok")) {
		t.Errorf("health: %d %s", code, b)
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// readUntilClosed reads conn until it fails; it returns an error only if
// the peer keeps it open for longer than timeout.
func readUntilClosed(conn net.Conn, timeout time.Duration) error {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			if isTimeout(err) {
				return fmt.Errorf("still open after %s", timeout)
			}
			return nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || err != nil && strings.Contains(err.Error(), "deadline")
}

// TestControllerDeadline: an agent that keeps heartbeating but never
// ends a job at its timeout cannot keep it running: past timeout + kill
// grace + lease TTL the controller ends the attempt as timed out and
// tells the agent to cancel it.
func TestControllerDeadline(t *testing.T) {
	c := startCluster(t)
	f := connectFake(t, c, "agent-1", 1, transport.ModeTCP)
	j := c.submit(`{"command":"sleep 300","timeout":0.5}`)
	f.credit(1)
	d := f.dispatch()
	ref := protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt}
	f.renew(ref) // heartbeats keep listing it; it never finishes
	done := c.waitState(j.JobID, "timeout")
	if done.Result == nil || done.Result.Outcome != "timeout" || !strings.Contains(c.job(j.JobID).Reason, "deadline") {
		t.Errorf("job after the controller deadline: %+v", done)
	}
	// The agent is told to stop it.
	deadline := time.After(waitLimit)
	for {
		select {
		case m, ok := <-f.ctrl:
			if !ok {
				t.Fatal("control stream closed before a Cancel arrived")
			}
			if cm, isCancel := m.(*protocol.Cancel); isCancel && cm.JobID == ref.JobID && cm.Attempt == ref.Attempt {
				return
			}
		case <-deadline:
			t.Fatal("no Cancel for the attempt past its deadline")
		}
	}
}
