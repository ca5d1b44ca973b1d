package controller_test

import (
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/protocol"
	"jobsuite/transport"
)

// An agent grants a slot when the attempt's process ends, before the
// controller has its Finished report (the two travel on different
// streams). The Credit then finds the slot still counted as running;
// the report must free it and dispatch the next job, with no heartbeat
// to resynchronise the credits.
func TestCreditBeforeFinished(t *testing.T) {
	c := startCluster(t)
	// No heartbeat during the test (its resynchronisation would free the
	// slot too): only the Finished report may.
	c.stopController()
	c.cfg.HeartbeatInterval, c.cfg.LeaseTTL = time.Hour, 3*time.Hour
	c.startController()
	f := connectFake(t, c, "agent-1", 1, transport.ModeTCP)
	first := c.submit(`{"command":"true"}`)
	second := c.submit(`{"command":"true"}`)
	f.credit(1)
	d := f.dispatch()
	if d.JobID != first.JobID {
		t.Fatalf("dispatched job %d, want %d", d.JobID, first.JobID)
	}
	js := f.openJob(d.JobID, d.Attempt)
	mustWrite(t, js.w, &protocol.Started{PID: 4242, StartedAt: time.Now()})
	c.waitState(d.JobID, "running")
	f.credit(1) // the process ended
	c.waitFor("the credit to arrive", func() bool {
		var agents []api.AgentInfo
		c.getJSON("/agents", &agents)
		return len(agents) == 1 && agents[0].Credits == 1
	})
	mustWrite(t, js.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 0})
	if m, err := js.reply(); err != nil {
		t.Fatalf("waiting for FinishAck: %v", err)
	} else if _, ok := m.(*protocol.FinishAck); !ok {
		t.Fatalf("answer to Finished: %#v, want FinishAck", m)
	}
	if d := f.dispatch(); d.JobID != second.JobID {
		t.Fatalf("dispatched job %d, want %d", d.JobID, second.JobID)
	}
}

// A heartbeat that lists an attempt as ended says its slot is free (its
// Credit went out before the heartbeat) though the agent still holds it
// until the FinishAck; the controller's resynchronised credit must count
// the slot free, or the agent would get no job until the FinishAck.
func TestHeartbeatEndedHoldsNoSlot(t *testing.T) {
	c := startCluster(t)
	f := connectFake(t, c, "agent-1", 1, transport.ModeTCP)
	first := c.submit(`{"command":"true"}`)
	f.credit(1)
	d := f.dispatch()
	ref := protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt}
	js := f.openJob(d.JobID, d.Attempt)
	mustWrite(t, js.w, &protocol.Started{PID: 4242, StartedAt: time.Now()})
	mustWrite(t, js.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 0})
	if m, err := js.reply(); err != nil {
		t.Fatalf("waiting for FinishAck: %v", err)
	} else if _, ok := m.(*protocol.FinishAck); !ok {
		t.Fatalf("answer to Finished: %#v, want FinishAck", m)
	}
	if first.JobID != d.JobID {
		t.Fatalf("dispatched job %d, want %d", d.JobID, first.JobID)
	}
	// The agent has not read the FinishAck yet: it lists the attempt, as
	// ended, and sent its Credit on a session that died (lost): only the
	// heartbeat can give the slot back.
	f.mu.Lock()
	f.running, f.ended = []protocol.AttemptRef{ref}, []protocol.AttemptRef{ref}
	f.mu.Unlock()
	second := c.submit(`{"command":"true"}`)
	timeout := time.After(waitLimit)
	for {
		var m protocol.Message
		select {
		case m = <-f.ctrl:
		case <-timeout:
			t.Fatalf("no dispatch within %v", waitLimit)
		}
		if d, ok := m.(*protocol.Dispatch); ok {
			if d.JobID != second.JobID {
				t.Fatalf("dispatched job %d, want %d", d.JobID, second.JobID)
			}
			return
		}
		if _, ok := m.(*protocol.Cancel); ok {
			t.Fatalf("controller cancelled an ended attempt: %#v", m)
		}
	}
}
