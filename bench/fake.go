package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"sort"
	"sync"
	"time"

	"jobsuite/protocol"
	"jobsuite/transport"
)

// fakeAgent speaks the agent protocol over a real transport session but
// runs nothing: on each Dispatch it reports JobOpen, Started and
// Finished at once on a job stream, waits for the controller's
// FinishAck (the result is durable) and grants the slot again. Like the
// agent, it reports on a stream an earlier attempt left open when the
// controller agrees to FeatureStreamReuse. It measures the controller,
// not process spawning.
type fakeAgent struct {
	name  string
	sess  transport.Session
	w     *protocol.Writer // control stream; safe for concurrent use
	slots int
	hooks fakeHooks
	reuse bool // the Welcome agreed to FeatureStreamReuse

	idleMu sync.Mutex
	idle   []*fakeStream // streams whose attempt got its FinishAck

	mu      sync.Mutex
	running map[protocol.AttemptRef]bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// fakeHooks customise a fake agent. Both may be nil.
type fakeHooks struct {
	// outcome decides how an attempt ends; nil: completed.
	outcome func(d *protocol.Dispatch) protocol.Outcome
	// done is called once the controller acknowledged an attempt's
	// result (FinishAck), with the outcome reported.
	done func(d *protocol.Dispatch, o protocol.Outcome)
}

// dialFake connects a fake agent named name (its certificate's name)
// with slots free slots. With credit false it grants none: an idle agent.
func dialFake(ctx context.Context, addr string, conf *tls.Config, mode transport.Mode, name string, slots int, credit bool, hooks fakeHooks) (*fakeAgent, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sess, err := transport.Dial(dctx, addr, conf, mode, transport.Options{})
	if err != nil {
		return nil, err
	}
	st, err := sess.OpenStream(dctx)
	if err != nil {
		sess.Close("bench")
		return nil, err
	}
	w, r := protocol.NewWriter(st), protocol.NewReader(st, 0)
	if err := w.Write(&protocol.Hello{Version: protocol.Version, Name: name, Slots: uint32(slots), AgentVersion: "bench-fake",
		Features: protocol.FeatureStreamReuse}); err != nil {
		sess.Close("bench")
		return nil, err
	}
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := r.Read()
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		sess.Close("bench")
		return nil, fmt.Errorf("%s: waiting for welcome: %w", name, err)
	}
	welcome, ok := m.(*protocol.Welcome)
	if !ok {
		sess.Close("bench")
		return nil, fmt.Errorf("%s: answer to hello: %#v", name, m)
	}
	fctx, fcancel := context.WithCancel(context.Background())
	f := &fakeAgent{name: name, sess: sess, w: w, slots: slots, hooks: hooks,
		reuse:   welcome.Features.Has(protocol.FeatureStreamReuse),
		running: map[protocol.AttemptRef]bool{}, ctx: fctx, cancel: fcancel}
	if credit && slots > 0 {
		if err := w.Write(&protocol.Credit{Slots: uint32(slots)}); err != nil {
			f.close()
			return nil, err
		}
	}
	f.wg.Add(2)
	go f.read(r)
	go f.heartbeat(welcome.HeartbeatInterval)
	return f, nil
}

func (f *fakeAgent) close() {
	f.cancel()
	f.sess.Close("bench over")
	f.wg.Wait()
}

func (f *fakeAgent) read(r *protocol.Reader) {
	defer f.wg.Done()
	defer f.cancel()
	for {
		m, err := r.Read()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *protocol.Dispatch:
			ref := protocol.AttemptRef{JobID: m.JobID, Attempt: m.Attempt}
			f.mu.Lock()
			f.running[ref] = true
			f.mu.Unlock()
			f.wg.Add(1)
			go f.run(m, ref, time.Now())
		case *protocol.Error:
			return
		}
	}
}

// fakeStream is a job stream with its reader.
type fakeStream struct {
	st transport.Stream
	r  *protocol.Reader
}

