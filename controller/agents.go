package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// agentConn is one connected agent session: its connection, its control
// stream's writer and its status requests. It is the scheduler's
// sched.Session; what the scheduler knows of it (credits, attempts,
// last heartbeat) is the scheduler's, in its registry
// (sched/registry.go).
type agentConn struct {
	name      string
	labels    map[string]string
	slots     int
	version   string
	features  protocol.Features // what its Hello announced
	transport string
	addr      string
	connected time.Time
	sess      transport.Session
	log       hclog.Logger

	out  chan protocol.Message // to the control stream writer
	ctrl *protocol.Writer      // the control stream
	// gate, in a cluster, says whether this controller may still send a
	// Dispatch or Cancel as leader (Node.mayLead); nil: always.
	gate      func() bool
	term      uint64      // the leadership term stamped on Dispatch and Cancel; 0 for a single controller
	writing   atomic.Bool // a writeControl goroutine runs
	closeOnce sync.Once
	// redirects: the agent announced FeatureRedirect. farewell, once
	// set, is the last message writeControl writes (sayFarewell).
	redirects bool
	farewell  atomic.Pointer[protocol.Redirect]
	// creditWithResult: the agent announced FeatureCreditWithResult and
	// the Welcome agreed, so a Finished with Credit set returns its
	// attempt's slot (sched.Scheduler.SlotReturned).
	creditWithResult bool
	// streamReuse: the agent announced FeatureStreamReuse (the Welcome
	// agrees to it): a job stream carries its attempts one after another.
	streamReuse bool
	gone        chan struct{} // closed when serveAgent returns

	statusMu   sync.Mutex
	statusSeq  uint64
	statusWait map[uint64]chan *protocol.StatusReply
}

// Features returns what the agent's Hello announced (the scheduler asks,
// sched/registry.go).
func (a *agentConn) Features() protocol.Features { return a.features }

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

// Name, Labels and Slots are what the agent said in its hello.
func (a *agentConn) Name() string              { return a.name }
func (a *agentConn) Labels() map[string]string { return a.labels }
func (a *agentConn) Slots() int                { return a.slots }

// Log is the session's logger.
func (a *agentConn) Log() hclog.Logger { return a.log }

// Send queues a message for the agent without blocking.
func (a *agentConn) Send(m protocol.Message) {
	select {
	case a.out <- m:
		a.kick()
	default:
		a.log.Warn("agent is not reading its control stream; closing the session")
		a.Close("control stream backlog full")
	}
}

// Close ends the session; the serving goroutine cleans up.
func (a *agentConn) Close(reason string) {
	a.closeOnce.Do(func() { _ = a.sess.Close(reason) })
}

// conn is the agentConn behind a scheduler's session: every session the
// scheduler holds is one serveAgent registered.
func conn(sess sched.Session) *agentConn {
	a, _ := sess.(*agentConn)
	return a
}

