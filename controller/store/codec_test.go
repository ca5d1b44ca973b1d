package store

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// filler sets values of any type the records use to random values
// chosen to reach the encoders' edge cases.
type filler struct {
	t *testing.T
	r *rand.Rand
}

// stringParts are the pieces random strings are made of: plain text,
// everything encoding/json escapes, multi-byte and invalid UTF-8.
var stringParts = []string{
	"", "a", "job", "true", " ", "0", "héllo", "日本語", "🙂", "\u00a0", "\u007f",
	"\"", "\\", "/", "<", ">", "&", "<script>", "\u2028", "\u2029", "\u2027", "\u202a",
	"\x00", "\x01", "\x08", "\x0c", "\n", "\r", "\t", "\x1b", "\x1f", " ",
	"\xff", "\xfe\xff", "\xc3", "\xe2\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xef\xbf\xbd",
}

func (f filler) string() string {
	if f.r.IntN(5) == 0 {
		return ""
	}
	var b strings.Builder
	for range f.r.IntN(8) + 1 {
		b.WriteString(stringParts[f.r.IntN(len(stringParts))])
	}
	return b.String()
}

var zones = []*time.Location{
	time.UTC,
	time.FixedZone("", 0),
	time.FixedZone("IST", 5*3600+1800),
	time.FixedZone("PST", -8*3600),
	time.FixedZone("odd", 3600+17),       // seconds in the offset
	time.FixedZone("far", 23*3600+59*60), // largest offset RFC 3339 holds
}

// time returns a random time, now and then one RFC 3339 cannot hold
// (json.Marshal fails on it; a record has many times, so rarely).
func (f filler) time() time.Time {
	switch n := f.r.IntN(200); {
	case n == 0:
		return time.Date(10000+f.r.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC)
	case n == 1:
		return time.Date(-1-f.r.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC)
	case n == 2:
		return time.Date(2000, 1, 1, 0, 0, 0, 0, time.FixedZone("too far", 24*3600+60))
	case n < 40:
		return time.Time{}
	case n < 80: // whole seconds, or trailing zeros in the fraction
		return time.Unix(f.r.Int64N(1<<33), int64(f.r.IntN(10))*100_000_000).UTC()
	}
	t := time.Unix(f.r.Int64N(1<<34)-1<<32, f.r.Int64N(1e9))
	return t.In(zones[f.r.IntN(len(zones))])
}

func (f filler) int64() int64 {
	switch f.r.IntN(6) {
	case 0:
		return 0
	case 1:
		return math.MaxInt64
	case 2:
		return math.MinInt64
	case 3:
		return -f.r.Int64N(1000)
	}
	return f.r.Int64()
}

func (f filler) uint64() uint64 {
	switch f.r.IntN(4) {
	case 0:
		return 0
	case 1:
		return math.MaxUint64
	}
	return f.r.Uint64() >> f.r.IntN(64)
}

// fill sets v, which must be settable, to a random value of its type.
func (f filler) fill(v reflect.Value) {
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(f.time()))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(f.string())
	case reflect.Bool:
		v.SetBool(f.r.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		x := f.int64()
		if v.OverflowInt(x) {
			x = int64(int32(x))
		}
		v.SetInt(x)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		x := f.uint64()
		if v.OverflowUint(x) {
			x = uint64(uint32(x))
		}
		v.SetUint(x)
	case reflect.Pointer:
		if f.r.IntN(3) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		f.fill(p.Elem())
		v.Set(p)
	case reflect.Map:
		switch f.r.IntN(4) {
		case 0:
			v.SetZero()
			return
		case 1:
			v.Set(reflect.MakeMap(v.Type())) // empty, not nil
			return
		}
		m := reflect.MakeMap(v.Type())
		for range f.r.IntN(20) + 1 {
			k := reflect.New(v.Type().Key()).Elem()
			f.fill(k)
			e := reflect.New(v.Type().Elem()).Elem()
			f.fill(e)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Slice:
		switch f.r.IntN(4) {
		case 0:
			v.SetZero()
			return
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 1)) // empty, not nil
			return
		}
		n := f.r.IntN(4) + 1
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			f.fill(s.Index(i))
		}
		v.Set(s)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				f.fill(v.Field(i))
			}
		}
	default:
		f.t.Fatalf("the codec test cannot fill a %s (%s): teach filler.fill, and the encoders in codec.go, about it", v.Type(), v.Kind())
	}
}

// same fails unless enc produces what json.Marshal does for v: the same
// bytes, or an error from both.
func same[T any](t *testing.T, what string, v *T, enc func([]byte, *T) ([]byte, error)) bool {
	t.Helper()
	want, wantErr := json.Marshal(v)
	prefix := []byte("prefix")
	got, gotErr := enc(append([]byte(nil), prefix...), v)
	switch {
	case (wantErr != nil) != (gotErr != nil):
		t.Errorf("%s: json.Marshal error %v, encoder error %v\nvalue %#v", what, wantErr, gotErr, v)
		return false
	case wantErr != nil:
		return true
	case !bytes.HasPrefix(got, prefix):
		t.Errorf("%s: encoder did not append to dst", what)
		return false
	case !bytes.Equal(got[len(prefix):], want):
		t.Errorf("%s: encoder and json.Marshal differ\n got %s\nwant %s", what, got[len(prefix):], want)
		return false
	}
	return true
}

