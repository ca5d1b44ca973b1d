package protocol

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// MaxFrameSize is the default largest frame length (the value of the
// 4-byte length prefix: type byte plus payload) a Reader accepts, and the
// largest a Writer sends.
const MaxFrameSize = 4 << 20

// MaxChunkSize is the largest LogChunk.Data an agent sends. Decoders do
// not enforce it: they accept any LogChunk that fits in a frame.
const MaxChunkSize = 256 << 10

// frameHeader is the length prefix plus the type byte.
const frameHeader = 5

// Append appends m to dst as one whole frame (length prefix, type byte,
// payload; see PROTOCOL.md) and returns the extended slice.
//
// Append panics if m is nil, a nil pointer to a message with fields, or a
// type this package does not define, or if the frame would not fit the
// 32-bit length prefix. Writer.Write returns errors instead.
func Append(dst []byte, m Message) []byte {
	b, err := appendFrame(dst, m)
	if err != nil {
		panic(err)
	}
	return b
}

func appendFrame(dst []byte, m Message) ([]byte, error) {
	if m == nil {
		return dst, fmt.Errorf("protocol: cannot encode a nil Message")
	}
	start := len(dst)
	b := append(dst, 0, 0, 0, 0, byte(m.Type()))
	b, ok := appendPayload(b, m)
	if !ok {
		return dst, fmt.Errorf("protocol: cannot encode %T (nil or not a protocol message)", m)
	}
	n := len(b) - start - 4
	if uint64(n) > math.MaxUint32 {
		return dst, fmt.Errorf("protocol: %w: %s frame of %d bytes does not fit the length prefix",
			ErrFrameTooLarge, m.Type(), n)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

// appendPayload appends m's payload. It reports false for nil pointers
// and for types not defined here.
func appendPayload(b []byte, m Message) ([]byte, bool) {
	switch m := m.(type) {
	case *Hello:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, uint64(m.Version))
		b = appendString(b, m.Name)
		b = appendLabels(b, m.Labels)
		b = binary.AppendUvarint(b, uint64(m.Slots))
		b = appendString(b, m.AgentVersion)
		b = appendRefs(b, m.Running)
		b = binary.AppendUvarint(b, uint64(m.Features))
	case *Welcome:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, uint64(m.Version))
		b = appendString(b, m.ControllerID)
		b = binary.AppendVarint(b, int64(m.HeartbeatInterval))
		b = binary.AppendVarint(b, int64(m.LeaseTTL))
		b = appendStrings(b, m.Members)
		b = binary.AppendUvarint(b, m.Term)
		b = binary.AppendUvarint(b, uint64(m.Features))
	case *Credit:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, uint64(m.Slots))
	case *Dispatch:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, m.JobID)
		b = binary.AppendUvarint(b, uint64(m.Attempt))
		b = appendString(b, m.Name)
		b = appendString(b, m.Command)
		b = appendStrings(b, m.Env)
		b = appendString(b, m.Dir)
		b = binary.AppendVarint(b, int64(m.Timeout))
		b = binary.AppendVarint(b, int64(m.KillGrace))
		b = appendBool(b, m.CaptureLogs)
		b = binary.AppendUvarint(b, m.MaxOutput)
		b = binary.AppendUvarint(b, uint64(m.Output))
		b = binary.AppendUvarint(b, uint64(m.TTY))
		b = binary.AppendUvarint(b, m.Term)
	case *Cancel:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, m.JobID)
		b = binary.AppendUvarint(b, uint64(m.Attempt))
		b = appendString(b, m.Reason)
		b = binary.AppendUvarint(b, m.Term)
	case *Heartbeat:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, m.Seq)
		b = appendRefs(b, m.Running)
		b = appendRefs(b, m.Ended)
	case *JobOpen:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, m.JobID)
		b = binary.AppendUvarint(b, uint64(m.Attempt))
		b = binary.AppendUvarint(b, m.Offset)
	case *Started:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, uint64(m.PID))
		b = appendTime(b, m.StartedAt)
	case *LogChunk:
		if m == nil {
			return b, false
		}
		// One growth for the whole chunk, then a single copy of Data.
		b = slices.Grow(b, 2*binary.MaxVarintLen64+1+len(m.Data))
		b = binary.AppendUvarint(b, uint64(m.Stream))
		b = binary.AppendUvarint(b, m.Offset)
		b = binary.AppendUvarint(b, uint64(len(m.Data)))
		b = append(b, m.Data...)
	case *LogAck:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, m.Offset)
	case *Finished:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, uint64(m.Outcome))
		b = binary.AppendVarint(b, int64(m.ExitCode))
		b = appendString(b, m.Signal)
		b = appendString(b, m.Error)
		b = binary.AppendVarint(b, int64(m.Duration))
		b = binary.AppendVarint(b, int64(m.UserCPU))
		b = binary.AppendVarint(b, int64(m.SystemCPU))
		b = binary.AppendUvarint(b, m.MaxRSS)
		b = binary.AppendUvarint(b, m.LogBytes)
		b = appendBool(b, m.Credit)
	case *FinishAck:
		// No fields: a nil *FinishAck encodes like &FinishAck{}.
	case *Error:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, uint64(m.Code))
		b = appendString(b, m.Message)
	case *Drain:
		// No fields.
	case *StatusRequest:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, m.Seq)
		b = binary.AppendUvarint(b, m.JobID)
		b = binary.AppendUvarint(b, uint64(m.Attempt))
	case *StatusReply:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, m.Seq)
		b = binary.AppendUvarint(b, m.JobID)
		b = binary.AppendUvarint(b, uint64(m.Attempt))
		b = appendBool(b, m.Found)
		b = binary.AppendUvarint(b, uint64(m.PID))
		b = binary.AppendVarint(b, int64(m.Elapsed))
		b = binary.AppendVarint(b, int64(m.UserCPU))
		b = binary.AppendVarint(b, int64(m.SystemCPU))
		b = binary.AppendUvarint(b, m.RSS)
		b = binary.AppendUvarint(b, uint64(m.Processes))
		b = binary.AppendUvarint(b, m.OutputBytes)
		b = appendString(b, m.LastLine)
	case *Redirect:
		if m == nil {
			return b, false
		}
		b = appendString(b, m.Leader)
		b = appendStrings(b, m.Members)
	case *WatchLeader:
		if m == nil {
			return b, false
		}
		b = binary.AppendUvarint(b, uint64(m.Version))
		b = appendString(b, m.Name)
		b = binary.AppendUvarint(b, m.Term)
		b = appendString(b, m.Leader)
	default:
		return b, false
	}
	return b, true
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendTime encodes the zero time as 0 and any other time as its Unix
// time in nanoseconds (only defined for years 1678 to 2262).
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// appendLabels encodes the pairs sorted by key, so equal maps encode to
// equal bytes.
func appendLabels(b []byte, m map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	if len(m) == 0 {
		return b
	}
	var stack [16]string
	keys := stack[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, m[k])
	}
	return b
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendRefs(b []byte, refs []AttemptRef) []byte {
	b = binary.AppendUvarint(b, uint64(len(refs)))
	for _, r := range refs {
		b = binary.AppendUvarint(b, r.JobID)
		b = binary.AppendUvarint(b, uint64(r.Attempt))
	}
	return b
}

