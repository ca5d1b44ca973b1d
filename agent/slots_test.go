package agent

import (
	"context"
	"slices"
	"testing"
	"time"

	"jobsuite/certs"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// TestSlotGrantedAtExit runs an attempt against a fake controller that
// withholds the FinishAck. The agent must grant the slot again (Credit)
// as soon as the process has ended, not after the FinishAck; every
// heartbeat must list the attempt while the agent holds it, as ended
// exactly when its Credit came before the heartbeat; and the FinishAck
// must not bring a second Credit. With a controller that agreed to
// FeatureCreditWithResult, the grant is the Finished's Credit instead:
// no Credit at all, and the attempt listed as running (not ended) until
// the FinishAck. A controller that refuses such a result (the attempt
// is stale) gets the Credit after all, once.
func TestSlotGrantedAtExit(t *testing.T) {
	for name, tc := range map[string]struct {
		agree, refuse bool
	}{
		"credit on the control stream": {},
		"credit with the result":       {agree: true},
		"result refused":               {agree: true, refuse: true},
	} {
		t.Run(name, func(t *testing.T) { testSlotGrantedAtExit(t, tc.agree, tc.refuse) })
	}
}

func testSlotGrantedAtExit(t *testing.T, agree, refuse bool) {
	pki, state := testPKI(t), t.TempDir()
	files := func(name string) certs.Files {
		return certs.Files{CA: certs.CAFile(pki), Cert: certs.CertFile(pki, name), Key: certs.KeyFile(pki, name)}
	}
	pool, cert, err := files("controller").Load()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := transport.Listen("127.0.0.1:0", certs.ServerTLS(pool, cert), transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	a, err := New(Config{
		Controller: ln.Addr(), TLS: files("agent-1"), Slots: 1, Transport: transport.ModeTCP,
		StateDir: state, WorkDir: state, ReconnectMin: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	defer func() { stop(); <-runDone }()

	tctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sess, err := ln.Accept(tctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close("test over")
	ctrl, err := sess.AcceptStream(tctx)
	if err != nil {
		t.Fatal(err)
	}
	r, w := protocol.NewReader(ctrl, 0), protocol.NewWriter(ctrl)
	if m, err := r.Read(); err != nil {
		t.Fatal(err)
	} else if h, ok := m.(*protocol.Hello); !ok || !h.Features.Has(protocol.FeatureCreditWithResult) {
		t.Fatalf("first message %#v, want Hello announcing FeatureCreditWithResult", m)
	}
	welcome := &protocol.Welcome{Version: protocol.Version, HeartbeatInterval: 20 * time.Millisecond, LeaseTTL: time.Hour}
	if agree {
		welcome.Features = protocol.FeatureCreditWithResult
	}
	if err := w.Write(welcome); err != nil {
		t.Fatal(err)
	}
	msgs := make(chan protocol.Message, 1024)
	go func() {
		defer close(msgs)
		for {
			m, err := r.Read()
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	next := func() protocol.Message {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("control stream ended")
			}
			return m
		case <-tctx.Done():
			t.Fatal("timed out waiting for a control message")
		}
		return nil
	}
	credit := func() {
		t.Helper()
		for {
			switch m := next().(type) {
			case *protocol.Credit:
				if m.Slots != 1 {
					t.Fatalf("Credit{%d}, want 1", m.Slots)
				}
				return
			case *protocol.Heartbeat:
				if len(m.Running) != 0 || len(m.Ended) != 0 {
					t.Fatalf("heartbeat before the job: %+v", m)
				}
			}
		}
	}
	credit() // the free slot, at connect

	ref := protocol.AttemptRef{JobID: 7, Attempt: 1}
	if err := w.Write(&protocol.Dispatch{JobID: 7, Attempt: 1, Command: "echo hi", CaptureLogs: true, KillGrace: time.Second}); err != nil {
		t.Fatal(err)
	}
	st, err := sess.AcceptStream(tctx)
	if err != nil {
		t.Fatal(err)
	}
	jr, jw := protocol.NewReader(st, 0), protocol.NewWriter(st)
	if m, err := jr.Read(); err != nil {
		t.Fatal(err)
	} else if o, ok := m.(*protocol.JobOpen); !ok || o.JobID != 7 || o.Offset != 0 {
		t.Fatalf("first job stream message %#v, want JobOpen of job 7", m)
	}
	if err := jw.Write(&protocol.LogAck{Offset: 0}); err != nil {
		t.Fatal(err)
	}
	var fin *protocol.Finished
	for fin == nil {
		m, err := jr.Read()
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := m.(*protocol.Finished); ok {
			fin = f
		}
	}
	if fin.Outcome != protocol.OutcomeCompleted || fin.LogBytes != 3 || fin.Credit != agree {
		t.Fatalf("Finished %+v, want completed with 3 bytes, Credit %v", fin, agree)
	}
	if agree {
		testCreditWithResult(t, next, ref, jw, refuse)
		return
	}

	// No FinishAck yet: the slot comes back anyway. Until its Credit, a
	// heartbeat lists the attempt as held, not ended.
	for credited := false; !credited; {
		switch m := next().(type) {
		case *protocol.Credit:
			if m.Slots != 1 {
				t.Fatalf("Credit{%d}, want 1", m.Slots)
			}
			credited = true
		case *protocol.Heartbeat:
			if len(m.Ended) != 0 {
				t.Fatalf("heartbeat lists %v as ended before its Credit", m.Ended)
			}
		}
	}
	// After it, held and ended until the FinishAck.
	for {
		m := next()
		if _, ok := m.(*protocol.Credit); ok {
			t.Fatal("a second Credit before the FinishAck")
		}
		if hb, ok := m.(*protocol.Heartbeat); ok {
			if !slices.Equal(hb.Running, []protocol.AttemptRef{ref}) || !slices.Equal(hb.Ended, []protocol.AttemptRef{ref}) {
				t.Fatalf("heartbeat after the Credit: %+v, want %v running and ended", hb, ref)
			}
			break
		}
	}
	if err := jw.Write(&protocol.FinishAck{}); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	// Forgotten: heartbeats list nothing, and no Credit came with it.
	for {
		switch m := next().(type) {
		case *protocol.Credit:
			t.Fatal("a Credit after the FinishAck: the slot was granted twice")
		case *protocol.Heartbeat:
			if len(m.Running) == 0 {
				if names := dirNames(t, state); !slices.Equal(names, []string{"rec-0"}) {
					t.Errorf("state directory holds %v, want only the free record", names)
				}
				return
			}
		}
	}
}

// testCreditWithResult goes on from TestSlotGrantedAtExit once the
// Finished carrying the slot has arrived: no Credit comes, heartbeats
// list the attempt as running and not ended until the FinishAck, and
// then nothing. If the controller refuses the result instead, the agent
// sends the Credit, once.
func testCreditWithResult(t *testing.T, next func() protocol.Message, ref protocol.AttemptRef, jw *protocol.Writer, refuse bool) {
	t.Helper()
	// A heartbeat the agent sent before the Dispatch reached it (the
	// control stream is not ordered with the job stream, and on a loaded
	// machine one can go out between the first Credit and the Dispatch)
	// lists nothing; every one after the first that lists the attempt
	// must list it, running, until the FinishAck.
	for beats := 0; beats < 3; {
		switch m := next().(type) {
		case *protocol.Credit:
			t.Fatalf("Credit{%d}: the slot rode the Finished", m.Slots)
		case *protocol.Heartbeat:
			if beats == 0 && len(m.Running) == 0 && len(m.Ended) == 0 {
				continue // from before the Dispatch
			}
			if !slices.Equal(m.Running, []protocol.AttemptRef{ref}) || len(m.Ended) != 0 {
				t.Fatalf("heartbeat before the FinishAck: %+v, want %v running, none ended", m, ref)
			}
			beats++
		}
	}
	if refuse {
		if err := jw.Write(&protocol.Error{Code: protocol.CodeStaleAttempt, Message: "not current"}); err != nil {
			t.Fatal(err)
		}
	} else if err := jw.Write(&protocol.FinishAck{}); err != nil {
		t.Fatal(err)
	}
	credits := 0
	for {
		switch m := next().(type) {
		case *protocol.Credit:
			if !refuse || m.Slots != 1 {
				t.Fatalf("Credit{%d} after the FinishAck (refused %v)", m.Slots, refuse)
			}
			credits++
		case *protocol.Heartbeat:
			if len(m.Running) != 0 {
				continue
			}
			// Forgotten; one more heartbeat, after which no Credit may come.
			for {
				switch next().(type) {
				case *protocol.Credit:
					credits++
				case *protocol.Heartbeat:
					if want := map[bool]int{true: 1}[refuse]; credits != want {
						t.Fatalf("%d Credits after the answer, want %d", credits, want)
					}
					return
				}
			}
		}
	}
}
