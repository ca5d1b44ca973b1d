package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// randString returns a string from a mix of plain ASCII, characters
// encoding/json escapes (<, >, &, quotes, control characters, U+2028),
// other Unicode and, rarely, invalid UTF-8.
func randString(r *rand.Rand) string {
	pieces := []string{"", "a", "true", "deep", "sh -c 'x'", "<", ">", "&&", `"`, `\`, "/", "\n", "\t", "\x00", "\x1f",
		"é", "日本", "\u2028", "\u2029", "😀", "\ufffd", " ", "{", "}", "[", ",", ":", "null"}
	if r.IntN(20) == 0 {
		pieces = append(pieces, "\xff", "\xc3")
	}
	var b strings.Builder
	for range r.IntN(6) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	return b.String()
}

func randTime(r *rand.Rand) time.Time {
	switch r.IntN(6) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(r.Int64N(1<<33), 0).UTC()
	case 2:
		return time.Unix(r.Int64N(1<<33), r.Int64N(1e9)).In(time.FixedZone("", (r.IntN(48)-24)*1800))
	case 3:
		return time.Unix(r.Int64N(1<<33), r.Int64N(1e9)).Local()
	case 4:
		return time.Date(1+r.IntN(9999), time.Month(1+r.IntN(12)), 1+r.IntN(31), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e9)/int(math.Pow10(r.IntN(9))), time.UTC)
	}
	return time.Now().UTC()
}

func randInt(r *rand.Rand) int64 {
	switch r.IntN(5) {
	case 0:
		return 0
	case 1:
		return math.MaxInt64 - r.Int64N(3)
	case 2:
		return math.MinInt64 + r.Int64N(3)
	case 3:
		return -r.Int64N(1000)
	}
	return r.Int64N(1 << 40)
}

func randMap(r *rand.Rand) map[string]string {
	switch r.IntN(3) {
	case 0:
		return nil
	case 1:
		return map[string]string{} // omitted by Marshal
	}
	m := map[string]string{}
	for range 1 + r.IntN(4) {
		m[randString(r)] = randString(r)
	}
	return m
}

// randJob fills every field of a Job, each one zero now and then.
func randJob(r *rand.Rand) *Job {
	states := []State{Queued, Waiting, Dispatched, Running, Completed, Failed, Timeout, Cancelled, "", "other"}
	maybe := func() bool { return r.IntN(4) != 0 }
	j := &Job{ID: r.Uint64()}
	if maybe() {
		j.Name, j.Command, j.Params, j.Dir, j.IdempotencyKey, j.Reason = randString(r), randString(r), randString(r), randString(r), randString(r), randString(r)
	}
	if maybe() {
		j.Priority, j.Retries = int(randInt(r)), int(randInt(r))
		j.Timeout, j.BackoffBase, j.BackoffMax = time.Duration(randInt(r)), time.Duration(randInt(r)), time.Duration(randInt(r))
	}
	j.Logs, j.Cancellable, j.CancelRequested = r.IntN(2) == 0, r.IntN(2) == 0, r.IntN(2) == 0
	j.Labels, j.Env = randMap(r), randMap(r)
	j.State = states[r.IntN(len(states))]
	j.CreatedAt, j.QueuedAt, j.NotBefore, j.StartedAt, j.FinishedAt = randTime(r), randTime(r), randTime(r), randTime(r), randTime(r)
	j.LogBytes, j.Events = r.Uint64(), r.Uint32()
	for n := range r.IntN(4) {
		a := Attempt{Number: uint32(n + 1), Agent: randString(r), DispatchedAt: randTime(r), StartedAt: randTime(r),
			FinishedAt: randTime(r), PID: r.Uint32(), Outcome: Outcome(randString(r)), Signal: randString(r), Error: randString(r),
			Duration: time.Duration(randInt(r)), UserCPU: time.Duration(randInt(r)), SystemCPU: time.Duration(randInt(r)),
			MaxRSS: r.Uint64(), LogStart: r.Uint64(), QueuedAt: randTime(r), OutputBytes: r.Uint64()}
		if maybe() {
			e := int(randInt(r))
			a.ExitCode = &e
		}
		j.Attempts = append(j.Attempts, a)
	}
	return j
}

// checkDecode is the property the fast decoder must have: when it takes
// a document, encoding/json takes it too and gives the same Job.
func checkDecode(t *testing.T, data []byte, in *interner) (fast bool) {
	t.Helper()
	var got Job
	if !decodeJobFast(data, &got, in) {
		return false
	}
	var want Job
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("fast decoder took %q, encoding/json refuses it: %v", data, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoding %q:\nfast %#v\njson %#v", data, got, want)
	}
	return true
}

// TestDecodeJobFast checks the fast decoder against encoding/json on
// random records as Marshal writes them, and that it takes nearly all of
// them (the ones it leaves carry a UTF-16 surrogate escape).
func TestDecodeJobFast(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	in := newInterner()
	fast, total := 0, 0
	for range 20000 {
		data, err := json.Marshal(randJob(r))
		if err != nil {
			t.Fatal(err)
		}
		total++
		if checkDecode(t, data, in) {
			fast++
		} else if !bytes.Contains(data, []byte(`\ud`)) {
			t.Errorf("fast decoder refused a record Marshal wrote: %s", data)
		}
	}
	if fast < total*9/10 {
		t.Errorf("fast decoder took %d of %d records", fast, total)
	}
}

// TestDecodeJobFastEdits edits marshalled records in the ways a stored
// record could differ from what this build writes — unknown fields (a
// newer release), keys in another case, repeated keys, null, white
// space, other number forms, truncation, stray bytes — and checks the
// property on each.
func TestDecodeJobFastEdits(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	edits := []func(s string) string{
		func(s string) string { return `{"unknown":1,` + s[1:] },
		func(s string) string { return s[:len(s)-1] + `,"extra":{"a":[1,2,null]}}` },
		func(s string) string { return strings.Replace(s, `"name"`, `"Name"`, 1) },
		func(s string) string { return strings.Replace(s, `"state"`, `"STATE"`, 1) },
		func(s string) string { return s[:len(s)-1] + `,"priority":7}` },
		func(s string) string { return s[:len(s)-1] + `,"labels":{"x":"y"}}` },
		func(s string) string { return s[:len(s)-1] + `,"attempts":null}` },
		func(s string) string { return s[:len(s)-1] + `,"labels":null}` },
		func(s string) string { return s[:len(s)-1] + `,"created_at":null}` },
		func(s string) string { return strings.Replace(s, `"events":`, `"events": -`, 1) },
		func(s string) string { return strings.Replace(s, `"priority":`, `"priority":1e`, 1) },
		func(s string) string { return strings.Replace(s, `"priority":`, `"priority":0`, 1) },
		func(s string) string { return strings.Replace(s, `"retries":`, `"retries":1.`, 1) },
		func(s string) string { return strings.Replace(s, `"id":`, `"id":-`, 1) },
		func(s string) string { return strings.Replace(s, `"logs":`, `"logs": `, 1) },
		func(s string) string { return strings.ReplaceAll(s, `,`, " ,\n\t") },
		func(s string) string { return strings.ReplaceAll(s, `":`, "\"\r: ") },
		func(s string) string { return " " + s + " \n" },
		func(s string) string { return s + "x" },
		func(s string) string { return s + "{}" },
		func(s string) string { return s[:r.IntN(len(s))] },
		func(s string) string { i := r.IntN(len(s)); return s[:i] + s[i+1:] },
		func(s string) string {
			i := r.IntN(len(s))
			return s[:i] + string(`"{}[],:\0-e.tnf `[r.IntN(16)]) + s[i:]
		},
		func(s string) string { b := []byte(s); b[r.IntN(len(b))] ^= byte(1 << r.IntN(8)); return string(b) },
		func(s string) string { return strings.Replace(s, `Z"`, `+00:00"`, 1) },
		func(s string) string { return strings.Replace(s, `Z"`, `z"`, 1) },
		func(s string) string { return strings.Replace(s, `T`, `t`, 1) },
		func(s string) string { return strings.Replace(s, `:00Z"`, `:60Z"`, 1) },
		func(s string) string { return strings.Replace(s, `Z"`, `.1234567891Z"`, 1) },
		func(s string) string { return strings.Replace(s, `"a`, `"\u0061`, 1) },
		func(s string) string { return strings.Replace(s, `"name":"`, `"name":"\ud83d\ude00`, 1) },
		func(s string) string { return strings.Replace(s, `"name":"`, `"name":"\ud83d`, 1) },
		func(s string) string { return strings.Replace(s, `"name":"`, `"n\u0061me":"`, 1) },
		func(s string) string { return strings.Replace(s, `"name":"`, `"name":"\x`, 1) },
		func(s string) string { return strings.Replace(s, `"exit_code":`, `"exit_code":null,"x":`, 1) },
		func(s string) string { return strings.Replace(s, `"attempts":[`, `"attempts":[{},`, 1) },
		func(s string) string { return strings.Replace(s, `"number":`, `"number":99,"number":`, 1) },
		setNum(`events`, "4294967296"),
		setNum(`events`, "4294967295"),
		setNum(`priority`, "9223372036854775808"),
		setNum(`priority`, "-9223372036854775808"),
		setNum(`priority`, "-9223372036854775809"),
		setNum(`id`, "18446744073709551616"),
		setNum(`id`, "18446744073709551615"),
		setNum(`id`, "99999999999999999999"),
		setNum(`log_start`, "-0"),
		setNum(`retries`, "-0"),
		func(s string) string { return "null" },
		func(s string) string { return "[]" },
	}
	took := make([]int, len(edits))
	mustTake := []int{15, 16, 17}
	for i := len(edits) - 12; i < len(edits)-2; i++ {
		// The in-range values among the setNum edits.
		switch i - (len(edits) - 12) {
		case 1, 3, 6, 9:
			mustTake = append(mustTake, i)
		}
	}
	for i := range 4000 {
		data, err := json.Marshal(randJob(r))
		if err != nil {
			t.Fatal(err)
		}
		e := i % len(edits)
		if checkDecode(t, []byte(edits[e](string(data))), nil) {
			took[e]++
		}
	}
	// The edits that keep the document valid and plain must still go
	// the fast way, or the test would prove nothing about them.
	for _, e := range mustTake {
		if took[e] == 0 {
			t.Errorf("edit %d: the fast decoder never took the result", e)
		}
	}
}

