package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"testing"
	"time"
)

// sampleRounds returns rounds holding every command type that travels,
// each filled in as far as it goes, in an order that applies cleanly to
// an empty store (the job IDs start at first).
func sampleRounds(first uint64) [][]Command {
	at := time.Date(2026, 12, 5, 6, 7, 8, 9, time.FixedZone("x", 3600))
	j := &Job{
		ID: first, Name: "build <x> & \"y\"", Command: "make\tall", Params: "p", Priority: 7,
		Timeout: time.Minute, Retries: 2, Logs: true, Cancellable: true,
		Labels: map[string]string{"pool": "a", "os": "linux"}, Env: map[string]string{"K": "v\n"},
		Dir: "/tmp", IdempotencyKey: "key-1", BackoffBase: time.Second, BackoffMax: time.Hour,
		State: Queued, CreatedAt: at, QueuedAt: at,
	}
	create := NewTransition(j, Event{Time: at, Type: "submitted"})
	create.Audit = &AuditEntry{ID: 1_790_000_000_000_000_001, Time: at, Who: "alice", Role: "operator",
		Via: "certificate", Credential: "ab", Action: "submit", Target: fmt.Sprintf("job %d", first)}
	running := j.Clone()
	running.State = Running
	running.Attempts = append(running.Attempts, Attempt{Number: 1, Agent: "w1", DispatchedAt: at, StartedAt: at.Add(time.Second), PID: 42})
	run := NewTransition(running, Event{Time: at.Add(time.Second), Type: "started", Attempt: 1, Agent: "w1"})
	done := running.Clone()
	done.State = Completed
	done.FinishedAt = at.Add(2 * time.Second)
	zero := 0
	done.Attempts[0].Outcome, done.Attempts[0].ExitCode, done.Attempts[0].OutputBytes = OutcomeCompleted, &zero, 6
	finish := NewTransition(done, Event{Time: done.FinishedAt, Type: "finished", Message: "exit 0"})
	hash := bytes.Repeat([]byte{0xab}, 32)
	return [][]Command{
		{create},
		{
			run,
			&Output{Job: first, Chunk: Chunk{Offset: 0, Stream: 1, Data: []byte("hello\n"), Time: at}},
			&Output{Job: first, Chunk: Chunk{Offset: 6, Stream: 2, Data: []byte{0, 0xff}}},
			finish,
		},
		{
			&PutToken{Token: Token{ID: "tok1", Hash: hash, Role: "viewer", Name: "g", CreatedBy: "alice", CreatedAt: at, ExpiresAt: at.Add(time.Hour)}},
			&DeleteToken{ID: "tok1"},
			&DeleteToken{ID: "missing"},
			&PutRevocation{Revocation: Revocation{Role: "operator", Name: "mallory", Reason: "left", By: "alice", At: at}},
			&DeleteRevocation{ID: "name:operator:mallory"},
			&CreateJoinToken{Token: JoinToken{Hash: hash, Uses: 2, UsesLeft: 2, Labels: map[string]string{"a": "b"}, NamePrefix: "ci", CreatedBy: "alice", CreatedAt: at, ExpiresAt: at.Add(time.Hour)}},
			&UseJoinToken{Hash: hash, Now: at.Add(time.Minute), Agent: "ci-1"},
			&UseJoinToken{Hash: []byte("nope"), Now: at, Agent: "x"},
			&DeleteJoinToken{ID: "abababababababab"},
			&PruneJoinTokens{Before: at},
			&AppendAudit{Entry: AuditEntry{ID: 1_790_000_000_000_000_002, Time: at, Who: "bob", Action: "drain"}},
			&PruneAudit{Before: at},
		},
		{
			&AppendEvent{Job: first, Event: Event{Time: at, Type: "notified", Message: "job.finished delivered to https://h/x (try 1)"}},
			&PutSchedule{Create: true, Schedule: Schedule{Name: "nightly", Cron: "0 3 * * *", TZ: "Europe/Paris", Overlap: OverlapSkip, CatchUp: CatchUpOne,
				Job: Job{Name: "backup", Command: "backup.sh", Priority: 50, Timeout: time.Hour}, Next: at.Add(time.Hour), CreatedAt: at, UpdatedAt: at}},
			&PutSchedule{Schedule: Schedule{Name: "missing", Cron: "@hourly", Overlap: OverlapAllow, CatchUp: CatchUpNone}},
			&DeleteSchedule{Name: "nightly"},
			&PutDelivery{Delivery: Delivery{ID: "d1", Job: first, Event: "job.finished", URL: "https://h/x", Body: []byte(`{"id":1}`), NextTry: at, CreatedAt: at}},
			&DeleteDelivery{ID: "d1"},
			&DeleteDelivery{ID: "d1"},
			&PutAgent{Agent: Agent{Name: "web-1", Labels: map[string]string{"role": "web"}, Slots: 4, FirstSeen: at, LastSeen: at}},
			&DeleteAgent{Name: "nobody"},
			&SetNotifySecret{Secret: bytes.Repeat([]byte{7}, 32)},
			&UseOutputChannel{},
		},
		{&PruneJobs{IDs: []uint64{first, first + 1, 1 << 60}}},
	}
}