// The encoders produce exactly json.Marshal's bytes on random records in
// which every field is set or empty at random.
func TestCodecMatchesEncodingJSON(t *testing.T) {
	f := filler{t: t, r: rand.New(rand.NewPCG(1, 2))}
	errs := 0
	for i := range 20000 {
		var j Job
		f.fill(reflect.ValueOf(&j).Elem())
		if _, err := json.Marshal(&j); err != nil {
			errs++
		}
		if !same(t, "job", &j, appendJob) {
			t.Fatalf("record %d", i)
		}
		var e Event
		f.fill(reflect.ValueOf(&e).Elem())
		if !same(t, "event", &e, appendEvent) {
			t.Fatalf("record %d", i)
		}
		var a AuditEntry
		f.fill(reflect.ValueOf(&a).Elem())
		if !same(t, "audit entry", &a, appendAudit) {
			t.Fatalf("record %d", i)
		}
	}
	// Both paths must be exercised: most records encode, some fail.
	if errs == 0 || errs == 20000 {
		t.Fatalf("%d of 20000 random jobs fail to encode; the filler is broken", errs)
	}
}

// Every field of Job, Attempt and Event, set alone, is encoded as
// json.Marshal encodes it: a field added to a struct but not to codec.go
// fails here.
func TestCodecKnowsEveryField(t *testing.T) {
	f := filler{t: t, r: rand.New(rand.NewPCG(3, 4))}
	each := func(typ reflect.Type, check func(field string, v reflect.Value)) {
		for i := range typ.NumField() {
			sf := typ.Field(i)
			if !sf.IsExported() {
				continue
			}
			// Retry until the field is non-zero and encodable, so an
			// unknown field cannot hide behind omitempty or an error.
			for range 1000 {
				v := reflect.New(typ).Elem()
				f.fill(v.Field(i))
				if v.Field(i).IsZero() {
					continue
				}
				if _, err := json.Marshal(v.Addr().Interface()); err != nil {
					continue
				}
				check(sf.Name, v)
				break
			}
		}
	}
	each(reflect.TypeFor[Job](), func(field string, v reflect.Value) {
		if !same(t, "Job."+field, v.Addr().Interface().(*Job), appendJob) {
			t.Errorf("Job.%s: is it missing from appendJob in codec.go?", field)
		}
	})
	each(reflect.TypeFor[Orchestration](), func(field string, v reflect.Value) {
		o := v.Interface().(Orchestration)
		if !same(t, "Orchestration."+field, &Job{Orchestration: &o}, appendJob) {
			t.Errorf("Orchestration.%s: is it missing from appendJob in codec.go?", field)
		}
	})
	each(reflect.TypeFor[Attempt](), func(field string, v reflect.Value) {
		j := &Job{Attempts: []Attempt{v.Interface().(Attempt)}}
		if !same(t, "Attempt."+field, j, appendJob) {
			t.Errorf("Attempt.%s: is it missing from appendAttempt in codec.go?", field)
		}
	})
	each(reflect.TypeFor[Event](), func(field string, v reflect.Value) {
		if !same(t, "Event."+field, v.Addr().Interface().(*Event), appendEvent) {
			t.Errorf("Event.%s: is it missing from appendEvent in codec.go?", field)
		}
	})
	each(reflect.TypeFor[AuditEntry](), func(field string, v reflect.Value) {
		if !same(t, "AuditEntry."+field, v.Addr().Interface().(*AuditEntry), appendAudit) {
			t.Errorf("AuditEntry.%s: is it missing from appendAudit in codec.go?", field)
		}
	})
}

