package controller

import (
	"errors"
	"reflect"
	"testing"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// fastBodies are submissions the fast path must take (true) or leave
// to encoding/json (false).
var fastBodies = map[string]bool{
	// Bench row 1's job, BenchmarkSubmit's, the original client's.
	`{"command":"true"}`: true,
	`{"command": "true", "name": "bench", "priority": "high", "labels": {"team": "bench"}}`:                         true,
	`{"name":"x","command":"sleep 1; echo hi","priority":"high","timeout":30,"retries":0,"logs":true}`:              true,
	` {"command":"true","priority":75,"timeout":1.5e1,"retries":3,"cancellable":false,"tty":true,"output":"split"}`: true,
	"{\n  \"command\": \"echo héllo 日本 🎉\",\n  \"env\": {\"K\": \"V\", \"L\": \"\"},\n  \"dir\": \"/srv\"\n}\n":     true,
	`{"command":"true","labels":{},"idempotency_key":"deploy-42","after_any":false}`:                                true,
	`{"command":"true","labels":{"a":"1","a":"2"}}`:                                                                 true, // last wins, as in encoding/json
	`{}`:                                     true, // decoded, then refused by validation: command required
	`{"command":"true","timeout":-0}`:        true,
	`{"command":"true","priority":"urgent"}`: true, // refused by validation, with its message

	// Declined: encoding/json decides (and words any error).
	`{"command":"echo \"hi\""}`:                         false, // an escape
	`{"command":"tab	here"}`:                            false, // a control character
	"{\"command\":\"\xff\"}":                            false, // invalid UTF-8
	`{"Command":"true"}`:                                false, // another spelling
	`{"command":"true","priorty":"high"}`:               false, // unknown field
	`{"command":"true","params":["a"]}`:                 false, // a field it does not read
	`{"command":"true","backoff":{"base":1}}`:           false,
	`{"command":"true","after":[1]}`:                    false,
	`{"command":"true","fanout":{"all":true}}`:          false,
	`{"command":"true","command":"false"}`:              false, // a key twice
	`{"command":"true","labels":null}`:                  false,
	`{"command":"true","logs":null}`:                    false,
	`{"command":"true","retries":1.0}`:                  false,
	`{"command":"true","retries":99999999999999999999}`: false,
	`{"command":"true","timeout":1e999}`:                false,
	`{"command":"true","timeout":01}`:                   false,
	`{"command":"true","timeout":.5}`:                   false,
	`{"command":"true","timeout":"30"}`:                 false,
	`{"command":"true",}`:                               false,
	`{"command":"true"}{"command":"true"}`:              false,
	`{"command":"true"} x`:                              false,
	`{"command":`:                                       false,
	``:                                                  false,
	`[1,2]`:                                             false,
	`null`:                                              false,
	"\ufeff{\"command\":\"true\"}":                      false,
	`{"command":"true","labels":{"a":{"b":"c"}}}`:       false,
	`{"command":"true","env":{"K":["V"]}}`:              false,
	`{"command":"true","priority":"hi\u0067h"}`:         false,
}

// TestDecodeSubmitFast: the fast path takes the plain submissions and
// decodes them exactly as encoding/json does, and declines the rest; and
// decodeSubmit answers every body as it did with encoding/json alone.
func TestDecodeSubmitFast(t *testing.T) {
	for body, want := range fastBodies {
		t.Run(body, func(t *testing.T) {
			var fast api.SubmitRequest
			if got := decodeSubmitFast([]byte(body), &fast); got != want {
				t.Fatalf("fast path took it: %v, want %v", got, want)
			}
			if want {
				compareFast(t, []byte(body), &fast)
			}
			checkSameAnswer(t, []byte(body))
		})
	}
}

// FuzzDecodeSubmitFast compares the fast path with encoding/json on
// arbitrary bodies: what it takes must decode to the same request.
func FuzzDecodeSubmitFast(f *testing.F) {
	for body := range fastBodies {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast api.SubmitRequest
		if decodeSubmitFast(body, &fast) {
			compareFast(t, body, &fast)
		}
		checkSameAnswer(t, body)
	})
}

