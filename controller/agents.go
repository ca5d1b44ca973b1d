package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/controller/store"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// agentConn is one connected agent session. Fields other than the
// immutable ones are guarded by the scheduler's mutex.
type agentConn struct {
	name      string
	labels    map[string]string
	slots     int
	version   string
	transport string
	addr      string
	connected time.Time
	sess      transport.Session
	log       hclog.Logger

	out       chan protocol.Message // to the control stream writer
	ctrl      *protocol.Writer      // the control stream
	writing   atomic.Bool           // a writeControl goroutine runs
	closeOnce sync.Once

	statusMu   sync.Mutex
	statusSeq  uint64
	statusWait map[uint64]chan *protocol.StatusReply

	// guarded by scheduler.mu
	draining bool
	stopping bool // it drains itself (it is shutting down): no undrain
	credits  int
	running  map[uint64]uint32 // job ID → attempt
	lastSeen time.Time
	closed   bool
}

// free is how many more attempts the agent may be sent: it granted the
// credits and has the slots. The caller holds the scheduler's mutex.
func (a *agentConn) free() int {
	if a.closed || a.draining {
		return 0
	}
	return min(a.credits, a.slots-len(a.running))
}

// outQueue bounds the messages waiting for an agent's control stream,
// beyond twice its slots (dispatches are bounded by its credits). An
// agent that lets it fill up is not reading and gets disconnected.
const outQueue = 64

// trySend queues a message the agent may miss (a status request): when
// the queue is full it reports false instead of closing the session, so
// a flood of API requests cannot disconnect an agent.
func (a *agentConn) trySend(m protocol.Message) bool {
	if len(a.out) >= cap(a.out)/2 {
		return false
	}
	select {
	case a.out <- m:
		a.kick()
		return true
	default:
		return false
	}
}

// send queues a message for the agent without blocking.
func (a *agentConn) send(m protocol.Message) {
	select {
	case a.out <- m:
		a.kick()
	default:
		a.log.Warn("agent is not reading its control stream; closing the session")
		a.close("control stream backlog full")
	}
}

// close ends the session; the serving goroutine cleans up.
func (a *agentConn) close(reason string) {
	a.closeOnce.Do(func() { _ = a.sess.Close(reason) })
}

// AgentInfo describes a connected agent for the API.
type AgentInfo struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Slots       int               `json:"slots"`
	Running     int               `json:"running"`
	Credits     int               `json:"free"`
	Draining    bool              `json:"draining"`
	DrainedBy   string            `json:"drained_by,omitempty"` // "agent" (it is stopping) or "operator" (POST /agents/:name/drain)
	Transport   string            `json:"transport"`
	Address     string            `json:"address"`
	Version     string            `json:"version"`
	ConnectedAt time.Time         `json:"connected_at"`
	LastSeen    time.Time         `json:"last_heartbeat"`
	Jobs        []uint64          `json:"jobs"`
}

