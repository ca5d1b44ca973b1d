package store

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestReadLog(t *testing.T) {
	s := open(t)
	const id = 7
	for _, c := range []Chunk{
		{Offset: 0, Stream: 1, Data: []byte("hello ")},
		{Offset: 6, Stream: 2, Data: []byte("world")},
		{Offset: 11, Stream: 1, Data: []byte("!\n")},
	} {
		if err := s.AppendLog(id, c); err != nil {
			t.Fatal(err)
		}
	}
	// Another job's log on either side must never leak in.
	for _, other := range []uint64{id - 1, id + 1} {
		if err := s.AppendLog(other, Chunk{Offset: 0, Stream: 1, Data: []byte("other")}); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]struct {
		from uint64
		max  int
		want []Chunk
	}{
		"all":                {0, 0, []Chunk{{0, 1, []byte("hello ")}, {6, 2, []byte("world")}, {11, 1, []byte("!\n")}}},
		"chunk boundary":     {6, 0, []Chunk{{6, 2, []byte("world")}, {11, 1, []byte("!\n")}}},
		"middle of a chunk":  {3, 0, []Chunk{{3, 1, []byte("lo ")}, {6, 2, []byte("world")}, {11, 1, []byte("!\n")}}},
		"last byte":          {12, 0, []Chunk{{12, 1, []byte("\n")}}},
		"at the end":         {13, 0, nil},
		"beyond the end":     {1000, 0, nil},
		"max offset":         {1<<64 - 1, 0, nil},
		"max inside a chunk": {0, 4, []Chunk{{0, 1, []byte("hell")}}},
		"max across chunks":  {3, 7, []Chunk{{3, 1, []byte("lo ")}, {6, 2, []byte("worl")}}},
		"max at a boundary":  {0, 6, []Chunk{{0, 1, []byte("hello ")}}},
		"max one byte":       {8, 1, []Chunk{{8, 2, []byte("r")}}},
		"negative max":       {11, -1, []Chunk{{11, 1, []byte("!\n")}}},
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
		if err := s.AppendLog(1, c); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ReadLog(1, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Chunk{{1, 1, []byte("bcdef")}, {6, 1, []byte("ghi")}, {20, 1, []byte("xyz")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadLog = %s, want %s", show(got), show(want))
	}
	got, err = s.ReadLog(1, 12, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Chunk{{20, 1, []byte("xyz")}}; !reflect.DeepEqual(got, want) {
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
			if err := s.AppendLog(id, Chunk{Offset: uint64(off), Stream: 1, Data: log[off : off+n]}); err != nil {
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

func TestSync(t *testing.T) {
	s := open(t)
	if err := s.AppendLog(1, Chunk{Data: []byte("x")}); err != nil {
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
