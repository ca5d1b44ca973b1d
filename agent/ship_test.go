package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"jobsuite/protocol"
	"jobsuite/transport"
)

// recStream is a job stream that keeps each Write the agent makes, as
// the frames it held, and reads what the test sends back.
type recStream struct {
	r      *io.PipeReader
	back   *io.PipeWriter
	mu     sync.Mutex
	writes [][]protocol.Message
	wrote  chan struct{} // one value per Write
}

func newRecStream() *recStream {
	r, w := io.Pipe()
	return &recStream{r: r, back: w, wrote: make(chan struct{}, 64)}
}

func (s *recStream) Write(p []byte) (int, error) {
	var ms []protocol.Message
	fr := protocol.NewReader(bytes.NewReader(p), 0)
	for {
		m, err := fr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		ms = append(ms, m)
	}
	s.mu.Lock()
	s.writes = append(s.writes, ms)
	s.mu.Unlock()
	s.wrote <- struct{}{}
	return len(p), nil
}

func (s *recStream) Read(p []byte) (int, error)       { return s.r.Read(p) }
func (s *recStream) Close() error                     { return nil }
func (s *recStream) Abort()                           { s.r.Close() }
func (s *recStream) SetReadDeadline(time.Time) error  { return nil }
func (s *recStream) SetWriteDeadline(time.Time) error { return nil }

// next waits for the agent's next Write and returns the frames in it.
func (s *recStream) next(t *testing.T) []protocol.Message {
	t.Helper()
	select {
	case <-s.wrote:
	case <-time.After(time.Minute):
		t.Fatal("no write on the job stream")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.writes[0]
	s.writes = s.writes[1:]
	return ms
}

// recSession opens one recStream.
type recSession struct {
	st   *recStream
	done chan struct{}
}

func (s *recSession) OpenStream(context.Context) (transport.Stream, error) { return s.st, nil }
func (s *recSession) AcceptStream(ctx context.Context) (transport.Stream, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (s *recSession) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }
func (s *recSession) RemoteAddr() net.Addr                 { return &net.TCPAddr{} }
func (s *recSession) Transport() string                    { return "test" }
func (s *recSession) Close(string) error                   { return nil }
func (s *recSession) Done() <-chan struct{}                { return s.done }

func types(ms []protocol.Message) []protocol.Type {
	var ts []protocol.Type
	for _, m := range ms {
		ts = append(ts, m.Type())
	}
	return ts
}

// TestShipFramesTogether checks which frames of a job stream leave in
// one write: JobOpen waits for the process and leaves with Started;
// while startedHold lasts they also wait for the first output or the end
// of the process, so a short job is reported in a single write; after
// it, they leave at once.
func TestShipFramesTogether(t *testing.T) {
	pki := testPKI(t)
	for name, tc := range map[string]struct {
		hold   time.Duration
		output bool // the job writes a line before it waits
		want   [][]protocol.Type
	}{
		"short job": {hold: time.Hour, want: [][]protocol.Type{
			{protocol.TypeJobOpen, protocol.TypeStarted, protocol.TypeFinished}}},
		"output first": {hold: time.Hour, output: true, want: [][]protocol.Type{
			{protocol.TypeJobOpen, protocol.TypeStarted, protocol.TypeLogChunk},
			{protocol.TypeFinished}}},
		"hold over": {hold: 0, want: [][]protocol.Type{
			{protocol.TypeJobOpen, protocol.TypeStarted},
			{protocol.TypeFinished}}},
	} {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			a := testAgent(t, pki, state)
			a.startedHold = tc.hold
			// The job waits on a fifo until the test has seen the first
			// write, except the short one.
			fifo := filepath.Join(t.TempDir(), "go")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := "true"
			if len(tc.want) > 1 {
				cmd = "cat " + fifo
				if tc.output {
					cmd = "echo hi; " + cmd
				}
			}
			st := newRecStream()
			sctx, stop := context.WithCancel(context.Background())
			defer stop()
			s := &session{t: &recSession{st: st, done: make(chan struct{})}, ctrl: protocol.NewWriter(io.Discard), ctx: sctx}
			d := &protocol.Dispatch{JobID: 3, Attempt: 1, Command: cmd, CaptureLogs: true, KillGrace: time.Second, Output: protocol.OutputOrdered}
			if err := a.start(context.Background(), s, d); err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.want {
				got := st.next(t)
				if !slices.Equal(types(got), want) {
					t.Fatalf("write %d holds %v, want %v", i+1, types(got), want)
				}
				if i == 0 && len(tc.want) > 1 {
					// Let the job end.
					f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
					if err != nil {
						t.Fatal(err)
					}
					f.Close()
				}
				if f, ok := got[len(got)-1].(*protocol.Finished); ok && f.Outcome != protocol.OutcomeCompleted {
					t.Fatalf("Finished %+v, want completed", f)
				}
			}
			if err := protocol.NewWriter(st.back).Write(&protocol.FinishAck{}); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the attempt to be forgotten", func() bool { return a.Running() == 0 })
		})
	}
}