// agentInfo describes a connected agent for the API.
func agentInfo(ag sched.Agent) api.AgentInfo {
	a := conn(ag.Session)
	labels := a.labels
	if labels == nil {
		labels = map[string]string{}
	}
	return api.AgentInfo{
		Name: a.name, Labels: labels, Slots: a.slots, Running: ag.Running,
		Credits: ag.Credits, Draining: ag.Draining, Transport: a.transport, Address: a.addr, Version: a.version,
		ConnectedAt: a.connected, LastSeen: ag.LastSeen, Jobs: ag.Jobs, DrainedBy: ag.DrainedBy,
	}
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
		discardUntilEOF(ctrl, 2*time.Second) // the Error arrives before the session closes
	}
	m, err := r.Read()
	if err != nil {
		log.Warn("bad hello", "error", err)
		goodbye(protocol.CodeProtocol, "expected hello: "+err.Error())
		return
	}
	if wl, ok := m.(*protocol.WatchLeader); ok {
		rd, refusal := s.answerWatch(wl)
		if rd == nil {
			log.Info("refusing a watch session", "reason", refusal)
			goodbye(protocol.CodeProtocol, refusal)
			return
		}
		_ = ctrl.SetWriteDeadline(time.Now().Add(time.Second))
		_ = w.Write(rd) // the agent's next try recovers a lost one
		_ = ctrl.Close()
		discardUntilEOF(ctrl, 2*time.Second) // the Redirect arrives before the session closes
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
		name: name, labels: hello.Labels, slots: int(hello.Slots), version: hello.AgentVersion, features: hello.Features,
		transport: sess.Transport(), addr: sess.RemoteAddr().String(), connected: time.Now().UTC(),
		sess: sess, log: log, out: make(chan protocol.Message, outQueue+2*min(int(hello.Slots), 4096)), ctrl: w,
		gate: s.gate, term: s.term,
		redirects:        hello.Features&protocol.FeatureRedirect != 0,
		creditWithResult: hello.Features.Has(protocol.FeatureCreditWithResult),
		streamReuse:      hello.Features.Has(protocol.FeatureStreamReuse),
		gone:             make(chan struct{}),
	}
	defer close(a.gone)
	welcome := &protocol.Welcome{
		Version: protocol.Version, ControllerID: s.id,
		HeartbeatInterval: s.cfg.HeartbeatInterval, LeaseTTL: s.cfg.LeaseTTL,
		Term: s.term,
		// The features that need this controller's consent, of those
		// the agent announced.
		Features: hello.Features & s.consents(),
	}
	if s.members != nil {
		welcome.Members = s.members()
	}
	if err := w.Write(welcome); err != nil {
		log.Warn("welcome failed", "error", err)
		return
	}
	s.sched.Register(a, hello.Running)
	if _, revoked := s.sec.deniedConn(sess.ConnectionState()); revoked {
		a.Close("certificate revoked") // while it said hello: cutOff missed it
	}
	log.Info("agent connected", "slots", a.slots, "labels", sched.FormatLabels(a.labels), "version", a.version)
	defer func() {
		s.sched.Unregister(a)
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
		a.Close("session ended")
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
			s.sched.Credit(a, int(m.Slots))
		case *protocol.Heartbeat:
			s.sched.Heartbeat(a, m.Running, m.Ended)
		case *protocol.Drain:
			log.Info("agent is draining: no new jobs for it")
			s.sched.Stopping(a)
		case *protocol.StatusReply:
			a.deliverStatus(m)
		case *protocol.Error:
			log.Warn("agent reported an error", "code", m.Code, "message", m.Message)
			return
		default:
			log.Warn("unexpected message on control stream", "type", m.Type())
			a.Send(&protocol.Error{Code: protocol.CodeProtocol, Message: fmt.Sprintf("unexpected message type %d on the control stream", m.Type())})
			return
		}
	}
}

// refuse tells a peer why it is turned away, as far as it listens.
func (s *Server) refuse(ctx context.Context, sess transport.Session, code uint16, msg string) {
	refuseSession(ctx, sess, code, msg)
}

// refuseSession sends a peer an Error on the control stream it opens
// (if it opens one within a second) and ends its session.
func refuseSession(ctx context.Context, sess transport.Session, code uint16, msg string) {
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if st, err := sess.AcceptStream(hctx); err == nil {
		_ = st.SetWriteDeadline(time.Now().Add(time.Second))
		_ = protocol.NewWriter(st).Write(&protocol.Error{Code: code, Message: msg})
		_ = st.Close()
		discardUntilEOF(st, 2*time.Second) // the Error arrives before the session closes
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
			if a.gate != nil && fenced(m) && !a.gate() {
				// A deposed leader sends nothing that acts on a job: the
				// new leader tracks the attempt under a fresh lease.
				a.log.Warn("not sending: this controller is no longer the leader", "message", m.Type())
				a.Close("this controller is no longer the leader")
				return
			}
			if a.term != 0 {
				m = withTerm(m, a.term)
			}
			if err := a.ctrl.Write(m); err != nil {
				a.log.Debug("control write failed", "error", err)
				a.Close("write failed")
				return
			}
		default:
			if f := a.farewell.Swap(nil); f != nil {
				// After everything queued before it; writing stays set,
				// so nothing is written after it.
				if err := a.ctrl.Write(f); err != nil {
					a.Close("write failed")
				}
				return
			}
			a.writing.Store(false)
			// A message queued since the queue looked empty found
			// writing set and started no writer: this one goes on.
			if len(a.out) == 0 || !a.writing.CompareAndSwap(false, true) {
				return
			}
		}
	}
}

