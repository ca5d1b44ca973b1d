package protocol

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// checkReencode asserts that a decoded message encodes, decodes to an
// equal value, and that this encoding is a fixed point.
func checkReencode(t *testing.T, m Message) []byte {
	t.Helper()
	frame := Append(nil, m)
	typ, payload := splitFrame(t, frame)
	if typ != m.Type() {
		t.Fatalf("type byte %v, message %v", typ, m.Type())
	}
	m2, err := Decode(typ, payload)
	if err != nil {
		t.Fatalf("re-decode of %#v: %v", m, err)
	}
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("re-decode differs:\n%#v\n%#v", m, m2)
	}
	if again := Append(nil, m2); !bytes.Equal(again, frame) {
		t.Fatalf("re-encoding is not stable:\n%x\n%x", frame, again)
	}
	return payload
}

func FuzzDecode(f *testing.F) {
	for _, m := range samples() {
		frame := Append(nil, m)
		f.Add(frame[4], frame[frameHeader:])
		f.Add(frame[4], append(bytes.Clone(frame[frameHeader:]), 1, 2, 3))
	}
	f.Add(byte(OptionalBase), []byte{1, 2, 3})
	f.Add(byte(0), []byte(nil))
	f.Fuzz(func(t *testing.T, typ byte, payload []byte) {
		m, err := Decode(Type(typ), payload)
		if err != nil {
			if m != nil {
				t.Fatalf("message %#v returned with error %v", m, err)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("unexpected error %v", err)
			}
			if errors.Is(err, ErrUnknownType) != (!known(Type(typ)) && Type(typ) < OptionalBase) {
				t.Fatalf("type %d: error %v", typ, err)
			}
			return
		}
		if m == nil {
			if Type(typ) < OptionalBase {
				t.Fatalf("type %d decoded to nil without error", typ)
			}
			return
		}
		if m.Type() != Type(typ) {
			t.Fatalf("Decode(%v) returned a %v", Type(typ), m.Type())
		}
		// The canonical encoding is never longer than the input: no
		// field is invented, varints are minimal.
		slack := absentFields(m)
		if p := checkReencode(t, m); len(p) > len(payload)+slack {
			t.Fatalf("re-encoded payload of %d bytes from %d", len(p), len(payload))
		}
	})
}

func FuzzReader(f *testing.F) {
	var all []byte
	for _, m := range samples() {
		all = Append(all, m)
	}
	f.Add(all, uint16(0))
	f.Add(all[:len(all)/2], uint16(64))
	f.Add(append(rawFrame(OptionalBase+5, []byte("skip me")), Append(nil, &FinishAck{})...), uint16(0))
	f.Add([]byte{0, 0, 0, 0}, uint16(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, uint16(0))
	f.Fuzz(func(t *testing.T, stream []byte, maxFrame uint16) {
		r := NewReader(bytes.NewReader(stream), int(maxFrame))
		for range len(stream) + 1 { // every frame takes at least 5 bytes
			m, err := r.Read()
			if err != nil {
				switch {
				case err == io.EOF, err == io.ErrUnexpectedEOF,
					errors.Is(err, ErrMalformed), errors.Is(err, ErrUnknownType), errors.Is(err, ErrFrameTooLarge):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				if _, again := r.Read(); again != err {
					t.Fatalf("error not sticky: %v, then %v", err, again)
				}
				return
			}
			if m == nil {
				t.Fatal("Read returned neither a message nor an error")
			}
			checkReencode(t, m)
		}
		t.Fatal("Read never ended")
	})
}

// absentFields is how many bytes the canonical encoding of m may add to
// a payload that left out fields appended after its message's first
// version (PROTOCOL.md §7): each is written as one zero byte.
func absentFields(m Message) int {
	// The appended fields that are zero, counted from the last one back
	// until one is set: only trailing fields can have been left out.
	var zeros []bool
	switch m := m.(type) {
	case *Hello:
		zeros = []bool{m.Features == 0}
	case *Welcome:
		zeros = []bool{m.Features == 0, m.Term == 0, m.Members == nil}
	case *Finished:
		zeros = []bool{!m.Credit}
	case *Heartbeat:
		zeros = []bool{m.Ended == nil}
	case *Cancel:
		zeros = []bool{m.Term == 0}
	case *Dispatch:
		zeros = []bool{m.Term == 0, m.TTY == 0, m.Output == 0, m.MaxOutput == 0}
	}
	n := 0
	for _, z := range zeros {
		if !z {
			break
		}
		n++
	}
	return n
}