// compareFast fails unless encoding/json decodes body without error to
// exactly fast.
func compareFast(t *testing.T, body []byte, fast *api.SubmitRequest) {
	t.Helper()
	var slow api.SubmitRequest
	if err := decodeSubmitJSON(body, &slow); err != nil {
		t.Fatalf("the fast path took %q, encoding/json refuses it: %v", body, err)
	}
	if !reflect.DeepEqual(*fast, slow) {
		t.Fatalf("%q decodes to\n%+v\nby the fast path, to\n%+v\nby encoding/json", body, *fast, slow)
	}
}

// checkSameAnswer: for a body the fast path takes, decodeSubmit gives
// the job (or the validation error) that encoding/json's parse gives.
func checkSameAnswer(t *testing.T, body []byte) {
	t.Helper()
	var probe api.SubmitRequest
	if !decodeSubmitFast(body, &probe) {
		return // the same code as before: nothing to compare
	}
	for _, lim := range []submitLimits{defaultLimits, {body: 512, command: 16, env: 2, labels: 2}} {
		j, err := decodeSubmit(body, lim)
		sj, serr := slowDecode(body, lim)
		switch {
		case (err == nil) != (serr == nil):
			t.Fatalf("%q: error %v with the fast path, %v without", body, err, serr)
		case err != nil && errorKey(err) != errorKey(serr):
			t.Fatalf("%q: error %q with the fast path, %q without", body, err, serr)
		case err == nil && !reflect.DeepEqual(j, sj):
			t.Fatalf("%q: job %+v with the fast path, %+v without", body, j, sj)
		}
	}
}

// errorKey is what must match between two decodes' errors: the field
// of a field's error (which of several bad labels or env entries is
// named depends on the map's order, run to run, with either parse), the
// message of any other.
func errorKey(err error) string {
	var fe *fieldError
	if errors.As(err, &fe) {
		return "field " + fe.field
	}
	return err.Error()
}

// slowDecode is decodeInto with encoding/json's parse only.
func slowDecode(body []byte, lim submitLimits) (*store.Job, error) {
	if err := checkBody(body, lim); err != nil {
		return nil, err
	}
	var req api.SubmitRequest
	if err := decodeSubmitJSON(body, &req); err != nil {
		return nil, err
	}
	return jobFrom(&req, lim)
}

// BenchmarkDecodeSubmit decodes and validates BenchmarkSubmit's body:
// with the fast path (what POST /jobs does) and with encoding/json's
// parse alone (what it did before).
func BenchmarkDecodeSubmit(b *testing.B) {
	body := []byte(`{"command": "true", "name": "bench", "priority": "high", "labels": {"team": "bench"}}`)
	for name, decode := range map[string]func([]byte, submitLimits) (*store.Job, error){
		"fast": decodeSubmit, "json": slowDecode,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decode(body, defaultLimits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The fast path's allocations: the job, and each string and map of the
// request (bench row 1's body: the command, and the name made from it).
func TestDecodeSubmitAllocs(t *testing.T) {
	for body, want := range map[string]float64{
		// the request, the command, the job (the name is the command's)
		`{"command":"true"}`: 3,
		// the request, 3 strings, the priority, the map and its 2 strings, the job
		`{"command": "true", "name": "bench", "priority": "high", "labels": {"team": "bench"}}`: 9,
	} {
		b := []byte(body)
		if n := testing.AllocsPerRun(100, func() {
			if _, err := decodeSubmit(b, defaultLimits); err != nil {
				t.Fatal(err)
			}
		}); n > want {
			t.Errorf("%s: %v allocations, want at most %v", body, n, want)
		}
	}
}
