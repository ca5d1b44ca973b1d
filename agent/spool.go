package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"jobsuite/protocol"
)

// spool keeps one attempt's output on disk until the controller has
// stored it, so a dropped connection or a controller restart loses no
// byte: the sender resumes from the last acknowledged offset.
//
// The file is a sequence of records: stream (1 byte), length (4 bytes,
// big endian), data. Offsets count data bytes only, in the order the
// process wrote them (stdout and stderr interleaved), exactly as in
// LogChunk. Acknowledged records are released with FALLOC_FL_PUNCH_HOLE,
// so a long job's spool holds only what is in flight.
//
// The spool is bounded: when the unacknowledged output reaches max bytes,
// write blocks — the agent stops reading the job's pipes, and the job
// blocks in its own write() — until acknowledgements make room. Nothing
// is ever dropped silently; the only output not forwarded is what passes
// the per-job limit (limit), which is replaced by one marker line.
//
// A write the disk refuses (full, or failing) is not skipped: write keeps
// the record and tries it again — the job's output, and with it the job,
// waits — every diskRetry or as soon as an acknowledgement frees space.
// Only when the disk has refused for diskWait does the spool give up: it
// is broken (write returns errSpoolBroken, from then on at once, and the
// agent fails the attempt), never a log with a hole in it.
type spool struct {
	path     string
	max      uint64        // bound on unacknowledged bytes
	limit    uint64        // per-attempt output limit; 0 = none
	limitBy  string        // who set the limit, for the marker line
	diskWait time.Duration // how long writes may fail before the spool gives up
	retry    time.Duration // between tries of a failing write
	// events, if set, hears when writes start failing and when they
	// succeed again (logs and metrics).
	events spoolEvents
	// pwrite writes a record (pwritevFull); tests replace it.
	pwrite func(fd int, iovs [][]byte, off int64) error

	mu        sync.Mutex
	f         *os.File // nil until the first output: a silent job has no spool file
	ackF      *os.File // the .ack file, made with f; nil if it could not be (then no space is released)
	ackSeq    uint64   // sequence number of the last .ack slot written
	onDisk    bool     // the file, or its .ack, may exist
	recs      []record // records not yet acknowledged, in order
	wpos      int64    // file size
	end       uint64   // output bytes written
	acked     uint64   // output bytes the controller stored
	truncated bool     // output past limit was dropped (and marked)
	broken    error    // the disk refused writes for diskWait: output is incomplete
	paused    bool     // a write is failing and waits to be tried again
	closed    bool     // no more writes: the process ended
	lastLine  []byte   // tail of the output, for live status
	hdr       [recordHeader]byte
	iov       [][]byte // a record's header and data, for pwritev
	more      chan struct{}
	room      chan struct{}
}

type record struct {
	off    uint64
	pos    int64 // file position of the data (after the header)
	n      uint32
	stream uint8
}

const recordHeader = 5

// truncationMarker ends the stored output of an attempt that passed its
// output limit: the limit, and who set it.
const truncationMarker = "\n[jobsuite: output truncated: the job wrote more than %d bytes (%s)]\n"

// spoolEvents hears about disk errors of a spool's writes.
type spoolEvents interface {
	// writeFailed: a write failed; the job's output waits. first says
	// it is the first failure since the last success.
	writeFailed(err error, first bool)
	// writeRecovered: a write succeeded after failures.
	writeRecovered()
}

// Disk-error handling of spool writes.
const (
	defaultDiskWait = time.Minute            // how long writes may fail before the spool gives up
	diskRetry       = 500 * time.Millisecond // between tries of a failing write
)

// errSpoolBroken is returned by write once the spool gave up on a disk
// that kept refusing its writes.
var errSpoolBroken = errors.New("agent disk full: output incomplete")

// newSpool returns the empty spool of a new attempt. Its file is
// created at the first output.
func newSpool(path string, max, limit uint64) *spool {
	return &spool{path: path, max: max, limit: limit, limitBy: "the agent's -max-log-bytes", diskWait: defaultDiskWait,
		retry: diskRetry, pwrite: pwritevFull, more: make(chan struct{}), room: make(chan struct{})}
}

