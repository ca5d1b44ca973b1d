package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
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
	closeOnce sync.Once

	// guarded by scheduler.mu
	credits  int
	running  map[uint64]uint32 // job ID → attempt
	lastSeen time.Time
	closed   bool
}

// outQueue bounds the messages waiting for an agent's control stream. An
// agent that lets it fill up is not reading and gets disconnected.
const outQueue = 4096

// send queues a message for the agent without blocking.
func (a *agentConn) send(m protocol.Message) {
	select {
	case a.out <- m:
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
			Credits: a.credits, Transport: a.transport, Address: a.addr, Version: a.version,
			ConnectedAt: a.connected, LastSeen: a.lastSeen, Jobs: jobs,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

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
	log = log.With("agent", name)

	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	ctrl, err := sess.AcceptStream(hctx)
	cancel()
	if err != nil {
		log.Warn("agent opened no control stream", "error", err)
		return
	}
	_ = ctrl.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	r := protocol.NewReader(ctrl, 0)
	w := protocol.NewWriter(ctrl)
	m, err := r.Read()
	if err != nil {
		log.Warn("bad hello", "error", err)
		_ = w.Write(&protocol.Error{Code: protocol.CodeProtocol, Message: "expected hello: " + err.Error()})
		return
	}
	hello, ok := m.(*protocol.Hello)
	if !ok {
		log.Warn("first message is not a hello", "type", m.Type())
		_ = w.Write(&protocol.Error{Code: protocol.CodeProtocol, Message: "expected hello"})
		return
	}
	if err := protocol.CheckVersion(hello.Version); err != nil {
		log.Warn("refusing agent", "error", err)
		_ = w.Write(&protocol.Error{Code: protocol.CodeVersion, Message: err.Error()})
		return
	}
	if hello.Name != "" && hello.Name != name {
		log.Warn("refusing agent: hello name differs from certificate", "hello_name", hello.Name)
		_ = w.Write(&protocol.Error{Code: protocol.CodeForbidden, Message: fmt.Sprintf("agent name %q does not match its certificate name %q", hello.Name, name)})
		return
	}
	_ = ctrl.SetReadDeadline(time.Time{})

	a := &agentConn{
		name: name, labels: hello.Labels, slots: int(hello.Slots), version: hello.AgentVersion,
		transport: sess.Transport(), addr: sess.RemoteAddr().String(), connected: time.Now().UTC(),
		sess: sess, log: log, out: make(chan protocol.Message, outQueue),
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
	log.Info("agent connected", "slots", a.slots, "labels", formatLabels(a.labels), "version", a.version)
	defer func() {
		s.sched.unregister(a)
		log.Info("agent disconnected")
	}()

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // a blocked read of the control stream ends with the session
		select {
		case <-sess.Done():
		case <-sctx.Done():
		}
		stop()
		a.close("session ended")
	}()
	go s.writeControl(sctx, a, w)
	go s.acceptJobStreams(sctx, a)

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
			s.sched.heartbeat(a, m.Running)
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
	}
	_ = sess.Close(msg)
}

func (s *Server) writeControl(ctx context.Context, a *agentConn, w *protocol.Writer) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-a.out:
			if err := w.Write(m); err != nil {
				a.log.Debug("control write failed", "error", err)
				a.close("write failed")
				return
			}
		}
	}
}

func (s *Server) acceptJobStreams(ctx context.Context, a *agentConn) {
	for {
		st, err := a.sess.AcceptStream(ctx)
		if err != nil {
			return
		}
		go s.serveJobStream(a, st)
	}
}

// serveJobStream receives one attempt's start, output and result.
func (s *Server) serveJobStream(a *agentConn, st transport.Stream) {
	defer st.Close()
	r := protocol.NewReader(st, 0)
	w := protocol.NewWriter(st)
	fail := func(code uint16, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		a.log.Warn("job stream refused", "reason", msg)
		_ = w.Write(&protocol.Error{Code: code, Message: msg})
	}
	m, err := r.Read()
	if err != nil {
		return
	}
	open, ok := m.(*protocol.JobOpen)
	if !ok {
		fail(protocol.CodeProtocol, "expected job open, got message type %d", m.Type())
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
		fail(protocol.CodeStaleAttempt, "job %d attempt %d is not current on agent %s", id, attempt, a.name)
		return
	}
	have := end - logStart // output bytes of this attempt already stored
	log := a.log.With("job", id, "attempt", attempt)

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
			data, off := m.Data, m.Offset
			if off > have {
				fail(protocol.CodeProtocol, "log gap: chunk at offset %d, have %d", off, have)
				return
			}
			if skip := have - off; skip > 0 { // resent bytes we already have
				if skip >= uint64(len(data)) {
					continue
				}
				data = data[skip:]
			}
			if len(data) == 0 {
				continue
			}
			if err := s.st.AppendLog(id, store.Chunk{Offset: logStart + have, Stream: uint8(m.Stream), Data: data}); err != nil {
				log.Error("storing output failed", "error", err)
				fail(protocol.CodeShutdown, "controller cannot store output")
				return
			}
			have += uint64(len(data))
			s.sched.mu.Lock()
			if _, ok := s.sched.logEnd[id]; ok {
				s.sched.logEnd[id] = logStart + have
			}
			s.sched.mu.Unlock()
			s.hub.ring(id)
		case *protocol.Finished:
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
			return
		default:
			fail(protocol.CodeProtocol, "unexpected message type %d on a job stream", m.Type())
			return
		}
	}
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
			s.leases[ref.JobID] = now.Add(s.opts.LeaseTTL)
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

func (s *scheduler) credit(a *agentConn, n int) {
	s.mu.Lock()
	a.credits += n
	if max := a.slots - len(a.running); a.credits > max {
		a.credits = max
	}
	if a.credits < 0 {
		a.credits = 0
	}
	s.mu.Unlock()
	s.kickDispatch()
}

func (s *scheduler) heartbeat(a *agentConn, running []protocol.AttemptRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	a.lastSeen = now
	for _, ref := range running {
		if s.current(ref.JobID, ref.Attempt, a.name) != nil {
			s.leases[ref.JobID] = now.Add(s.opts.LeaseTTL)
			continue
		}
		a.send(&protocol.Cancel{JobID: ref.JobID, Attempt: ref.Attempt, Reason: "attempt is no longer current"})
	}
}
