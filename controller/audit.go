package controller

import (
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// The audit log records who (certificate or token, with its role) did
// what to which target, and when: submissions (and resubmissions),
// cancellations, drains and undrains, revocations and token changes.
// Entries live in the store under time-ordered IDs and are read with
// GET /audit, newest first.
//
// An entry is written after its action succeeded, and synced. A
// submission's entry (one per POST /jobs, one per POST /jobs/batch) is
// written in the same store batch as the job it creates, so a job is
// never durable without its entry, nor an entry without its job, and a
// submit costs no store write of its own for the audit.

// Audit actions.
const (
	auditSubmit      = "submit"
	auditCancel      = "cancel"
	auditDrain       = "drain"
	auditUndrain     = "undrain"
	auditResubmit    = "resubmit"
	auditRevoke      = "revoke"
	auditUnrevoke    = "unrevoke"
	auditTokenCreate = "token_create"
	auditTokenRevoke = "token_revoke"
	auditSchedule    = "schedule_create"
	auditUnschedule  = "schedule_delete"
	auditPause       = "schedule_pause"
	auditResume      = "schedule_resume"
	auditRunNow      = "schedule_run"
)

// auditPruneEvery is how many entries are appended between prunes.
const auditPruneEvery = 1024

// Limits of GET /audit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// audit records that the identity auth admitted r with did action to
// target ("job 12", "agent worker-1"). Failing to record is logged, not
// fatal: the action already happened.
func (s *Server) audit(r *http.Request, action, target string) {
	s.auditDetail(r, action, target, "")
}

// auditDetail is audit with a free-form detail.
func (s *Server) auditDetail(r *http.Request, action, target, detail string) {
	e := s.auditEntry(r, action)
	e.Target, e.Detail = target, detail
	s.logAudit(e)
	if s.sec == nil {
		return
	}
	if err := s.sec.append(e); err != nil {
		s.log.Error("writing the audit log failed", "action", action, "target", target, "error", err)
	}
}

// auditEntry starts the entry for r's identity doing action, with an ID
// (nil when the server keeps no audit log). The caller sets the target.
func (s *Server) auditEntry(r *http.Request, action string) *store.AuditEntry {
	id, ok := requestIdentity(r)
	if !ok {
		id = identity{Name: "unknown", Via: "unknown"}
	}
	e := &store.AuditEntry{
		Time: time.Now().UTC(), Who: id.Name, Role: string(id.Role), Via: id.Via, Credential: id.Credential,
		Remote: r.RemoteAddr, Action: action,
	}
	if s.sec != nil {
		s.sec.stamp(e)
	}
	return e
}

// logAudit writes e's log line.
func (s *Server) logAudit(e *store.AuditEntry) {
	s.log.Info("audit", "action", e.Action, "target", e.Target, "who", e.Who, "role", e.Role, "via", e.Via, "detail", e.Detail)
}

// stamp gives e the next ID: at least its time in Unix nanoseconds and
// above every earlier ID. Every auditPruneEvery entries it prunes the
// old ones (one range deletion).
func (sec *security) stamp(e *store.AuditEntry) {
	sec.auditMu.Lock()
	e.ID = max(uint64(e.Time.UnixNano()), sec.auditLast+1)
	sec.auditLast = e.ID
	sec.auditN++
	prune := sec.auditN >= auditPruneEvery
	if prune {
		sec.auditN = 0
	}
	sec.auditMu.Unlock()
	if prune {
		sec.pruneAudit()
	}
}

// append stores a stamped entry and waits until it is durable.
func (sec *security) append(e *store.AuditEntry) error {
	_, err := sec.c.Do(&store.AppendAudit{Entry: *e})
	return err
}

// pruneAudit removes entries older than the retention, in the next
// round of the committer (which may not run yet: it is not waited for).
func (sec *security) pruneAudit() {
	if sec.retain <= 0 {
		return
	}
	sec.c.Add(&store.PruneAudit{Before: time.Now().Add(-sec.retain)})
}

// handleAudit lists audit entries, newest first: ?limit= (default 100,
// at most 1000) entries with an id below ?before= (the id of the last
// entry of the previous page).
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q := r.URL.Query()
	limit := defaultAuditLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxAuditLimit {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "limit must be an integer from 1 to 1000, got " + strconv.Quote(l), Field: "limit"})
			return
		}
		limit = n
	}
	var before uint64
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil || n == 0 {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "before must be the id of an audit entry, got " + strconv.Quote(b), Field: "before"})
			return
		}
		before = n
	}
	out := []api.AuditEntry{}
	if s.st != nil {
		entries, err := s.st.Audit(before, limit)
		if err != nil {
			s.log.Error("reading the audit log", "error", err)
			writeError(w, http.StatusInternalServerError, "reading the audit log failed")
			return
		}
		for _, e := range entries {
			out = append(out, api.AuditEntry(e))
		}
	}
	if len(out) == limit {
		w.Header().Set("X-Next-Before", strconv.FormatUint(out[len(out)-1].ID, 10))
	}
	writeJSON(w, http.StatusOK, out)
}
