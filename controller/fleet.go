package controller

import (
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
)

// The routes an operator runs a fleet with, beyond the job basics: one
// agent (GET /agents/:name), undoing a drain, and who the caller is
// (GET /whoami, for the dashboard).

// agentName parses the :name parameter; it writes the error itself.
func agentName(w http.ResponseWriter, p httprouter.Params) (string, bool) {
	name := p.ByName("name")
	if !certNameRE.MatchString(name) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "agent name must be 1–64 letters, digits, '.', '_' or '-', got " + strconv.Quote(name), Field: "name"})
		return "", false
	}
	return name, true
}

// handleAgent answers one connected agent.
func (s *Server) handleAgent(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name, ok := agentName(w, p)
	if !ok {
		return
	}
	a, ok := s.sched.Agent(name)
	if !ok {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no connected agent named " + strconv.Quote(name), Field: "name"})
		return
	}
	writeJSON(w, http.StatusOK, agentInfo(a))
}

// handleUndrain lets an agent drained with POST /agents/:name/drain take
// jobs again.
func (s *Server) handleUndrain(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	name, ok := agentName(w, p)
	if !ok {
		return
	}
	found, err := s.sched.Undrain(name)
	switch {
	case !found:
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no connected agent named " + strconv.Quote(name), Field: "name"})
		return
	case err != nil:
		writeJSON(w, http.StatusConflict, api.Error{Error: "agent " + strconv.Quote(name) + ": " + err.Error(), Field: "name"})
		return
	}
	s.log.Info("agent undrained by API", "agent", name)
	s.audit(r, auditUndrain, "agent "+name)
	a, ok := s.sched.Agent(name)
	if !ok {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "agent " + strconv.Quote(name) + " disconnected", Field: "name"})
		return
	}
	writeJSON(w, http.StatusOK, agentInfo(a))
}

// handleWhoAmI tells the caller who the controller takes it for: the
// dashboard shows it, and hides what the role may not do.
func (s *Server) handleWhoAmI(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	id, ok := requestIdentity(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "%v", errNoCredentials)
		return
	}
	writeJSON(w, http.StatusOK, api.WhoAmI{Name: id.Name, Role: string(id.Role), Via: id.Via})
}