// stuckStream is a job stream whose reader has gone away, as a
// controller's after it refused the stream with an Error and stopped
// reading: each Write blocks (the stream's flow control) until Abort,
// and Read returns the Error once a Write is blocked.
type stuckStream struct {
	writing chan struct{} // closed at the first Write
	once    sync.Once
	aborted chan struct{}
	abort   sync.Once
	reply   *bytes.Reader
}

func newStuckStream(reply protocol.Message) *stuckStream {
	return &stuckStream{writing: make(chan struct{}), aborted: make(chan struct{}), reply: bytes.NewReader(protocol.Append(nil, reply))}
}

func (s *stuckStream) Write(p []byte) (int, error) {
	s.once.Do(func() { close(s.writing) })
	<-s.aborted
	return 0, transport.ErrAborted
}

func (s *stuckStream) Read(p []byte) (int, error) {
	select {
	case <-s.writing:
	case <-s.aborted:
		return 0, transport.ErrAborted
	}
	if s.reply.Len() > 0 {
		return s.reply.Read(p)
	}
	<-s.aborted
	return 0, transport.ErrAborted
}

func (s *stuckStream) Close() error                     { return nil }
func (s *stuckStream) Abort()                           { s.abort.Do(func() { close(s.aborted) }) }
func (s *stuckStream) SetReadDeadline(time.Time) error  { return nil }
func (s *stuckStream) SetWriteDeadline(time.Time) error { return nil }

// seqSession opens the streams it is given, in order.
type seqSession struct {
	recSession
	mu      sync.Mutex
	streams []transport.Stream
	opened  int
}

func (s *seqSession) OpenStream(context.Context) (transport.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[min(s.opened, len(s.streams)-1)]
	s.opened++
	return st, nil
}

