package store

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

func TestReadLog(t *testing.T) {
	s := open(t)
	const id = 7
	for _, c := range []Chunk{
		{Offset: 0, Stream: 1, Data: []byte("hello ")},
		{Offset: 6, Stream: 2, Data: []byte("world")},
		{Offset: 11, Stream: 1, Data: []byte("!\n")},
	} {
		if err := appendLog(s, id, c); err != nil {
			t.Fatal(err)
		}
	}
	// Another job's log on either side must never leak in.
	for _, other := range []uint64{id - 1, id + 1} {
		if err := appendLog(s, other, Chunk{Offset: 0, Stream: 1, Data: []byte("other")}); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]struct {
		from uint64
		max  int
		want []Chunk
	}{
		"all":                {0, 0, []Chunk{{Offset: 0, Stream: 1, Data: []byte("hello ")}, {Offset: 6, Stream: 2, Data: []byte("world")}, {Offset: 11, Stream: 1, Data: []byte("!\n")}}},
		"chunk boundary":     {6, 0, []Chunk{{Offset: 6, Stream: 2, Data: []byte("world")}, {Offset: 11, Stream: 1, Data: []byte("!\n")}}},
		"middle of a chunk":  {3, 0, []Chunk{{Offset: 3, Stream: 1, Data: []byte("lo ")}, {Offset: 6, Stream: 2, Data: []byte("world")}, {Offset: 11, Stream: 1, Data: []byte("!\n")}}},
		"last byte":          {12, 0, []Chunk{{Offset: 12, Stream: 1, Data: []byte("\n")}}},
		"at the end":         {13, 0, nil},
		"beyond the end":     {1000, 0, nil},
		"max offset":         {1<<64 - 1, 0, nil},
		"max inside a chunk": {0, 4, []Chunk{{Offset: 0, Stream: 1, Data: []byte("hell")}}},
		"max across chunks":  {3, 7, []Chunk{{Offset: 3, Stream: 1, Data: []byte("lo ")}, {Offset: 6, Stream: 2, Data: []byte("worl")}}},
		"max at a boundary":  {0, 6, []Chunk{{Offset: 0, Stream: 1, Data: []byte("hello ")}}},
		"max one byte":       {8, 1, []Chunk{{Offset: 8, Stream: 2, Data: []byte("r")}}},
		"negative max":       {11, -1, []Chunk{{Offset: 11, Stream: 1, Data: []byte("!\n")}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := s.ReadLog(id, tt.from, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ReadLog(%d, %d) = %s, want %s", tt.from, tt.max, show(got), show(tt.want))
			}
		})
	}

	t.Run("unknown job", func(t *testing.T) {
		got, err := s.ReadLog(999, 0, 0)
		if err != nil || len(got) != 0 {
			t.Errorf("ReadLog = %s, %v", show(got), err)
		}
	})
	t.Run("data are copies", func(t *testing.T) {
		got, err := s.ReadLog(id, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range got {
			for i := range c.Data {
				c.Data[i] = 'X'
			}
		}
		again, err := s.ReadLog(id, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if string(again[0].Data) != "hello " {
			t.Errorf("stored data changed to %q", again[0].Data)
		}
	})
}

func TestReadLogOverlapsAndGaps(t *testing.T) {
	s := open(t)
	// A resend after reconnect with different chunk boundaries, then a gap.
	for _, c := range []Chunk{
		{Offset: 0, Stream: 1, Data: []byte("abcdef")},
		{Offset: 3, Stream: 1, Data: []byte("defghi")},
		{Offset: 20, Stream: 1, Data: []byte("xyz")},
	} {
		if err := appendLog(s, 1, c); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ReadLog(1, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Chunk{{Offset: 1, Stream: 1, Data: []byte("bcdef")}, {Offset: 6, Stream: 1, Data: []byte("ghi")}, {Offset: 20, Stream: 1, Data: []byte("xyz")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadLog = %s, want %s", show(got), show(want))
	}
	got, err = s.ReadLog(1, 12, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Chunk{{Offset: 20, Stream: 1, Data: []byte("xyz")}}; !reflect.DeepEqual(got, want) {
		t.Errorf("ReadLog from a gap = %s, want %s", show(got), show(want))
	}
}

// FuzzReadLog cuts a log into chunks and checks that reading it back from
// any offset, in pages of any size, returns exactly the bytes from there on.
func FuzzReadLog(f *testing.F) {
	f.Add([]byte("hello world, this is a log"), []byte{3, 1, 7}, uint64(4), 5)
	f.Add([]byte("x"), []byte{}, uint64(0), 0)
	f.Add([]byte("abcdefghij"), []byte{1, 1, 1, 1}, uint64(9), 1)
	s := open(f)
	var next uint64
	f.Fuzz(func(t *testing.T, log, cuts []byte, from uint64, max int) {
		if len(log) == 0 {
			return
		}
		next++
		id := next
		for off := 0; off < len(log); {
			n := len(log) - off
			if len(cuts) > 0 {
				n = min(n, int(cuts[0])+1)
				cuts = cuts[1:]
			}
			// Every other chunk in the form of an earlier release: a job
			// whose log began before an upgrade reads the same.
			c := Chunk{Offset: uint64(off), Stream: 1, Data: log[off : off+n], Time: time.Unix(int64(off), 0)}
			if len(cuts)%2 == 1 {
				putUntimedChunk(t, s, id, c)
			} else if err := appendLog(s, id, c); err != nil {
				t.Fatal(err)
			}
			off += n
		}
		page := max
		if page <= 0 || page > 1<<20 {
			page = 1 << 20
		}
		var got []byte
		pos := from
		for {
			chunks, err := s.ReadLog(id, pos, max)
			if err != nil {
				t.Fatal(err)
			}
			if len(chunks) == 0 {
				break
			}
			n := 0
			for _, c := range chunks {
				if c.Offset != pos {
					t.Fatalf("chunk at %d, want %d", c.Offset, pos)
				}
				got = append(got, c.Data...)
				pos += uint64(len(c.Data))
				n += len(c.Data)
			}
			if n > page {
				t.Fatalf("page of %d bytes, max %d", n, page)
			}
		}
		var want []byte
		if from < uint64(len(log)) {
			want = log[from:]
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q from %d, want %q", got, from, want)
		}
	})
}

// putUntimedChunk stores c as releases before chunk times did: key "l"
// id offset, value stream and data.
func putUntimedChunk(t testing.TB, s *Store, id uint64, c Chunk) {
	t.Helper()
	v := append([]byte{c.Stream}, c.Data...)
	if err := s.db.Set(logKey(id, c.Offset), v, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
}

// TestLogTimes checks that chunks keep the time they were stored with,
// that chunks stored untimed by an earlier release (the first form of
// the "l" value) still read, in one log with timed ones, and that
// LogEnd sees the end of either.
func TestLogTimes(t *testing.T) {
	s := open(t)
	t1 := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	t2 := t1.Add(1500 * time.Millisecond)
	// Job 1: an attempt stored by an earlier release, continued by this
	// one after an upgrade, then untimed again.
	putUntimedChunk(t, s, 1, Chunk{Offset: 0, Stream: 1, Data: []byte("old ")})
	if end, err := s.LogEnd(1); err != nil || end != 4 {
		t.Fatalf("LogEnd after an untimed chunk = %d, %v; want 4", end, err)
	}
	for _, c := range []Chunk{
		{Offset: 4, Stream: 2, Data: []byte("new "), Time: t1},
		{Offset: 8, Stream: 1, Data: []byte("newer\n"), Time: t2.In(time.FixedZone("X", 3600))},
		{Offset: 14, Stream: 1, Data: []byte("untimed")}, // zero Time
	} {
		if err := appendLog(s, 1, c); err != nil {
			t.Fatal(err)
		}
	}
	if end, err := s.LogEnd(1); err != nil || end != 21 {
		t.Fatalf("LogEnd after timed chunks = %d, %v; want 21", end, err)
	}
	got, err := s.ReadLog(1, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Chunk{
		{Offset: 2, Stream: 1, Data: []byte("d ")},
		{Offset: 4, Stream: 2, Data: []byte("new "), Time: t1},
		{Offset: 8, Stream: 1, Data: []byte("newer\n"), Time: t2},
		{Offset: 14, Stream: 1, Data: []byte("untimed")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadLog = %s, want %s", showTimes(got), showTimes(want))
	}
	// A resend of an untimed chunk's bytes in the new form (an agent
	// that reconnects across an upgrade) is read once.
	putUntimedChunk(t, s, 2, Chunk{Offset: 0, Stream: 1, Data: []byte("abcdef")})
	if err := appendLog(s, 2, Chunk{Offset: 3, Stream: 1, Data: []byte("defgh"), Time: t1}); err != nil {
		t.Fatal(err)
	}
	got, err = s.ReadLog(2, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Chunk{{Offset: 0, Stream: 1, Data: []byte("abcdef")}, {Offset: 6, Stream: 1, Data: []byte("gh"), Time: t1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("overlap: ReadLog = %s, want %s", showTimes(got), showTimes(want))
	}
}

// TestLogMalformed checks that a stored chunk of neither form is an
// error, not a misread.
func TestLogMalformed(t *testing.T) {
	tests := map[string]struct{ key, value []byte }{
		"untimed, no data":   {logKey(1, 0), []byte{1}},
		"timed, no data":     {timedLogKey(1, 0), []byte{1, 0, 0, 0, 0, 0, 0, 0, 1}},
		"unknown format":     {append(logKey(1, 0), 2), []byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 'x'}},
		"key of 19 bytes":    {append(timedLogKey(1, 0), 0), []byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 'x'}},
		"short key (no off)": {logKey(1, 0)[:12], []byte{1, 'x'}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			if err := s.db.Set(tt.key, tt.value, pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReadLog(1, 0, 0); err == nil {
				t.Error("ReadLog: no error")
			}
			if _, err := s.LogEnd(1); err == nil {
				t.Error("LogEnd: no error")
			}
		})
	}
}

func showTimes(cs []Chunk) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%d/%d:%q@%s ", c.Offset, c.Stream, c.Data, c.Time.Format(time.RFC3339Nano))
	}
	return b.String()
}

func TestSync(t *testing.T) {
	s := open(t)
	if err := appendLog(s, 1, Chunk{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v", err)
	}
}

func show(cs []Chunk) string {
	var b strings.Builder
	b.WriteString("[")
	for i, c := range cs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%d/%d:%q", c.Offset, c.Stream, c.Data)
	}
	b.WriteString("]")
	return b.String()
}