func (s *scheduler) agentList() []AgentInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]AgentInfo, 0, len(s.agents))
	for _, a := range s.agents {
		jobs := make([]uint64, 0, len(a.running))
		for id := range a.running {
			jobs = append(jobs, id)
		}
		sort.Slice(jobs, func(i, j int) bool { return jobs[i] < jobs[j] })
		labels := a.labels
		if labels == nil {
			labels = map[string]string{}
		}
		out = append(out, AgentInfo{
			Name: a.name, Labels: labels, Slots: a.slots, Running: len(a.running),
			Credits: a.credits, Draining: a.draining, Transport: a.transport, Address: a.addr, Version: a.version,
			ConnectedAt: a.connected, LastSeen: a.lastSeen, Jobs: jobs, DrainedBy: drainedBy(a),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// controlReadBuffer is the read buffer of an agent's control stream.
const controlReadBuffer = 2 << 10

// jobStreamReadBuffer is the read buffer of a job stream. Its frames
// are small (open, started, finished) except output chunks, whose data
// the Reader reads past the buffer anyway; a stream per job makes the
// default 16 KiB an allocation (and GC work) per job for nothing.
const jobStreamReadBuffer = 2 << 10

// serveAgent runs one agent session until it ends.
func (s *Server) serveAgent(ctx context.Context, sess transport.Session) {
	log := s.log.Named("agent").With("remote", sess.RemoteAddr().String(), "transport", sess.Transport())
	defer sess.Close("session ended")

	role, name, err := certs.PeerIdentity(sess.ConnectionState())
	if err != nil || role != certs.RoleAgent {
		log.Warn("refusing session: certificate is not an agent certificate", "role", role, "name", name, "error", err)
		s.refuse(ctx, sess, protocol.CodeForbidden, fmt.Sprintf("certificate role %q may not open an agent session; issue one with -role agent", role))
		return
	}
	if s.refuseRevoked(ctx, sess, log) {
		return
	}
	log = log.With("agent", name)

	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	ctrl, err := sess.AcceptStream(hctx)
	cancel()
	if err != nil {
		log.Warn("agent opened no control stream", "error", err)
		return
	}
	_ = ctrl.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	// Control frames are small and, for an idle agent, rare: a small
	// buffer, held by the blocked Read, saves 14 KiB per agent.
	r := protocol.NewReaderSize(ctrl, s.cfg.MaxFrameBytes, controlReadBuffer)
	w := protocol.NewWriter(ctrl)
	goodbye := func(code uint16, msg string) {
		_ = ctrl.SetWriteDeadline(time.Now().Add(time.Second))
		_ = w.Write(&protocol.Error{Code: code, Message: msg})
		_ = ctrl.Close()
		drain(ctrl, 2*time.Second) // the Error arrives before the session closes
	}
	m, err := r.Read()
	if err != nil {
		log.Warn("bad hello", "error", err)
		goodbye(protocol.CodeProtocol, "expected hello: "+err.Error())
		return
	}
	hello, ok := m.(*protocol.Hello)
	if !ok {
		log.Warn("first message is not a hello", "type", m.Type())
		goodbye(protocol.CodeProtocol, "expected hello, got "+m.Type().String())
		return
	}
	if err := protocol.CheckVersion(hello.Version); err != nil {
		log.Warn("refusing agent", "error", err)
		goodbye(protocol.CodeVersion, err.Error())
		return
	}
	if hello.Name != "" && hello.Name != name {
		log.Warn("refusing agent: hello name differs from certificate", "hello_name", hello.Name)
		goodbye(protocol.CodeForbidden, fmt.Sprintf("agent name %q does not match its certificate name %q", hello.Name, name))
		return
	}
	if int64(hello.Slots) > int64(s.cfg.MaxAgentSlots) {
		// One agent certificate must not take every queued job.
		log.Warn("refusing agent: it announces more slots than allowed", "slots", hello.Slots, "max", s.cfg.MaxAgentSlots)
		goodbye(protocol.CodeForbidden, fmt.Sprintf("agent announces %d slots; this controller accepts at most %d (its -max-agent-slots): lower the agent's -slots", hello.Slots, s.cfg.MaxAgentSlots))
		return
	}
	_ = ctrl.SetReadDeadline(time.Time{})

	a := &agentConn{
		name: name, labels: hello.Labels, slots: int(hello.Slots), version: hello.AgentVersion,
		transport: sess.Transport(), addr: sess.RemoteAddr().String(), connected: time.Now().UTC(),
		sess: sess, log: log, out: make(chan protocol.Message, outQueue+2*min(int(hello.Slots), 4096)), ctrl: w,
		running: map[uint64]uint32{}, lastSeen: time.Now(),
	}
	if err := w.Write(&protocol.Welcome{
		Version: protocol.Version, ControllerID: s.id,
		HeartbeatInterval: s.cfg.HeartbeatInterval, LeaseTTL: s.cfg.LeaseTTL,
	}); err != nil {
		log.Warn("welcome failed", "error", err)
		return
	}
	s.sched.register(a, hello.Running)
	if _, revoked := s.sec.deniedConn(sess.ConnectionState()); revoked {
		a.close("certificate revoked") // while it said hello: cutOff missed it
	}
	log.Info("agent connected", "slots", a.slots, "labels", formatLabels(a.labels), "version", a.version)
	defer func() {
		s.sched.unregister(a)
		log.Info("agent disconnected")
	}()

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		// Accepting fails once the session is gone or sctx is cancelled;
		// closing the session then ends a blocked read of the control
		// stream, and with it this function.
		s.acceptJobStreams(sctx, a)
		stop()
		a.close("session ended")
	}()

	for {
		m, err := r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && sctx.Err() == nil {
				log.Warn("control stream failed", "error", err)
			}
			return
		}
		switch m := m.(type) {
		case *protocol.Credit:
			s.sched.credit(a, int(m.Slots))
		case *protocol.Heartbeat:
			s.sched.heartbeat(a, m.Running, m.Ended)
		case *protocol.Drain:
			log.Info("agent is draining: no new jobs for it")
			s.sched.stopping(a)
		case *protocol.StatusReply:
			a.deliverStatus(m)
		case *protocol.Error:
			log.Warn("agent reported an error", "code", m.Code, "message", m.Message)
			return
		default:
			log.Warn("unexpected message on control stream", "type", m.Type())
			a.send(&protocol.Error{Code: protocol.CodeProtocol, Message: fmt.Sprintf("unexpected message type %d on the control stream", m.Type())})
			return
		}
	}
}

// refuse tells a peer why it is turned away, as far as it listens.
func (s *Server) refuse(ctx context.Context, sess transport.Session, code uint16, msg string) {
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if st, err := sess.AcceptStream(hctx); err == nil {
		_ = st.SetWriteDeadline(time.Now().Add(time.Second))
		_ = protocol.NewWriter(st).Write(&protocol.Error{Code: code, Message: msg})
		_ = st.Close()
		drain(st, 2*time.Second) // the Error arrives before the session closes
	}
	_ = sess.Close(msg)
}

// kick starts a writeControl goroutine unless one runs.
func (a *agentConn) kick() {
	if a.writing.CompareAndSwap(false, true) {
		go a.writeControl()
	}
}

// writeControl writes the queued messages to the control stream in
// order, and exits once the queue is empty: an idle agent costs no
// writer goroutine (kick starts one again). After a failed write it
// closes the session and leaves writing set, so nothing more is written.
func (a *agentConn) writeControl() {
	for {
		select {
		case m := <-a.out:
			if err := a.ctrl.Write(m); err != nil {
				a.log.Debug("control write failed", "error", err)
				a.close("write failed")
				return
			}
		default:
			a.writing.Store(false)
			// A message queued since the queue looked empty found
			// writing set and started no writer: this one goes on.
			if len(a.out) == 0 || !a.writing.CompareAndSwap(false, true) {
				return
			}
		}
	}
}

// acceptJobStreams serves the job streams the agent opens until the
// session is gone or ctx is cancelled.
func (s *Server) acceptJobStreams(ctx context.Context, a *agentConn) {
	for {
		st, err := a.sess.AcceptStream(ctx)
		if err != nil {
			return
		}
		go s.serveJobStream(a, st)
	}
}

// serveJobStream receives one attempt's start, output and result. The
// agent may open a stream for the same attempt again after a reconnect;
// it then resends output from its last acknowledged offset, and bytes
// already stored are skipped, so the stored log has every byte once.
//
// Output is acknowledged (LogAck) only once it is durable: an acker
// syncs the store at most every ackEvery and then tells the agent, which
// may then discard it from its spool.
func (s *Server) serveJobStream(a *agentConn, st transport.Stream) {
	defer st.Close()
	r := protocol.NewReaderSize(st, s.cfg.MaxFrameBytes, jobStreamReadBuffer)
	w := protocol.NewWriter(st)
	fail := func(code uint16, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		a.log.Warn("job stream refused", "reason", msg)
		_ = w.Write(&protocol.Error{Code: code, Message: msg})
		_ = st.Close()
		drain(st, 2*time.Second) // let the Error arrive rather than reset it
	}
	_ = st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	m, err := r.Read()
	if err != nil {
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	open, ok := m.(*protocol.JobOpen)
	if !ok {
		fail(protocol.CodeProtocol, "expected job open, got %s", m.Type())
		return
	}
	id, attempt := open.JobID, open.Attempt
	s.sched.mu.Lock()
	j := s.sched.current(id, attempt, a.name)
	var logStart, end uint64
	if j != nil {
		logStart = j.Current().LogStart
		end = s.sched.logEnd[id]
	}
	s.sched.mu.Unlock()
	if j == nil {
		if s.recorded(id, attempt, a.name) {
			// The result is stored; the agent missed our FinishAck. The
			// read may see its batch before it is synced (commit.go):
			// make it durable before saying so.
			if err := s.st.Sync(); err != nil {
				fail(protocol.CodeShutdown, "controller cannot store the result")
				return
			}
			_ = w.Write(&protocol.FinishAck{})
			drain(st, 10*time.Second)
			return
		}
		fail(protocol.CodeStaleAttempt, "job %d attempt %d is not current on agent %s", id, attempt, a.name)
		return
	}
	var have atomic.Uint64 // output bytes of this attempt stored
	have.Store(end - logStart)
	log := a.log.With("job", id, "attempt", attempt)
	// On a reopened stream, what we have may not be synced yet (the
	// previous stream's last chunks): make it durable before saying so.
	// A fresh attempt has nothing stored, so it costs no fsync.
	if have.Load() > 0 {
		if err := s.st.Sync(); err != nil {
			fail(protocol.CodeShutdown, "controller cannot store output")
			return
		}
	}
	_ = w.Write(&protocol.LogAck{Offset: have.Load()})

	ackCtx, stopAcks := context.WithCancel(context.Background())
	defer stopAcks()
	go s.ackLoop(ackCtx, w, &have)

	for {
		m, err := r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug("job stream ended", "error", err)
			}
			return
		}
		switch m := m.(type) {
		case *protocol.Started:
			if err := s.sched.started(a, id, attempt, m); err != nil {
				fail(protocol.CodeStaleAttempt, "%v", err)
				return
			}
		case *protocol.LogChunk:
			data, off, got := m.Data, m.Offset, have.Load()
			if off > got {
				fail(protocol.CodeProtocol, "log gap: chunk at offset %d, have %d", off, got)
				return
			}
			if skip := got - off; skip > 0 { // resent bytes we already have
				if skip >= uint64(len(data)) {
					continue
				}
				data = data[skip:]
			}
			if len(data) == 0 {
				continue
			}
			if limit := s.sched.opts.MaxOutput; limit > 0 && got+uint64(len(data)) > limit+maxOutputSlack {
				// The agent stops at MaxOutput (and adds a marker line): one
				// that goes on ignores the Dispatch.
				fail(protocol.CodeProtocol, "output passes the cap of %d bytes the dispatch set (MaxOutput)", limit)
				return
			}
			if err := s.disk.room(len(data)); err != nil {
				// Nothing is lost: the agent keeps the output spooled and
				// sends it again on a later stream.
				fail(protocol.CodeStorageFull, "%v", err)
				return
			}
			// Followers read the newest output from the hub's memory:
			// copied here, outside the lock (data is the reader's buffer).
			var kept []byte
			if s.hub.followed(id) {
				kept = bytes.Clone(data)
			}
			// The attempt must still be current when its output is
			// stored: once it is lost and retried, the next attempt owns
			// the log from here on. Checked and stored under the
			// scheduler lock, so a loss cannot slip in between; the hub
			// hears of the chunks in the same order.
			s.sched.mu.Lock()
			if s.sched.current(id, attempt, a.name) == nil {
				s.sched.mu.Unlock()
				fail(protocol.CodeStaleAttempt, "job %d attempt %d is no longer current on agent %s", id, attempt, a.name)
				return
			}
			c := store.Chunk{Offset: logStart + got, Stream: uint8(m.Stream), Data: data, Time: time.Now()}
			err := s.st.AppendLog(id, c)
			if err == nil {
				s.hub.appended(id, c, kept)
				got += uint64(len(data))
				s.sched.logEnd[id] = logStart + got
				s.metrics.logBytes(len(data))
			}
			s.sched.mu.Unlock()
			if err != nil {
				log.Error("storing output failed", "error", err)
				fail(protocol.CodeShutdown, "controller cannot store output")
				return
			}
			have.Store(got)
			s.hub.ring(id)
		case *protocol.Finished:
			if m.LogBytes != have.Load() {
				fail(protocol.CodeProtocol, "result says %d output bytes, %d arrived", m.LogBytes, have.Load())
				return
			}
			b, err := s.sched.finished(a, id, attempt, m)
			if err != nil {
				fail(protocol.CodeStaleAttempt, "%v", err)
				return
			}
			if err := b.wait(); err != nil {
				return
			}
			s.hub.ring(id)
			_ = w.Write(&protocol.FinishAck{})
			drain(st, 10*time.Second)
			return
		default:
			fail(protocol.CodeProtocol, "unexpected %s on a job stream", m.Type())
			return
		}
	}
}

