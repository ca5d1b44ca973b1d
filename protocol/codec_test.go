package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// samples holds, for every message type, a fully populated message and a
// zero one. Decoding their encodings must give them back exactly, so
// they use nil (never empty) maps and slices and times made by time.Unix.
func samples() map[string]Message {
	return map[string]Message{
		"Hello": &Hello{
			Version:      Version,
			Name:         "worker-1",
			Labels:       map[string]string{"zone": "eu-1", "gpu": "", "": "empty key", "arch": "amd64"},
			Slots:        8,
			AgentVersion: "v1.2.3",
			Running:      []AttemptRef{{JobID: 1, Attempt: 1}, {JobID: math.MaxUint64, Attempt: math.MaxUint32}, {}},
			Features:     FeatureRedirect,
		},
		"Hello/future": &Hello{Name: "w", Features: math.MaxUint64},
		"Hello/zero":   &Hello{},
		"Welcome": &Welcome{
			Version:           Version,
			ControllerID:      "ctl-a",
			HeartbeatInterval: 5 * time.Second,
			LeaseTTL:          30 * time.Second,
			Members:           []string{"ctl-a:7443", "ctl-b:7443", "[::1]:7443"},
			Term:              1 << 35,
			Features:          FeatureCreditWithResult,
		},
		"Welcome/future":    &Welcome{Version: Version, Features: math.MaxUint64},
		"Welcome/term only": &Welcome{Version: Version, Term: 3},
		"Welcome/negative":  &Welcome{HeartbeatInterval: -1, LeaseTTL: math.MinInt64},
		"Welcome/zero":      &Welcome{},
		"Credit":            &Credit{Slots: math.MaxUint32},
		"Credit/zero":       &Credit{},
		"Dispatch": &Dispatch{
			JobID:       1 << 40,
			Attempt:     3,
			Name:        "nightly backup",
			Command:     "tar czf /backup/x.tgz /srv --exclude '*.tmp'",
			Env:         []string{"A=1", "", "PATH=/usr/bin:/bin", "ÜNICODE=✓"},
			Dir:         "/srv",
			Timeout:     time.Hour,
			KillGrace:   10 * time.Second,
			CaptureLogs: true,
			MaxOutput:   1 << 30,
			Output:      OutputOrdered,
			TTY:         TTYOff,
			Term:        7,
		},
		"Dispatch/tty":    &Dispatch{JobID: 1, Attempt: 1, Command: "ls --color=auto", CaptureLogs: true, Output: OutputOrdered, TTY: TTYOn},
		"Dispatch/future": &Dispatch{JobID: 1, Attempt: 1, Output: 200, TTY: 255},
		"Dispatch/zero":   &Dispatch{},
		"Cancel":          &Cancel{JobID: 42, Attempt: 2, Reason: "cancelled by operator alice", Term: math.MaxUint64},
		"Cancel/zero":     &Cancel{},
		"Heartbeat": &Heartbeat{
			Seq:     99,
			Running: []AttemptRef{{JobID: 7, Attempt: 1}, {JobID: 8, Attempt: 4}},
			Ended:   []AttemptRef{{JobID: 8, Attempt: 4}},
		},
		"Heartbeat/zero": &Heartbeat{},
		"JobOpen":        &JobOpen{JobID: 5, Attempt: 1, Offset: 1 << 33},
		"JobOpen/zero":   &JobOpen{},
		"Started":        &Started{PID: 31337, StartedAt: time.Unix(1_700_000_000, 123_456_789)},
		"Started/before-epoch": &Started{
			PID:       1,
			StartedAt: time.Unix(-1_000_000, 5),
		},
		"Started/zero": &Started{},
		"LogChunk": &LogChunk{
			Stream: Stderr,
			Offset: 123456,
			Data:   []byte("hello\x00world\n\xff"),
		},
		"LogChunk/empty":  &LogChunk{Stream: Stdout},
		"LogChunk/future": &LogChunk{Stream: 200, Offset: 1, Data: []byte{1}},
		"LogAck":          &LogAck{Offset: math.MaxUint64},
		"LogAck/zero":     &LogAck{},
		"Finished": &Finished{
			Outcome:   OutcomeFailed,
			ExitCode:  137,
			Signal:    "SIGKILL",
			Error:     "",
			Duration:  90 * time.Second,
			UserCPU:   80 * time.Second,
			SystemCPU: 5 * time.Millisecond,
			MaxRSS:    512 << 20,
			LogBytes:  1 << 20,
			Credit:    true,
		},
		"Finished/extremes": &Finished{
			Outcome:  OutcomeCancelled,
			ExitCode: math.MinInt32,
			Error:    "exec: \"nope\": executable file not found in $PATH",
			Duration: math.MaxInt64,
			UserCPU:  math.MinInt64,
			MaxRSS:   math.MaxUint64,
		},
		"Finished/minimal":   &Finished{Outcome: OutcomeCompleted},
		"FinishAck":          &FinishAck{},
		"Error":              &Error{Code: CodeStaleAttempt, Message: "attempt 3 of job 5 is not current"},
		"Error/zero":         &Error{},
		"Drain":              &Drain{},
		"StatusRequest":      &StatusRequest{Seq: 9, JobID: 1 << 40, Attempt: 3},
		"StatusRequest/zero": &StatusRequest{},
		"StatusReply": &StatusReply{
			Seq: 9, JobID: 77, Attempt: 2, Found: true, PID: 4242,
			Elapsed: 3 * time.Second, UserCPU: time.Second, SystemCPU: time.Millisecond,
			RSS: 64 << 20, Processes: 3, OutputBytes: 1 << 30, LastLine: "step 7/9 ✓",
		},
		"StatusReply/zero":   &StatusReply{},
		"Redirect":           &Redirect{Leader: "ctl-b:7443", Members: []string{"ctl-a:7443", "ctl-b:7443", "ctl-c:7443"}},
		"Redirect/no leader": &Redirect{Members: []string{"ctl-a:7443"}},
		"Redirect/zero":      &Redirect{},
		"WatchLeader":        &WatchLeader{Version: Version, Name: "worker-1", Term: 7, Leader: "ctl-b:7443"},
		"WatchLeader/zero":   &WatchLeader{},
	}
}

