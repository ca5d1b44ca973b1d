package controller

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"jobsuite/certs"
	"jobsuite/controller/store"
	"jobsuite/protocol"
)

// defaultLimits are the limits of a Config left at its defaults.
var defaultLimits = submitLimits{body: 1 << 20, command: defaultMaxCommand, env: defaultMaxEnv, labels: defaultMaxLabels}

// FuzzDecodeSubmit feeds decodeSubmit arbitrary bodies, under the
// default limits and under tight ones: it must never panic, and every
// job it accepts must satisfy the validation rules.
func FuzzDecodeSubmit(f *testing.F) {
	seeds := []string{
		// The original job_suite body and the README's example.
		`{"name":"x","command":"sleep 1; echo hi","params":"","priority":"high","timeout":30,"retries":0,"logs":true}`,
		`{"name":"x","command":"sleep 1; echo hi","params":"","priority":"high","timeout":30,"retries":0,"logs":true,"cancellable":true,
		 "labels":{"gpu":"true"},"env":{"K":"V"},"dir":"/srv","idempotency_key":"deploy-42","backoff":{"base":1,"max":60}}`,
		// TestBadInput's bodies (controller/e2e_test.go).
		`{"command":`,
		``,
		`[1,2]`,
		`{"name":"x"}`,
		`{"command":"   "}`,
		`{"command":"true","priority":"urgent"}`,
		`{"command":"true","priority":101}`,
		`{"command":"true","priority":1.5}`,
		`{"command":"true","timeout":"30"}`,
		`{"command":"true","timeout":-1}`,
		`{"command":"true","retries":"2"}`,
		`{"command":"true","retries":-2}`,
		`{"command":"true","logs":"yes"}`,
		`{"command":"true","priorty":"high"}`,
		`{"command":"true","labels":{"":"x"}}`,
		`{"command":"true","env":{"A-B":"x"}}`,
		`{"command":"true","params":5}`,
		`{"command":"true"}{"command":"true"}`,
		// (TestBadInput's oversized body is left out: a large seed slows
		// the fuzzer down; the tight limits below reach the same checks.)
		`{"command":"` + strings.Repeat("x", 600) + `"}`,
		// Unicode, escapes, invalid UTF-8 (each invalid byte decodes to
		// three), NUL.
		`{"command":"echo héllo 日本 🎉","name":"ünï","labels":{"zone":"ß"},"env":{"LANG":"C.UTF-8"}}`,
		`{"command":"echo \u0000"}`,
		`{"command":"echo \ud800\udc00 \ud800"}`,
		"{\"command\":\"echo \xff\xfe\",\"env\":{\"K\":\"\xc3\x28\xa0\xa1\"}}",
		`{"command":"true","params":["a b","it's",""," ","$HOME"]}`,
		`{"command":"true","params":[1]}`,
		`{"command":"true","priority":" 42 "}`,
		`{"command":"true","priority":"MED"}`,
		`{"command":"true","priority":1e2}`,
		`{"command":"true","priority":-0}`,
		`{"command":"true","timeout":1e308,"retries":100}`,
		`{"command":"true","timeout":31536000.5}`,
		`{"command":"true","backoff":{"base":0.000001,"max":86400}}`,
		`{"command":"true","backoff":{"base":-1}}`,
		`{"command":"true","backoff":null,"labels":null,"env":null,"params":null,"priority":null}`,
		// Nested junk and odd shapes.
		`{"command":"true","labels":{"a":{"b":{"c":[[[[]]]]}}}}`,
		`{"command":{"command":"true"}}`,
		`{"command":"true","env":{"K":["V"]}}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`{"command":"true",}`,
		`{"command":"true"} `,
		`{"command":"true"} x`,
		`null`,
		`"command"`,
		`{"Command":"true","NAME":"case-insensitive keys"}`,
		`{"command":"true","command":"false"}`,
		`{"command":"true","labels":{"a":"1","b":"2","c":"3"},"env":{"A":"1","B":"2","C":"3"}}`,
		// Output modes and the terminal.
		`{"command":"true","output":"split","tty":false}`,
		`{"command":"true","output":"ordered","tty":true}`,
		`{"command":"true","output":"split","tty":true}`,
		`{"command":"true","output":"SPLIT","tty":null}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	tight := submitLimits{body: 512, command: 16, env: 2, labels: 2}
	f.Fuzz(func(t *testing.T, body []byte, small bool) {
		lim := defaultLimits
		if small {
			lim = tight
		}
		j, err := decodeSubmit(body, lim)
		if err != nil {
			if j != nil {
				t.Fatalf("an error (%v) and a job", err)
			}
			if err.Error() == "" {
				t.Fatal("an empty error message")
			}
			return
		}
		if j == nil {
			t.Fatal("no job and no error")
		}
		checkJob(t, body, lim, j)
		// Decoding is deterministic.
		again, err := decodeSubmit(body, lim)
		if err != nil || again.Command != j.Command || again.Params != j.Params || again.Priority != j.Priority {
			t.Fatalf("second decode differs: %+v, %v", again, err)
		}
		// What the tight limits accept, the defaults accept too.
		if small {
			if _, err := decodeSubmit(body, defaultLimits); err != nil {
				t.Fatalf("accepted under tight limits, refused under the defaults: %v", err)
			}
		}
	})
}

// checkJob asserts the invariants of an accepted job.
func checkJob(t *testing.T, body []byte, lim submitLimits, j *store.Job) {
	t.Helper()
	name, command, params, dir, key := j.Name, j.Command, j.Params, j.Dir, j.IdempotencyKey
	labels, env := j.Labels, j.Env
	priority, retries := j.Priority, j.Retries
	timeout, backoffBase, backoffMax := j.Timeout, j.BackoffBase, j.BackoffMax
	switch {
	case len(body) > lim.body:
		t.Fatalf("accepted a %d-byte body over the %d limit", len(body), lim.body)
	case strings.TrimSpace(command) == "":
		t.Fatal("accepted a blank command")
	case len(command)+len(params) > lim.command:
		t.Fatalf("command plus params are %d bytes, over %d", len(command)+len(params), lim.command)
	case strings.ContainsRune(command+name+params+dir+key, 0):
		t.Fatalf("a NUL byte in command %q, name %q, params %q, dir %q or idempotency key %q", command, name, params, dir, key)
	case name == "" || len(name) > maxName:
		t.Fatalf("name %q", name)
	case priority < 0 || priority > 100:
		t.Fatalf("priority %d", priority)
	case retries < 0 || retries > maxRetries:
		t.Fatalf("retries %d", retries)
	case timeout < 0 || timeout > maxTimeout*time.Second+time.Second:
		t.Fatalf("timeout %v", timeout)
	case backoffBase < 0 || backoffBase > maxBackoff*time.Second || backoffMax < 0 || backoffMax > maxBackoff*time.Second:
		t.Fatalf("backoff %v, %v", backoffBase, backoffMax)
	case len(labels) > lim.labels:
		t.Fatalf("%d labels, over %d", len(labels), lim.labels)
	case len(env) > lim.env:
		t.Fatalf("%d env entries, over %d", len(env), lim.env)
	case len(dir) > maxDir || strings.ContainsRune(dir, 0):
		t.Fatalf("dir %q", dir)
	case len(key) > maxKeyLength:
		t.Fatalf("idempotency key of %d bytes", len(key))
	case j.Output != "" && j.Output != store.OutputSplit:
		t.Fatalf("output %q", j.Output)
	case j.TTY != nil && *j.TTY && j.Output == store.OutputSplit:
		t.Fatal("a terminal with split output")
	}
	for k, v := range labels {
		if !labelKeyRE.MatchString(k) || len(v) > maxLabelValue {
			t.Fatalf("label %q=%q", k, v)
		}
	}
	size := len(name) + len(command) + len(params) + len(dir) + len(key)
	for k, v := range env {
		if !envKeyRE.MatchString(k) || len(v) > maxEnvValue || strings.ContainsRune(v, 0) {
			t.Fatalf("env %q=%q", k, v)
		}
		size += len(k) + len(v)
	}
	for k, v := range labels {
		size += len(k) + len(v)
	}
	if size > lim.body {
		t.Fatalf("the decoded job is %d bytes, over %d", size, lim.body)
	}
	// JSON strings decode to valid UTF-8, whatever the body held.
	if !utf8.ValidString(command) || !utf8.ValidString(name) {
		t.Fatalf("invalid UTF-8 in command %q or name %q", command, name)
	}
}

// TestLimitDefaults: a Config left at zero gets the documented limits,
// the ones FuzzDecodeSubmit checks.
func TestLimitDefaults(t *testing.T) {
	cfg := Config{DataDir: "data", TLS: certs.Files{CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if got := (&Server{cfg: cfg}).limits(); got != defaultLimits {
		t.Errorf("limits = %+v, want %+v", got, defaultLimits)
	}
	if cfg.MaxFrameBytes != protocol.MaxFrameSize || cfg.MaxFollowers != 100 {
		t.Errorf("MaxFrameBytes %d, MaxFollowers %d", cfg.MaxFrameBytes, cfg.MaxFollowers)
	}
}