// maxOutputSlack is how far past Dispatch.MaxOutput an attempt's output
// may go: the agent's marker line that says it was cut.
const maxOutputSlack = 4 << 10

// ackEvery is how often a job stream acknowledges stored output.
const ackEvery = 50 * time.Millisecond

// ackLoop tells the agent which output is durable, every ackEvery while
// more arrives.
func (s *Server) ackLoop(ctx context.Context, w *protocol.Writer, have *atomic.Uint64) {
	t := time.NewTicker(ackEvery)
	defer t.Stop()
	acked := have.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		got := have.Load()
		if got == acked {
			continue
		}
		if err := s.st.Sync(); err != nil {
			return
		}
		if err := w.Write(&protocol.LogAck{Offset: got}); err != nil {
			return
		}
		acked = got
	}
}

// drain reads what the peer still sends until it closes its side (or
// for at most d), so the last frames written to it are delivered rather
// than reset.
func drain(st transport.Stream, d time.Duration) {
	_ = st.SetReadDeadline(time.Now().Add(d))
	_, _ = io.Copy(io.Discard, st)
}

// recorded reports whether attempt of job id ended on agent with a
// result the controller stored (not lost).
func (s *Server) recorded(id uint64, attempt uint32, agent string) bool {
	j, err := s.st.Get(id)
	if err != nil || attempt == 0 || int(attempt) > len(j.Attempts) {
		return false
	}
	at := j.Attempts[attempt-1]
	return at.Agent == agent && at.Outcome != "" && at.Outcome != "lost"
}

