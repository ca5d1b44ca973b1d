package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// readBufferSize is the size of a Reader's bufio.Reader. Payloads larger
// than it are read straight into the payload buffer.
const readBufferSize = 16 << 10

// minGrow is the first size a payload buffer grows to when a frame does
// not fit the current one.
const minGrow = 64 << 10

// keepBuffer is the largest payload or encode buffer a Reader or Writer
// keeps between messages; a larger one, needed for a rare big frame, is
// dropped afterwards so an idle stream does not pin it.
const keepBuffer = 2 * MaxChunkSize

// Reader reads frames from a stream and decodes them. It is not safe for
// concurrent use: one goroutine reads each stream.
type Reader struct {
	br       *bufio.Reader
	maxFrame int
	hdr      [4]byte
	buf      []byte // payload of the last frame read
	err      error  // sticky: the stream position is lost after any error
}

// NewReader returns a Reader that reads frames from r through a
// bufio.Reader and refuses frames longer than maxFrame bytes (the value
// of the length prefix). maxFrame <= 0 means MaxFrameSize.
func NewReader(r io.Reader, maxFrame int) *Reader {
	return NewReaderSize(r, maxFrame, readBufferSize)
}

// NewReaderSize is NewReader with a bufio.Reader of size bytes (at least
// 16). A stream of small, rare frames, such as an idle agent's control
// stream, needs little: the buffer is held while Read waits, and larger
// payloads are read past it anyway.
func NewReaderSize(r io.Reader, maxFrame, size int) *Reader {
	if maxFrame <= 0 {
		maxFrame = MaxFrameSize
	}
	return &Reader{br: bufio.NewReaderSize(r, size), maxFrame: maxFrame}
}

// Read returns the next message, skipping frames of unknown optional
// types (OptionalBase and above).
//
// It returns io.EOF only when the stream ends at a frame boundary, and
// io.ErrUnexpectedEOF when it ends inside a frame. Other errors of the
// underlying reader are returned as they are. A frame longer than the
// limit returns ErrFrameTooLarge before any of it is read; a frame length
// of 0 or a bad payload returns ErrMalformed, an unknown required type
// ErrUnknownType. Errors are sticky: once Read fails, it returns the same
// error forever.
//
// The Data of a returned *LogChunk aliases the Reader's buffer and is
// valid only until the next call to Read: copy it to keep it. Every other
// field of every message is the caller's to keep.
func (r *Reader) Read() (Message, error) {
	if r.err != nil {
		return nil, r.err
	}
	for {
		m, err := r.next()
		if err != nil {
			r.err = err
			return nil, err
		}
		if m != nil {
			return m, nil
		}
	}
}

// next reads one frame. It returns (nil, nil) for a skipped frame.
func (r *Reader) next() (Message, error) {
	if cap(r.buf) > keepBuffer {
		r.buf = nil // the previous message no longer needs it
	}
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return nil, err // io.EOF if no byte was read, else io.ErrUnexpectedEOF
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n == 0 {
		return nil, fmt.Errorf("protocol: %w: frame length 0 leaves no room for the type byte", ErrMalformed)
	}
	if uint64(n) > uint64(r.maxFrame) {
		return nil, fmt.Errorf("protocol: %w: %d bytes, limit %d", ErrFrameTooLarge, n, r.maxFrame)
	}
	tb, err := r.br.ReadByte()
	if err != nil {
		return nil, noEOF(err)
	}
	t, size := Type(tb), int(n-1)
	if !known(t) {
		if t < OptionalBase {
			return nil, fmt.Errorf("protocol: %w %d: the peer speaks a newer protocol than it announced; upgrade this side",
				ErrUnknownType, t)
		}
		if _, err := r.br.Discard(size); err != nil {
			return nil, noEOF(err)
		}
		return nil, nil
	}
	payload, err := r.readPayload(size)
	if err != nil {
		return nil, err
	}
	return Decode(t, payload)
}

// readPayload reads the next n bytes into r.buf. A buffer too small is
// grown as the bytes arrive, not up front, so a peer that announces a
// large frame and stalls holds only as much memory as it sent.
func (r *Reader) readPayload(n int) ([]byte, error) {
	if n <= cap(r.buf) {
		r.buf = r.buf[:n]
		if _, err := io.ReadFull(r.br, r.buf); err != nil {
			return nil, noEOF(err)
		}
		return r.buf, nil
	}
	b := r.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, max(2*cap(b), minGrow)))
			copy(nb, b)
			b = nb
		}
		m, err := io.ReadFull(r.br, b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if err != nil {
			r.buf = b[:0]
			return nil, noEOF(err)
		}
	}
	r.buf = b
	return b, nil
}

// noEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Writer encodes messages and writes each as one frame. It is safe for
// concurrent use: frames from concurrent calls never interleave.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
	err error // sticky: a failed write may have left half a frame behind
}

// NewWriter returns a Writer that writes frames to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w}
}

// Write encodes m into a reused buffer and writes the whole frame with a
// single call to the underlying Write.
//
// A message that cannot be encoded (nil, not a protocol message) or
// whose frame would exceed MaxFrameSize (ErrFrameTooLarge) returns an
// error before anything is written, and the Writer stays usable. An
// error of the underlying writer is wrapped, and sticky: every later
// Write returns it, since the stream may now hold a partial frame.
func (w *Writer) Write(m Message) error {
	return w.WriteAll(m)
}

// WriteAll writes several messages, in order, with a single call to the
// underlying Write: one stream frame (and, over TCP, one TLS record and
// one system call) instead of one per message, for a sender that has
// them at hand together. Errors are as for Write; when one message
// cannot be encoded, none is written.
func (w *Writer) WriteAll(ms ...Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	b := w.buf[:0]
	for _, m := range ms {
		start := len(b)
		var err error
		if b, err = appendFrame(b, m); err != nil {
			return err
		}
		if n := len(b) - start - 4; n > MaxFrameSize {
			w.keep(b)
			return fmt.Errorf("protocol: %w: %s frame of %d bytes, limit %d", ErrFrameTooLarge, m.Type(), n, MaxFrameSize)
		}
	}
	w.keep(b)
	if len(b) == 0 {
		return nil
	}
	n, err := w.w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("protocol: write %s: %w", ms[len(ms)-1].Type(), err)
		return w.err
	}
	return nil
}

// keep reuses b as the encode buffer unless it grew too big to hold on
// to.
func (w *Writer) keep(b []byte) {
	if cap(b) <= keepBuffer {
		w.buf = b[:0]
	} else {
		w.buf = nil
	}
}