// openSpool reopens the spool an earlier run of the agent left at path;
// a missing file is a spool with no output.
func openSpool(path string, max, limit uint64) (*spool, error) {
	s := newSpool(path, max, limit)
	s.onDisk = true
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s.f = f
	if err := s.recover(); err != nil {
		f.Close()
		return nil, err
	}
	// Acknowledgements from here on go to a fresh .ack file, which
	// replaces the old one only once it holds the same state (the old one
	// may be of an earlier layout); if it cannot be made, the spool works
	// on without releasing space.
	if af, err := createAckFile(path + ".ack.new"); err == nil {
		s.ackF = af
		if err := s.writeAck(s.acked, s.recsStart()); err != nil || os.Rename(path+".ack.new", path+".ack") != nil {
			af.Close()
			os.Remove(path + ".ack.new")
			s.ackF = nil
		}
	}
	return s, nil
}

// recsStart is the file position where the unacknowledged records start.
func (s *spool) recsStart() int64 {
	if len(s.recs) > 0 {
		return s.recs[0].pos - recordHeader
	}
	return s.wpos
}

// recover rebuilds the record index of an existing spool file (after an
// agent restart), starting after the acknowledged part recorded in the
// .ack file. A torn last record is cut off.
func (s *spool) recover() error {
	var pos int64
	if acked, at, ok := readAck(s.path + ".ack"); ok {
		s.acked, s.end, pos = acked, acked, at
	}
	r := bufio.NewReader(io.NewSectionReader(s.f, pos, 1<<62))
	var hdr [recordHeader]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if _, err := r.Discard(int(n)); err != nil {
			break
		}
		s.recs = append(s.recs, record{off: s.end, pos: pos + recordHeader, n: n, stream: hdr[0]})
		s.end += uint64(n)
		pos += recordHeader + int64(n)
	}
	s.wpos = pos
	return s.f.Truncate(pos)
}

func (s *spool) wake(c *chan struct{}) {
	close(*c)
	*c = make(chan struct{})
}

// write appends output, blocking while the spool is full. It returns
// early only when ctx is done.
func (s *spool) write(ctx context.Context, stream uint8, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	if s.limit > 0 {
		if s.truncated {
			return nil
		}
		if left := s.limit - s.end; uint64(len(data)) > left {
			data = data[:left]
			s.truncated = true
			if err := s.appendLocked(ctx, stream, data); err != nil {
				return err
			}
			return s.appendLocked(ctx, uint8(protocol.Stderr), fmt.Appendf(nil, truncationMarker, s.limit, s.limitBy))
		}
	}
	return s.appendLocked(ctx, stream, data)
}

func (s *spool) appendLocked(ctx context.Context, stream uint8, data []byte) error {
	var failing time.Time // since when the disk refuses this write
	defer func() { s.paused = false }()
	for len(data) > 0 {
		for s.end-s.acked >= s.max {
			room := s.room
			s.mu.Unlock()
			select {
			case <-room:
			case <-ctx.Done():
				s.mu.Lock()
				return ctx.Err()
			}
			s.mu.Lock()
		}
		n := min(uint64(len(data)), s.max-(s.end-s.acked), protocol.MaxChunkSize)
		if err := s.writeRecord(stream, data[:n]); err != nil {
			now := time.Now()
			first := failing.IsZero()
			if first {
				failing = now
				s.paused = true
			}
			if s.events != nil {
				s.events.writeFailed(err, first)
			}
			if now.Sub(failing) >= s.diskWait {
				s.broken = fmt.Errorf("%w: the state directory %s refused writes for %s: %w", errSpoolBroken, filepath.Dir(s.path), s.diskWait, err)
				if s.f != nil {
					_ = s.f.Truncate(s.wpos) // no torn record behind the last good one
				}
				return s.broken
			}
			// Wait, then write the same record again (at the same
			// position): an acknowledgement may free space at once.
			room := s.room
			s.mu.Unlock()
			t := time.NewTimer(min(s.retry, s.diskWait-now.Sub(failing)))
			select {
			case <-room:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				s.mu.Lock()
				return ctx.Err()
			}
			t.Stop()
			s.mu.Lock()
			continue
		}
		if !failing.IsZero() {
			failing = time.Time{}
			s.paused = false
			if s.events != nil {
				s.events.writeRecovered()
			}
		}
		s.recs = append(s.recs, record{off: s.end, pos: s.wpos + recordHeader, n: uint32(n), stream: stream})
		s.wpos += recordHeader + int64(n)
		s.end += n
		s.keepTail(data[:n])
		data = data[n:]
		s.wake(&s.more)
	}
	return nil
}

