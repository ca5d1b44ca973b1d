package controller

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"jobsuite/controller/store"
)

// validUTF8 must produce exactly what strings.ToValidUTF8 does, which is
// what the text format sent before it (and what clients were told).
func TestValidUTF8MatchesToValidUTF8(t *testing.T) {
	for _, in := range []string{
		"", "plain ascii", "héllo 日本 🎉", "\xff", "\xff\xfe", "a\xffb", "a\xff\xfeb\xfd",
		"\xe2\x82", "\xe2\x82a", "\xe2\xff", "\xed\xa0\x80", "\xef\xbf\xbd", "\xc3\x28\xa0\xa1",
		"\xf0\x9f\x8e", "ok\xf0\x9f\x8e\x89\xf0\x9f", strings.Repeat("\x80", 10) + "x",
	} {
		checkValidUTF8(t, []byte(in))
	}
}

func FuzzValidUTF8(f *testing.F) {
	f.Add([]byte("a\xffb\xe2\x82"))
	f.Fuzz(func(t *testing.T, in []byte) { checkValidUTF8(t, in) })
}

func checkValidUTF8(t *testing.T, in []byte) {
	t.Helper()
	orig := bytes.Clone(in)
	var got bytes.Buffer
	if err := validUTF8(in, got.Write); err != nil {
		t.Fatal(err)
	}
	if want := strings.ToValidUTF8(string(in), "\uFFFD"); got.String() != want {
		t.Errorf("validUTF8(%q) = %q, want %q", in, got.String(), want)
	}
	if !bytes.Equal(in, orig) {
		t.Errorf("validUTF8 modified its input: %q, was %q", in, orig)
	}
}

// A follower sends each batch of chunks it reads as one text message,
// cutting no rune in two, and the messages together are the output with
// invalid UTF-8 replaced.
func TestFollowerTextMessages(t *testing.T) {
	out := []byte("héllo 日本 🎉 a\xffb " + strings.Repeat("x", 300<<10) + " ünïcödé 🎉🎉 end")
	orig := bytes.Clone(out)
	// Cut the output into chunks at every few bytes near runes, and into
	// batches of chunks: some batches end inside a rune.
	var chunks []store.Chunk
	for off, n := 0, 0; off < len(out); off += n {
		n = min(len(out)-off, []int{1, 2, 3, 5, 7, 64 << 10}[len(chunks)%6])
		chunks = append(chunks, store.Chunk{Offset: uint64(off), Stream: 1, Data: out[off : off+n]})
	}
	var batches [][]store.Chunk
	for i := 0; i < len(chunks); {
		n := min(len(chunks)-i, 1+len(batches)%4)
		batches = append(batches, chunks[i:i+n])
		i += n
	}

	done := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		f := &follower{conn: conn}
		for _, b := range batches {
			if err := f.text(b); err != nil {
				done <- err
				return
			}
		}
		if f.offset != uint64(len(out)) {
			done <- fmt.Errorf("follower offset %d after all output, want %d", f.offset, len(out))
			return
		}
		if len(f.carry) > 0 {
			done <- fmt.Errorf("follower carries %q after output that ends with a whole rune", f.carry)
			return
		}
		done <- conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Minute))
	}))
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []byte
	msgs := 0
	for {
		typ, m, err := c.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatal(err)
			}
			break
		}
		if typ != websocket.TextMessage || !utf8.Valid(m) {
			t.Fatalf("message %d: type %d, valid UTF-8 %v", msgs, typ, utf8.Valid(m))
		}
		got = append(got, m...)
		msgs++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := strings.ToValidUTF8(string(out), "\uFFFD"); string(got) != want {
		t.Errorf("messages together: %d bytes, want %d (the output made valid)", len(got), len(want))
	}
	// A batch that holds only part of a rune sends nothing; every other
	// batch sends exactly one message.
	if msgs > len(batches) || msgs < len(batches)/2 {
		t.Errorf("%d messages for %d batches of chunks", msgs, len(batches))
	}
	if !bytes.Equal(out, orig) {
		t.Error("the follower modified the chunks' data")
	}
}

// A text message of many chunks may take as long as its chunks sent one
// by one could: a slow follower that kept up before still does.
func TestTextTimeout(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{
		{0, wsWriteTimeout}, {1, wsWriteTimeout}, {wsSlowest, wsWriteTimeout},
		{wsSlowest + 1, 2 * wsWriteTimeout}, {wsReadChunk, wsReadChunk / wsSlowest * wsWriteTimeout},
	} {
		if got := textTimeout(c.n); got != c.want {
			t.Errorf("textTimeout(%d) = %v, want %v", c.n, got, c.want)
		}
	}
}