// setNum returns an edit that sets the first number under key to v.
func setNum(key, v string) func(string) string {
	re := regexp.MustCompile(`"` + key + `":-?[0-9]+`)
	return func(s string) string {
		done := false
		return re.ReplaceAllStringFunc(s, func(m string) string {
			if done {
				return m
			}
			done = true
			return `"` + key + `":` + v
		})
	}
}

// TestDecodeJobFastFields checks a record with every field set decodes
// the fast way, so no field silently falls back for ever.
func TestDecodeJobFastFields(t *testing.T) {
	exit := 3
	tty := false
	at := time.Date(2026, 11, 26, 19, 0, 0, 123456789, time.UTC)
	j := &Job{ID: 1, Name: "n", Command: "c", Params: "p", Priority: 9, Timeout: 5, Retries: 2, Logs: true, Cancellable: true,
		Labels: map[string]string{"a": "b"}, Env: map[string]string{"E": "v"}, Dir: "/d", IdempotencyKey: "k",
		BackoffBase: 6, BackoffMax: 7, Output: OutputSplit, TTY: &tty, State: Running, CreatedAt: at, QueuedAt: at, NotBefore: at, StartedAt: at,
		FinishedAt: at, CancelRequested: true, Reason: "r", LogBytes: 8, Events: 9,
		Orchestration: &Orchestration{Parent: 17, Agent: "web-1", After: []uint64{3, 4}, AfterAny: true, Schedule: "nightly", Notify: []string{"https://h/1"},
			Fanout: &Fanout{Selector: map[string]string{"role": "web"}, IncludeOffline: true, FirstChild: 18, Children: 5, Batch: 2,
				MaxFailures: &exit, Completed: 1, Failed: 2, Timeout: 3, Cancelled: 4, Stopped: true}},
		Attempts: []Attempt{{Number: 1, Agent: "ag", DispatchedAt: at, StartedAt: at, FinishedAt: at, PID: 10,
			Outcome: "failed", ExitCode: &exit, Signal: "KILL", Error: "e", Duration: 11, UserCPU: 12, SystemCPU: 13,
			MaxRSS: 14, LogStart: 15, QueuedAt: at, OutputBytes: 16}}}
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	var got Job
	if !decodeJobFast(data, &got, nil) {
		t.Fatalf("fast decoder refused %s", data)
	}
	if !reflect.DeepEqual(&got, j) {
		t.Fatalf("got %#v\nwant %#v", &got, j)
	}
	// Every field must be set, so the comparison covered them all.
	for _, v := range []reflect.Value{reflect.ValueOf(got), reflect.ValueOf(got.Attempts[0]), reflect.ValueOf(*got.Orchestration), reflect.ValueOf(*got.Fanout())} {
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Errorf("%s.%s is zero in the test record", v.Type().Name(), v.Type().Field(i).Name)
			}
		}
	}
}

