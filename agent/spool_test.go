package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	want := "12345678" + fmt.Sprintf(truncationMarker, 8, "the agent's -max-log-bytes")
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

// diskEvents records what a spool reports of its disk errors.
type diskEvents struct {
	failed, first, recovered int
}

func (e *diskEvents) writeFailed(err error, first bool) {
	e.failed++
	if first {
		e.first++
	}
}
func (e *diskEvents) writeRecovered() { e.recovered++ }

// A write the disk refuses is tried again, whole and at the same place,
// until it succeeds: the output has no hole and no torn record.
func TestSpoolDiskErrorIsRetried(t *testing.T) {
	s, err := openSpool(filepath.Join(t.TempDir(), "out"), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	ev := &diskEvents{}
	s.events, s.retry = ev, time.Millisecond
	failures := 0
	s.pwrite = func(fd int, iovs [][]byte, off int64) error {
		if failures < 3 && len(iovs[1]) > 0 && iovs[1][0] == 'B' {
			failures++
			// Part of the record reaches the file first, as a short write
			// on a disk that runs out would leave it.
			if _, err := unix.Pwrite(fd, append(bytes.Clone(iovs[0]), iovs[1][:2]...), off); err != nil {
				t.Error(err)
			}
			return unix.ENOSPC
		}
		return pwritevFull(fd, iovs, off)
	}
	ctx := context.Background()
	for _, w := range []string{"AAAA\n", "BBBB\n", "CCCC\n"} {
		if err := s.write(ctx, 1, []byte(w)); err != nil {
			t.Fatalf("write %q: %v", w, err)
		}
	}
	s.close()
	if got, _ := readAll(t, s, 0); got != "AAAA\nBBBB\nCCCC\n" {
		t.Fatalf("output after the disk recovered: %q", got)
	}
	if failures != 3 || ev.failed != 3 || ev.first != 1 || ev.recovered != 1 {
		t.Errorf("failures %d, events %+v; want 3 failures reported, one first, one recovery", failures, *ev)
	}
	if s.brokenErr() != nil || s.isPaused() {
		t.Errorf("after recovering: broken %v, paused %v", s.brokenErr(), s.isPaused())
	}
	// The file holds exactly the three records: a restarted agent reads
	// the same output.
	s2, err := openSpool(s.path, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	s2.close()
	if got, _ := readAll(t, s2, 0); got != "AAAA\nBBBB\nCCCC\n" {
		t.Fatalf("output reread from the file: %q", got)
	}
}

// A disk that keeps refusing breaks the spool after diskWait: the write
// returns errSpoolBroken (and so does every later one, at once), and what
// was written before stays readable, with no torn record behind it.
func TestSpoolGivesUpOnAFullDisk(t *testing.T) {
	s, err := openSpool(filepath.Join(t.TempDir(), "out"), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	ev := &diskEvents{}
	s.events, s.retry, s.diskWait = ev, time.Millisecond, 20*time.Millisecond
	ctx := context.Background()
	if err := s.write(ctx, 1, []byte("kept\n")); err != nil {
		t.Fatal(err)
	}
	s.pwrite = func(fd int, iovs [][]byte, off int64) error {
		if _, err := unix.Pwrite(fd, iovs[0], off); err != nil { // a torn header
			t.Error(err)
		}
		return unix.ENOSPC
	}
	if err := s.write(ctx, 1, []byte("lost\n")); !errors.Is(err, errSpoolBroken) || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("write on a full disk: %v, want errSpoolBroken wrapping ENOSPC", err)
	}
	if ev.first != 1 || ev.failed < 2 || ev.recovered != 0 {
		t.Errorf("events %+v: want the failure reported, retried, never recovered", *ev)
	}
	calls := ev.failed
	if err := s.write(ctx, 1, []byte("more\n")); !errors.Is(err, errSpoolBroken) || ev.failed != calls {
		t.Fatalf("write on a broken spool: %v after %d more tries; want errSpoolBroken at once", err, ev.failed-calls)
	}
	if s.brokenErr() == nil || s.isPaused() {
		t.Errorf("broken %v, paused %v", s.brokenErr(), s.isPaused())
	}
	s.close()
	if got, _ := readAll(t, s, 0); got != "kept\n" {
		t.Fatalf("output of a broken spool: %q, want what was written before", got)
	}
	s2, err := openSpool(s.path, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	s2.close()
	if got, _ := readAll(t, s2, 0); got != "kept\n" {
		t.Fatalf("output reread from the file: %q (a torn record left behind?)", got)
	}
}

// The .ack file is rewritten in place, one slot after the other: a torn
// slot leaves the previous acknowledgement in force, and the 16-byte file
// of earlier agents is still read (and replaced by this layout).
func TestSpoolAckFile(t *testing.T) {
	write := func(t *testing.T, path string, n int) []byte {
		s, err := openSpool(path, 1<<20, 0)
		if err != nil {
			t.Fatal(err)
		}
		var all []byte
		for i := range n {
			line := fmt.Appendf(nil, "record %02d\n", i) // 10 bytes
			all = append(all, line...)
			if err := s.write(context.Background(), 1, line); err != nil {
				t.Fatal(err)
			}
		}
		s.ack(100) // records 0..9
		s.ack(200) // records 10..19: the other slot
		s.f.Close()
		s.ackF.Close()
		return all
	}
	recovered := func(t *testing.T, path string) (acked uint64, out string) {
		t.Helper()
		r, err := openSpool(path, 1<<20, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, acked, _ = r.state()
		r.close()
		out, _ = readAll(t, r, acked)
		return acked, out
	}

	t.Run("both slots", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "out")
		all := write(t, path, 30)
		if fi, err := os.Stat(path + ".ack"); err != nil || fi.Size() != ackFileSize {
			t.Fatalf(".ack file: %v, %v bytes; want %d", err, fi, ackFileSize)
		}
		if acked, out := recovered(t, path); acked != 200 || out != string(all[200:]) {
			t.Fatalf("recovered at %d: %q", acked, out)
		}
	})
	t.Run("torn newest slot", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "out")
		all := write(t, path, 30)
		// A crash while the second acknowledgement was written to slot 0
		// (sequence 2): it never completed, so nothing after record 9 was
		// released. Put those records back and tear the slot.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := 10; i < 20; i++ {
			rec := append([]byte{1, 0, 0, 0, 10}, all[i*10:(i+1)*10]...)
			if _, err := f.WriteAt(rec, int64(i*(recordHeader+10))); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		if f, err = os.OpenFile(path+".ack", os.O_WRONLY, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{0xff, 0xff}, 9); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if acked, out := recovered(t, path); acked != 100 || out != string(all[100:]) {
			t.Fatalf("recovered at %d: %q; want the first acknowledgement", acked, out)
		}
	})
	t.Run("earlier layout", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "out")
		all := write(t, path, 30)
		var old [oldAckSize]byte
		binary.BigEndian.PutUint64(old[:], 200)
		binary.BigEndian.PutUint64(old[8:], 200+20*recordHeader)
		if err := os.WriteFile(path+".ack", old[:], 0o600); err != nil {
			t.Fatal(err)
		}
		if acked, out := recovered(t, path); acked != 200 || out != string(all[200:]) {
			t.Fatalf("recovered at %d: %q", acked, out)
		}
		if fi, err := os.Stat(path + ".ack"); err != nil || fi.Size() != ackFileSize {
			t.Fatalf("the .ack file was not replaced by the current layout: %v, %v", err, fi)
		}
		if acked, _ := recovered(t, path); acked != 200 {
			t.Fatalf("recovered again at %d", acked)
		}
	})
}