func resultString(r Result) string {
	tok := "nil"
	if r.JoinToken != nil {
		tok = fmt.Sprintf("%+v", *r.JoinToken)
	}
	return fmt.Sprintf("err=%v owner=%d n=%d token=%s", r.Err, r.Owner, r.N, tok)
}

func dumpString(t *testing.T, s *Store) string {
	t.Helper()
	var b bytes.Buffer
	if err := s.Dump(func(k, v []byte) error {
		fmt.Fprintf(&b, "%x=%x\n", k, v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestRoundRoundTrip encodes rounds holding every command type, decodes
// them, checks that they encode to the same bytes again, and applies the
// originals to one store and the decoded copies to another: the two must
// decide the same results and hold the same bytes.
func TestRoundRoundTrip(t *testing.T) {
	direct, wire := open(t), open(t)
	for i, round := range sampleRounds(1) {
		b, err := EncodeRound(round)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		got, err := DecodeRound(b)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if len(got) != len(round) {
			t.Fatalf("round %d: %d commands decoded, %d encoded", i, len(got), len(round))
		}
		for k := range got {
			if fmt.Sprintf("%T", got[k]) != fmt.Sprintf("%T", round[k]) {
				t.Errorf("round %d, command %d: decoded a %T from a %T", i, k, got[k], round[k])
			}
		}
		again, err := EncodeRound(got)
		if err != nil {
			t.Fatalf("round %d: re-encoding: %v", i, err)
		}
		if !bytes.Equal(again, b) {
			t.Errorf("round %d: re-encoded differently:\n%q\n%q", i, b, again)
		}
		want, err := direct.Apply(round...)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		res, err := wire.Apply(got...)
		if err != nil {
			t.Fatalf("round %d, decoded: %v", i, err)
		}
		for k := range res {
			if g, w := resultString(res[k]), resultString(want[k]); g != w {
				t.Errorf("round %d, command %d: %s, applied directly %s", i, k, g, w)
			}
		}
	}
	if g, w := dumpString(t, wire), dumpString(t, direct); g != w {
		t.Errorf("stores differ:\nfrom the wire:\n%s\ndirect:\n%s", g, w)
	}
	if n := countPrefix(t, direct, prefixJob); n != 0 {
		t.Errorf("the last round pruned the job, yet %d job records remain", n)
	}
	if n := countPrefix(t, direct, prefixAudit); n != 0 {
		t.Errorf("PruneAudit left %d entries", n)
	}
}

// frame builds a round around body with a correct checksum.
func frame(count uint64, body []byte) []byte {
	b := binary.AppendUvarint([]byte{roundMagic, roundFormat}, count)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(body, castagnoli))
	return append(b, body...)
}

// command frames one command's bytes.
func command(typ byte, b []byte) []byte {
	return append(binary.AppendUvarint([]byte{typ}, uint64(len(b))), b...)
}

func TestDecodeRoundRefuses(t *testing.T) {
	good, err := EncodeRound([]Command{&DeleteToken{ID: "x"}, &PruneJobs{IDs: []uint64{1}}})
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	job := &Job{ID: 3, State: Queued}
	tr, err := encodeTransition(NewTransition(job, Event{Type: "submitted"}))
	if err != nil {
		t.Fatal(err)
	}
	job.Events = 7 // no longer the event's successor: check refuses it
	wrongCount, err := encodeTransition(&Transition{Job: job, Event: Event{Seq: 0}})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"empty":            {nil, ErrBadRound},
		"wrong magic":      {append([]byte{'X'}, good[1:]...), ErrBadRound},
		"newer format":     {append([]byte{roundMagic, 2}, good[2:]...), ErrBadRound},
		"no checksum":      {good[:4], ErrBadRound},
		"checksum":         {flipped, ErrBadRound},
		"truncated":        {good[:len(good)-1], ErrBadRound},
		"count too high":   {frame(3, command(typeDeleteToken, []byte(`{"ID":"x"}`))), ErrBadRound},
		"count too low":    {frame(0, command(typeDeleteToken, []byte(`{"ID":"x"}`))), ErrBadRound},
		"huge count":       {frame(1<<62, nil), ErrBadRound},
		"length past end":  {frame(1, []byte{typeDeleteToken, 9, '{', '}'}), ErrBadRound},
		"type zero":        {frame(1, command(0, nil)), ErrUnknownCommand},
		"unknown type":     {frame(1, command(99, []byte("future"))), ErrUnknownCommand},
		"bad json":         {frame(1, command(typePutToken, []byte(`{"Token":`))), ErrBadRound},
		"invalid command":  {frame(1, command(typePutToken, []byte(`{}`))), ErrBadRound},
		"bad transition":   {frame(1, command(typeTransition, tr[:len(tr)-1])), ErrBadRound},
		"transition seq":   {frame(1, command(typeTransition, wrongCount)), ErrBadRound},
		"empty output":     {frame(1, command(typeOutput, []byte{1, 0, 1, 0})), ErrBadRound},
		"output time":      {frame(1, command(typeOutput, []byte{1, 0, 1, 0xff})), ErrBadRound},
		"prune trailing":   {frame(1, command(typePruneJobs, []byte{1, 5, 6})), ErrBadRound},
		"prune huge count": {frame(1, command(typePruneJobs, []byte{0xff, 0xff, 0xff, 0x7f})), ErrBadRound},
	} {
		t.Run(name, func(t *testing.T) {
			cmds, err := DecodeRound(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeRound = %v, %v; want %v", cmds, err, tc.want)
			}
			if cmds != nil {
				t.Errorf("commands returned with the error: %v", cmds)
			}
		})
	}
}

// TestDecodeRoundSkipsIgnorable: a command of an unknown type with the
// ignorable bit is left out; the rest of the round decodes.
func TestDecodeRoundSkipsIgnorable(t *testing.T) {
	body := append(command(typeIgnorable|99, []byte("from a newer release")), command(typeDeleteToken, []byte(`{"ID":"x"}`))...)
	cmds, err := DecodeRound(frame(2, body))
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 1 {
		t.Fatalf("%d commands, want 1", len(cmds))
	}
	if d, ok := cmds[0].(*DeleteToken); !ok || d.ID != "x" {
		t.Errorf("decoded %#v, want the DeleteToken", cmds[0])
	}
}

func TestEncodeRoundRefuses(t *testing.T) {
	for name, c := range map[string]Command{
		"set applied":   &SetApplied{Index: 1},
		"set config":    &SetConfiguration{Index: 1, Data: []byte("c")},
		"invalid":       &Output{Job: 1},
		"no job":        &Transition{},
		"bad time json": &PutToken{Token: Token{ID: "t", Hash: []byte{1}, CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
	} {
		t.Run(name, func(t *testing.T) {
			if b, err := EncodeRound([]Command{c}); err == nil {
				t.Fatalf("EncodeRound(%#v) = %q, want an error", c, b)
			}
		})
	}
}

func TestEmptyRound(t *testing.T) {
	b, err := EncodeRound(nil)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := DecodeRound(b)
	if err != nil || len(cmds) != 0 {
		t.Fatalf("DecodeRound(empty round) = %v, %v", cmds, err)
	}
}

// TestAppliedAndCheckpoint: SetApplied lands in the same batch as the
// commands beside it, Applied reads it back, and a checkpoint opens as a
// store holding the same bytes, the applied index included.
func TestAppliedAndCheckpoint(t *testing.T) {
	s := open(t)
	if i, term, err := s.Applied(); err != nil || i != 0 || term != 0 {
		t.Fatalf("Applied on an empty store = %d, %d, %v", i, term, err)
	}
	round := append(sampleRounds(1)[0], &SetApplied{Index: 7, Term: 2})
	if err := applyAll(s, round...); err != nil {
		t.Fatal(err)
	}
	// A refused batch writes neither the commands nor the index.
	if _, err := s.Apply(&Output{Job: 1}, &SetApplied{Index: 9, Term: 3}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Apply with a malformed command = %v, want ErrInvalid", err)
	}
	if _, err := s.Apply(&SetApplied{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetApplied at index 0 = %v, want ErrInvalid", err)
	}
	if i, term, err := s.Applied(); err != nil || i != 7 || term != 2 {
		t.Fatalf("Applied = %d, %d, %v; want 7, 2", i, term, err)
	}
	dir := filepath.Join(t.TempDir(), "cp")
	if err := s.Checkpoint(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(dir); err == nil {
		t.Error("a checkpoint into an existing directory succeeded")
	}
	cp := openAt(t, dir)
	if g, w := dumpString(t, cp), dumpString(t, s); g != w {
		t.Errorf("checkpoint differs:\n%s\nstore:\n%s", g, w)
	}
	if i, _, _ := cp.Applied(); i != 7 {
		t.Errorf("checkpoint's applied index %d, want 7", i)
	}
}

// TestConfiguration: SetConfiguration is read back by Configuration,
// a later one replaces it, a checkpoint carries it, and one without its
// index or bytes is refused.
func TestConfiguration(t *testing.T) {
	s := open(t)
	if data, i, err := s.Configuration(); err != nil || data != nil || i != 0 {
		t.Fatalf("Configuration of an empty store = %q, %d, %v", data, i, err)
	}
	for name, c := range map[string]*SetConfiguration{
		"no index": {Data: []byte("x")},
		"no data":  {Index: 3},
	} {
		if _, err := s.Apply(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Apply = %v, want ErrInvalid", name, err)
		}
	}
	if err := applyAll(s, &SetConfiguration{Index: 3, Data: []byte("three")}, &SetApplied{Index: 3, Term: 1}); err != nil {
		t.Fatal(err)
	}
	if err := applyAll(s, &SetConfiguration{Index: 9, Data: []byte("nine")}); err != nil {
		t.Fatal(err)
	}
	if data, i, err := s.Configuration(); err != nil || string(data) != "nine" || i != 9 {
		t.Fatalf("Configuration = %q, %d, %v; want nine at 9", data, i, err)
	}
	dir := filepath.Join(t.TempDir(), "cp")
	if err := s.Checkpoint(dir); err != nil {
		t.Fatal(err)
	}
	if data, i, err := openAt(t, dir).Configuration(); err != nil || string(data) != "nine" || i != 9 {
		t.Fatalf("the checkpoint's Configuration = %q, %d, %v; want nine at 9", data, i, err)
	}
}

// TestUseOutputChannel: the mark is absent in a new store, set for good
// by UseOutputChannel (applied twice, it stays), and carried by a
// checkpoint.
func TestUseOutputChannel(t *testing.T) {
	s := open(t)
	if on, err := s.OutputChannel(); err != nil || on {
		t.Fatalf("OutputChannel of a new store = %v, %v; want false", on, err)
	}
	for range 2 {
		if err := applyAll(s, &UseOutputChannel{}); err != nil {
			t.Fatal(err)
		}
		if on, err := s.OutputChannel(); err != nil || !on {
			t.Fatalf("OutputChannel after UseOutputChannel = %v, %v; want true", on, err)
		}
	}
	dir := filepath.Join(t.TempDir(), "cp")
	if err := s.Checkpoint(dir); err != nil {
		t.Fatal(err)
	}
	if on, err := openAt(t, dir).OutputChannel(); err != nil || !on {
		t.Fatalf("the checkpoint's OutputChannel = %v, %v; want true", on, err)
	}
}

func FuzzDecodeRound(f *testing.F) {
	for _, r := range sampleRounds(1) {
		b, err := EncodeRound(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(frame(1, command(typeIgnorable|5, nil)))
	f.Fuzz(checkRoundDecode)
}

// FuzzDecodeRoundBody fuzzes the commands behind a valid header and
// checksum, which random bytes would almost never get past.
func FuzzDecodeRoundBody(f *testing.F) {
	for _, r := range sampleRounds(1) {
		b, err := EncodeRound(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(len(r)), b[2+1+4:])
	}
	f.Add(uint8(1), command(typeIgnorable|5, nil))
	f.Fuzz(func(t *testing.T, count uint8, body []byte) {
		checkRoundDecode(t, frame(uint64(count), body))
	})
}

// checkRoundDecode decodes data: an error comes without commands; commands
// re-encode to a round that is a fixed point of decode and encode.
func checkRoundDecode(t *testing.T, data []byte) {
	cmds, err := DecodeRound(data)
	if err != nil {
		if cmds != nil {
			t.Fatalf("commands with an error: %v", cmds)
		}
		return
	}
	// What decodes re-encodes, and from then on the bytes are a
	// fixed point: the encoding is canonical.
	b, err := EncodeRound(cmds)
	if err != nil {
		t.Fatalf("decoded commands do not encode: %v", err)
	}
	again, err := DecodeRound(b)
	if err != nil {
		t.Fatalf("re-encoded round does not decode: %v", err)
	}
	b2, err := EncodeRound(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("not a fixed point:\n%q\n%q", b, b2)
	}
}
