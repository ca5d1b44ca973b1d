package controller

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// Limits of POST /jobs/batch.
const (
	// MaxBatchJobs is the most jobs one batch request may carry.
	MaxBatchJobs = 10_000
	// batchBodyFactor times Config.MaxBodyBytes is the largest batch
	// body (16 MiB by default).
	batchBodyFactor = 16
)

// errBatchTooLarge is a batch with more than MaxBatchJobs jobs.
var errBatchTooLarge = fmt.Errorf("a batch holds at most %d jobs; split it into several requests", MaxBatchJobs)

// handleSubmitBatch queues a JSON array of jobs: every job is validated
// first (one bad job refuses the whole batch, naming its index), then
// all are queued under one scheduler lock and the answer waits for the
// one store batch that makes the last of them durable.
func (s *Server) handleSubmitBatch(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	limit := s.cfg.MaxBodyBytes * batchBodyFactor
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than %d bytes; split the batch into several requests", limit)
			return
		}
		writeError(w, http.StatusBadRequest, "reading request body: %v", err)
		return
	}
	jobs, err := decodeBatch(body, s.limits())
	if err != nil {
		var fe *fieldError
		switch {
		case errors.Is(err, errBatchTooLarge):
			writeError(w, http.StatusRequestEntityTooLarge, "%v", err)
		case errors.As(err, &fe):
			writeJSON(w, http.StatusBadRequest, api.Error{Error: fe.Error(), Field: fe.field})
		default:
			writeError(w, http.StatusBadRequest, "%v", err)
		}
		return
	}
	audit := s.auditEntry(r, auditSubmit) // stored with the last job created, if any
	subs, err := s.sched.SubmitBatch(jobs, audit)
	if err != nil {
		s.submitFailed(w, err, len(jobs))
		return
	}
	items := make([]api.BatchItem, len(subs))
	for i, sub := range subs {
		items[i] = api.BatchItem{JobID: sub.Job.ID, Status: string(sub.Job.State), Created: sub.Created}
	}
	if audit.Target != "" {
		s.logAudit(audit)
	}
	code := http.StatusOK // every job already existed (idempotency keys)
	for _, it := range items {
		if it.Created {
			code = http.StatusCreated
			break
		}
	}
	writeJSON(w, code, items)
}

// decodeBatch parses and validates a batch: a JSON array of submit
// objects, each checked by decodeSubmit. The first invalid job fails the
// batch with a fieldError whose field is jobs[i] or jobs[i].field.
func decodeBatch(body []byte, lim submitLimits) ([]*store.Job, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, errors.New("request body is empty; send a JSON array of jobs such as [{\"command\": \"echo hi\"}]")
	}
	if trimmed[0] != '[' {
		return nil, errors.New("request body must be a JSON array of jobs, such as [{\"command\": \"echo hi\"}]; POST one job to /jobs")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(trimmed, &raws); err != nil {
		return nil, jsonError(err)
	}
	if len(raws) == 0 {
		return nil, errors.New("the batch holds no jobs")
	}
	if len(raws) > MaxBatchJobs {
		return nil, fmt.Errorf("%w (got %d)", errBatchTooLarge, len(raws))
	}
	jobs := make([]*store.Job, len(raws))
	keys := map[string]int{}
	for i, raw := range raws {
		j, err := decodeSubmit(raw, lim)
		if err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				return nil, &fieldError{field: fmt.Sprintf("jobs[%d].%s", i, fe.field), msg: fe.msg}
			}
			return nil, &fieldError{field: fmt.Sprintf("jobs[%d]", i), msg: err.Error()}
		}
		if k := j.IdempotencyKey; k != "" {
			if first, dup := keys[k]; dup {
				return nil, badField(fmt.Sprintf("jobs[%d].idempotency_key", i), "repeats the key of jobs[%d]; a key may appear once per batch", first)
			}
			keys[k] = i
		}
		jobs[i] = j
	}
	return jobs, nil
}
