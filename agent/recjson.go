package agent

import (
	"strconv"

	"jobsuite/internal/jsonstr"
	"jobsuite/protocol"
)

// The record of an attempt (state.go) is JSON, written twice per job.
// encoding/json's reflection was most of a record's cost, so the two
// structs a record holds are appended by hand here, byte for byte as
// json.Marshal writes them (field names, order, escaping): records stay
// readable by json.Unmarshal, by this agent and by earlier ones.
// TestRecordJSON compares the two, with every field set, so a field
// added to protocol.Dispatch or protocol.Finished without a line here
// fails it.

// appendDispatchJSON appends json.Marshal(d).
func appendDispatchJSON(b []byte, d *protocol.Dispatch) []byte {
	b = append(b, `{"JobID":`...)
	b = strconv.AppendUint(b, d.JobID, 10)
	b = append(b, `,"Attempt":`...)
	b = strconv.AppendUint(b, uint64(d.Attempt), 10)
	b = append(b, `,"Name":`...)
	b = appendJSONString(b, d.Name)
	b = append(b, `,"Command":`...)
	b = appendJSONString(b, d.Command)
	b = append(b, `,"Env":`...)
	if d.Env == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, kv := range d.Env {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, kv)
		}
		b = append(b, ']')
	}
	b = append(b, `,"Dir":`...)
	b = appendJSONString(b, d.Dir)
	b = append(b, `,"Timeout":`...)
	b = strconv.AppendInt(b, int64(d.Timeout), 10)
	b = append(b, `,"KillGrace":`...)
	b = strconv.AppendInt(b, int64(d.KillGrace), 10)
	b = append(b, `,"CaptureLogs":`...)
	b = strconv.AppendBool(b, d.CaptureLogs)
	b = append(b, `,"MaxOutput":`...)
	b = strconv.AppendUint(b, d.MaxOutput, 10)
	b = append(b, `,"Output":`...)
	b = strconv.AppendUint(b, uint64(d.Output), 10)
	b = append(b, `,"TTY":`...)
	b = strconv.AppendUint(b, uint64(d.TTY), 10)
	b = append(b, `,"Term":`...)
	b = strconv.AppendUint(b, d.Term, 10)
	return append(b, '}')
}

// appendFinishedJSON appends json.Marshal(f).
func appendFinishedJSON(b []byte, f *protocol.Finished) []byte {
	b = append(b, `{"Outcome":`...)
	b = strconv.AppendUint(b, uint64(f.Outcome), 10)
	b = append(b, `,"ExitCode":`...)
	b = strconv.AppendInt(b, int64(f.ExitCode), 10)
	b = append(b, `,"Signal":`...)
	b = appendJSONString(b, f.Signal)
	b = append(b, `,"Error":`...)
	b = appendJSONString(b, f.Error)
	b = append(b, `,"Duration":`...)
	b = strconv.AppendInt(b, int64(f.Duration), 10)
	b = append(b, `,"UserCPU":`...)
	b = strconv.AppendInt(b, int64(f.UserCPU), 10)
	b = append(b, `,"SystemCPU":`...)
	b = strconv.AppendInt(b, int64(f.SystemCPU), 10)
	b = append(b, `,"MaxRSS":`...)
	b = strconv.AppendUint(b, f.MaxRSS, 10)
	b = append(b, `,"LogBytes":`...)
	b = strconv.AppendUint(b, f.LogBytes, 10)
	return append(b, '}')
}

// appendJSONString appends s quoted as encoding/json quotes it
// (jsonstr.Append).
func appendJSONString(b []byte, s string) []byte { return jsonstr.Append(b, s) }
