package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
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
