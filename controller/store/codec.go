package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"jobsuite/internal/jsonstr"
)

// The job and event records are stored as JSON (doc.go). Apply encodes a
// record on every transition, so instead of encoding/json's reflection
// these hand-written encoders append the same bytes to a reused buffer:
// the output is byte-for-byte what json.Marshal produces for the same
// value — field order, omitempty and omitzero, sorted map keys, string escaping
// (HTML characters, U+2028/U+2029, invalid UTF-8 as U+FFFD) and
// time.Time's MarshalJSON, errors included — so the stored format and
// the schema version do not change. Job records are decoded by the
// hand-written decoder in jobdecode.go where it matters (Active, and
// apply reading a record it has not seen), which hands whatever it does
// not take to encoding/json; the rest decode with encoding/json.
//
// codec_test.go compares them with json.Marshal on random records that
// fill every field by reflection, and fails when a field is added to Job,
// Attempt, Event or AuditEntry that these encoders do not write: add it here, in
// declaration order, with the same omitempty or omitzero rule as its tag.

// appendJob appends j encoded as json.Marshal would to dst.
func appendJob(dst []byte, j *Job) ([]byte, error) {
	var err error
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, j.ID, 10)
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, j.Name)
	dst = append(dst, `,"command":`...)
	dst = appendString(dst, j.Command)
	if j.Params != "" {
		dst = append(dst, `,"params":`...)
		dst = appendString(dst, j.Params)
	}
	dst = append(dst, `,"priority":`...)
	dst = strconv.AppendInt(dst, int64(j.Priority), 10)
	if j.Timeout != 0 {
		dst = append(dst, `,"timeout":`...)
		dst = strconv.AppendInt(dst, int64(j.Timeout), 10)
	}
	dst = append(dst, `,"retries":`...)
	dst = strconv.AppendInt(dst, int64(j.Retries), 10)
	dst = append(dst, `,"logs":`...)
	dst = strconv.AppendBool(dst, j.Logs)
	dst = append(dst, `,"cancellable":`...)
	dst = strconv.AppendBool(dst, j.Cancellable)
	if len(j.Labels) > 0 {
		dst = append(dst, `,"labels":`...)
		dst = appendMap(dst, j.Labels)
	}
	if len(j.Env) > 0 {
		dst = append(dst, `,"env":`...)
		dst = appendMap(dst, j.Env)
	}
	if j.Dir != "" {
		dst = append(dst, `,"dir":`...)
		dst = appendString(dst, j.Dir)
	}
	if j.IdempotencyKey != "" {
		dst = append(dst, `,"idempotency_key":`...)
		dst = appendString(dst, j.IdempotencyKey)
	}
	if j.BackoffBase != 0 {
		dst = append(dst, `,"backoff_base":`...)
		dst = strconv.AppendInt(dst, int64(j.BackoffBase), 10)
	}
	if j.BackoffMax != 0 {
		dst = append(dst, `,"backoff_max":`...)
		dst = strconv.AppendInt(dst, int64(j.BackoffMax), 10)
	}
	if j.Output != "" {
		dst = append(dst, `,"output":`...)
		dst = appendString(dst, j.Output)
	}
	if j.TTY != nil {
		dst = append(dst, `,"tty":`...)
		dst = strconv.AppendBool(dst, *j.TTY)
	}
	if o := j.Orchestration; o != nil {
		if o.Parent != 0 {
			dst = append(dst, `,"parent":`...)
			dst = strconv.AppendUint(dst, o.Parent, 10)
		}
		if o.Agent != "" {
			dst = append(dst, `,"agent":`...)
			dst = appendString(dst, o.Agent)
		}
		if len(o.After) > 0 {
			dst = append(dst, `,"after":[`...)
			for i, id := range o.After {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = strconv.AppendUint(dst, id, 10)
			}
			dst = append(dst, ']')
		}
		if o.AfterAny {
			dst = append(dst, `,"after_any":true`...)
		}
		if o.Schedule != "" {
			dst = append(dst, `,"schedule":`...)
			dst = appendString(dst, o.Schedule)
		}
		if len(o.Notify) > 0 {
			dst = append(dst, `,"notify":[`...)
			for i, u := range o.Notify {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendString(dst, u)
			}
			dst = append(dst, ']')
		}
		if o.Fanout != nil {
			// Only fan-out parents have one: encoding/json is fast enough.
			b, err := json.Marshal(o.Fanout)
			if err != nil {
				return dst, err
			}
			dst = append(dst, `,"fanout":`...)
			dst = append(dst, b...)
		}
	}
	dst = append(dst, `,"state":`...)
	dst = appendString(dst, string(j.State))
	// created_at and queued_at are always written; the times tagged
	// omitzero are left out when IsZero (json.Marshal's rule for a type
	// with an IsZero method).
	dst = append(dst, `,"created_at":`...)
	if dst, err = appendTime(dst, j.CreatedAt); err != nil {
		return dst, err
	}
	dst = append(dst, `,"queued_at":`...)
	if dst, err = appendTime(dst, j.QueuedAt); err != nil {
		return dst, err
	}
	if dst, err = appendTimeField(dst, `,"not_before":`, j.NotBefore); err != nil {
		return dst, err
	}
	if dst, err = appendTimeField(dst, `,"started_at":`, j.StartedAt); err != nil {
		return dst, err
	}
	if dst, err = appendTimeField(dst, `,"finished_at":`, j.FinishedAt); err != nil {
		return dst, err
	}
	if len(j.Attempts) > 0 {
		dst = append(dst, `,"attempts":[`...)
		for i := range j.Attempts {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendAttempt(dst, &j.Attempts[i]); err != nil {
				return dst, err
			}
		}
		dst = append(dst, ']')
	}
	if j.CancelRequested {
		dst = append(dst, `,"cancel_requested":true`...)
	}
	if j.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, j.Reason)
	}
	if j.LogBytes != 0 {
		dst = append(dst, `,"log_bytes":`...)
		dst = strconv.AppendUint(dst, j.LogBytes, 10)
	}
	dst = append(dst, `,"events":`...)
	dst = strconv.AppendUint(dst, uint64(j.Events), 10)
	return append(dst, '}'), nil
}

