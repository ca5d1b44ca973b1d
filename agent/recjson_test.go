package agent

import (
	"encoding/json"
	"reflect"
	"testing"

	"jobsuite/protocol"
)

// fillAll sets every field of the struct v points to a value that is
// not the zero value (strings with characters JSON escapes), so that a
// field the hand encoders leave out shows up in a comparison.
func fillAll(t *testing.T, v any) {
	t.Helper()
	s := reflect.ValueOf(v).Elem()
	for i := range s.NumField() {
		f := s.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(s.Type().Field(i).Name + ` "<x>" & \ é` + "\n\t\u2028\xff")
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.SetInt(-int64(i) - 1)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(uint64(i) + 200)
		case reflect.Slice:
			if f.Type().Elem().Kind() != reflect.String {
				t.Fatalf("field %s: a slice of %s; teach fillAll and the encoder", s.Type().Field(i).Name, f.Type().Elem())
			}
			f.Set(reflect.ValueOf([]string{"A=1", "B=<2>"}))
		default:
			t.Fatalf("field %s of kind %s; teach fillAll and the encoder", s.Type().Field(i).Name, f.Kind())
		}
	}
}

// TestRecordJSON checks the hand encoders of a record's dispatch and
// result against encoding/json, with every field set and with none.
func TestRecordJSON(t *testing.T) {
	var fullD, emptyEnv protocol.Dispatch
	fillAll(t, &fullD)
	emptyEnv.Env = []string{}
	var fullF protocol.Finished
	fillAll(t, &fullF)
	for name, c := range map[string]struct {
		v   any
		got []byte
	}{
		"dispatch, every field": {&fullD, appendDispatchJSON(nil, &fullD)},
		"dispatch, zero":        {&protocol.Dispatch{}, appendDispatchJSON(nil, &protocol.Dispatch{})},
		"dispatch, empty env":   {&emptyEnv, appendDispatchJSON(nil, &emptyEnv)},
		"finished, every field": {&fullF, appendFinishedJSON(nil, &fullF)},
		"finished, zero":        {&protocol.Finished{}, appendFinishedJSON(nil, &protocol.Finished{})},
	} {
		want, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(c.got) != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", name, c.got, want)
		}
	}
}

// FuzzJSONString checks appendJSONString against encoding/json.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `"quoted" \back\slash`, "<a href='x'>&amp;</a>",
		"\x00\x01\b\f\n\r\t\x1f\x7f", "é ü 日本", "\u2028\u2029", "\xff\xfe bad \xc3", "\xed\xa0\x80 surrogate", "end\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	})
}

// BenchmarkRecordEncode is a job's two record writes' encoding: the
// hand encoders against encoding/json.
func BenchmarkRecordEncode(b *testing.B) {
	d := protocol.Dispatch{JobID: 123456, Attempt: 1, Name: "nightly-report", Command: "/usr/local/bin/report --since yesterday",
		Env: []string{"A=1", "B=2"}, Timeout: 3600e9, KillGrace: 5e9, CaptureLogs: true, Output: protocol.OutputOrdered}
	started := &meta{Dispatch: d, PID: 4242, StartTick: 1234567, StartTickMax: 1234568}
	ended := &meta{Dispatch: d, PID: 4242, Result: &protocol.Finished{Outcome: protocol.OutcomeCompleted, Duration: 2e6, UserCPU: 1e6, SystemCPU: 1e6, MaxRSS: 4 << 20}}
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(started)
			_, _ = json.Marshal(ended)
		}
	})
	b.Run("by hand", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			mf := &metaFile{}
			buf = mf.encode(buf[:0], started)
			buf = mf.encode(buf[:0], ended)
		}
	})
}