// TestInterner checks shared strings are equal to their bytes, and that
// the table stops growing at its bound.
func TestInterner(t *testing.T) {
	in := newInterner()
	a := in.get([]byte("deep"))
	b := in.get([]byte("deep"))
	if a != "deep" || b != "deep" {
		t.Fatalf("got %q %q", a, b)
	}
	if unsafe.StringData(a) != unsafe.StringData(b) {
		t.Errorf("the second get did not share the first's memory")
	}
	for i := range internMaxEntries * 2 {
		s := fmt.Sprint(i)
		if got := in.get([]byte(s)); got != s {
			t.Fatalf("get(%q) = %q", s, got)
		}
	}
	if len(in.m) > internMaxEntries {
		t.Errorf("table has %d entries, bound %d", len(in.m), internMaxEntries)
	}
	long := strings.Repeat("x", internMaxLen+1)
	if got := in.get([]byte(long)); got != long {
		t.Errorf("long string changed")
	}
}

// FuzzDecodeJobFast checks the property on arbitrary documents.
func FuzzDecodeJobFast(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		data, _ := json.Marshal(randJob(r))
		f.Add(data)
	}
	f.Add([]byte(`{"id":1,"labels":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data, newInterner())
	})
}

// TestParseUTC compares parseUTC with time.Time.UnmarshalJSON on dates
// of every shape near the edges: day 0, 29–31 of every month (leap years
// and not), hour 24, minute and second 60, year 0, fractions of 0 to 10
// digits, other zones.
func TestParseUTC(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	years := []int{0, 1, 4, 100, 400, 1600, 1900, 1969, 1970, 2000, 2024, 2025, 2100, 9999}
	took := 0
	for range 200000 {
		y := years[r.IntN(len(years))]
		if r.IntN(2) == 0 {
			y = r.IntN(10000)
		}
		s := fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02d", y, r.IntN(14), 27+r.IntN(6)-r.IntN(2)*27, r.IntN(25), r.IntN(61), r.IntN(61))
		if digits := r.IntN(12); digits > 0 {
			s += "." + fmt.Sprint(r.Int64N(1e11) + 1e11)[1:1+min(digits, 10)]
		}
		s += []string{"Z", "Z", "Z", "+00:00", "z", "-01:30", ""}[r.IntN(7)]
		var want time.Time
		werr := want.UnmarshalJSON([]byte(`"` + s + `"`))
		got, ok := parseUTC([]byte(s))
		if !ok {
			continue
		}
		took++
		if werr != nil {
			t.Fatalf("parseUTC took %q, UnmarshalJSON: %v", s, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: parseUTC %v (%#v), UnmarshalJSON %v (%#v)", s, got, got, want, want)
		}
	}
	if took < 10000 {
		t.Errorf("parseUTC took only %d strings", took)
	}
}