// appendAttempt appends a encoded as json.Marshal would to dst.
func appendAttempt(dst []byte, a *Attempt) ([]byte, error) {
	var err error
	dst = append(dst, `{"number":`...)
	dst = strconv.AppendUint(dst, uint64(a.Number), 10)
	dst = append(dst, `,"agent":`...)
	dst = appendString(dst, a.Agent)
	dst = append(dst, `,"dispatched_at":`...)
	if dst, err = appendTime(dst, a.DispatchedAt); err != nil {
		return dst, err
	}
	if dst, err = appendTimeField(dst, `,"started_at":`, a.StartedAt); err != nil {
		return dst, err
	}
	if dst, err = appendTimeField(dst, `,"finished_at":`, a.FinishedAt); err != nil {
		return dst, err
	}
	if a.PID != 0 {
		dst = append(dst, `,"pid":`...)
		dst = strconv.AppendUint(dst, uint64(a.PID), 10)
	}
	if a.Outcome != "" {
		dst = append(dst, `,"outcome":`...)
		dst = appendString(dst, string(a.Outcome))
	}
	if a.ExitCode != nil {
		dst = append(dst, `,"exit_code":`...)
		dst = strconv.AppendInt(dst, int64(*a.ExitCode), 10)
	}
	if a.Signal != "" {
		dst = append(dst, `,"signal":`...)
		dst = appendString(dst, a.Signal)
	}
	if a.Error != "" {
		dst = append(dst, `,"error":`...)
		dst = appendString(dst, a.Error)
	}
	if a.Duration != 0 {
		dst = append(dst, `,"duration":`...)
		dst = strconv.AppendInt(dst, int64(a.Duration), 10)
	}
	if a.UserCPU != 0 {
		dst = append(dst, `,"user_cpu":`...)
		dst = strconv.AppendInt(dst, int64(a.UserCPU), 10)
	}
	if a.SystemCPU != 0 {
		dst = append(dst, `,"system_cpu":`...)
		dst = strconv.AppendInt(dst, int64(a.SystemCPU), 10)
	}
	if a.MaxRSS != 0 {
		dst = append(dst, `,"max_rss":`...)
		dst = strconv.AppendUint(dst, a.MaxRSS, 10)
	}
	dst = append(dst, `,"log_start":`...)
	dst = strconv.AppendUint(dst, a.LogStart, 10)
	if dst, err = appendTimeField(dst, `,"queued_at":`, a.QueuedAt); err != nil {
		return dst, err
	}
	if a.OutputBytes != 0 {
		dst = append(dst, `,"output_bytes":`...)
		dst = strconv.AppendUint(dst, a.OutputBytes, 10)
	}
	return append(dst, '}'), nil
}