// writeRecord writes one record at the end of the file, creating it at
// the first output. On an error nothing counts as written: the next try
// writes the whole record at the same position again. The caller holds
// s.mu.
func (s *spool) writeRecord(stream uint8, data []byte) error {
	if s.f == nil {
		// The .ack file first, and whole: acknowledgements later rewrite
		// it in place, so releasing space never needs new space.
		af, err := createAckFile(s.path + ".ack")
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.onDisk = true
		f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			af.Close()
			return fmt.Errorf("spool: %w", err)
		}
		s.f, s.ackF = f, af
	}
	s.hdr[0] = stream
	binary.BigEndian.PutUint32(s.hdr[1:], uint32(len(data)))
	s.iov = append(s.iov[:0], s.hdr[:], data)
	err := s.pwrite(int(s.f.Fd()), s.iov, s.wpos)
	s.iov[1] = nil // do not keep the caller's buffer
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// isPaused reports whether a write is failing and waits to be retried.
func (s *spool) isPaused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused
}

// brokenErr returns why the spool gave up, or nil.
func (s *spool) brokenErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

// keepTail remembers the end of the output for LastLine.
func (s *spool) keepTail(data []byte) {
	const keep = 2048
	if len(data) >= keep {
		s.lastLine = append(s.lastLine[:0], data[len(data)-keep:]...)
		return
	}
	s.lastLine = append(s.lastLine, data...)
	if len(s.lastLine) > keep {
		s.lastLine = append(s.lastLine[:0], s.lastLine[len(s.lastLine)-keep:]...)
	}
}

// lastOutputLine is the last complete line of output, at most 1 KiB.
func (s *spool) lastOutputLine() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.lastLine
	if i := lastIndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if i := lastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return string(b)
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// close marks the output complete: the process ended.
func (s *spool) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.wake(&s.more)
	}
	s.mu.Unlock()
}

// waitClosed returns a channel closed once the process ended.
func (s *spool) waitClosed() <-chan struct{} {
	c := make(chan struct{})
	go func() {
		defer close(c)
		s.mu.Lock()
		for !s.closed {
			more := s.more
			s.mu.Unlock()
			<-more
			s.mu.Lock()
		}
		s.mu.Unlock()
	}()
	return c
}

// ack records that the controller stored every byte below off and
// releases the disk space they used.
func (s *spool) ack(off uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off <= s.acked {
		return
	}
	if off > s.end {
		off = s.end
	}
	s.acked = off
	i := 0
	for i < len(s.recs) && s.recs[i].off+uint64(s.recs[i].n) <= off {
		i++
	}
	if i > 0 {
		last := s.recs[i-1]
		releaseTo := last.pos + int64(last.n)
		s.recs = append(s.recs[:0], s.recs[i:]...)
		// Record where the unacknowledged records start before releasing
		// the space before it: a restarted agent reads on from there.
		if s.ackF != nil && s.writeAck(last.off+uint64(last.n), releaseTo) == nil {
			// Best effort: a file system without hole punching keeps the bytes.
			_ = unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, releaseTo)
		}
	}
	s.wake(&s.room)
}

// errSpoolDone is returned by next when every byte was read and the
// process ended.
var errSpoolDone = errors.New("spool: all output read")

// next returns the output at offset off (up to one record), waiting for
// it if the process has not written it yet. Output already acknowledged
// is skipped: at is where data starts, at least off. It returns
// errSpoolDone at the end of a finished attempt's output. data is read
// into buf, or into a new buffer of MaxChunkSize (room for any record)
// if buf is too small: pass data[:cap(data)] back to reuse it.
func (s *spool) next(ctx context.Context, off uint64, buf []byte) (stream uint8, data []byte, at uint64, err error) {
	s.mu.Lock()
	off = max(off, s.acked)
	for off >= s.end {
		if s.closed {
			s.mu.Unlock()
			return 0, nil, off, errSpoolDone
		}
		more := s.more
		s.mu.Unlock()
		select {
		case <-more:
		case <-ctx.Done():
			return 0, nil, off, ctx.Err()
		}
		s.mu.Lock()
		off = max(off, s.acked)
	}
	var rec *record
	for i := range s.recs {
		r := &s.recs[i]
		if off < r.off+uint64(r.n) {
			rec = r
			break
		}
	}
	if rec == nil || off < rec.off {
		s.mu.Unlock()
		return 0, nil, off, fmt.Errorf("spool: offset %d is not in the spool", off)
	}
	skip := off - rec.off
	n := uint64(rec.n) - skip
	pos := rec.pos + int64(skip)
	stream = rec.stream
	s.mu.Unlock()
	if uint64(cap(buf)) < n {
		buf = make([]byte, max(n, protocol.MaxChunkSize)) // a record is at most that
	}
	buf = buf[:n]
	if _, err := s.f.ReadAt(buf, pos); err != nil {
		return 0, nil, off, fmt.Errorf("spool: %w", err)
	}
	return stream, buf, off, nil
}