// stream returns an idle job stream, or opens one.
func (f *fakeAgent) stream() (*fakeStream, error) {
	f.idleMu.Lock()
	if n := len(f.idle); n > 0 {
		fs := f.idle[n-1]
		f.idle = f.idle[:n-1]
		f.idleMu.Unlock()
		return fs, nil
	}
	f.idleMu.Unlock()
	st, err := f.sess.OpenStream(f.ctx)
	if err != nil {
		return nil, err
	}
	return &fakeStream{st: st, r: protocol.NewReaderSize(st, 0, 512)}, nil // as the agent: only acks come back
}

// run reports one attempt.
func (f *fakeAgent) run(d *protocol.Dispatch, ref protocol.AttemptRef, received time.Time) {
	defer f.wg.Done()
	outcome := protocol.OutcomeCompleted
	if f.hooks.outcome != nil {
		outcome = f.hooks.outcome(d)
	}
	var code int32
	if outcome != protocol.OutcomeCompleted {
		code = 1
	}
	acked := false
	defer func() {
		f.mu.Lock()
		delete(f.running, ref)
		f.mu.Unlock()
		if acked {
			// A control-stream write, not a disk one: a failed write means
			// the session is gone, and the control reader ends the fake.
			_ = f.w.Write(&protocol.Credit{Slots: 1})
			if f.hooks.done != nil {
				f.hooks.done(d, outcome)
			}
		}
	}()
	fs, err := f.stream()
	if err != nil {
		return
	}
	st := fs.st
	defer func() {
		if acked && f.reuse {
			_ = st.SetReadDeadline(time.Time{})
			f.idleMu.Lock()
			f.idle = append(f.idle, fs)
			f.idleMu.Unlock()
			return
		}
		st.Abort()
	}()
	// The three messages in one write: a job that ends at once has
	// them together, and the controller reads them one by one anyway.
	if err := protocol.NewWriter(st).WriteAll(
		&protocol.JobOpen{JobID: d.JobID, Attempt: d.Attempt},
		&protocol.Started{PID: 1, StartedAt: received},
		&protocol.Finished{Outcome: outcome, ExitCode: code},
	); err != nil {
		return
	}
	if !f.reuse {
		_ = st.Close()
	}
	_ = st.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		m, err := fs.r.Read()
		if err != nil {
			return
		}
		switch m.(type) {
		case *protocol.FinishAck:
			acked = true
			return
		case *protocol.Error:
			return
		}
	}
}

func (f *fakeAgent) heartbeat(every time.Duration) {
	defer f.wg.Done()
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		refs := make([]protocol.AttemptRef, 0, len(f.running))
		for ref := range f.running {
			refs = append(refs, ref)
		}
		f.mu.Unlock()
		sort.Slice(refs, func(i, j int) bool { return refs[i].JobID < refs[j].JobID })
		seq++
		if err := f.w.Write(&protocol.Heartbeat{Seq: seq, Running: refs}); err != nil {
			return
		}
	}
}

// fleet is a group of fake agents.
type fleet []*fakeAgent

// dialFleet connects n fake agents named prefix-1…prefix-n, par at a time.
func dialFleet(ctx context.Context, p *pki, addr string, mode transport.Mode, prefix string, n, slots, par int, credit bool, hooks fakeHooks) (fleet, error) {
	out := make(fleet, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("%s-%d", prefix, i+1)
			conf, err := p.agentTLS(name)
			if err != nil {
				errs <- err
				return
			}
			f, err := dialFake(ctx, addr, conf, mode, name, slots, credit, hooks)
			if err != nil {
				errs <- err
				return
			}
			out[i] = f
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		out.close()
		return nil, err
	}
	return out, nil
}

func (fl fleet) close() {
	var wg sync.WaitGroup
	for _, f := range fl {
		if f != nil {
			wg.Add(1)
			go func() { defer wg.Done(); f.close() }()
		}
	}
	wg.Wait()
}