// farewellWait bounds how long a term that ends waits for its agents
// to leave after their Redirect.
const farewellWait = time.Second

// sayFarewell sends each agent that follows redirects a Redirect, the
// last message of its session, and waits up to farewellWait for them
// to close their sessions: a leader that loses its leadership points
// its agents at the new one (or, when none is known yet, at the
// members) instead of leaving them to find out from a closed session.
// Agents that do not follow redirects are closed with the rest when
// the term's Server stops.
func (s *Server) sayFarewell(m *protocol.Redirect) {
	var gone []chan struct{}
	for _, ag := range s.sched.Agents() {
		a := conn(ag.Session)
		if a == nil || !a.redirects {
			continue
		}
		a.farewell.Store(m)
		a.kick()
		gone = append(gone, a.gone)
	}
	deadline := time.NewTimer(farewellWait)
	defer deadline.Stop()
	for _, g := range gone {
		select {
		case <-g:
		case <-deadline.C:
			return
		}
	}
}

// consents is the features this controller agrees to use with an
// agent that announces them: the slot with the result, job streams
// that carry one attempt after another, and in a
// cluster the agent's watch sessions (its other controllers serve them,
// Node.serveWatch).
func (s *Server) consents() protocol.Features {
	f := protocol.FeatureCreditWithResult | protocol.FeatureStreamReuse
	if s.cluster != nil {
		f |= protocol.FeatureLeaderWatch
	}
	return f
}

// answerWatch answers a watch session (PROTOCOL.md §2.4) that reached
// the leader of a cluster: one watching an earlier term's leader is
// told that this controller leads now; one watching this very term
// reached its own leader under another address, and is refused, as is
// any on a single controller.
func (s *Server) answerWatch(m *protocol.WatchLeader) (*protocol.Redirect, string) {
	switch {
	case s.cluster == nil:
		return nil, "this is a single controller: there is no leader to watch"
	case m.Term >= s.term:
		return nil, fmt.Sprintf("this controller is the leader of term %d that the agent is attached to: watch another controller of the cluster", s.term)
	}
	rd := &protocol.Redirect{Leader: s.cluster.advertisedAgent()}
	if s.members != nil {
		rd.Members = s.members()
	}
	return rd, ""
}

// fenced reports whether m acts on a job (Dispatch, Cancel): what a
// cluster node sends only while it may still lead.
func fenced(m protocol.Message) bool {
	switch m.(type) {
	case *protocol.Dispatch, *protocol.Cancel:
		return true
	}
	return false
}

