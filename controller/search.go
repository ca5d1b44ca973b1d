package controller

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"jobsuite/api"
	"jobsuite/controller/store"
)

// Limits of the job search (GET /jobs?q=).
const (
	maxQueryBytes = 256
	maxQueryTerms = 16
)

// jobSearch is the search of GET /jobs: ?q= holds words separated by
// spaces, each of which must appear, ignoring case, in the job's name,
// its command with params, one of its labels written key=value, the
// name of an agent one of its attempts ran on, or its state; ?agent=
// keeps the jobs with an attempt on that agent.
type jobSearch struct {
	terms  []string // lower case
	agent  string
	parent uint64 // a fan-out's children only; 0: any job
}

// searchFilter reads ?q=, ?agent= and ?parent= of a job list request. It returns
// nil (no filter) when neither is given, and writes a 400 and returns
// ok false when one is malformed.
func searchFilter(w http.ResponseWriter, q url.Values) (match func(*store.Job) bool, ok bool) {
	var js jobSearch
	if raw := q.Get("q"); raw != "" {
		if len(raw) > maxQueryBytes {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "q is " + strconv.Itoa(len(raw)) + " bytes; the limit is " + strconv.Itoa(maxQueryBytes), Field: "q"})
			return nil, false
		}
		js.terms = strings.Fields(strings.ToLower(raw))
		if len(js.terms) > maxQueryTerms {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "q has " + strconv.Itoa(len(js.terms)) + " words; the limit is " + strconv.Itoa(maxQueryTerms), Field: "q"})
			return nil, false
		}
	}
	if a := q.Get("agent"); a != "" {
		if !certNameRE.MatchString(a) {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "agent must be an agent name (letters, digits, '.', '_' and '-'), got " + strconv.Quote(a), Field: "agent"})
			return nil, false
		}
		js.agent = a
	}
	if p := q.Get("parent"); p != "" {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil || n == 0 {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: "parent must be the job id of a fan-out, got " + strconv.Quote(p), Field: "parent"})
			return nil, false
		}
		js.parent = n
	}
	if len(js.terms) == 0 && js.agent == "" && js.parent == 0 {
		return nil, true
	}
	return js.match, true
}

// match reports whether j is a result of the search.
func (js jobSearch) match(j *store.Job) bool {
	if js.parent != 0 && j.Parent() != js.parent {
		return false
	}
	if js.agent != "" {
		found := false
		for _, a := range j.Attempts {
			found = found || a.Agent == js.agent
		}
		if !found {
			return false
		}
	}
	for _, term := range js.terms {
		if !jobHas(j, term) {
			return false
		}
	}
	return true
}

// jobHas reports whether term (lower case) appears in one of j's
// searched fields.
func jobHas(j *store.Job, term string) bool {
	has := func(s string) bool { return containsFold(s, term) }
	if has(j.Name) || has(j.Command) || has(j.Params) || has(string(j.State)) {
		return true
	}
	for k, v := range j.Labels {
		if has(k + "=" + v) {
			return true
		}
	}
	for _, a := range j.Attempts {
		if has(a.Agent) {
			return true
		}
	}
	return false
}

// containsFold reports whether lower (lower case) is in s, ignoring case.
func containsFold(s, lower string) bool {
	return len(lower) <= len(s) && (strings.Contains(s, lower) || strings.Contains(strings.ToLower(s), lower))
}
