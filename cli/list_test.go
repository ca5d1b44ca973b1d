package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"jobsuite/certs"
)

func TestList(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&ListCommand{Meta: m}).Run([]string{"-status", "Failed", "-limit", "5"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	if q := f.lastQuery(); q != "limit=5&status=failed" {
		t.Errorf("query %q", q)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 jobs:\n%s", out)
	}
	for i, want := range []string{
		`^ID +NAME +STATUS +PRIORITY +EXIT +AGENT +CREATED$`,
		`^12 +build +failed +high +3 +worker-1 +\d+m ago$`, // newest first
		`^7 +job 7 +completed +mid +- +- +\d+m ago$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i, lines[i], want)
		}
	}
}

func TestListJSON(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&ListCommand{Meta: m}).Run([]string{"-json"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	var v []map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || len(v) != 2 {
		t.Fatalf("got %v, %v:\n%s", v, err, out)
	}
	if q := f.lastQuery(); q != "" {
		t.Errorf("query %q, want none", q)
	}
}

func TestListUsage(t *testing.T) {
	clearClientEnv(t)
	for name, args := range map[string][]string{
		"argument":  {"12"},
		"big limit": {"-limit", "5000"},
		"bad label": {"-label", "gpu"},
	} {
		t.Run(name, func(t *testing.T) {
			m, _, errb := clientTestMeta()
			if code := (&ListCommand{Meta: m}).Run(args); code != ExitUsage {
				t.Errorf("exit %d, want %d; stderr %q", code, ExitUsage, errb)
			}
		})
	}
}

// pagedController serves GET /jobs over jobs 5 down to 1 in pages of
// ?limit (default 2), naming the next page in X-Next-Cursor as
// "after-<id>", like the controller. With label scan=bound it answers an
// empty page with a cursor; with label loop=yes the same cursor forever.
type pagedController struct {
	srv *httptest.Server

	mu      sync.Mutex
	queries []url.Values
}

func newPagedController(t *testing.T) *pagedController {
	t.Helper()
	pki := newTestPKI(t)
	pool, err := certs.LoadPool(pki.ca())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(pki.ctlCert, pki.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	p := &pagedController{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	p.srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	clearClientEnv(t)
	t.Setenv(envAddr, p.srv.URL)
	t.Setenv(envCACert, pki.ca())
	t.Setenv(envClientCert, pki.opCert)
	t.Setenv(envClientKey, pki.opKey)
	return p
}

func (p *pagedController) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != "GET" || r.URL.Path != "/jobs" {
		fakeError(w, http.StatusNotFound, "not found")
		return
	}
	q := r.URL.Query()
	p.mu.Lock()
	p.queries = append(p.queries, q)
	p.mu.Unlock()
	labels := q["label"]
	switch {
	case slices.Contains(labels, "scan=bound"):
		w.Header().Set("X-Next-Cursor", "after-3")
		fakeJSON(w, http.StatusOK, []any{})
		return
	case slices.Contains(labels, "loop=yes"):
		w.Header().Set("X-Next-Cursor", "after-9")
		fakeJSON(w, http.StatusOK, []any{fakeJob(9, "queued")})
		return
	}
	limit := 2
	if l := q.Get("limit"); l != "" {
		limit, _ = strconv.Atoi(l)
	}
	below := uint64(6)
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.ParseUint(strings.TrimPrefix(c, "after-"), 10, 64)
		if err != nil || !strings.HasPrefix(c, "after-") {
			fakeError(w, http.StatusBadRequest, "cursor must be the X-Next-Cursor header of an earlier answer, got "+strconv.Quote(c), "field", "cursor")
			return
		}
		below = n
	}
	page := []any{}
	id := below - 1
	for ; id >= 1 && len(page) < limit; id-- {
		page = append(page, fakeJob(id, "queued"))
	}
	if id >= 1 {
		w.Header().Set("X-Next-Cursor", "after-"+strconv.FormatUint(id+1, 10))
	}
	fakeJSON(w, http.StatusOK, page)
}

func (p *pagedController) recorded() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]url.Values(nil), p.queries...)
}

// tableIDs returns the ID column of a list table.
func tableIDs(out string) []string {
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		ids = append(ids, strings.Fields(line)[0])
	}
	return ids
}

func TestListPaging(t *testing.T) {
	tests := map[string]struct {
		args    []string
		ids     []string     // table IDs
		queries []url.Values // what the controller was asked
		more    string       // stderr hint, "" for none
	}{
		"first page": {
			args:    []string{"-status", "Queued", "-label", "os=linux", "-label", "gpu=yes", "-limit", "2"},
			ids:     []string{"5", "4"},
			queries: []url.Values{{"status": {"queued"}, "label": {"gpu=yes", "os=linux"}, "limit": {"2"}}},
			more:    "more: jobsuite list -status queued -label gpu=yes -label os=linux -limit 2 -cursor after-4\n",
		},
		"from a cursor": {
			args:    []string{"-cursor", "after-4"},
			ids:     []string{"3", "2"},
			queries: []url.Values{{"cursor": {"after-4"}}},
			more:    "more: jobsuite list -cursor after-2\n",
		},
		"last page": {
			args:    []string{"-cursor", "after-2"},
			ids:     []string{"1"},
			queries: []url.Values{{"cursor": {"after-2"}}},
		},
		"all": {
			args: []string{"-all", "-label", "team=a b"},
			ids:  []string{"5", "4", "3", "2", "1"},
			queries: []url.Values{
				{"label": {"team=a b"}},
				{"label": {"team=a b"}, "cursor": {"after-4"}},
				{"label": {"team=a b"}, "cursor": {"after-2"}},
			},
		},
		"all from a cursor": {
			args:    []string{"-all", "-limit", "3", "-cursor", "after-5"},
			ids:     []string{"4", "3", "2", "1"},
			queries: []url.Values{{"limit": {"3"}, "cursor": {"after-5"}}, {"limit": {"3"}, "cursor": {"after-2"}}},
		},
		"a fan-out's children": {
			args:    []string{"-parent", "812", "-limit", "2"},
			ids:     []string{"5", "4"},
			queries: []url.Values{{"parent": {"812"}, "limit": {"2"}}},
			more:    "more: jobsuite list -parent 812 -limit 2 -cursor after-4\n",
		},
		"hint quotes labels": {
			args:    []string{"-label", "team=it's", "-limit", "4"},
			ids:     []string{"5", "4", "3", "2"},
			queries: []url.Values{{"label": {"team=it's"}, "limit": {"4"}}},
			more:    `more: jobsuite list -label 'team=it'\''s' -limit 4 -cursor after-2` + "\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p := newPagedController(t)
			m, out, errb := clientTestMeta()
			if code := (&ListCommand{Meta: m}).Run(tt.args); code != ExitOK {
				t.Fatalf("exit %d, stderr %q", code, errb)
			}
			if got := tableIDs(out.String()); !reflect.DeepEqual(got, tt.ids) {
				t.Errorf("listed %v, want %v:\n%s", got, tt.ids, out)
			}
			if got := p.recorded(); !reflect.DeepEqual(got, tt.queries) {
				t.Errorf("queries %v, want %v", got, tt.queries)
			}
			if errb.String() != tt.more {
				t.Errorf("stderr %q, want %q", errb, tt.more)
			}
		})
	}
}

