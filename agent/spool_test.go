package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// readAll reads a spool from off to its end (it must be closed).
func readAll(t *testing.T, s *spool, off uint64) (string, map[uint8]string) {
	t.Helper()
	var all bytes.Buffer
	streams := map[uint8]string{}
	for {
		stream, data, at, err := s.next(context.Background(), off, nil)
		if errors.Is(err, errSpoolDone) {
			return all.String(), streams
		}
		if err != nil {
			t.Fatal(err)
		}
		if at != off {
			t.Fatalf("next(%d) returned data at %d", off, at)
		}
		all.Write(data)
		streams[stream] += string(data)
		off += uint64(len(data))
	}
}

func TestSpoolRoundTrip(t *testing.T) {
	s, err := openSpool(filepath.Join(t.TempDir(), "out"), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var want bytes.Buffer
	for i := range 100 {
		line := fmt.Sprintf("line %d\n", i)
		stream := uint8(1 + i%2)
		if err := s.write(ctx, stream, []byte(line)); err != nil {
			t.Fatal(err)
		}
		want.WriteString(line)
	}
	s.close()
	got, streams := readAll(t, s, 0)
	if got != want.String() {
		t.Fatalf("read back %q", got)
	}
	if len(streams[1]) == 0 || len(streams[2]) == 0 || len(streams[1])+len(streams[2]) != want.Len() {
		t.Errorf("streams: %d + %d bytes", len(streams[1]), len(streams[2]))
	}
	// Reading from the middle of a record starts exactly there.
	got, _ = readAll(t, s, 3)
	if got != want.String()[3:] {
		t.Errorf("from offset 3: %q", got[:20])
	}
	if line := s.lastOutputLine(); line != "line 99" {
		t.Errorf("last line %q", line)
	}
}

// TestSpoolBounded shows a full spool blocks the writer (it returns only
// when its context ends) and an acknowledgement makes room.
func TestSpoolBounded(t *testing.T) {
	s, err := openSpool(filepath.Join(t.TempDir(), "out"), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.write(context.Background(), 1, []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.write(ctx, 1, []byte("abc")) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("write to a full spool returned %v; want it blocked until cancelled", err)
	}
	// With room made by an ack, the write goes through.
	go func() { done <- s.write(context.Background(), 1, []byte("abc")) }()
	s.ack(5)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.close()
	got, _ := readAll(t, s, 5)
	if got != "56789abc" {
		t.Errorf("after ack: %q", got)
	}
	// Reading acknowledged output skips to the first byte not acknowledged.
	s.ack(12)
	if _, data, at, err := s.next(context.Background(), 0, nil); err != nil || at != 12 || string(data) != "c" {
		t.Errorf("next(0) after ack(12) = %q at %d, %v; want \"c\" at 12", data, at, err)
	}
}

// TestSpoolRecover reopens a spool as a restarted agent would: output
// from the acknowledged offset on is there, byte for byte, and a torn
// last record is dropped.
func TestSpoolRecover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	s, err := openSpool(path, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := range 50 {
		line := fmt.Sprintf("record %02d\n", i)
		want.WriteString(line)
		if err := s.write(context.Background(), 1, []byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	s.ack(200) // inside record 20: records 0..19 are released
	s.f.Close()
	// A torn record at the end: a header promising more than is there.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{1, 0, 0, 1, 0, 'x'})
	f.Close()

	r, err := openSpool(path, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	end, acked, _ := r.state()
	if acked != 200 || end != uint64(want.Len()) {
		t.Fatalf("recovered acked=%d end=%d; want 200, %d", acked, end, want.Len())
	}
	r.close()
	got, _ := readAll(t, r, 200)
	if got != want.String()[200:] {
		t.Errorf("recovered output %q", got)
	}
}

func TestSpoolLimit(t *testing.T) {
	s, err := openSpool(filepath.Join(t.TempDir(), "out"), 1<<20, 8)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"12345", "6789", "more", "and more"} {
		if err := s.write(context.Background(), 1, []byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	s.close()
	got, streams := readAll(t, s, 0)
	want := "12345678" + fmt.Sprintf(truncationMarker, 8)
	if got != want {
		t.Errorf("truncated output %q, want %q", got, want)
	}
	if streams[1] != "12345678" {
		t.Errorf("stdout %q", streams[1])
	}
}

// A record goes to the file without being copied into a buffer of its
// own: writing output allocates far less than the output's size.
func TestSpoolWriteDoesNotCopy(t *testing.T) {
	s, err := openSpool(filepath.Join(t.TempDir(), "out"), 64<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.remove()
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	if err := s.write(ctx, 1, data); err != nil {          // opens the file
		t.Fatal(err)
	}
	const writes = 64
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range writes {
		if err := s.write(ctx, 1, data); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(writes*len(data)/8); got > limit {
		t.Errorf("%d writes of %d bytes allocated %d bytes; want at most %d", writes, len(data), got, limit)
	}
	s.close()
	got, _ := readAll(t, s, 0)
	if want := bytes.Repeat(data, writes+1); got != string(want) {
		t.Errorf("read back %d bytes, want %d", len(got), len(want))
	}
}

func TestAdvanceIovs(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []string
	}{
		{0, []string{"abc", "de", "f"}},
		{1, []string{"bc", "de", "f"}},
		{3, []string{"de", "f"}},
		{4, []string{"e", "f"}},
		{5, []string{"f"}},
		{6, nil},
	} {
		iovs := [][]byte{[]byte("abc"), []byte("de"), []byte("f")}
		var got []string
		for _, b := range advanceIovs(iovs, tc.n) {
			got = append(got, string(b))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("advanceIovs(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
