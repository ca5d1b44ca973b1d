package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"runtime"
	"sort"
	"sync"
	"testing"
)

// rawFrame builds a frame by hand, for types Append cannot encode.
func rawFrame(t Type, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)))
	b = append(b, byte(t))
	return append(b, payload...)
}

func TestReaderWriterPipe(t *testing.T) {
	// The default buffer, and one smaller than most frames (their
	// payloads are read past it).
	for _, size := range []int{readBufferSize, 64} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testReaderWriterPipe(t, size) })
	}
}

func testReaderWriterPipe(t *testing.T, size int) {
	client, server := net.Pipe()
	defer server.Close()
	want := make([]Message, 0, 3000)
	for i := range 1000 {
		want = append(want,
			&LogChunk{Stream: Stdout, Offset: uint64(i) * 1000, Data: bytes.Repeat([]byte{byte(i)}, i*37%MaxChunkSize+1)},
			&Heartbeat{Seq: uint64(i), Running: []AttemptRef{{JobID: uint64(i), Attempt: 1}}},
			&Dispatch{JobID: uint64(i), Attempt: 1, Command: fmt.Sprint("echo ", i), Env: []string{"I=1"}},
		)
	}
	go func() {
		w := NewWriter(client)
		for _, m := range want {
			if err := w.Write(m); err != nil {
				t.Errorf("Write: %v", err)
				break
			}
		}
		client.Close()
	}()
	r := NewReaderSize(server, 0, size)
	for i, w := range want {
		m, err := r.Read()
		if err != nil {
			t.Fatalf("Read %d: %v", i, err)
		}
		if !reflect.DeepEqual(m, w) {
			t.Fatalf("Read %d = %v, want %v", i, m.Type(), w.Type())
		}
	}
	if m, err := r.Read(); err != io.EOF {
		t.Fatalf("Read at end = %v, %v; want io.EOF", m, err)
	}
}

func TestReaderSkipsUnknownOptional(t *testing.T) {
	var stream []byte
	stream = append(stream, rawFrame(lastOptional+1, nil)...)
	stream = Append(stream, &Credit{Slots: 1})
	stream = append(stream, rawFrame(200, bytes.Repeat([]byte{0xff}, 100_000))...)
	stream = append(stream, rawFrame(255, []byte{1, 2, 3})...)
	stream = Append(stream, &Credit{Slots: 2})
	stream = append(stream, rawFrame(lastOptional+1, nil)...)
	r := NewReader(bytes.NewReader(stream), 0)
	for _, want := range []uint32{1, 2} {
		m, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if c, ok := m.(*Credit); !ok || c.Slots != want {
			t.Fatalf("Read = %#v, want Credit{%d}", m, want)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("err = %v, want io.EOF after trailing optional frame", err)
	}
}

func TestReaderErrors(t *testing.T) {
	credit := Append(nil, &Credit{Slots: 7})
	tests := map[string]struct {
		stream   []byte
		maxFrame int
		want     error
	}{
		"empty":                 {nil, 0, io.EOF},
		"cut in length":         {credit[:3], 0, io.ErrUnexpectedEOF},
		"cut before type":       {credit[:4], 0, io.ErrUnexpectedEOF},
		"cut in payload":        {Append(nil, &Cancel{Reason: "abc"})[:7], 0, io.ErrUnexpectedEOF},
		"cut in skipped":        {rawFrame(200, make([]byte, 50))[:30], 0, io.ErrUnexpectedEOF},
		"zero length":           {[]byte{0, 0, 0, 0, byte(TypeCredit), 1}, 0, ErrMalformed},
		"unknown required":      {rawFrame(lastType+1, nil), 0, ErrUnknownType},
		"type zero":             {rawFrame(0, []byte{1}), 0, ErrUnknownType},
		"bad payload":           {rawFrame(TypeLogChunk, []byte{0, 0, 0}), 0, ErrMalformed},
		"truncated payload":     {rawFrame(TypeCancel, []byte{1}), 0, ErrMalformed},
		"over custom limit":     {Append(nil, &Cancel{Reason: "0123456789"}), 10, ErrFrameTooLarge},
		"at custom limit":       {Append(nil, &Cancel{Reason: "01234"}), 10, io.EOF},
		"over default limit":    {binary.BigEndian.AppendUint32(nil, MaxFrameSize+1), 0, ErrFrameTooLarge},
		"over limit, optional":  {rawFrame(200, make([]byte, 20)), 10, ErrFrameTooLarge},
		"huge length":           {[]byte{0xff, 0xff, 0xff, 0xff}, 0, ErrFrameTooLarge},
		"good then cut":         {append(bytes.Clone(credit), credit[:5]...), 0, io.ErrUnexpectedEOF},
		"good then unknown":     {append(bytes.Clone(credit), rawFrame(50, nil)...), 0, ErrUnknownType},
		"good then zero length": {append(bytes.Clone(credit), 0, 0, 0, 0), 0, ErrMalformed},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.stream), tt.maxFrame)
			var err error
			for range 10 {
				var m Message
				if m, err = r.Read(); err != nil {
					break
				}
				if m == nil {
					t.Fatal("Read returned neither a message nor an error")
				}
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if (tt.want == io.EOF || tt.want == io.ErrUnexpectedEOF) && err != tt.want {
				t.Fatalf("err = %#v, want exactly %v", err, tt.want)
			}
			if _, again := r.Read(); again != err {
				t.Fatalf("error not sticky: first %v, then %v", err, again)
			}
		})
	}
}

