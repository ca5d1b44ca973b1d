package controller

import (
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"jobsuite/controller/store"
)

// The audit log records who (certificate or token, with its role) did
// what to which target, and when: submissions, cancellations, drains,
// revocations and token changes. Entries live in the store under
// time-ordered IDs and are read with GET /audit, newest first.
//
// An entry is written after its action succeeded. Entries are appended
// without an fsync of their own and become durable with the next synced
// write; every action but a submission syncs right after, so a crash can
// lose at most the entries of the latest submissions, never a job.

// Audit actions.
const (
	auditSubmit      = "submit"
	auditCancel      = "cancel"
	auditDrain       = "drain"
	auditRevoke      = "revoke"
	auditUnrevoke    = "unrevoke"
	auditTokenCreate = "token_create"
	auditTokenRevoke = "token_revoke"
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
	id, ok := requestIdentity(r)
	if !ok {
		id = identity{Name: "unknown", Via: "unknown"}
	}
	e := store.AuditEntry{
		Time: time.Now().UTC(), Who: id.Name, Role: string(id.Role), Via: id.Via, Credential: id.Credential,
		Remote: r.RemoteAddr, Action: action, Target: target, Detail: detail,
	}
	s.log.Info("audit", "action", action, "target", target, "who", id.Name, "role", id.Role, "via", id.Via, "detail", detail)
	if s.sec == nil {
		return
	}
	if err := s.sec.append(e, action != auditSubmit); err != nil {
		s.log.Error("writing the audit log failed", "action", action, "target", target, "error", err)
	}
}

// append gives e the next ID and stores it, synced when sync is set.
func (sec *security) append(e store.AuditEntry, sync bool) error {
	sec.auditMu.Lock()
	e.ID = max(uint64(e.Time.UnixNano()), sec.auditLast+1)
	sec.auditLast = e.ID
	err := sec.st.AppendAudit(e)
	sec.auditN++
	prune := sec.auditN >= auditPruneEvery
	if prune {
		sec.auditN = 0
	}
	sec.auditMu.Unlock()
	if err != nil {
		return err
	}
	if prune {
		sec.pruneAudit()
	}
	if sync {
		return sec.st.Sync()
	}
	return nil
}

// pruneAudit removes entries older than the retention.
func (sec *security) pruneAudit() {
	if sec.retain <= 0 {
		return
	}
	if err := sec.st.PruneAudit(time.Now().Add(-sec.retain)); err != nil {
		sec.log.Warn("pruning the audit log failed", "error", err)
	}
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
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "limit must be an integer from 1 to 1000, got " + strconv.Quote(l), Field: "limit"})
			return
		}
		limit = n
	}
	var before uint64
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil || n == 0 {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "before must be the id of an audit entry, got " + strconv.Quote(b), Field: "before"})
			return
		}
		before = n
	}
	out := []store.AuditEntry{}
	if s.st != nil {
		entries, err := s.st.Audit(before, limit)
		if err != nil {
			s.log.Error("reading the audit log", "error", err)
			writeError(w, http.StatusInternalServerError, "reading the audit log failed")
			return
		}
		out = append(out, entries...)
	}
	if len(out) == limit {
		w.Header().Set("X-Next-Before", strconv.FormatUint(out[len(out)-1].ID, 10))
	}
	writeJSON(w, http.StatusOK, out)
}