// splitFrame checks the framing of one encoded frame and returns its type
// and payload.
func splitFrame(t testing.TB, frame []byte) (Type, []byte) {
	t.Helper()
	if len(frame) < frameHeader {
		t.Fatalf("frame of %d bytes is shorter than its header", len(frame))
	}
	if n := binary.BigEndian.Uint32(frame); int(n) != len(frame)-4 {
		t.Fatalf("length prefix %d, frame has %d bytes after it", n, len(frame)-4)
	}
	return Type(frame[4]), frame[frameHeader:]
}

func TestRoundTrip(t *testing.T) {
	for name, m := range samples() {
		t.Run(name, func(t *testing.T) {
			prefix := []byte("prefix")
			frame := Append(bytes.Clone(prefix), m)
			if !bytes.HasPrefix(frame, prefix) {
				t.Fatalf("Append overwrote dst")
			}
			typ, payload := splitFrame(t, frame[len(prefix):])
			if typ != m.Type() {
				t.Fatalf("type byte %v, want %v", typ, m.Type())
			}
			got, err := Decode(typ, payload)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("Decode = %#v\nwant %#v", got, m)
			}
			// Encoding is deterministic (maps are sorted).
			for range 5 {
				if again := Append(nil, got); !bytes.Equal(again, frame[len(prefix):]) {
					t.Fatalf("re-encoding differs:\n%x\n%x", again, frame[len(prefix):])
				}
			}
		})
	}
}