// withTerm returns m stamped with the leadership term if it is a
// Dispatch or Cancel (a copy: the scheduler may still hold m), so an
// agent that has seen a newer leader drops it (PROTOCOL.md §2.4).
func withTerm(m protocol.Message, term uint64) protocol.Message {
	switch v := m.(type) {
	case *protocol.Dispatch:
		c := *v
		c.Term = term
		return &c
	case *protocol.Cancel:
		c := *v
		c.Term = term
		return &c
	}
	return m
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

// serveJobStream serves a job stream: one attempt's start, output and
// result, and — on a session that agreed to FeatureStreamReuse — the
// attempts the agent sends on it after that one, each beginning with its
// own JobOpen once the one before has its FinishAck (PROTOCOL.md §2.2).
// A stream that waits for its next attempt costs a parked goroutine
// until the agent closes it or the session ends; a session holds no
// more streams than the transport's stream limit either way.
func (s *Server) serveJobStream(a *agentConn, st transport.Stream) {
	defer st.Close()
	js := &jobStreamConn{
		st:  st,
		r:   protocol.NewReaderSize(st, s.cfg.MaxFrameBytes, jobStreamReadBuffer),
		w:   protocol.NewWriter(st),
		log: a.log,
	}
	// The first JobOpen is due at once; a reused stream waits for the
	// next attempt as long as the session lives.
	_ = st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	for {
		m, err := js.r.Read()
		if err != nil {
			return // an idle stream the agent closed, or the session ended
		}
		_ = st.SetReadDeadline(time.Time{})
		open, ok := m.(*protocol.JobOpen)
		if !ok {
			js.fail(protocol.CodeProtocol, "expected job open, got %s", m.Type())
			return
		}
		if !s.serveAttempt(a, js, open) {
			return
		}
		if !a.streamReuse {
			// The FinishAck was the stream's last frame: let it arrive.
			discardUntilEOF(st, 10*time.Second)
			return
		}
	}
}

// jobStreamConn is the controller's end of a job stream.
type jobStreamConn struct {
	st  transport.Stream
	r   *protocol.Reader
	w   *protocol.Writer
	log hclog.Logger
}

// fail ends the stream with an Error: its last frame.
func (js *jobStreamConn) fail(code uint16, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	js.log.Warn("job stream refused", "reason", msg)
	_ = js.w.Write(&protocol.Error{Code: code, Message: msg})
	_ = js.st.Close()
	discardUntilEOF(js.st, 2*time.Second) // let the Error arrive rather than reset it
}

// serveAttempt receives the attempt open names: its start, output and
// result. It reports whether the attempt ended with a FinishAck (and so
// the stream may carry another); false means the stream is over. The
// agent may open a stream for the same attempt again after a reconnect;
// it then resends output from its last acknowledged offset, and bytes
// already stored are skipped, so the stored log has every byte once.
//
// Output is acknowledged (LogAck) only once it is durable: an acker
// syncs the store at most every ackEvery and then tells the agent, which
// may then discard it from its spool.
func (s *Server) serveAttempt(a *agentConn, js *jobStreamConn, open *protocol.JobOpen) bool {
	r, w, fail := js.r, js.w, js.fail
	id, attempt := open.JobID, open.Attempt
	logStart, end, ok := s.sched.StreamStart(id, attempt, a.name)
	if !ok {
		if s.recorded(id, attempt, a.name) {
			// The result is stored; the agent missed our FinishAck. The
			// read may see its batch before it is synced (sched/commit.go):
			// wait until it is durable before saying so.
			if err := s.c.Barrier().Wait(); err != nil {
				fail(protocol.CodeShutdown, "controller cannot store the result")
				return false
			}
			return w.Write(&protocol.FinishAck{}) == nil
		}
		fail(protocol.CodeStaleAttempt, "job %d attempt %d is not current on agent %s", id, attempt, a.name)
		return false
	}
	acks := &streamAcks{have: end - logStart, id: id, attempt: attempt, logStart: logStart} // output bytes of this attempt stored
	log := a.log.With("job", id, "attempt", attempt)
	if s.out != nil {
		// The output channel: the output a quorum holds (after gap fill,
		// for an attempt an earlier leader took output of).
		have, err := s.outputOpen(context.Background(), id, attempt, logStart)
		if err != nil {
			log.Warn("output channel cannot take the stream yet", "error", err)
			fail(protocol.CodeShutdown, "controller cannot take output yet: %v", err)
			return false
		}
		acks.have = have
	} else if acks.have > 0 {
		// On a reopened stream, what we have may not be durable yet (the
		// previous stream's last chunks): wait for it before saying so. A
		// fresh attempt has nothing stored, so it costs no wait.
		if err := s.c.Barrier().Wait(); err != nil {
			fail(protocol.CodeShutdown, "controller cannot store output")
			return false
		}
	}
	if acks.have > open.Offset {
		// The agent resumes below what is stored: tell it. An answer
		// that says what it knows (a fresh attempt's 0) would cost a
		// packet each way and tell nothing; the next frame it gets is a
		// later LogAck, the FinishAck or an Error.
		if err := w.Write(&protocol.LogAck{Offset: acks.have}); err != nil {
			return false
		}
	}

	// The acker starts with the first output: most short jobs write
	// none. It is stopped, and waited for, before the FinishAck, so that
	// no LogAck of this attempt follows it on a stream that carries the
	// next attempt.
	var stopAcks func()
	defer func() {
		if stopAcks != nil {
			stopAcks()
		}
	}()
	startAcks := func() {
		if stopAcks != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		acked := acks.stored() // what the agent knows of: before this chunk
		go func() {
			defer close(done)
			s.ackLoop(ctx, w, acks, acked)
		}()
		stopAcks = func() {
			cancel()
			<-done
		}
	}

	for {
		m, err := r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug("job stream ended", "error", err)
			}
			return false
		}
		switch m := m.(type) {
		case *protocol.Started:
			if err := s.sched.Started(a.name, id, attempt, m); err != nil {
				fail(protocol.CodeStaleAttempt, "%v", err)
				return false
			}
		case *protocol.LogChunk:
			data, off, got := m.Data, m.Offset, acks.stored()
			if off > got {
				fail(protocol.CodeProtocol, "log gap: chunk at offset %d, have %d", off, got)
				return false
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
			if limit := s.maxOutput; limit > 0 && got+uint64(len(data)) > limit+maxOutputSlack {
				// The agent stops at MaxOutput (and adds a marker line): one
				// that goes on ignores the Dispatch.
				fail(protocol.CodeProtocol, "output passes the cap of %d bytes the dispatch set (MaxOutput)", limit)
				return false
			}
			if err := s.disk.Room(len(data)); err != nil {
				// Nothing is lost: the agent keeps the output spooled and
				// sends it again on a later stream.
				fail(protocol.CodeStorageFull, "%v", err)
				return false
			}
			startAcks()
			// The reader reuses its buffer: the command (and the hub, which
			// keeps the newest output of followed jobs) get a copy.
			data = bytes.Clone(data)
			if s.out != nil {
				seq, stale, err := s.outputAppend(a.name, id, attempt, got, uint8(m.Stream), data)
				if stale {
					fail(protocol.CodeStaleAttempt, "%v", err)
					return false
				}
				if err != nil {
					log.Error("storing output failed", "error", err)
					fail(protocol.CodeShutdown, "controller cannot store output")
					return false
				}
				acks.appended(got+uint64(len(data)), seq)
				continue
			}
			b, err := s.sched.Output(a.name, id, attempt, got, uint8(m.Stream), data)
			if err != nil {
				fail(protocol.CodeStaleAttempt, "%v", err)
				return false
			}
			if err := b.Err(); err != nil {
				log.Error("storing output failed", "error", err)
				fail(protocol.CodeShutdown, "controller cannot store output")
				return false
			}
			got += uint64(len(data))
			acks.queued(got, b)
		case *protocol.Finished:
			if have := acks.stored(); m.LogBytes != have {
				fail(protocol.CodeProtocol, "result says %d output bytes, %d arrived", m.LogBytes, have)
				return false
			}
			if s.out != nil {
				// The end is proposed only once a quorum holds every byte
				// it counts: the scheduler's end is then the agent's.
				if err := s.out.leader.WaitDurable(context.Background(), acks.lastSeq()); err != nil {
					fail(protocol.CodeShutdown, "controller cannot store output: %v", err)
					return false
				}
			}
			b, err := s.sched.Finished(a.name, id, attempt, m)
			if err != nil {
				// A refused result returns no slot: the agent sends a
				// Credit once it learns of the refusal (PROTOCOL.md §2.1).
				fail(protocol.CodeStaleAttempt, "%v", err)
				return false
			}
			if m.Credit && a.creditWithResult {
				s.sched.SlotReturned(a, id, attempt)
			}
			if err := b.Wait(); err != nil {
				return false
			}
			s.hub.Ring(id)
			if stopAcks != nil {
				stopAcks()
				stopAcks = nil
			}
			return w.Write(&protocol.FinishAck{}) == nil
		default:
			fail(protocol.CodeProtocol, "unexpected %s on a job stream", m.Type())
			return false
		}
	}
}

