package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"time"
)

// A round of commands travels as bytes when a replicated log carries it
// (one raft entry per round, controller/cluster). The format (doc.go,
// "Rounds on the wire"):
//
//	round := 'J' | format 1 | count uvarint | CRC-32C of body (4, big-endian) | body
//	body  := count × ( type (1) | len uvarint | command bytes )
//	type  := command type number (bits 0-6) | bit 7 "ignorable if unknown"
//
// Command bytes are hand-written binary for the frequent and bulky
// commands (Output, PruneJobs), the job and event records' own JSON
// (appendJob, appendEvent: the bytes the store writes anyway) for a
// Transition, and encoding/json of the command struct for the rare
// security commands.

// Round format constants.
const (
	roundMagic  = 'J'
	roundFormat = 1
	// typeIgnorable marks a command type a node that does not know it may
	// skip (a rolling upgrade's optional command); an unknown type
	// without it stops decoding with ErrUnknownCommand.
	typeIgnorable = 0x80
)

// Command type numbers. Numbers are only ever added: a number, once
// released, keeps its meaning for good, and a retired command's number
// is never given to another. 0 is not a command. SetApplied has no
// number: only the FSM writes it, never a round.
const (
	typeTransition       = 1
	typeOutput           = 2
	typePutToken         = 3
	typeDeleteToken      = 4
	typePutRevocation    = 5
	typeDeleteRevocation = 6
	typeCreateJoinToken  = 7
	typeUseJoinToken     = 8
	typeDeleteJoinToken  = 9
	typePruneJoinTokens  = 10
	typeAppendAudit      = 11
	typePruneAudit       = 12
	typePruneJobs        = 13
	typePutSchedule      = 14
	typeDeleteSchedule   = 15
	typePutDelivery      = 16
	typeDeleteDelivery   = 17
	typePutAgent         = 18
	typeDeleteAgent      = 19
	typeSetNotifySecret  = 20
	typeAppendEvent      = 21
	typeTruncateLog      = 22
	typeUseOutputChannel = 23
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeRound encodes cmds, in order, as one round in the wire format
// above. Each command is checked as Apply would check it first: a
// malformed command, or one that cannot travel (SetApplied), fails the
// whole round with ErrInvalid.
func EncodeRound(cmds []Command) ([]byte, error) {
	sc := scratchPool.Get().(*roundScratch)
	defer scratchPool.Put(sc)
	// The header first, with room for the CRC, then the commands after
	// it: one buffer, grown as it goes, and no copy at the end.
	// Room for 512 bytes per command, or an Output's data and its
	// header, so a chunk of output is copied in once, not regrown.
	size := 16
	for _, c := range cmds {
		if o, ok := c.(*Output); ok {
			size += 32 + len(o.Chunk.Data)
		} else {
			size += 512
		}
	}
	out := make([]byte, 0, size)
	out = append(out, roundMagic, roundFormat)
	out = binary.AppendUvarint(out, uint64(len(cmds)))
	crcAt := len(out)
	out = append(out, 0, 0, 0, 0)
	for i, c := range cmds {
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("store: encode round: command %d: %w", i, err)
		}
		var err error
		if out, err = appendCommand(out, c, sc); err != nil {
			return nil, fmt.Errorf("store: encode round: command %d: %w", i, err)
		}
	}
	binary.BigEndian.PutUint32(out[crcAt:], crc32.Checksum(out[crcAt+4:], castagnoli))
	return out, nil
}

// roundScratch holds the buffers a command is encoded in before it is
// appended to its round, kept between rounds (scratchPool) so that
// encoding a round does not allocate per command.
type roundScratch struct{ cmd, job, ev []byte }

var scratchPool = sync.Pool{New: func() any { return new(roundScratch) }}