// register adds a connected agent, replacing an older session of the
// same name, and reconciles the attempts it says it runs with ours.
func (s *scheduler) register(a *agentConn, running []protocol.AttemptRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.agents[a.name]; old != nil {
		old.closed = true
		old.log.Warn("agent reconnected; closing its previous session")
		old.close("replaced by a new session of the same agent")
	}
	s.agents[a.name] = a
	now := time.Now()
	for _, ref := range running {
		if j := s.current(ref.JobID, ref.Attempt, a.name); j != nil {
			a.running[ref.JobID] = ref.Attempt
			s.setLease(ref.JobID, ref.Attempt, now.Add(s.opts.LeaseTTL))
			continue
		}
		a.send(&protocol.Cancel{JobID: ref.JobID, Attempt: ref.Attempt, Reason: "attempt is no longer current"})
	}
	s.kickDispatch()
}

func (s *scheduler) unregister(a *agentConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a.closed = true
	a.credits = 0
	if s.agents[a.name] == a {
		delete(s.agents, a.name)
	}
	// Its attempts keep their leases: the agent may reconnect and claim
	// them; otherwise they expire and count as lost.
}

// drain stops dispatching to agent name; its running jobs go on. It
// reports whether the agent is connected.
func (s *scheduler) drain(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.agents[name]
	if a == nil {
		return false
	}
	a.draining = true
	a.credits = 0
	return true
}