func TestListAllJSON(t *testing.T) {
	newPagedController(t)
	m, out, errb := clientTestMeta()
	if code := (&ListCommand{Meta: m}).Run([]string{"-all", "-json"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	var jobs []map[string]any
	if err := json.Unmarshal(out.Bytes(), &jobs); err != nil || len(jobs) != 5 {
		t.Fatalf("got %d jobs, %v:\n%s", len(jobs), err, out)
	}
	for i, j := range jobs {
		if id := j["job_id"].(float64); id != float64(5-i) {
			t.Errorf("job %d has id %v", i, id)
		}
	}
}

func TestListPagingEdges(t *testing.T) {
	tests := map[string]struct {
		args   []string
		code   int
		stdout string
		stderr string // a substring
	}{
		"empty page, more follow": {[]string{"-label", "scan=bound"}, ExitOK, "No jobs on this page.\n", "more: jobsuite list -label scan=bound -cursor after-3\n"},
		"bad cursor":              {[]string{"-cursor", "12"}, ExitError, "", "cursor must be the X-Next-Cursor header"},
		"cursor repeated":         {[]string{"-all", "-label", "loop=yes"}, ExitError, "", `cursor "after-9" twice`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			newPagedController(t)
			m, out, errb := clientTestMeta()
			if code := (&ListCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errb)
			}
			if out.String() != tt.stdout || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stdout %q, stderr %q; want %q and %q", out, errb, tt.stdout, tt.stderr)
			}
		})
	}
}