// appendCommand appends c's type, length and bytes to dst.
func appendCommand(dst []byte, c Command, sc *roundScratch) ([]byte, error) {
	var (
		typ byte
		b   []byte
		err error
	)
	switch c := c.(type) {
	case *Transition:
		typ = typeTransition
		b, err = sc.transition(c)
	case *Output:
		typ = typeOutput
		b = binary.AppendUvarint(sc.cmd[:0], c.Job)
		b = binary.AppendUvarint(b, c.Chunk.Offset)
		b = append(b, c.Chunk.Stream)
		b = appendWireTime(b, c.Chunk.Time)
		b = append(b, c.Chunk.Data...)
	case *PruneJobs:
		typ = typePruneJobs
		b = binary.AppendUvarint(sc.cmd[:0], uint64(len(c.IDs)))
		for _, id := range c.IDs {
			b = binary.AppendUvarint(b, id)
		}
	case *PutToken:
		typ = typePutToken
		b, err = json.Marshal(c)
	case *DeleteToken:
		typ = typeDeleteToken
		b, err = json.Marshal(c)
	case *PutRevocation:
		typ = typePutRevocation
		b, err = json.Marshal(c)
	case *DeleteRevocation:
		typ = typeDeleteRevocation
		b, err = json.Marshal(c)
	case *CreateJoinToken:
		typ = typeCreateJoinToken
		b, err = json.Marshal(c)
	case *UseJoinToken:
		typ = typeUseJoinToken
		b, err = json.Marshal(c)
	case *DeleteJoinToken:
		typ = typeDeleteJoinToken
		b, err = json.Marshal(c)
	case *PruneJoinTokens:
		typ = typePruneJoinTokens
		b, err = json.Marshal(c)
	case *AppendAudit:
		typ = typeAppendAudit
		b, err = json.Marshal(c)
	case *PruneAudit:
		typ = typePruneAudit
		b, err = json.Marshal(c)
	case *PutSchedule:
		typ = typePutSchedule
		b, err = json.Marshal(c)
	case *DeleteSchedule:
		typ = typeDeleteSchedule
		b, err = json.Marshal(c)
	case *PutDelivery:
		typ = typePutDelivery
		b, err = json.Marshal(c)
	case *DeleteDelivery:
		typ = typeDeleteDelivery
		b, err = json.Marshal(c)
	case *PutAgent:
		typ = typePutAgent
		b, err = json.Marshal(c)
	case *DeleteAgent:
		typ = typeDeleteAgent
		b, err = json.Marshal(c)
	case *SetNotifySecret:
		typ = typeSetNotifySecret
		b, err = json.Marshal(c)
	case *TruncateLog:
		typ = typeTruncateLog
		b, err = json.Marshal(c)
	case *AppendEvent:
		typ = typeAppendEvent
		b, err = json.Marshal(c)
	case *UseOutputChannel:
		typ = typeUseOutputChannel
		b, err = json.Marshal(c)
	default:
		return dst, fmt.Errorf("%w: %T has no command type number and cannot travel in a round", ErrInvalid, c)
	}
	if err != nil {
		return dst, fmt.Errorf("%T: %w", c, err)
	}
	if cap(b) > cap(sc.cmd) && cap(b) <= 1<<20 && typ != typeTransition {
		sc.cmd = b // keep the grown buffer for the next command
	}
	dst = append(dst, typ)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...), nil
}

// encodeTransition: job len uvarint | job JSON | event len uvarint |
// event JSON | audit flag (1) [| audit JSON to the end].
func encodeTransition(t *Transition) ([]byte, error) {
	b, err := new(roundScratch).transition(t)
	return b, err
}

