package controller

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"jobsuite/api"
	"jobsuite/internal/jsonstr"
)

// The answer to a submit (POST /jobs's 201, a job as api.JobView) is
// written by hand: encoding/json's reflection and its second pass for
// the indentation were a third of the handler's CPU time. The bytes are
// exactly writeJSON's — indented by two spaces, HTML-escaped strings,
// map keys sorted, a final newline — which TestJobJSON checks against
// encoding/json for views of every shape it takes. A view with the
// parts a fresh job never has (attempts, a result, a fan-out, children,
// live state) goes through writeJSON as before.

// jsonBufs are the buffers the hand-written answers are built in.
var jsonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxPooledJSON is the largest buffer put back in jsonBufs: a job with a
// 64 KiB command should not keep its buffer alive in the pool.
const maxPooledJSON = 16 << 10

// writeJobJSON writes v as writeJSON(w, code, v) would.
func writeJobJSON(w http.ResponseWriter, code int, v *api.JobView) {
	bp := jsonBufs.Get().(*[]byte)
	b, ok := appendJobView((*bp)[:0], v)
	if !ok {
		jsonBufs.Put(bp)
		c := *v // a copy escapes to writeJSON, so the caller's view may stay on its stack
		writeJSON(w, code, &c)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
	if cap(b) <= maxPooledJSON {
		*bp = b
		jsonBufs.Put(bp)
	}
}

// appendJobView appends v as encoding/json with SetIndent("", "  ")
// writes it, and a newline; ok is false (and dst meaningless) for a
// view it does not cover: attempts, a result, a fan-out, children or
// live state, a priority neither a string nor an int, or a float JSON
// cannot hold.
func appendJobView(dst []byte, v *api.JobView) (_ []byte, ok bool) {
	if len(v.Attempts) > 0 || v.Result != nil || v.Fanout != nil || len(v.Children) > 0 || v.Live != nil {
		return dst, false
	}
	if bad(v.Timeout) || v.Duration != nil && bad(*v.Duration) {
		return dst, false
	}
	o := objectWriter{b: append(dst, '{')}
	o.key("job_id")
	o.b = strconv.AppendUint(o.b, v.JobID, 10)
	o.str("name", v.Name)
	o.str("command", v.Command)
	o.str("params", v.Params)
	o.key("priority")
	switch p := v.Priority.(type) {
	case string:
		o.b = jsonstr.Append(o.b, p)
	case int:
		o.b = strconv.AppendInt(o.b, int64(p), 10)
	default:
		return dst, false
	}
	o.int("priority_value", v.PriorityValue)
	o.str("status", v.Status)
	if v.Reason != "" {
		o.str("reason", v.Reason)
	}
	o.key("timeout")
	o.b = appendFloat(o.b, v.Timeout)
	o.int("retries", v.Retries)
	o.int("max_retries", v.MaxRetries)
	o.bool("logs", v.Logs)
	o.bool("cancellable", v.Cancellable)
	if v.CancelRequested {
		o.bool("cancel_requested", true)
	}
	if len(v.Labels) > 0 {
		o.strMap("labels", v.Labels)
	}
	if len(v.Env) > 0 {
		o.strMap("env", v.Env)
	}
	if v.Dir != "" {
		o.str("dir", v.Dir)
	}
	if v.IdempotencyKey != "" {
		o.str("idempotency_key", v.IdempotencyKey)
	}
	o.str("output", v.Output)
	if v.TTY != nil {
		o.bool("tty", *v.TTY)
	}
	if !o.time("created_at", v.CreatedAt) {
		return dst, false
	}
	for _, t := range []struct {
		key string
		t   *time.Time
	}{{"queued_at", v.QueuedAt}, {"started_at", v.StartedAt}, {"finished_at", v.FinishedAt}, {"retry_at", v.RetryAt}} {
		if t.t != nil && !o.time(t.key, *t.t) {
			return dst, false
		}
	}
	if v.Duration != nil {
		o.key("duration")
		o.b = appendFloat(o.b, *v.Duration)
	}
	o.key("exit_code")
	if v.ExitCode == nil {
		o.b = append(o.b, "null"...)
	} else {
		o.b = strconv.AppendInt(o.b, int64(*v.ExitCode), 10)
	}
	o.int("attempt", v.Attempt)
	o.key("attempts")
	if v.Attempts == nil {
		o.b = append(o.b, "null"...)
	} else {
		o.b = append(o.b, "[]"...)
	}
	o.key("log_bytes")
	o.b = strconv.AppendUint(o.b, v.LogBytes, 10)
	if len(v.After) > 0 {
		o.key("after")
		o.b = append(o.b, '[')
		for i, id := range v.After {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			o.b = append(o.b, "\n    "...)
			o.b = strconv.AppendUint(o.b, id, 10)
		}
		o.b = append(o.b, "\n  ]"...)
	}
	if v.AfterAny {
		o.bool("after_any", true)
	}
	if v.Schedule != "" {
		o.str("schedule", v.Schedule)
	}
	if v.Parent != 0 {
		o.key("parent")
		o.b = strconv.AppendUint(o.b, v.Parent, 10)
	}
	if v.Agent != "" {
		o.str("agent", v.Agent)
	}
	if len(v.Notify) > 0 {
		o.key("notify")
		o.b = append(o.b, '[')
		for i, u := range v.Notify {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			o.b = append(o.b, "\n    "...)
			o.b = jsonstr.Append(o.b, u)
		}
		o.b = append(o.b, "\n  ]"...)
	}
	return append(o.b, "\n}\n"...), true
}

// objectWriter appends the members of a top-level object, indented.
type objectWriter struct {
	b    []byte
	more bool // a member was written: the next needs a comma
}

// key appends the next member's name.
func (o *objectWriter) key(k string) {
	if o.more {
		o.b = append(o.b, ',')
	}
	o.more = true
	o.b = append(o.b, "\n  \""...)
	o.b = append(o.b, k...) // the keys are ours: nothing to escape
	o.b = append(o.b, "\": "...)
}

func (o *objectWriter) str(k, s string) {
	o.key(k)
	o.b = jsonstr.Append(o.b, s)
}

func (o *objectWriter) int(k string, n int) {
	o.key(k)
	o.b = strconv.AppendInt(o.b, int64(n), 10)
}

func (o *objectWriter) bool(k string, v bool) {
	o.key(k)
	o.b = strconv.AppendBool(o.b, v)
}

// time appends t as time.Time's MarshalJSON does; false for a time it
// refuses (a year outside 0–9999).
func (o *objectWriter) time(k string, t time.Time) bool {
	o.key(k)
	b, err := t.AppendText(append(o.b, '"'))
	if err != nil {
		return false
	}
	o.b = append(b, '"')
	return true
}

// strMap appends m with its keys sorted, one member a line.
func (o *objectWriter) strMap(k string, m map[string]string) {
	o.key(k)
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	o.b = append(o.b, '{')
	for i, k := range keys {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = append(o.b, "\n    "...)
		o.b = jsonstr.Append(o.b, k)
		o.b = append(o.b, ": "...)
		o.b = jsonstr.Append(o.b, m[k])
	}
	o.b = append(o.b, "\n  }"...)
}

// bad is a float JSON cannot hold.
func bad(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }

// appendFloat appends f as encoding/json writes a float64: the shortest
// decimal that reads back as f, in exponent form below 1e-6 and from
// 1e21 on, with a one-digit negative exponent unpadded ("1e-7").
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