// known reports whether this build defines message type t.
func known(t Type) bool {
	return (t >= TypeHello && t <= lastType) || (t >= OptionalBase && t <= lastOptional)
}

// Decode decodes the payload of one message of type t (the frame without
// its length prefix and type byte) into a new message, always a pointer
// (*Hello, *Dispatch, ...).
//
// Bytes after the fields this build knows are ignored. An unknown type
// below OptionalBase returns ErrUnknownType; an unknown optional type
// returns (nil, nil) and the caller skips it. A payload that breaks a
// rule of PROTOCOL.md returns ErrMalformed naming the field.
//
// Strings are copied, but LogChunk.Data aliases payload (capacity capped
// at its length, so appending to it never overwrites payload). Empty
// maps, slices and LogChunk.Data decode as nil. The Version fields are not
// checked here: call CheckVersion.
func Decode(t Type, payload []byte) (Message, error) {
	d := decoder{b: payload}
	var m Message
	// The short messages use composite literals: Go calls the functions
	// in one in lexical left-to-right order, so fields listed in struct
	// order are read in wire order.
	switch t {
	case TypeHello:
		m = d.hello()
	case TypeWelcome:
		m = d.welcome()
	case TypeCredit:
		m = &Credit{Slots: d.u32("Credit.Slots")}
	case TypeDispatch:
		m = d.dispatch()
	case TypeCancel:
		m = &Cancel{
			JobID:   d.uvarint("Cancel.JobID"),
			Attempt: d.u32("Cancel.Attempt"),
			Reason:  d.str("Cancel.Reason"),
			Term:    d.optionalUvarint("Cancel.Term"),
		}
	case TypeHeartbeat:
		m = &Heartbeat{
			Seq:     d.uvarint("Heartbeat.Seq"),
			Running: d.refs("Heartbeat.Running"),
			Ended:   d.optionalRefs("Heartbeat.Ended"),
		}
	case TypeJobOpen:
		m = &JobOpen{
			JobID:   d.uvarint("JobOpen.JobID"),
			Attempt: d.u32("JobOpen.Attempt"),
			Offset:  d.uvarint("JobOpen.Offset"),
		}
	case TypeStarted:
		m = &Started{
			PID:       d.u32("Started.PID"),
			StartedAt: d.time("Started.StartedAt"),
		}
	case TypeLogChunk:
		m = d.logChunk()
	case TypeLogAck:
		m = &LogAck{Offset: d.uvarint("LogAck.Offset")}
	case TypeFinished:
		m = d.finished()
	case TypeFinishAck:
		m = &FinishAck{}
	case TypeError:
		m = &Error{
			Code:    d.u16("Error.Code"),
			Message: d.str("Error.Message"),
		}
	case TypeDrain:
		m = &Drain{}
	case TypeStatusRequest:
		m = &StatusRequest{
			Seq:     d.uvarint("StatusRequest.Seq"),
			JobID:   d.uvarint("StatusRequest.JobID"),
			Attempt: d.u32("StatusRequest.Attempt"),
		}
	case TypeStatusReply:
		m = &StatusReply{
			Seq:         d.uvarint("StatusReply.Seq"),
			JobID:       d.uvarint("StatusReply.JobID"),
			Attempt:     d.u32("StatusReply.Attempt"),
			Found:       d.bool("StatusReply.Found"),
			PID:         d.u32("StatusReply.PID"),
			Elapsed:     d.duration("StatusReply.Elapsed"),
			UserCPU:     d.duration("StatusReply.UserCPU"),
			SystemCPU:   d.duration("StatusReply.SystemCPU"),
			RSS:         d.uvarint("StatusReply.RSS"),
			Processes:   d.u32("StatusReply.Processes"),
			OutputBytes: d.uvarint("StatusReply.OutputBytes"),
			LastLine:    d.str("StatusReply.LastLine"),
		}
	case TypeRedirect:
		m = &Redirect{
			Leader:  d.str("Redirect.Leader"),
			Members: d.strs("Redirect.Members"),
		}
	case TypeWatchLeader:
		m = &WatchLeader{
			Version: d.u32("WatchLeader.Version"),
			Name:    d.str("WatchLeader.Name"),
			Term:    d.uvarint("WatchLeader.Term"),
			Leader:  d.str("WatchLeader.Leader"),
		}
	default:
		if t >= OptionalBase {
			return nil, nil
		}
		return nil, fmt.Errorf("protocol: %w %d: the peer speaks a newer protocol than it announced; upgrade this side",
			ErrUnknownType, t)
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

func (d *decoder) hello() *Hello {
	m := &Hello{}
	m.Version = d.u32("Hello.Version")
	m.Name = d.str("Hello.Name")
	m.Labels = d.labels("Hello.Labels")
	m.Slots = d.u32("Hello.Slots")
	m.AgentVersion = d.str("Hello.AgentVersion")
	m.Running = d.refs("Hello.Running")
	m.Features = Features(d.optionalUvarint("Hello.Features"))
	return m
}

func (d *decoder) welcome() *Welcome {
	m := &Welcome{}
	m.Version = d.u32("Welcome.Version")
	m.ControllerID = d.str("Welcome.ControllerID")
	m.HeartbeatInterval = d.duration("Welcome.HeartbeatInterval")
	m.LeaseTTL = d.duration("Welcome.LeaseTTL")
	m.Members = d.optionalStrs("Welcome.Members")
	m.Term = d.optionalUvarint("Welcome.Term")
	m.Features = Features(d.optionalUvarint("Welcome.Features"))
	return m
}

func (d *decoder) dispatch() *Dispatch {
	m := &Dispatch{}
	m.JobID = d.uvarint("Dispatch.JobID")
	m.Attempt = d.u32("Dispatch.Attempt")
	m.Name = d.str("Dispatch.Name")
	m.Command = d.str("Dispatch.Command")
	m.Env = d.strs("Dispatch.Env")
	m.Dir = d.str("Dispatch.Dir")
	m.Timeout = d.duration("Dispatch.Timeout")
	m.KillGrace = d.duration("Dispatch.KillGrace")
	m.CaptureLogs = d.bool("Dispatch.CaptureLogs")
	m.MaxOutput = d.optionalUvarint("Dispatch.MaxOutput")
	m.Output = OutputMode(d.optionalU8("Dispatch.Output"))
	m.TTY = TTYMode(d.optionalU8("Dispatch.TTY"))
	m.Term = d.optionalUvarint("Dispatch.Term")
	return m
}

func (d *decoder) logChunk() *LogChunk {
	m := &LogChunk{}
	m.Stream = Stream(d.u8("LogChunk.Stream"))
	if m.Stream == 0 && d.err == nil {
		d.fail("LogChunk.Stream", "is 0")
	}
	m.Offset = d.uvarint("LogChunk.Offset")
	m.Data = d.bytes("LogChunk.Data")
	return m
}

func (d *decoder) finished() *Finished {
	m := &Finished{}
	m.Outcome = Outcome(d.u8("Finished.Outcome"))
	if m.Outcome == 0 && d.err == nil {
		d.fail("Finished.Outcome", "is 0")
	}
	m.ExitCode = d.i32("Finished.ExitCode")
	m.Signal = d.str("Finished.Signal")
	m.Error = d.str("Finished.Error")
	m.Duration = d.duration("Finished.Duration")
	m.UserCPU = d.duration("Finished.UserCPU")
	m.SystemCPU = d.duration("Finished.SystemCPU")
	m.MaxRSS = d.uvarint("Finished.MaxRSS")
	m.LogBytes = d.uvarint("Finished.LogBytes")
	switch c := d.optionalU8("Finished.Credit"); c {
	case 0:
	case 1:
		m.Credit = true
	default:
		d.fail("Finished.Credit", "is %d, not 0 or 1", c)
	}
	return m
}

// decoder reads fields from the front of b. The first failure is kept in
// err and empties b, so every later read fails too (without replacing
// err) and returns a zero value; callers check err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(field, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("protocol: %w: %s %s", ErrMalformed, field, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *decoder) uvarint(field string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		if n == 0 {
			d.fail(field, "is truncated")
		} else {
			d.fail(field, "overflows 64 bits")
		}
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(field string) int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		if n == 0 {
			d.fail(field, "is truncated")
		} else {
			d.fail(field, "overflows 64 bits")
		}
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8(field string) uint8 {
	v := d.uvarint(field)
	if v > math.MaxUint8 {
		d.fail(field, "value %d exceeds uint8", v)
		return 0
	}
	return uint8(v)
}

func (d *decoder) u16(field string) uint16 {
	v := d.uvarint(field)
	if v > math.MaxUint16 {
		d.fail(field, "value %d exceeds uint16", v)
		return 0
	}
	return uint16(v)
}

func (d *decoder) u32(field string) uint32 {
	v := d.uvarint(field)
	if v > math.MaxUint32 {
		d.fail(field, "value %d exceeds uint32", v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) i32(field string) int32 {
	v := d.varint(field)
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail(field, "value %d exceeds int32", v)
		return 0
	}
	return int32(v)
}

func (d *decoder) duration(field string) time.Duration {
	return time.Duration(d.varint(field))
}

func (d *decoder) time(field string) time.Time {
	v := d.varint(field)
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v)
}

func (d *decoder) bool(field string) bool {
	if len(d.b) == 0 {
		d.fail(field, "is truncated")
		return false
	}
	v := d.b[0]
	if v > 1 {
		d.fail(field, "is %d, not 0 or 1", v)
		return false
	}
	d.b = d.b[1:]
	return v == 1
}

// bytes returns the next length-prefixed byte string, aliasing d.b, or
// nil if it is empty.
func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field)
	if n > uint64(len(d.b)) {
		d.fail(field, "length %d exceeds the %d bytes left", n, len(d.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(field string) string {
	return string(d.bytes(field))
}

// count reads an element count and checks that count elements of at
// least minSize bytes each fit in what is left, before anything is
// allocated for them.
func (d *decoder) count(field string, minSize int) int {
	n := d.uvarint(field)
	if n > uint64(len(d.b)/minSize) {
		d.fail(field, "count %d exceeds the %d bytes left", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) strs(field string) []string {
	n := d.count(field, 1)
	if n == 0 {
		return nil
	}
	v := make([]string, n)
	for i := range v {
		v[i] = d.str(field)
	}
	return v
}

func (d *decoder) refs(field string) []AttemptRef {
	n := d.count(field, 2)
	if n == 0 {
		return nil
	}
	v := make([]AttemptRef, n)
	for i := range v {
		v[i].JobID = d.uvarint(field)
		v[i].Attempt = d.u32(field)
	}
	return v
}

// optionalRefs reads a list of attempt references appended to a message
// after its first version: a payload that ends before it decodes as nil
// (PROTOCOL.md §7).
// optionalUvarint reads a u64 field appended after the first version
// (PROTOCOL.md §7): absent, it is 0.
func (d *decoder) optionalUvarint(field string) uint64 {
	if len(d.b) == 0 {
		return 0
	}
	return d.uvarint(field)
}

func (d *decoder) optionalRefs(field string) []AttemptRef {
	if len(d.b) == 0 {
		return nil
	}
	return d.refs(field)
}

// optionalStrs reads a list of strings appended after the first
// version (PROTOCOL.md §7): absent, it is nil.
func (d *decoder) optionalStrs(field string) []string {
	if len(d.b) == 0 {
		return nil
	}
	return d.strs(field)
}

// optionalU8 reads a u8 appended to a message after its first version:
// a payload that ends before it decodes as 0 (PROTOCOL.md §7).
func (d *decoder) optionalU8(field string) uint8 {
	if len(d.b) == 0 {
		return 0
	}
	return d.u8(field)
}

// maxMapHint bounds the size hint for a decoded map: a count that fits in
// the payload can still be far larger than any real label set, and a map
// preallocated for it would cost many times the payload's size.
const maxMapHint = 64

func (d *decoder) labels(field string) map[string]string {
	n := d.count(field, 2)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, min(n, maxMapHint))
	for range n {
		k := d.str(field)
		v := d.str(field)
		if d.err != nil {
			return nil
		}
		if _, dup := m[k]; dup {
			d.fail(field, "repeats key %q", k)
			return nil
		}
		m[k] = v
	}
	return m
}

// String returns the message name, e.g. "Dispatch", or "Type(N)" for a
// number this build does not define.
func (t Type) String() string {
	if known(t) {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

var typeNames = [...]string{
	TypeHello:         "Hello",
	TypeWelcome:       "Welcome",
	TypeCredit:        "Credit",
	TypeDispatch:      "Dispatch",
	TypeCancel:        "Cancel",
	TypeHeartbeat:     "Heartbeat",
	TypeJobOpen:       "JobOpen",
	TypeStarted:       "Started",
	TypeLogChunk:      "LogChunk",
	TypeLogAck:        "LogAck",
	TypeFinished:      "Finished",
	TypeFinishAck:     "FinishAck",
	TypeError:         "Error",
	TypeDrain:         "Drain",
	TypeStatusRequest: "StatusRequest",
	TypeStatusReply:   "StatusReply",
	TypeRedirect:      "Redirect",
	TypeWatchLeader:   "WatchLeader",
}

// String returns "stdout" or "stderr", or "Stream(N)" for a number this
// build does not define.
func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return "Stream(" + strconv.Itoa(int(s)) + ")"
}

// String returns "completed", "failed", "timeout" or "cancelled" (the
// names of the matching job states), or "Outcome(N)" for a number this
// build does not define.
func (o Outcome) String() string {
	switch o {
	case OutcomeCompleted:
		return "completed"
	case OutcomeFailed:
		return "failed"
	case OutcomeTimeout:
		return "timeout"
	case OutcomeCancelled:
		return "cancelled"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}