// maxOutputSlack is how far past Dispatch.MaxOutput an attempt's output
// may go: the agent's marker line that says it was cut.
const maxOutputSlack = 4 << 10

// ackEvery is how often a job stream acknowledges stored output.
const ackEvery = 50 * time.Millisecond

// streamAcks is the output a job stream has queued to the store and the
// committer batch holding the last of it.
type streamAcks struct {
	mu   sync.Mutex
	have uint64       // output bytes of the attempt queued (or stored before the stream)
	b    *sched.Batch // the batch holding the last chunk queued; nil before the first
	seq  uint64       // with the output channel: the seq of the last chunk appended; 0 before the first

	id       uint64
	attempt  uint32
	logStart uint64
}

// appended records that the attempt's output up to have is on the
// output channel, the last of it as seq.
func (a *streamAcks) appended(have, seq uint64) {
	a.mu.Lock()
	a.have, a.seq = have, seq
	a.mu.Unlock()
}

func (a *streamAcks) lastSeq() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seq
}

func (a *streamAcks) stored() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.have
}

// queued records that the attempt's output up to have is queued, the
// last of it in b.
func (a *streamAcks) queued(have uint64, b *sched.Batch) {
	a.mu.Lock()
	a.have, a.b = have, b
	a.mu.Unlock()
}

