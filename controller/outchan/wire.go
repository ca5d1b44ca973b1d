package outchan

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The stream's framing (ALPN cluster.ALPNOutput, one stream per leader
// and follower, leader → follower chunks and ends, follower → leader
// acks; ALPNOutputV1, a node of an earlier release's, has no ends
// frames — it refuses a frame type it does not know, so the leader
// sends it none):
//
//	frame := type (1) | length uint32 (big-endian) | body
//	hello (1): term u64 | epoch u64 | leader ID (the rest)  leader → follower, first
//	ack   (2): term u64 | epoch u64 | durable seq u64       follower → leader
//	chunk (3): seq u64 | job u64 | attempt u32 | offset u64 | stream u8 |
//	           time (Unix ns) i64 | data (the rest)      leader → follower
//
//	ends  (4): (job u64 | end u64) repeated, at most maxEnds leader → follower
//
// An ends frame tells the follower how far each job's output is final:
// the durable ends the leader's scheduler counted (LeaderOptions.
// Durable said so) since the last one, a job's newest end only; the
// first after the hello carries every job's of the term. Such an end is
// never cut off the log: the attempt's LogBytes is at least it (a new
// leader's gap fill finds it too), so a follower may serve a running
// attempt's output up to it (Follower.DurableEnd), like raft's commit
// index in AppendEntries — but per job and only what was counted, so a
// chunk a quorum acknowledged after its attempt was lost (and that its
// end's TruncateLog will cut) is never served. It goes out whenever the
// leader counts more, so it trails the quorum's ack by one frame.
//
// The follower answers hello with an ack of the highest seq of that
// stream it holds durably (0 for one it has not seen), and the leader
// sends from the next one on. Seq numbers chunks within one stream, from
// 1, without gaps. A stream is a term and an epoch: one leader can run
// two Leaders in one raft term (an operator's restore rebuilds the
// term's Server, and raft keeps the term), and the second numbers its
// chunks from 1 again, so a follower must not take the first's seqs for
// the second's. The epoch grows with every Leader a process makes
// (nextEpoch), and only one process leads a term.
const (
	frameHello = 1
	frameAck   = 2
	frameChunk = 3
	frameEnds  = 4

	frameHeader = 5
	chunkHeader = 8 + 8 + 4 + 8 + 1 + 8
	// maxFrame bounds a frame's body: a chunk of the largest agent
	// frame with its header.
	maxFrame = 16<<20 + chunkHeader
	// maxEnds bounds the entries of one ends frame (16 bytes each).
	maxEnds = 4096
)

// chunk is one chunk of an attempt's output as the channel carries it.
type chunk struct {
	seq     uint64
	job     uint64
	attempt uint32
	offset  uint64 // in the job's log
	stream  uint8
	time    int64
	data    []byte
	sum     uint64 // on the leader: the bytes of the term through this chunk (not sent)
}

func (c *chunk) end() uint64 { return c.offset + uint64(len(c.data)) }

func appendHeader(b []byte, typ byte, n int) []byte {
	b = append(b, typ)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// stream names one Leader's stream: its term and epoch.
type stream struct{ term, epoch uint64 }

// before orders streams: a lower term, or the same term's older epoch.
func (s stream) before(o stream) bool {
	return s.term < o.term || s.term == o.term && s.epoch < o.epoch
}

func appendHello(b []byte, st stream, leader string) []byte {
	b = appendHeader(b, frameHello, 16+len(leader))
	b = binary.BigEndian.AppendUint64(b, st.term)
	b = binary.BigEndian.AppendUint64(b, st.epoch)
	return append(b, leader...)
}

func appendAck(b []byte, st stream, durable uint64) []byte {
	b = appendHeader(b, frameAck, 24)
	b = binary.BigEndian.AppendUint64(b, st.term)
	b = binary.BigEndian.AppendUint64(b, st.epoch)
	return binary.BigEndian.AppendUint64(b, durable)
}

func appendChunk(b []byte, c *chunk) []byte {
	b = appendHeader(b, frameChunk, chunkHeader+len(c.data))
	b = binary.BigEndian.AppendUint64(b, c.seq)
	b = binary.BigEndian.AppendUint64(b, c.job)
	b = binary.BigEndian.AppendUint32(b, c.attempt)
	b = binary.BigEndian.AppendUint64(b, c.offset)
	b = append(b, c.stream)
	b = binary.BigEndian.AppendUint64(b, uint64(c.time))
	return append(b, c.data...)
}

// jobEnd is a job's final output end, as an ends frame carries it.
type jobEnd struct{ job, end uint64 }

func appendEnds(b []byte, ends []jobEnd) []byte {
	b = appendHeader(b, frameEnds, 16*len(ends))
	for _, e := range ends {
		b = binary.BigEndian.AppendUint64(b, e.job)
		b = binary.BigEndian.AppendUint64(b, e.end)
	}
	return b
}

// parseEnds decodes an ends frame into ends (reused).
func parseEnds(b []byte, ends []jobEnd) ([]jobEnd, error) {
	if len(b)%16 != 0 || len(b)/16 > maxEnds {
		return nil, fmt.Errorf("%w: ends frame of %d bytes", ErrProtocol, len(b))
	}
	ends = ends[:0]
	for ; len(b) > 0; b = b[16:] {
		ends = append(ends, jobEnd{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])})
	}
	return ends, nil
}

// frameReader reads frames into a buffer it reuses: a body is valid
// until the next read.
type frameReader struct {
	r   io.Reader
	hdr [frameHeader]byte
	buf []byte
}

// expect reads the next frame, which must be of type want (what names
// it in the error).
func (fr *frameReader) expect(want byte, what string) ([]byte, error) {
	typ, body, err := fr.read()
	if err != nil {
		return nil, err
	}
	if typ != want {
		return nil, fmt.Errorf("%w: %s is type %d", ErrProtocol, what, typ)
	}
	return body, nil
}

func (fr *frameReader) read() (typ byte, body []byte, err error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes, over %d", ErrProtocol, n, maxFrame)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	body = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, body); err != nil {
		return 0, nil, err
	}
	return fr.hdr[0], body, nil
}

func parseHello(b []byte) (st stream, leader string, err error) {
	if len(b) < 16 {
		return stream{}, "", fmt.Errorf("%w: hello of %d bytes", ErrProtocol, len(b))
	}
	return stream{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, string(b[16:]), nil
}

func parseAck(b []byte) (st stream, durable uint64, err error) {
	if len(b) != 24 {
		return stream{}, 0, fmt.Errorf("%w: ack of %d bytes", ErrProtocol, len(b))
	}
	return stream{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, binary.BigEndian.Uint64(b[16:]), nil
}

// parseChunk decodes a chunk; its data aliases b.
func parseChunk(b []byte) (chunk, error) {
	if len(b) <= chunkHeader {
		return chunk{}, fmt.Errorf("%w: chunk of %d bytes", ErrProtocol, len(b))
	}
	c := chunk{
		seq:     binary.BigEndian.Uint64(b),
		job:     binary.BigEndian.Uint64(b[8:]),
		attempt: binary.BigEndian.Uint32(b[16:]),
		offset:  binary.BigEndian.Uint64(b[20:]),
		stream:  b[28],
		time:    int64(binary.BigEndian.Uint64(b[29:])),
		data:    b[chunkHeader:],
	}
	if c.attempt == 0 || c.offset > ^uint64(0)-uint64(len(c.data)) {
		return chunk{}, fmt.Errorf("%w: chunk of job %d attempt %d at %d", ErrProtocol, c.job, c.attempt, c.offset)
	}
	return c, nil
}