// TestNormalisation covers values that do not come back identical: empty
// maps and slices decode as nil, and times lose their location, monotonic
// reading and (for the Unix epoch) their non-zeroness.
func TestNormalisation(t *testing.T) {
	now := time.Now()
	tests := map[string]struct{ in, want Message }{
		"empty labels and running": {
			in:   &Hello{Labels: map[string]string{}, Running: []AttemptRef{}},
			want: &Hello{},
		},
		"empty env":       {in: &Dispatch{Env: []string{}}, want: &Dispatch{}},
		"empty heartbeat": {in: &Heartbeat{Running: []AttemptRef{}}, want: &Heartbeat{}},
		"empty data":      {in: &LogChunk{Stream: Stdout, Data: []byte{}}, want: &LogChunk{Stream: Stdout}},
		"epoch is zero":   {in: &Started{StartedAt: time.Unix(0, 0)}, want: &Started{}},
		"utc and monotonic": {
			in:   &Started{StartedAt: now.UTC()},
			want: &Started{StartedAt: time.Unix(0, now.UnixNano())},
		},
		"nil FinishAck": {in: (*FinishAck)(nil), want: &FinishAck{}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			typ, payload := splitFrame(t, Append(nil, tt.in))
			got, err := Decode(typ, payload)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestHeartbeatWithoutEnded decodes a Heartbeat as the first agents
// sent it, before Ended was appended: the field is absent, not malformed.
func TestHeartbeatWithoutEnded(t *testing.T) {
	payload := binary.AppendUvarint(nil, 3)    // Seq
	payload = binary.AppendUvarint(payload, 1) // Running: one ref
	payload = binary.AppendUvarint(payload, 7) // JobID
	payload = binary.AppendUvarint(payload, 2) // Attempt
	got, err := Decode(TypeHeartbeat, payload)
	if err != nil {
		t.Fatal(err)
	}
	want := &Heartbeat{Seq: 3, Running: []AttemptRef{{JobID: 7, Attempt: 2}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
	// A truncated Ended is still malformed.
	if _, err := Decode(TypeHeartbeat, append(payload, 1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated Ended: err = %v, want ErrMalformed", err)
	}
}

func TestDecodeAliasing(t *testing.T) {
	_, payload := splitFrame(t, Append(nil, &LogChunk{Stream: Stdout, Data: []byte("abc")}))
	m, err := Decode(TypeLogChunk, payload)
	if err != nil {
		t.Fatal(err)
	}
	data := m.(*LogChunk).Data
	if cap(data) != len(data) {
		t.Fatalf("Data has spare capacity %d: appending would overwrite the payload", cap(data)-len(data))
	}
	payload[len(payload)-1] = 'X'
	if string(data) != "abX" {
		t.Fatalf("Data = %q, want it to alias the payload", data)
	}
}

func TestTrailingBytesIgnored(t *testing.T) {
	for name, m := range samples() {
		t.Run(name, func(t *testing.T) {
			typ, payload := splitFrame(t, Append(nil, m))
			// A later version appends fields: varints, strings, anything.
			longer := append(bytes.Clone(payload), 0x05, 0xff, 0xff, 0x00, 'x', 'y')
			got, err := Decode(typ, longer)
			if err != nil {
				t.Fatalf("Decode with trailing bytes: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("got %#v, want %#v", got, m)
			}
		})
	}
}

// optionalCut reports whether a payload of m cut at cut is m as a sender
// of an earlier version wrote it, without (some of) the fields appended
// since (PROTOCOL.md §7), and decoded as m with those fields zero.
func optionalCut(m, got Message, cut int) bool {
	// appended lists, for each message with fields appended after its
	// first version, copies of m with the appended fields zeroed one at a
	// time, last first, and how many bytes each zeroed field took.
	type step struct {
		size int
		old  Message
	}
	var steps []step
	uv := func(v uint64) int { return len(binary.AppendUvarint(nil, v)) }
	switch m := m.(type) {
	case *Hello:
		old := *m
		old.Features = 0
		steps = []step{{uv(uint64(m.Features)), &old}}
	case *Welcome:
		noFeatures := *m
		noFeatures.Features = 0
		noTerm := noFeatures
		noTerm.Term = 0
		noMembers := noTerm
		noMembers.Members = nil
		steps = []step{{uv(uint64(m.Features)), &noFeatures}, {uv(m.Term), &noTerm}, {len(appendStrings(nil, m.Members)), &noMembers}}
	case *Finished:
		old := *m
		old.Credit = false
		steps = []step{{1, &old}}
	case *Heartbeat:
		old := &Heartbeat{Seq: m.Seq, Running: m.Running}
		steps = []step{{len(appendRefs(nil, m.Ended)), old}}
	case *Cancel:
		old := *m
		old.Term = 0
		steps = []step{{uv(m.Term), &old}}
	case *Dispatch:
		noTerm := *m
		noTerm.Term = 0
		noTTY := noTerm
		noTTY.TTY = 0
		noOutput := noTTY
		noOutput.Output = 0
		noMax := noOutput
		noMax.MaxOutput = 0
		steps = []step{{uv(m.Term), &noTerm}, {uv(uint64(m.TTY)), &noTTY}, {uv(uint64(m.Output)), &noOutput}, {uv(m.MaxOutput), &noMax}}
	}
	end := len(Append(nil, m)) - frameHeader
	for _, st := range steps {
		end -= st.size
		if cut == end && reflect.DeepEqual(got, st.old) {
			return true
		}
	}
	return false
}

// TestDispatchWithoutOutput decodes a Dispatch as controllers sent it
// before Output and TTY were appended: both absent, decoded as zero —
// two pipes (OutputSplit) and the agent's default terminal setting.
func TestDispatchWithoutOutput(t *testing.T) {
	m := &Dispatch{JobID: 9, Attempt: 2, Name: "n", Command: "echo hi", Timeout: time.Second, KillGrace: time.Second, CaptureLogs: true}
	_, payload := splitFrame(t, Append(nil, m))
	old := payload[:len(payload)-3] // without Output, TTY and Term
	got, err := Decode(TypeDispatch, old)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %#v, want %#v", got, m)
	}
	if d := got.(*Dispatch); d.Output != OutputSplit || d.TTY != TTYDefault {
		t.Fatalf("absent fields decode as Output %d, TTY %d", d.Output, d.TTY)
	}
	// Output without TTY (a sender that only knew Output) is fine too.
	withOutput := append(bytes.Clone(old), byte(OutputOrdered))
	got, err = Decode(TypeDispatch, withOutput)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.(*Dispatch); d.Output != OutputOrdered || d.TTY != TTYDefault {
		t.Fatalf("Output only: got Output %d, TTY %d", d.Output, d.TTY)
	}
	// A present field that does not fit a u8 is malformed.
	if _, err := Decode(TypeDispatch, binary.AppendUvarint(bytes.Clone(old), 256)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "Dispatch.Output") {
		t.Fatalf("Output 256: err = %v, want ErrMalformed naming Dispatch.Output", err)
	}
	if _, err := Decode(TypeDispatch, binary.AppendUvarint(append(bytes.Clone(old), 1), 300)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "Dispatch.TTY") {
		t.Fatalf("TTY 300: err = %v, want ErrMalformed naming Dispatch.TTY", err)
	}
}

func TestTruncated(t *testing.T) {
	for name, m := range samples() {
		t.Run(name, func(t *testing.T) {
			typ, payload := splitFrame(t, Append(nil, m))
			for cut := range len(payload) {
				got, err := Decode(typ, payload[:cut])
				if err == nil && optionalCut(m, got, cut) {
					continue
				}
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("cut at %d of %d: err = %v, want ErrMalformed", cut, len(payload), err)
				}
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	uv := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.AppendUvarint(b, v)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := map[string]struct {
		typ     Type
		payload []byte
		field   string
	}{
		"varint overflow":      {TypeLogAck, bytes.Repeat([]byte{0xff}, 11), "LogAck.Offset"},
		"uint32 overflow":      {TypeCredit, uv(math.MaxUint32 + 1), "Credit.Slots"},
		"uint16 overflow":      {TypeError, uv(math.MaxUint16+1, 0), "Error.Code"},
		"uint8 overflow":       {TypeLogChunk, uv(256, 0, 0), "LogChunk.Stream"},
		"int32 overflow":       {TypeFinished, cat(uv(1), binary.AppendVarint(nil, math.MaxInt32+1)), "Finished.ExitCode"},
		"int32 underflow":      {TypeFinished, cat(uv(1), binary.AppendVarint(nil, math.MinInt32-1)), "Finished.ExitCode"},
		"stream 0":             {TypeLogChunk, uv(0, 0, 0), "LogChunk.Stream"},
		"outcome 0":            {TypeFinished, cat(uv(0, 0, 0, 0, 0, 0, 0, 0, 0)), "Finished.Outcome"},
		"credit 2":             {TypeFinished, cat(uv(1, 0, 0, 0, 0, 0, 0, 0, 0), []byte{2}), "Finished.Credit"},
		"bool 2":               {TypeDispatch, cat(uv(1, 1, 0, 0, 0, 0, 0, 0), []byte{2}), "Dispatch.CaptureLogs"},
		"string too long":      {TypeCancel, cat(uv(1, 1, 4), []byte("abc")), "Cancel.Reason"},
		"string length huge":   {TypeCancel, uv(1, 1, math.MaxUint64), "Cancel.Reason"},
		"data too long":        {TypeLogChunk, cat(uv(1, 0, 100), make([]byte, 99)), "LogChunk.Data"},
		"env count too big":    {TypeDispatch, cat(uv(1, 1, 0, 0, 4), []byte{0, 0, 0}), "Dispatch.Env"},
		"env count huge":       {TypeDispatch, uv(1, 1, 0, 0, math.MaxUint64), "Dispatch.Env"},
		"refs count too big":   {TypeHeartbeat, cat(uv(1, 3), make([]byte, 5)), "Heartbeat.Running"},
		"labels count too big": {TypeHello, cat(uv(1, 0, 3), make([]byte, 5)), "Hello.Labels"},
		"labels count huge":    {TypeHello, uv(1, 0, 1<<62), "Hello.Labels"},
		"labels duplicate key": {TypeHello, cat(uv(1, 0, 2), uv(1), []byte("k"), uv(0), uv(1), []byte("k"), uv(0), uv(0, 0, 0)), "Hello.Labels"},
		"ref attempt overflow": {TypeHeartbeat, uv(1, 1, 1, math.MaxUint32+1), "Heartbeat.Running"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := Decode(tt.typ, tt.payload)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %#v, %v; want ErrMalformed", m, err)
			}
			if m != nil {
				t.Fatalf("Decode returned a message with its error: %#v", m)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name field %s", err, tt.field)
			}
		})
	}
}

// TestCountAllocation checks that a count too large for the bytes left
// is refused before memory is allocated for it: 100000 strings would
// take 1.6 MB, refusing them takes a few hundred bytes.
func TestCountAllocation(t *testing.T) {
	tests := map[string]struct {
		typ     Type
		payload []byte
	}{
		"strings": {TypeDispatch, binary.AppendUvarint([]byte{1, 1, 0, 0}, 100_000)},
		"refs":    {TypeHeartbeat, binary.AppendUvarint([]byte{1}, 100_000)},
		"labels":  {TypeHello, binary.AppendUvarint([]byte{1, 0}, 100_000)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			payload := append(tt.payload, make([]byte, 99_999)...)
			const runs = 20
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				if _, err := Decode(tt.typ, payload); !errors.Is(err, ErrMalformed) {
					t.Fatal(err)
				}
			}
			runtime.ReadMemStats(&after)
			if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 4096 {
				t.Fatalf("%d bytes allocated to refuse a count", perRun)
			}
		})
	}
}

func TestDecodeUnknownType(t *testing.T) {
	tests := map[string]struct {
		typ     Type
		wantErr error
	}{
		"zero":                   {0, ErrUnknownType},
		"next required":          {lastType + 1, ErrUnknownType},
		"redirect":               {TypeRedirect, ErrMalformed},
		"last required":          {OptionalBase - 1, ErrUnknownType},
		"watch leader":           {TypeWatchLeader, ErrMalformed},
		"first unknown optional": {lastOptional + 1, nil},
		"last optional":          {255, nil},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := Decode(tt.typ, []byte{1, 2, 3})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if m != nil {
				t.Fatalf("m = %#v, want nil", m)
			}
		})
	}
}

func TestCheckVersion(t *testing.T) {
	if err := CheckVersion(Version); err != nil {
		t.Fatalf("CheckVersion(Version) = %v", err)
	}
	for _, v := range []uint32{0, Version + 1, math.MaxUint32} {
		err := CheckVersion(v)
		if !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("CheckVersion(%d) = %v, want ErrUnsupportedVersion", v, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, fmt.Sprint("version ", v)) || !strings.Contains(msg, fmt.Sprint("version ", Version)) {
			t.Fatalf("error %q does not name both versions", msg)
		}
	}
}

func TestAppendPanics(t *testing.T) {
	tests := map[string]Message{
		"nil interface": nil,
		"nil pointer":   (*Dispatch)(nil),
		"foreign type":  foreign{},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("Append did not panic")
				}
			}()
			Append(nil, m)
		})
	}
}

type foreign struct{}

func (foreign) Type() Type { return TypeCredit }

func TestStrings(t *testing.T) {
	tests := map[string]struct {
		v    interface{ String() string }
		want string
	}{
		"type":            {TypeLogChunk, "LogChunk"},
		"type unknown":    {Type(200), "Type(200)"},
		"type zero":       {Type(0), "Type(0)"},
		"stream":          {Stderr, "stderr"},
		"stream unknown":  {Stream(0), "Stream(0)"},
		"outcome":         {OutcomeTimeout, "timeout"},
		"outcome unknown": {Outcome(9), "Outcome(9)"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tt.v.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
	for typ := TypeHello; typ <= lastOptional; typ++ {
		if known(typ) && strings.HasPrefix(typ.String(), "Type(") {
			t.Errorf("type %d has no name", typ)
		}
	}
}
