package store

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func randEvent(r *rand.Rand) *Event {
	e := &Event{Seq: uint32(r.Uint64()), Time: randTime(r), State: State(randString(r)), Attempt: uint32(r.IntN(3)) * uint32(r.Uint64()),
		Agent: randString(r), Message: randString(r)}
	if r.IntN(2) == 0 {
		e.Type = eventTypes[r.IntN(len(eventTypes))]
		e.State = []State{Queued, Running, Completed}[r.IntN(3)]
	} else {
		e.Type = randString(r)
	}
	return e
}

func randAudit(r *rand.Rand) *AuditEntry {
	return &AuditEntry{ID: r.Uint64() >> r.IntN(64), Time: randTime(r), Who: randString(r), Role: randString(r), Via: randString(r),
		Credential: randString(r), Remote: randString(r), Action: randString(r), Target: randString(r), Detail: randString(r)}
}

// checkDecodeAs decodes data with fast into a new T and, if it took the
// document, checks encoding/json takes it too and decodes the same.
func checkDecodeAs[T any](t *testing.T, data []byte, fast func([]byte, *T) bool) bool {
	t.Helper()
	var got T
	if !fast(data, &got) {
		return false
	}
	var want T
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("fast decoder took %q, encoding/json refuses it: %v", data, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoding %q:\nfast %#v\njson %#v", data, got, want)
	}
	return true
}

// recordEdits change a marshalled record the ways a stored one could
// differ from what this build writes.
func recordEdits(r *rand.Rand) []func(string) string {
	return []func(string) string{
		func(s string) string { return `{"unknown":1,` + s[1:] },
		func(s string) string { return strings.Replace(s, `":`, `" :`, 1) },
		func(s string) string { return strings.ReplaceAll(s, `,`, " ,\n\t") },
		func(s string) string { return strings.Replace(s, `"time"`, `"Time"`, 1) },
		func(s string) string { return s[:len(s)-1] + `,"time":null}` },
		func(s string) string { return s[:len(s)-1] + `,"seq":1}` },
		func(s string) string { return s[:len(s)-1] + `,"id":1}` },
		func(s string) string { return s + "x" },
		func(s string) string { return s[:r.IntN(len(s))] },
		func(s string) string { b := []byte(s); b[r.IntN(len(b))] ^= byte(1 << r.IntN(8)); return string(b) },
		func(s string) string { return strings.Replace(s, `Z"`, `+00:00"`, 1) },
		func(s string) string { return strings.Replace(s, `":"`, `":"\u0061`, 1) },
		func(s string) string { return strings.Replace(s, `":"`, `":"\ud83d`, 1) },
		func(s string) string { return "null" },
	}
}

// TestDecodeEventFast: the fast event decoder agrees with encoding/json
// on records as appendEvent writes them (and json.Marshal, which writes
// the same) and on edited ones, and takes nearly all plain records.
func TestDecodeEventFast(t *testing.T) {
	checkRecordDecoder(t, rand.New(rand.NewPCG(11, 12)), randEvent, appendEvent, decodeEventFast, decodeEvent)
}

// TestDecodeAuditFast: as TestDecodeEventFast, for audit entries.
func TestDecodeAuditFast(t *testing.T) {
	checkRecordDecoder(t, rand.New(rand.NewPCG(13, 14)), randAudit, appendAudit, decodeAuditFast, decodeAudit)
}

// checkRecordDecoder runs 20,000 random records of T through encode
// (which must write what json.Marshal writes), every other one edited,
// and checks fast and decode against encoding/json on each.
func checkRecordDecoder[T any](t *testing.T, r *rand.Rand, gen func(*rand.Rand) *T, encode func([]byte, *T) ([]byte, error),
	fast func([]byte, *T) bool, decode func([]byte, *T) error) {
	t.Helper()
	edits := recordEdits(r)
	took, plain := 0, 0
	for i := range 20000 {
		rec := gen(r)
		data, err := encode(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		if m, _ := json.Marshal(rec); string(m) != string(data) {
			t.Fatalf("the encoder wrote %s, json.Marshal %s", data, m)
		}
		if i%2 == 1 {
			data = []byte(edits[i/2%len(edits)](string(data)))
		} else {
			plain++
		}
		if checkDecodeAs(t, data, fast) && i%2 == 0 {
			took++
		}
		var got T
		if err := decode(data, &got); err == nil {
			var want T
			if json.Unmarshal(data, &want) != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("decode(%q) = %#v", data, got)
			}
		}
	}
	if took < plain*8/10 {
		t.Errorf("fast decoder took %d of %d plain records", took, plain)
	}
}

func FuzzDecodeEventFast(f *testing.F) {
	r := rand.New(rand.NewPCG(15, 16))
	for range 20 {
		data, _ := appendEvent(nil, randEvent(r))
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecodeAs(t, data, decodeEventFast) })
}

func FuzzDecodeAuditFast(f *testing.F) {
	r := rand.New(rand.NewPCG(17, 18))
	for range 20 {
		data, _ := appendAudit(nil, randAudit(r))
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecodeAs(t, data, decodeAuditFast) })
}
