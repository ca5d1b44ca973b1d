package hub

import (
	"bytes"
	"testing"

	"jobsuite/controller/store"
)

func chunk(off uint64, data string) store.Chunk {
	return store.Chunk{Offset: off, Stream: 1, Data: []byte(data)}
}

// appendChunk stores c in the hub as serveJobStream does, with a copy.
func appendChunk(h *Hub, id uint64, c store.Chunk) {
	h.Appended(id, c, bytes.Clone(c.Data))
}

func readAll(t *testing.T, h *Hub, id, from uint64, max int) (string, bool) {
	t.Helper()
	chunks, ok := h.Read(id, from, max)
	var b []byte
	pos := from
	for _, c := range chunks {
		if c.Offset != pos {
			t.Fatalf("chunk at %d, want %d", c.Offset, pos)
		}
		b = append(b, c.Data...)
		pos += uint64(len(c.Data))
	}
	return string(b), ok
}

func TestHubTail(t *testing.T) {
	h := New()
	appendChunk(h, 1, chunk(0, "unfollowed"))
	if _, ok := h.Read(1, 0, 100); ok {
		t.Fatal("a job without followers has a tail")
	}
	_, unsubscribe, _ := h.Subscribe(1, 0)
	if _, ok := h.Read(1, 10, 100); ok {
		t.Fatal("tail before any chunk was appended while followed")
	}
	appendChunk(h, 1, chunk(10, "hello "))
	appendChunk(h, 1, chunk(16, "world"))
	for _, tc := range []struct {
		from uint64
		max  int
		want string
		ok   bool
	}{
		{9, 100, "", false}, // before the tail: the store has it
		{10, 100, "hello world", true},
		{12, 100, "llo world", true},
		{16, 100, "world", true},
		{12, 6, "llo wo", true},
		{21, 100, "", true}, // the end: nothing newer
		{22, 100, "", false},
	} {
		got, ok := readAll(t, h, 1, tc.from, tc.max)
		if got != tc.want || ok != tc.ok {
			t.Errorf("read from %d max %d = %q, %v; want %q, %v", tc.from, tc.max, got, ok, tc.want, tc.ok)
		}
	}

	// A chunk stored without a copy (a follower joined meanwhile) empties
	// the tail; the next one starts it again.
	h.Appended(1, chunk(21, "!"), nil)
	if _, ok := h.Read(1, 21, 100); ok {
		t.Fatal("tail kept across a chunk it does not hold")
	}
	appendChunk(h, 1, chunk(22, "more"))
	if got, ok := readAll(t, h, 1, 22, 100); got != "more" || !ok {
		t.Fatalf("restarted tail: %q, %v", got, ok)
	}
	if _, ok := h.Read(1, 21, 100); ok {
		t.Fatal("restarted tail covers a byte it does not hold")
	}

	// A chunk overlapping what was stored drops the tail until the
	// output passes everything seen.
	appendChunk(h, 1, chunk(20, "xyz"))
	if _, ok := h.Read(1, 24, 100); ok {
		t.Fatal("tail kept after an overlapping chunk")
	}
	appendChunk(h, 1, chunk(23, "ab")) // still below the highest end, 26
	if _, ok := h.Read(1, 23, 100); ok {
		t.Fatal("tail restarted inside bytes stored before")
	}
	appendChunk(h, 1, chunk(26, "c"))
	if got, ok := readAll(t, h, 1, 26, 100); got != "c" || !ok {
		t.Fatalf("tail after the overlap: %q, %v", got, ok)
	}

	unsubscribe()
	if _, ok := h.Read(1, 26, 100); ok || len(h.subs) != 0 {
		t.Fatal("tail kept after the last follower left")
	}
}

func TestHubTailBounded(t *testing.T) {
	h := New()
	_, unsubscribe, _ := h.Subscribe(7, 0)
	defer unsubscribe()
	piece := bytes.Repeat([]byte("x"), 1<<20)
	var off uint64
	for range 3 * tailMax / len(piece) {
		appendChunk(h, 7, store.Chunk{Offset: off, Stream: 1, Data: piece})
		off += uint64(len(piece))
		if size := h.subs[7].size; size > tailMax {
			t.Fatalf("tail holds %d bytes, more than %d", size, tailMax)
		}
	}
	// The newest pieces that fit with their overhead are in the tail,
	// no more.
	fit := uint64(tailMax / (len(piece) + chunkOverhead))
	first := off - fit*uint64(len(piece))
	if _, ok := h.Read(7, first, 100); !ok {
		t.Fatalf("the newest %d pieces are not in the tail", fit)
	}
	if _, ok := h.Read(7, first-1, 100); ok {
		t.Fatal("tail holds more than tailMax")
	}
	// A chunk larger than the bound is not kept at all.
	big := store.Chunk{Offset: off, Stream: 1, Data: make([]byte, tailMax+1)}
	appendChunk(h, 7, big)
	if _, ok := h.Read(7, off, 100); ok {
		t.Fatal("kept a chunk larger than tailMax")
	}
}