// Typical records and the edge cases named in codec.go, spelled out.
func TestCodecCases(t *testing.T) {
	code := 3
	cases := map[string]Job{
		"zero":      {},
		"submitted": {ID: 1, Name: "build", Command: "make", Priority: 50, State: Queued, CreatedAt: t0, QueuedAt: t0, Events: 1},
		"finished": {ID: math.MaxUint64, Command: "x", State: Failed, Labels: map[string]string{"b": "2", "a": "1", "": "<&>"},
			Env: map[string]string{"PATH": "/bin"}, Timeout: time.Second, Retries: -1, Logs: true, Cancellable: true,
			Attempts:        []Attempt{{Number: 1, Agent: "a1", DispatchedAt: t0, ExitCode: &code, Duration: -1, MaxRSS: 1}},
			CancelRequested: true, Reason: "exit status 3", LogBytes: 1 << 40, FinishedAt: t0.In(time.FixedZone("", -3600))},
		"escapes":  {Name: "<a href=\"x\">&amp;</a>\u2028\u2029\x00\x7f\xff\ufffd", Command: "\b\f\n\r\t\\/"},
		"emptymap": {Labels: map[string]string{}, Env: map[string]string{}, Attempts: []Attempt{}},
		"nilexit":  {Attempts: []Attempt{{}, {Number: 2, ExitCode: new(int)}}},
		// a zero instant in another zone IsZero: omitzero leaves it out
		"zerozone": {StartedAt: time.Time{}.In(time.FixedZone("", 3600)), NotBefore: time.Time{}.In(time.UTC),
			Attempts: []Attempt{{QueuedAt: time.Time{}.In(time.FixedZone("x", -60)), StartedAt: t0}}},
	}
	for name, j := range cases {
		t.Run(name, func(t *testing.T) { same(t, name, &j, appendJob) })
	}
	for name, tm := range map[string]time.Time{
		"year 10000": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		"year -1":    time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		"offset 24h": time.Date(2000, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
	} {
		t.Run(name, func(t *testing.T) {
			j := Job{CreatedAt: tm}
			if _, err := appendJob(nil, &j); err == nil {
				t.Error("appendJob accepted a time RFC 3339 cannot hold")
			}
			same(t, name, &j, appendJob)
			same(t, name, &Event{Time: tm}, appendEvent)
		})
	}
}

// appendString escapes any string exactly as encoding/json does.
func FuzzAppendString(f *testing.F) {
	for _, s := range stringParts {
		f.Add(s)
	}
	f.Add("a<b>&c\u2028d\u2029\xffe\x00")
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, json.Marshal gives %s", s, got, want)
		}
	})
}

// The encoders do not allocate once dst is big enough (maps of more
// than 16 keys aside).
func TestCodecAllocs(t *testing.T) {
	code := 0
	j := &Job{ID: 7, Name: "n", Command: "true", State: Running, CreatedAt: t0, QueuedAt: t0, StartedAt: t0,
		Labels: map[string]string{"os": "linux", "arch": "amd64"}, Env: map[string]string{"A": "1"},
		Attempts: []Attempt{{Number: 1, Agent: "a", DispatchedAt: t0, StartedAt: t0, ExitCode: &code}}, Events: 3}
	e := &Event{Seq: 2, Time: t0, Type: "started", State: Running, Attempt: 1, Agent: "a"}
	a := &AuditEntry{ID: 9, Time: t0, Who: "op", Role: "operator", Via: "certificate", Credential: "1f", Remote: "127.0.0.1:1", Action: "submit", Target: "job 7"}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		_, _ = appendJob(buf[:0], j)
		_, _ = appendEvent(buf[:0], e)
		_, _ = appendAudit(buf[:0], a)
	}); n != 0 {
		t.Errorf("%v allocations per record, want 0", n)
	}
}

// A record written before the optional times were tagged omitzero holds
// "0001-01-01T00:00:00Z" where a new one holds nothing: both decode to
// the same Job, with either decoder (doc.go: no schema bump).
func TestOmittedZeroTimesDecodeAsBefore(t *testing.T) {
	j := &Job{ID: 7, Name: "n", Command: "c", State: Running, CreatedAt: t0, QueuedAt: t0, Events: 2,
		Attempts: []Attempt{{Number: 1, Agent: "a", DispatchedAt: t0}}}
	enc, err := appendJob(nil, j)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("0001-01-01")) {
		t.Fatalf("zero time written: %s", enc)
	}
	const zero = `"0001-01-01T00:00:00Z"`
	old := `{"id":7,"name":"n","command":"c","priority":0,"retries":0,"logs":false,"cancellable":false,"state":"running",` +
		`"created_at":"2025-01-02T03:04:05.000000006Z","queued_at":"2025-01-02T03:04:05.000000006Z",` +
		`"not_before":` + zero + `,"started_at":` + zero + `,"finished_at":` + zero + `,` +
		`"attempts":[{"number":1,"agent":"a","dispatched_at":"2025-01-02T03:04:05.000000006Z","started_at":` + zero +
		`,"finished_at":` + zero + `,"log_start":0,"queued_at":` + zero + `}],"events":2}`
	for name, data := range map[string][]byte{"new": enc, "old": []byte(old)} {
		var viaJSON, fast Job
		if err := jsonDecodeJob(data, &viaJSON); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(&viaJSON, j) {
			t.Errorf("%s: encoding/json decoded %+v, want %+v", name, viaJSON, *j)
		}
		if !decodeJobFast(data, &fast, nil) {
			t.Errorf("%s: decodeJobFast refused %s", name, data)
		} else if !reflect.DeepEqual(&fast, j) {
			t.Errorf("%s: decodeJobFast decoded %+v, want %+v", name, fast, *j)
		}
	}
}