func (s *scheduler) credit(a *agentConn, n int) {
	s.mu.Lock()
	if a.draining {
		s.mu.Unlock()
		return
	}
	// Credits are the agent's word on its free slots. They are not
	// clamped by our view of what it runs (that view can briefly hold an
	// attempt the agent already dropped, and a clamped credit would be
	// lost for good); dispatch checks both credits and slots instead.
	a.credits = min(a.credits+n, a.slots)
	s.mu.Unlock()
	s.kickDispatch()
}

// heartbeat renews the leases of the attempts the agent lists and
// resynchronises its credits. Credits are deltas and a delta can be lost
// (a credit sent on a session that died, an attempt dropped on one side
// only); the heartbeat says what the agent holds, so the free slots are
// slots minus everything it holds or has been sent but not yet seen
// (our attempts on it that it does not list). An attempt it lists as
// ended holds no slot: its process is gone and its Credit went out
// before this heartbeat. Credits it sends after this heartbeat come
// after it on the stream and add to the result.
func (s *scheduler) heartbeat(a *agentConn, running, ended []protocol.AttemptRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	a.lastSeen = now
	listed := make(map[uint64]bool, len(running))
	done := make(map[uint64]bool, len(ended))
	for _, ref := range ended {
		done[ref.JobID] = true
	}
	held := make(map[uint64]bool, len(running)+len(a.running))
	for _, ref := range running {
		listed[ref.JobID] = true
		if !done[ref.JobID] {
			held[ref.JobID] = true
		}
		if s.current(ref.JobID, ref.Attempt, a.name) != nil {
			s.setLease(ref.JobID, ref.Attempt, now.Add(s.opts.LeaseTTL))
			continue
		}
		if !done[ref.JobID] { // an ended attempt has nothing left to stop
			a.send(&protocol.Cancel{JobID: ref.JobID, Attempt: ref.Attempt, Reason: "attempt is no longer current"})
		}
	}
	for id := range a.running {
		if !listed[id] {
			held[id] = true
		}
	}
	if a.draining {
		return
	}
	free := max(a.slots-len(held), 0)
	if free != a.credits {
		a.log.Debug("credits resynchronised from heartbeat", "had", a.credits, "now", free)
		a.credits = free
		s.kickDispatch()
	}
}