// transition encodes t in sc.cmd (reusing sc's buffers); the result is
// valid until sc is used again.
func (sc *roundScratch) transition(t *Transition) ([]byte, error) {
	var err error
	if sc.job, err = appendJob(sc.job[:0], t.Job); err != nil {
		return nil, err
	}
	if sc.ev, err = appendEvent(sc.ev[:0], &t.Event); err != nil {
		return nil, err
	}
	b := binary.AppendUvarint(sc.cmd[:0], uint64(len(sc.job)))
	b = append(b, sc.job...)
	b = binary.AppendUvarint(b, uint64(len(sc.ev)))
	b = append(b, sc.ev...)
	if t.Audit == nil {
		b = append(b, 0)
	} else {
		a, err := json.Marshal(t.Audit)
		if err != nil {
			return nil, err
		}
		b = append(append(b, 1), a...)
	}
	sc.cmd = b
	return b, nil
}

// appendWireTime appends t as the Unix nanoseconds the store keeps of
// it (nanos: 0 for the zero time and times before 1970), a uvarint. The
// location and anything nanos drops are not kept: apply uses nothing
// else.
func appendWireTime(b []byte, t time.Time) []byte {
	return binary.AppendUvarint(b, nanos(t))
}

// DecodeRound decodes a round EncodeRound made. Anything else — a wrong
// magic or format, a checksum that does not match, a truncated or
// overlong body, a command that does not decode or that Apply would
// refuse as malformed — is an error wrapping ErrBadRound, and nothing
// is returned. A command of a type this build does not know is skipped
// if its type carries the ignorable bit, and otherwise fails the round
// with ErrUnknownCommand: a node that cannot apply a command must stop
// rather than diverge. Decoding never panics, whatever the input.
func DecodeRound(data []byte) ([]Command, error) {
	if len(data) < 2 || data[0] != roundMagic {
		return nil, fmt.Errorf("store: decode round: %w: no round header", ErrBadRound)
	}
	if data[1] != roundFormat {
		return nil, fmt.Errorf("store: decode round: %w: format %d, this build reads %d", ErrBadRound, data[1], roundFormat)
	}
	count, n := binary.Uvarint(data[2:])
	if n <= 0 {
		return nil, fmt.Errorf("store: decode round: %w: bad count", ErrBadRound)
	}
	rest := data[2+n:]
	if len(rest) < 4 {
		return nil, fmt.Errorf("store: decode round: %w: truncated header", ErrBadRound)
	}
	sum, body := binary.BigEndian.Uint32(rest), rest[4:]
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("store: decode round: %w: checksum %08x, header says %08x", ErrBadRound, got, sum)
	}
	// Every command takes at least two bytes (type, length), which bounds
	// what a count can make us allocate.
	if count > uint64(len(body))/2 {
		return nil, fmt.Errorf("store: decode round: %w: %d commands in %d bytes", ErrBadRound, count, len(body))
	}
	cmds := make([]Command, 0, count)
	for i := range count {
		if len(body) < 1 {
			return nil, fmt.Errorf("store: decode round: %w: command %d: truncated", ErrBadRound, i)
		}
		typ := body[0]
		size, n := binary.Uvarint(body[1:])
		if n <= 0 || size > uint64(len(body)-1-n) {
			return nil, fmt.Errorf("store: decode round: %w: command %d: bad length", ErrBadRound, i)
		}
		b := body[1+n : 1+n+int(size)]
		body = body[1+n+int(size):]
		c, err := decodeCommand(typ&^typeIgnorable, b)
		if err == errUnknownType {
			if typ&typeIgnorable != 0 {
				continue
			}
			return nil, fmt.Errorf("store: decode round: command %d: %w: type %d", i, ErrUnknownCommand, typ)
		}
		if err == nil {
			err = c.check()
		}
		if err != nil {
			return nil, fmt.Errorf("store: decode round: %w: command %d (type %d): %v", ErrBadRound, i, typ, err)
		}
		cmds = append(cmds, c)
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("store: decode round: %w: %d bytes after the last command", ErrBadRound, len(body))
	}
	return cmds, nil
}

// errUnknownType is decodeCommand's answer for a type number it does not
// know; DecodeRound turns it into ErrUnknownCommand or a skip.
var errUnknownType = fmt.Errorf("unknown command type")