func TestHubTailsBoundedInAll(t *testing.T) {
	h := New()
	piece := make([]byte, 1<<20)
	jobs := hubTailMax/tailMax + 2
	var unsubscribes []func()
	for id := uint64(1); id <= uint64(jobs); id++ {
		_, unsubscribe, _ := h.Subscribe(id, 0)
		unsubscribes = append(unsubscribes, unsubscribe)
		for off := uint64(0); off < tailMax; off += uint64(len(piece)) {
			appendChunk(h, id, store.Chunk{Offset: off, Stream: 1, Data: piece})
			if h.bytes > hubTailMax {
				t.Fatalf("tails hold %d bytes, more than %d", h.bytes, hubTailMax)
			}
		}
	}
	last := uint64(tailMax - len(piece))
	if _, ok := h.Read(1, last, 100); !ok {
		t.Fatal("the first job lost its tail")
	}
	if _, ok := h.Read(uint64(jobs), last, 100); ok {
		t.Fatal("the last job has a tail beyond the hub's bound")
	}
	for _, unsubscribe := range unsubscribes {
		unsubscribe()
	}
	if h.bytes != 0 {
		t.Fatalf("%d bytes accounted after every follower left", h.bytes)
	}
}

// Reads from any offset of a tail of many small chunks find their place.
func TestHubTailSmallChunks(t *testing.T) {
	h := New()
	_, unsubscribe, _ := h.Subscribe(3, 0)
	defer unsubscribe()
	var all []byte
	for i := range 500 {
		data := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i%7)
		appendChunk(h, 3, store.Chunk{Offset: uint64(len(all)), Stream: 1, Data: data})
		all = append(all, data...)
	}
	for from := range len(all) + 1 {
		got, ok := readAll(t, h, 3, uint64(from), len(all))
		if !ok || got != string(all[from:]) {
			t.Fatalf("read from %d = %q, %v; want %q", from, got, ok, all[from:])
		}
	}
}

// TestHubTruncate: when a job's output is cut (an attempt ended below
// what some node had stored), the tail keeps only what lies below the
// cut, and the next attempt's output, from the cut on, continues it.
func TestHubTruncate(t *testing.T) {
	tests := map[string]struct {
		at       uint64
		below    string // the tail read from 10 after the cut
		next     string // the tail read from 10 once the next attempt wrote "NEW" at the cut
		fromNext bool   // the tail no longer covers 10 (cut below it): read from the cut
	}{
		"inside a chunk":       {at: 13, below: "hel", next: "helNEW"},
		"at a chunk boundary":  {at: 16, below: "hello ", next: "hello NEW"},
		"at the end":           {at: 21, below: "hello world", next: "hello worldNEW"},
		"below the whole tail": {at: 10, below: "", next: "NEW", fromNext: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h := New()
			_, unsubscribe, _ := h.Subscribe(1, 0)
			defer unsubscribe()
			appendChunk(h, 1, chunk(10, "hello "))
			appendChunk(h, 1, chunk(16, "world"))
			h.Truncate(1, tt.at)
			got, ok := readAll(t, h, 1, 10, 100)
			if tt.below != "" && (got != tt.below || !ok) {
				t.Errorf("after the cut: %q, %v; want %q", got, ok, tt.below)
			}
			if tt.below == "" && got != "" {
				t.Errorf("after the cut: %q, %v; want nothing", got, ok)
			}
			if got, ok := readAll(t, h, 1, tt.at+1, 100); ok && got != "" {
				t.Errorf("after the cut, from %d: %q: bytes the store no longer holds", tt.at+1, got)
			}
			appendChunk(h, 1, chunk(tt.at, "NEW"))
			from := uint64(10)
			if tt.fromNext {
				from = tt.at
			}
			if got, ok := readAll(t, h, 1, from, 100); got != tt.next || !ok {
				t.Errorf("after the next attempt's chunk: %q, %v; want %q", got, ok, tt.next)
			}
			if h.bytes != h.subs[1].size || h.bytes != len(tt.next)+chunkOverhead*h.countChunks(1) {
				t.Errorf("accounting: hub %d, tail %d, want %d", h.bytes, h.subs[1].size, len(tt.next)+chunkOverhead*h.countChunks(1))
			}
		})
	}
	// A job without followers: nothing to cut, nothing kept.
	h := New()
	h.Truncate(2, 5)
	if len(h.subs) != 0 {
		t.Fatal("Truncate made a topic")
	}
}

// countChunks is how many chunks job id's tail holds.
func (h *Hub) countChunks(id uint64) int { return len(h.subs[id].tail) }
