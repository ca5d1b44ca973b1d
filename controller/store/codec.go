package store

import "encoding/json"

// appendJob appends j encoded as JSON to dst.
func appendJob(dst []byte, j *Job) ([]byte, error) {
	b, err := json.Marshal(j)
	return append(dst, b...), err
}

// appendEvent appends e encoded as JSON to dst.
func appendEvent(dst []byte, e *Event) ([]byte, error) {
	b, err := json.Marshal(e)
	return append(dst, b...), err
}