// TestShipReopensAfterErrorWhileWriting: the controller refuses a job
// stream with an Error (its disk is nearly full) and stops reading it
// while the shipper is blocked writing to it. The shipper must give the
// stream up and open a new one; it used to wait in its write for as
// long as the session lived (TestControllerDiskFull, under load).
func TestShipReopensAfterErrorWhileWriting(t *testing.T) {
	a := testAgent(t, testPKI(t), t.TempDir())
	stuck, next := newStuckStream(&protocol.Error{Code: protocol.CodeStorageFull, Message: "disk nearly full"}), newRecStream()
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	sess := &seqSession{recSession: recSession{done: make(chan struct{})}, streams: []transport.Stream{stuck, next}}
	s := &session{t: sess, ctrl: protocol.NewWriter(io.Discard), ctx: sctx}
	d := &protocol.Dispatch{JobID: 3, Attempt: 1, Command: "true", CaptureLogs: true, KillGrace: time.Second, Output: protocol.OutputOrdered}
	if err := a.start(context.Background(), s, d); err != nil {
		t.Fatal(err)
	}
	// The new stream carries the whole report again.
	var got []protocol.Type
	for !slices.Contains(got, protocol.TypeFinished) {
		got = append(got, types(next.next(t))...)
	}
	if got[0] != protocol.TypeJobOpen {
		t.Errorf("the new stream starts with %v, want JobOpen", got)
	}
	select {
	case <-stuck.aborted:
	default:
		t.Error("the refused stream was not aborted")
	}
	if err := protocol.NewWriter(next.back).Write(&protocol.FinishAck{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the attempt to be forgotten", func() bool { return a.Running() == 0 })
}

// countStream is a recStream that counts Close and Abort.
type countStream struct {
	*recStream
	closed, aborted atomic.Int32
}

func (s *countStream) Close() error { s.closed.Add(1); return nil }
func (s *countStream) Abort()       { s.aborted.Add(1); s.recStream.Abort() }

// TestShipReusesStream: on a session that agreed to FeatureStreamReuse,
// the stream of an attempt that got its FinishAck carries the next
// attempt and is neither closed nor aborted; on one that did not, each
// attempt has a stream of its own, closed after its Finished.
func TestShipReusesStream(t *testing.T) {
	for _, reuse := range []bool{true, false} {
		t.Run(fmt.Sprintf("reuse=%v", reuse), func(t *testing.T) {
			a := testAgent(t, testPKI(t), t.TempDir())
			a.startedHold = time.Hour // each report in one write
			st1, st2 := &countStream{recStream: newRecStream()}, &countStream{recStream: newRecStream()}
			sess := &seqSession{recSession: recSession{done: make(chan struct{})}, streams: []transport.Stream{st1, st2}}
			sctx, stop := context.WithCancel(context.Background())
			defer stop()
			s := &session{t: sess, ctrl: protocol.NewWriter(io.Discard), ctx: sctx, streamReuse: reuse, maxIdle: 1}
			for i, st := range []*countStream{st1, map[bool]*countStream{true: st1, false: st2}[reuse]} {
				d := &protocol.Dispatch{JobID: uint64(10 + i), Attempt: 1, Command: "true", CaptureLogs: true, KillGrace: time.Second}
				if err := a.start(context.Background(), s, d); err != nil {
					t.Fatal(err)
				}
				got := st.next(t)
				if !slices.Equal(types(got), []protocol.Type{protocol.TypeJobOpen, protocol.TypeStarted, protocol.TypeFinished}) {
					t.Fatalf("attempt %d: write %v", i+1, types(got))
				}
				if open := got[0].(*protocol.JobOpen); open.JobID != d.JobID {
					t.Fatalf("attempt %d: JobOpen for job %d, want %d", i+1, open.JobID, d.JobID)
				}
				if err := protocol.NewWriter(st.back).Write(&protocol.FinishAck{}); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, "the attempt to be forgotten", func() bool { return a.Running() == 0 })
			}
			sess.mu.Lock()
			opened := sess.opened
			sess.mu.Unlock()
			if reuse {
				if opened != 1 || st1.closed.Load() != 0 || st1.aborted.Load() != 0 {
					t.Errorf("streams opened %d, first stream closed %d and aborted %d times; want 1, 0, 0", opened, st1.closed.Load(), st1.aborted.Load())
				}
				if len(s.idle) != 1 || s.idle[0].st != st1 {
					t.Errorf("idle streams %v, want the one stream", s.idle)
				}
				return
			}
			if opened != 2 || st1.closed.Load() != 1 || st1.aborted.Load() == 0 || len(s.idle) != 0 {
				t.Errorf("streams opened %d, first stream closed %d and aborted %d times, %d idle; want 2, 1, ≥ 1, 0",
					opened, st1.closed.Load(), st1.aborted.Load(), len(s.idle))
			}
		})
	}
}