// ackLoop tells the agent which output is durable, every ackEvery while
// more arrives: it waits for the batch holding the last chunk counted
// (batches become durable in order, so every earlier chunk is durable
// with it) and then sends the LogAck. acked is the offset the agent
// already knows to be stored.
func (s *Server) ackLoop(ctx context.Context, w *protocol.Writer, acks *streamAcks, acked uint64) {
	t := time.NewTicker(ackEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		acks.mu.Lock()
		got, b, seq := acks.have, acks.b, acks.seq
		acks.mu.Unlock()
		if got == acked {
			continue
		}
		if s.out != nil {
			// A LogAck says what the scheduler counts: output a quorum
			// holds, of an attempt still current (once it ended, its
			// LogBytes is decided and nothing more is acknowledged).
			if err := s.out.leader.WaitDurable(ctx, seq); err != nil {
				return
			}
			d, ok := s.sched.OutputDurable(acks.id, acks.attempt, 0)
			if !ok {
				return
			}
			if off := d - acks.logStart; off > acked {
				if err := w.Write(&protocol.LogAck{Offset: off}); err != nil {
					return
				}
				acked = off
			}
			continue
		}
		if err := b.Wait(); err != nil {
			return
		}
		if err := w.Write(&protocol.LogAck{Offset: got}); err != nil {
			return
		}
		acked = got
	}
}

// discardUntilEOF reads what the peer still sends until it closes its
// side (or for at most d), so the last frames written to it are delivered
// rather than reset. (Not to be confused with draining an agent, which
// stops dispatching to it: sched.Scheduler.Drain.)
func discardUntilEOF(st transport.Stream, d time.Duration) {
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
	return at.Agent == agent && at.Outcome != "" && at.Outcome != store.OutcomeLost
}