// appendEvent appends e encoded as json.Marshal would to dst.
func appendEvent(dst []byte, e *Event) ([]byte, error) {
	var err error
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, uint64(e.Seq), 10)
	dst = append(dst, `,"time":`...)
	if dst, err = appendTime(dst, e.Time); err != nil {
		return dst, err
	}
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, e.Type)
	dst = append(dst, `,"state":`...)
	dst = appendString(dst, string(e.State))
	if e.Attempt != 0 {
		dst = append(dst, `,"attempt":`...)
		dst = strconv.AppendUint(dst, uint64(e.Attempt), 10)
	}
	if e.Agent != "" {
		dst = append(dst, `,"agent":`...)
		dst = appendString(dst, e.Agent)
	}
	if e.Message != "" {
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, e.Message)
	}
	return append(dst, '}'), nil
}

// appendAudit appends e encoded as json.Marshal would to dst (an audit
// entry rides every submission's Transition).
func appendAudit(dst []byte, e *AuditEntry) ([]byte, error) {
	var err error
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, e.ID, 10)
	dst = append(dst, `,"time":`...)
	if dst, err = appendTime(dst, e.Time); err != nil {
		return dst, err
	}
	dst = append(dst, `,"who":`...)
	dst = appendString(dst, e.Who)
	dst = append(dst, `,"role":`...)
	dst = appendString(dst, e.Role)
	dst = append(dst, `,"via":`...)
	dst = appendString(dst, e.Via)
	dst = append(dst, `,"credential":`...)
	dst = appendString(dst, e.Credential)
	if e.Remote != "" {
		dst = append(dst, `,"remote":`...)
		dst = appendString(dst, e.Remote)
	}
	dst = append(dst, `,"action":`...)
	dst = appendString(dst, e.Action)
	dst = append(dst, `,"target":`...)
	dst = appendString(dst, e.Target)
	if e.Detail != "" {
		dst = append(dst, `,"detail":`...)
		dst = appendString(dst, e.Detail)
	}
	return append(dst, '}'), nil
}

// appendTime appends t as time.Time.MarshalJSON does: RFC 3339 with
// nanoseconds, quoted, and an error for a time RFC 3339 cannot hold
// (year outside 0..9999, zone offset of 24 hours or more).
func appendTime(dst []byte, t time.Time) ([]byte, error) {
	b, err := t.AppendText(append(dst, '"'))
	if err != nil {
		return dst, fmt.Errorf("json: %w", err)
	}
	return append(b, '"'), nil
}

// appendTimeField appends key (`,"name":`) and t for a time field tagged
// omitzero: nothing when t.IsZero(), as json.Marshal does.
func appendTimeField(dst []byte, key string, t time.Time) ([]byte, error) {
	if t.IsZero() {
		return dst, nil
	}
	return appendTime(append(dst, key...), t)
}

// appendMap appends m with its keys sorted, as encoding/json does.
func appendMap(dst []byte, m map[string]string) []byte {
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendString(dst, m[k])
	}
	return append(dst, '}')
}

// appendString appends s as a JSON string the way encoding/json does
// (jsonstr.Append).
func appendString(dst []byte, s string) []byte { return jsonstr.Append(dst, s) }