// ready reports whether next would return at once for off: output is
// there to read, or the process ended.
func (s *spool) ready(off uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(off, s.acked) < s.end || s.closed
}

// wait waits until ready(off) or d has passed; it returns false, at
// once, when ctx is done.
func (s *spool) wait(ctx context.Context, off uint64, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	s.mu.Lock()
	for max(off, s.acked) >= s.end && !s.closed {
		more := s.more
		s.mu.Unlock()
		select {
		case <-more:
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	return true
}

// state returns the output written, the offset acknowledged and whether
// the process ended.
func (s *spool) state() (end, acked uint64, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end, s.acked, s.closed
}

// remove deletes the spool file; the attempt is fully reported.
func (s *spool) remove() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	if s.ackF != nil {
		s.ackF.Close()
		s.ackF = nil
	}
	if s.onDisk {
		os.Remove(s.path)
		os.Remove(s.path + ".ack")
		s.onDisk = false
	}
}

// pwritevFull writes the buffers one after the other at off, in as many
// pwritev calls as it takes: a record's header and data go to the file
// without being copied into one buffer first. It may modify iovs.
func pwritevFull(fd int, iovs [][]byte, off int64) error {
	for len(iovs) > 0 {
		n, err := unix.Pwritev(fd, iovs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		iovs = advanceIovs(iovs, n)
	}
	return nil
}

// advanceIovs drops the first n bytes of iovs, and any buffer left empty.
func advanceIovs(iovs [][]byte, n int) [][]byte {
	for len(iovs) > 0 && n >= len(iovs[0]) {
		n -= len(iovs[0])
		iovs = iovs[1:]
	}
	if n > 0 {
		iovs[0] = iovs[0][n:]
	}
	return iovs
}

// The .ack file says where a restarted agent resumes: the output offset
// acknowledged and the file position of the first record after it. It
// holds two slots of ackSlot bytes — sequence number, offset, position
// (each u64, big endian), CRC-32C of those 24 bytes, 4 bytes of zero —
// written alternately in place and synced, so an update needs no new
// disk space (the spool releases space exactly when the disk may be
// full) and a torn update leaves the other slot intact; the valid slot
// with the higher sequence number counts. Agents before this layout
// wrote 16 bytes (offset, position), which are still read.
const (
	ackSlot     = 32
	ackFileSize = 2 * ackSlot
	oldAckSize  = 16
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// createAckFile creates (or truncates) an .ack file of two empty slots.
func createAckFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(make([]byte, ackFileSize), 0); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// writeAck records acked and pos in the next slot, durably. The caller
// holds s.mu.
func (s *spool) writeAck(acked uint64, pos int64) error {
	var b [ackSlot]byte
	seq := s.ackSeq + 1
	binary.BigEndian.PutUint64(b[0:], seq)
	binary.BigEndian.PutUint64(b[8:], acked)
	binary.BigEndian.PutUint64(b[16:], uint64(pos))
	binary.BigEndian.PutUint32(b[24:], crc32.Checksum(b[:24], crc32c))
	if _, err := s.ackF.WriteAt(b[:], int64(seq%2)*ackSlot); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(s.ackF.Fd())); err != nil {
		return err
	}
	s.ackSeq = seq
	return nil
}

// readAck reads an .ack file of either layout. ok is false when there is
// none or neither slot is valid: the spool is then read from the start.
func readAck(path string) (acked uint64, pos int64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false
	}
	if len(b) == oldAckSize {
		return binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:])), true
	}
	if len(b) != ackFileSize {
		return 0, 0, false
	}
	var best uint64
	for i := range 2 {
		slot := b[i*ackSlot : (i+1)*ackSlot]
		seq := binary.BigEndian.Uint64(slot)
		if seq == 0 || seq <= best || binary.BigEndian.Uint32(slot[24:]) != crc32.Checksum(slot[:24], crc32c) {
			continue
		}
		best, acked, pos = seq, binary.BigEndian.Uint64(slot[8:]), int64(binary.BigEndian.Uint64(slot[16:]))
	}
	return acked, pos, best > 0
}