// TestFrameTooLargeNoAllocation checks that an announced frame over the
// limit is refused from its length prefix alone.
func TestFrameTooLargeNoAllocation(t *testing.T) {
	for _, n := range []uint32{MaxFrameSize + 1, 1 << 30, 0xffffffff} {
		stream := append(binary.BigEndian.AppendUint32(nil, n), byte(TypeLogChunk))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := NewReader(bytes.NewReader(stream), 0).Read()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("length %d: err = %v, want ErrFrameTooLarge", n, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2*readBufferSize {
			t.Fatalf("length %d: %d bytes allocated", n, alloc)
		}
	}
}

// stallReader returns its bytes, then closes drained and blocks until
// released.
type stallReader struct {
	data    []byte
	drained chan struct{}
	release chan struct{}
}

func (s *stallReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		close(s.drained)
		<-s.release
		return 0, io.EOF
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

// TestReaderGrowsWithData checks that announcing a large frame and
// stalling does not make the Reader allocate the announced size.
func TestReaderGrowsWithData(t *testing.T) {
	header := binary.BigEndian.AppendUint32(nil, MaxFrameSize)
	header = append(header, byte(TypeLogChunk), 1, 0)
	s := &stallReader{data: header, drained: make(chan struct{}), release: make(chan struct{})}
	r := NewReader(s, 0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan error)
	go func() {
		_, err := r.Read()
		done <- err
	}()
	<-s.drained
	runtime.ReadMemStats(&after)
	close(s.release)
	if err := <-done; err != io.ErrUnexpectedEOF {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > MaxFrameSize/4 {
		t.Fatalf("%d bytes allocated for a frame that sent 2 payload bytes", alloc)
	}
}

func TestReaderLogChunkAliasing(t *testing.T) {
	var stream []byte
	stream = Append(stream, &LogChunk{Stream: Stdout, Data: []byte("first")})
	stream = Append(stream, &LogChunk{Stream: Stdout, Data: []byte("SECOND")})
	r := NewReader(bytes.NewReader(stream), 0)
	m1, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	data := m1.(*LogChunk).Data
	kept := bytes.Clone(data)
	if _, err := r.Read(); err != nil {
		t.Fatal(err)
	}
	if string(kept) != "first" {
		t.Fatalf("copy = %q", kept)
	}
	if string(data) == "first" {
		t.Log("Data survived the next Read (allowed, not promised)")
	}
}

// recordWriter records each Write call separately.
type recordWriter struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *recordWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func TestWriterConcurrent(t *testing.T) {
	const writers, each = 8, 500
	rec := &recordWriter{}
	w := NewWriter(rec)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				m := &LogChunk{Stream: Stderr, Offset: uint64(g), Data: bytes.Repeat([]byte{byte(i)}, 1+i%3000)}
				if err := w.Write(m); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(rec.writes) != writers*each {
		t.Fatalf("%d Write calls, want one per message (%d)", len(rec.writes), writers*each)
	}
	next := make([]int, writers) // per writer, messages arrive in order
	r := NewReader(bytes.NewReader(bytes.Join(rec.writes, nil)), 0)
	for _, frame := range rec.writes {
		typ, payload := splitFrame(t, frame)
		m, err := Decode(typ, payload)
		if err != nil {
			t.Fatal(err)
		}
		c := m.(*LogChunk)
		g, i := int(c.Offset), next[c.Offset]
		if len(c.Data) != 1+i%3000 || c.Data[0] != byte(i) {
			t.Fatalf("writer %d message %d garbled", g, i)
		}
		next[g]++
		if _, err := r.Read(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriterConcurrentPipe runs concurrent writers against a real
// stream and a reader, for the race detector.
func TestWriterConcurrentPipe(t *testing.T) {
	client, server := net.Pipe()
	w := NewWriter(client)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if err := w.Write(&JobOpen{JobID: uint64(g), Attempt: uint32(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); client.Close() }()
	r := NewReader(server, 0)
	got := map[uint64][]uint32{}
	for {
		m, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		j := m.(*JobOpen)
		got[j.JobID] = append(got[j.JobID], j.Attempt)
	}
	for g := range uint64(4) {
		if len(got[g]) != 200 || !sort.SliceIsSorted(got[g], func(a, b int) bool { return got[g][a] < got[g][b] }) {
			t.Fatalf("writer %d: %d messages, in order: %v", g, len(got[g]), got[g][:min(5, len(got[g]))])
		}
	}
}

type failWriter struct {
	n     int // bytes accepted before failing
	calls int
}

func (f *failWriter) Write(p []byte) (int, error) {
	f.calls++
	if len(p) > f.n {
		return f.n, io.ErrClosedPipe
	}
	f.n -= len(p)
	return len(p), nil
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) - 1, nil }

func TestWriterErrors(t *testing.T) {
	t.Run("sticky write error", func(t *testing.T) {
		fw := &failWriter{n: 3}
		w := NewWriter(fw)
		err := w.Write(&Credit{Slots: 1})
		if !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("err = %v", err)
		}
		if again := w.Write(&Credit{Slots: 1}); again != err {
			t.Fatalf("second Write = %v, want sticky %v", again, err)
		}
		if fw.calls != 1 {
			t.Fatalf("%d calls to the failed writer", fw.calls)
		}
	})
	t.Run("short write", func(t *testing.T) {
		err := NewWriter(shortWriter{}).Write(&FinishAck{})
		if !errors.Is(err, io.ErrShortWrite) {
			t.Fatalf("err = %v, want io.ErrShortWrite", err)
		}
	})
	t.Run("too large, then usable", func(t *testing.T) {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		err := w.Write(&LogChunk{Stream: Stdout, Data: make([]byte, MaxFrameSize)})
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("err = %v, want ErrFrameTooLarge", err)
		}
		if buf.Len() != 0 {
			t.Fatalf("%d bytes written", buf.Len())
		}
		if err := w.Write(&LogAck{Offset: 1}); err != nil {
			t.Fatal(err)
		}
		if m, err := NewReader(&buf, 0).Read(); err != nil || m.(*LogAck).Offset != 1 {
			t.Fatalf("Read = %#v, %v", m, err)
		}
	})
	t.Run("largest frame", func(t *testing.T) {
		// The biggest LogChunk that fits: type byte, stream, offset 0,
		// a 4-byte length, data.
		m := &LogChunk{Stream: Stdout, Data: make([]byte, MaxFrameSize-7)}
		var buf bytes.Buffer
		if err := NewWriter(&buf).Write(m); err != nil {
			t.Fatal(err)
		}
		got, err := NewReader(&buf, 0).Read()
		if err != nil || len(got.(*LogChunk).Data) != len(m.Data) {
			t.Fatalf("Read: %v", err)
		}
	})
	t.Run("not encodable", func(t *testing.T) {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		for _, m := range []Message{nil, (*Hello)(nil), foreign{}} {
			if err := w.Write(m); err == nil {
				t.Fatalf("Write(%#v) succeeded", m)
			}
		}
		if buf.Len() != 0 {
			t.Fatalf("%d bytes written", buf.Len())
		}
		if err := w.Write(&FinishAck{}); err != nil {
			t.Fatal(err)
		}
	})
}

// countingWriter counts Write calls.
type countingWriter struct {
	bytes.Buffer
	calls int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.calls++
	return c.Buffer.Write(p)
}

func TestWriteAll(t *testing.T) {
	var out countingWriter
	w := NewWriter(&out)
	ms := []Message{
		&JobOpen{JobID: 7, Attempt: 2},
		&Started{PID: 42},
		&LogChunk{Stream: Stderr, Offset: 0, Data: []byte("oops\n")},
		&Finished{Outcome: OutcomeFailed, ExitCode: 3, LogBytes: 5},
	}
	if err := w.WriteAll(ms...); err != nil {
		t.Fatal(err)
	}
	if out.calls != 1 {
		t.Fatalf("%d writes for %d messages, want 1", out.calls, len(ms))
	}
	r := NewReader(&out.Buffer, 0)
	for i, want := range ms {
		got, err := r.Read()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got.Type() != want.Type() {
			t.Fatalf("message %d is %s, want %s", i, got.Type(), want.Type())
		}
	}
	if m, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the batch: %#v, %v; want EOF", m, err)
	}

	// One message that cannot be written refuses the whole batch.
	for name, bad := range map[string]Message{
		"nil":       nil,
		"too large": &LogChunk{Stream: Stdout, Data: make([]byte, MaxFrameSize)},
	} {
		out.Reset()
		out.calls = 0
		err := w.WriteAll(&Credit{Slots: 1}, bad, &Credit{Slots: 2})
		if err == nil || out.calls != 0 || out.Len() != 0 {
			t.Errorf("%s in a batch: err %v, %d writes, %d bytes; want an error and nothing written", name, err, out.calls, out.Len())
		}
	}
	if err := w.WriteAll(&Credit{Slots: 3}); err != nil { // still usable
		t.Fatal(err)
	}
	if m, err := NewReader(&out.Buffer, 0).Read(); err != nil || m.(*Credit).Slots != 3 {
		t.Fatalf("after refused batches: %#v, %v", m, err)
	}
	if err := w.WriteAll(); err != nil || out.calls != 1 {
		t.Fatalf("empty WriteAll: %v, %d writes; want nil and no write", err, out.calls)
	}
}
