package store

import (
	"encoding/json"
	"fmt"
)

// The event and audit records every transition carries are decoded
// wherever a round is applied from the raft log (each node's FSM: in a
// cluster, encoding/json.Unmarshal of these two was 7% of a follower's
// CPU in row 9a) and where events are listed. decodeEventFast and
// decodeAuditFast take what appendEvent and appendAudit write, the way
// encoding/json would, and report false for anything else they might
// not decode exactly as it does (the rules of decodeJobFast); the
// caller then decodes with encoding/json, which also gives the error.
// TestDecodeEventFast, TestDecodeAuditFast and their fuzzers hold them
// to encoding/json.

// decodeEvent decodes an event record into e.
func decodeEvent(data []byte, e *Event) error {
	if decodeEventFast(data, e) {
		return nil
	}
	*e = Event{}
	if err := json.Unmarshal(data, e); err != nil {
		return fmt.Errorf("decode event: %w", err)
	}
	return nil
}

// decodeAudit decodes an audit entry into a.
func decodeAudit(data []byte, a *AuditEntry) error {
	if decodeAuditFast(data, a) {
		return nil
	}
	*a = AuditEntry{}
	if err := json.Unmarshal(data, a); err != nil {
		return fmt.Errorf("decode audit entry: %w", err)
	}
	return nil
}

// decodeEventFast decodes data into e, which must be zero; false leaves
// e in an unspecified state.
func decodeEventFast(data []byte, e *Event) bool {
	d := jobDecoder{data: data}
	var set seenKeys
	return d.object(false, func(key []byte) bool {
		switch string(key) {
		case "seq":
			return set.first(0) && d.uint32(&e.Seq)
		case "time":
			return set.first(1) && d.time(&e.Time)
		case "type":
			return set.first(2) && d.eventType(&e.Type)
		case "state":
			return set.first(3) && d.state(&e.State)
		case "attempt":
			return set.first(4) && d.uint32(&e.Attempt)
		case "agent":
			return set.first(5) && d.str(&e.Agent)
		case "message":
			return set.first(6) && d.str(&e.Message)
		}
		return false
	}) && d.end()
}

// eventTypes are the event types written, whose strings are shared.
var eventTypes = [...]string{"submitted", "dispatched", "started", "finished", "retry", "lost", "cancel_requested", "cancelled", "requeued"}

func (d *jobDecoder) eventType(dst *string) bool {
	b, ok := d.stringBytes()
	if !ok {
		return false
	}
	for _, s := range eventTypes {
		if string(b) == s {
			*dst = s
			return true
		}
	}
	*dst = string(b)
	return true
}

// decodeAuditFast decodes data into a, which must be zero; false leaves
// a in an unspecified state.
func decodeAuditFast(data []byte, a *AuditEntry) bool {
	d := jobDecoder{data: data}
	var set seenKeys
	return d.object(false, func(key []byte) bool {
		switch string(key) {
		case "id":
			return set.first(0) && d.uint64(&a.ID)
		case "time":
			return set.first(1) && d.time(&a.Time)
		case "who":
			return set.first(2) && d.str(&a.Who)
		case "role":
			return set.first(3) && d.str(&a.Role)
		case "via":
			return set.first(4) && d.str(&a.Via)
		case "credential":
			return set.first(5) && d.str(&a.Credential)
		case "remote":
			return set.first(6) && d.str(&a.Remote)
		case "action":
			return set.first(7) && d.str(&a.Action)
		case "target":
			return set.first(8) && d.str(&a.Target)
		case "detail":
			return set.first(9) && d.str(&a.Detail)
		}
		return false
	}) && d.end()
}
