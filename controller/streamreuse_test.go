package controller_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"jobsuite/protocol"
	"jobsuite/transport"
)

// next reads the controller's next frame on the job stream, LogAcks
// included.
func (js *jobStream) next(t *testing.T) protocol.Message {
	t.Helper()
	_ = js.st.SetReadDeadline(time.Now().Add(waitLimit))
	defer js.st.SetReadDeadline(time.Time{})
	m, err := js.r.Read()
	if err != nil {
		t.Fatalf("job stream: %v", err)
	}
	return m
}

// untilFinishAck reads frames up to the FinishAck; only LogAcks of at
// most max bytes may come before it.
func (js *jobStream) untilFinishAck(t *testing.T, max uint64) {
	t.Helper()
	for {
		switch m := js.next(t).(type) {
		case *protocol.FinishAck:
			return
		case *protocol.LogAck:
			if m.Offset > max {
				t.Fatalf("LogAck{%d} on an attempt of %d bytes", m.Offset, max)
			}
		default:
			t.Fatalf("%#v before the FinishAck", m)
		}
	}
}

// take submits body, grants the fake one credit and returns the job and
// its Dispatch, which the fake's heartbeats then list.
func (f *fakeAgent) take(c *cluster, body string) (job, *protocol.Dispatch) {
	f.t.Helper()
	j := c.submit(body)
	f.credit(1)
	d := f.dispatch()
	f.renew(protocol.AttemptRef{JobID: d.JobID, Attempt: d.Attempt})
	return j, d
}

// TestJobStreamReuse: with FeatureStreamReuse agreed, a job stream
// whose attempt got its FinishAck carries the agent's next attempt, and
// nothing of the first attempt follows its FinishAck. A fresh attempt
// gets no LogAck at its JobOpen (it would say "0", which the agent
// knows): its first answer is the FinishAck.
func TestJobStreamReuse(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeTCP, transport.ModeQUIC} {
		t.Run(string(mode), func(t *testing.T) {
			c := startCluster(t)
			fake := connectFakeWith(t, c, "agent-1", 1, mode, protocol.FeatureStreamReuse)
			if !fake.welcome.Features.Has(protocol.FeatureStreamReuse) {
				t.Fatalf("Welcome.Features %b does not agree to FeatureStreamReuse", fake.welcome.Features)
			}

			j1, d1 := fake.take(c, `{"command":"echo one","retries":0}`)
			js := fake.openJob(d1.JobID, d1.Attempt)
			mustWrite(t, js.w, &protocol.Started{PID: 701, StartedAt: time.Now()})
			mustWrite(t, js.w, &protocol.LogChunk{Stream: protocol.Stdout, Offset: 0, Data: []byte("one\n")})
			mustWrite(t, js.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 4})
			js.untilFinishAck(t, 4)
			c.waitState(j1.JobID, "completed")

			// The next attempt on the same stream.
			j2, d2 := fake.take(c, `{"command":"true","retries":0}`)
			mustWrite(t, js.w, &protocol.JobOpen{JobID: d2.JobID, Attempt: d2.Attempt})
			mustWrite(t, js.w, &protocol.Started{PID: 702, StartedAt: time.Now()})
			mustWrite(t, js.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 0})
			if m := js.next(t); m.Type() != protocol.TypeFinishAck {
				t.Fatalf("first answer on the reused stream: %#v, want the FinishAck", m)
			}
			if got := c.waitState(j2.JobID, "completed", "failed"); got.Status != "completed" {
				t.Fatalf("second job %s: %s", got.Status, got.Reason)
			}
			if got := c.logs(j1.JobID); got != "one\n" {
				t.Errorf("first job's log %q", got)
			}

			// A stale attempt on a reused stream is refused, as on a new one.
			mustWrite(t, js.w, &protocol.JobOpen{JobID: d2.JobID, Attempt: d2.Attempt + 1})
			if m := js.next(t); !isError(m, protocol.CodeStaleAttempt) {
				t.Fatalf("stale attempt on a reused stream: %#v, want Error{Code: %d}", m, protocol.CodeStaleAttempt)
			}
		})
	}
}

// TestJobStreamIdleClosed: the agent closes a stream that waits for an
// attempt, and the controller closes its end.
func TestJobStreamIdleClosed(t *testing.T) {
	c := startCluster(t)
	fake := connectFakeWith(t, c, "agent-1", 1, transport.ModeQUIC, protocol.FeatureStreamReuse)
	j, d := fake.take(c, `{"command":"true","retries":0}`)
	js := fake.openJob(d.JobID, d.Attempt)
	mustWrite(t, js.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 0})
	js.untilFinishAck(t, 0)
	c.waitState(j.JobID, "completed")
	if err := js.st.Close(); err != nil {
		t.Fatal(err)
	}
	_ = js.st.SetReadDeadline(time.Now().Add(waitLimit))
	if m, err := js.r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle stream after the agent closed it: %#v, %v; want the controller's end (EOF)", m, err)
	}
}

// TestJobStreamLogAckOnlyWhenAhead: the controller answers a JobOpen
// with a LogAck only when it holds more of the attempt's output than
// the agent resumes at.
func TestJobStreamLogAckOnlyWhenAhead(t *testing.T) {
	c := startCluster(t)
	fake := connectFake(t, c, "agent-1", 1, transport.ModeTCP) // without FeatureStreamReuse
	if fake.welcome.Features.Has(protocol.FeatureStreamReuse) {
		t.Fatalf("Welcome.Features %b agrees to a feature the agent did not announce", fake.welcome.Features)
	}
	j, d := fake.take(c, `{"command":"echo abc","retries":0}`)
	first := fake.openJob(d.JobID, d.Attempt)
	mustWrite(t, first.w, &protocol.Started{PID: 703, StartedAt: time.Now()})
	mustWrite(t, first.w, &protocol.LogChunk{Stream: protocol.Stdout, Offset: 0, Data: []byte("abc\n")})
	c.waitFor("the output stored", func() bool { return c.logs(j.JobID) == "abc\n" })
	first.st.Abort()

	// Resumed from 0: the controller is ahead and says so first.
	second := fake.openJob(d.JobID, d.Attempt)
	if m, ok := second.next(t).(*protocol.LogAck); !ok || m.Offset != 4 {
		t.Fatalf("answer to JobOpen{Offset: 0} with 4 bytes stored: %#v, want LogAck{4}", m)
	}
	second.st.Abort()

	// Resumed from 4: nothing to say until the result is stored.
	third := fake.openJobAt(d.JobID, d.Attempt, 4)
	mustWrite(t, third.w, &protocol.Finished{Outcome: protocol.OutcomeCompleted, LogBytes: 4})
	if m := third.next(t); m.Type() != protocol.TypeFinishAck {
		t.Fatalf("answer to JobOpen{Offset: 4} and Finished with 4 bytes stored: %#v, want the FinishAck alone", m)
	}
	c.waitState(j.JobID, "completed")
	// Without FeatureStreamReuse the FinishAck ends the stream.
	_ = third.st.Close()
	_ = third.st.SetReadDeadline(time.Now().Add(waitLimit))
	if m, err := third.r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the FinishAck without FeatureStreamReuse: %#v, %v; want EOF", m, err)
	}
}