func decodeCommand(typ byte, b []byte) (Command, error) {
	var c Command
	switch typ {
	case typeTransition:
		return decodeTransition(b)
	case typeOutput:
		return decodeOutput(b)
	case typePruneJobs:
		return decodePruneJobs(b)
	case typePutToken:
		c = new(PutToken)
	case typeDeleteToken:
		c = new(DeleteToken)
	case typePutRevocation:
		c = new(PutRevocation)
	case typeDeleteRevocation:
		c = new(DeleteRevocation)
	case typeCreateJoinToken:
		c = new(CreateJoinToken)
	case typeUseJoinToken:
		c = new(UseJoinToken)
	case typeDeleteJoinToken:
		c = new(DeleteJoinToken)
	case typePruneJoinTokens:
		c = new(PruneJoinTokens)
	case typeAppendAudit:
		c = new(AppendAudit)
	case typePruneAudit:
		c = new(PruneAudit)
	case typePutSchedule:
		c = new(PutSchedule)
	case typeDeleteSchedule:
		c = new(DeleteSchedule)
	case typePutDelivery:
		c = new(PutDelivery)
	case typeDeleteDelivery:
		c = new(DeleteDelivery)
	case typePutAgent:
		c = new(PutAgent)
	case typeDeleteAgent:
		c = new(DeleteAgent)
	case typeSetNotifySecret:
		c = new(SetNotifySecret)
	case typeAppendEvent:
		c = new(AppendEvent)
	case typeTruncateLog:
		c = new(TruncateLog)
	case typeUseOutputChannel:
		c = new(UseOutputChannel)
	default:
		return nil, errUnknownType
	}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, err
	}
	return c, nil
}

// wireReader reads the binary fields of a command's bytes; the first
// failure sticks.
type wireReader struct {
	b   []byte
	bad bool
}

func (r *wireReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) bytes(n uint64) []byte {
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) byte() byte {
	if b := r.bytes(1); len(b) == 1 {
		return b[0]
	}
	return 0
}

func (r *wireReader) time() time.Time {
	v := r.uvarint()
	switch {
	case v == 0:
		return time.Time{}
	case v > math.MaxInt64:
		r.bad = true
		return time.Time{}
	}
	return time.Unix(0, int64(v)).UTC()
}

func decodeTransition(b []byte) (Command, error) {
	r := wireReader{b: b}
	job := r.bytes(r.uvarint())
	ev := r.bytes(r.uvarint())
	audit := r.byte()
	if r.bad || audit > 1 || (audit == 0 && len(r.b) != 0) {
		return nil, fmt.Errorf("malformed transition")
	}
	t := &Transition{Job: new(Job)}
	if !decodeJobFast(job, t.Job, nil) {
		*t.Job = Job{}
		if err := jsonDecodeJob(job, t.Job); err != nil {
			return nil, err
		}
	}
	if err := decodeEvent(ev, &t.Event); err != nil {
		return nil, err
	}
	if audit == 1 {
		t.Audit = new(AuditEntry)
		if err := decodeAudit(r.b, t.Audit); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func decodeOutput(b []byte) (Command, error) {
	r := wireReader{b: b}
	o := &Output{Job: r.uvarint()}
	o.Chunk.Offset = r.uvarint()
	o.Chunk.Stream = r.byte()
	o.Chunk.Time = r.time()
	if r.bad {
		return nil, fmt.Errorf("malformed output")
	}
	o.Chunk.Data = r.b
	return o, nil
}

func decodePruneJobs(b []byte) (Command, error) {
	r := wireReader{b: b}
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) { // an ID takes at least a byte
		return nil, fmt.Errorf("malformed prune")
	}
	c := &PruneJobs{IDs: make([]uint64, n)}
	for i := range c.IDs {
		c.IDs[i] = r.uvarint()
	}
	if r.bad || len(r.b) != 0 {
		return nil, fmt.Errorf("malformed prune")
	}
	return c, nil
}
