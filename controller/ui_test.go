package controller_test

import (
	"bufio"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/api"
	"jobsuite/certs"
)

// uiContentTypes is what each kind of dashboard file must be served as.
var uiContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// TestUIAssets requests every file of controller/ui (what go:embed
// embeds) from a real controller: right content type and security
// headers, the same bytes, no certificate role needed, short page
// names, 304 on a matching ETag, 404 for unknown files. It also checks
// that no file holds a secret or inline code.
func TestUIAssets(t *testing.T) {
	c := startCluster(t)
	// An agent certificate may not use the API, but the dashboard's
	// static files need no role.
	cl := c.httpClient("agent-1")
	if code, body := doWith(t, cl, "GET", c.base+"/jobs", ""); code != http.StatusForbidden {
		t.Fatalf("GET /jobs with an agent certificate: %d %s; want 403", code, body)
	}

	entries, err := os.ReadDir("ui")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 5 {
		t.Fatalf("controller/ui holds %d files; want the pages, scripts and style sheet", len(entries))
	}
	get := func(t *testing.T, p string, header http.Header) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", c.base+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	read := func(t *testing.T, resp *http.Response) string {
		t.Helper()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, e := range entries {
		name := e.Name()
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("ui", name))
			if err != nil {
				t.Fatal(err)
			}
			ct, ok := uiContentTypes[path.Ext(name)]
			if !ok {
				t.Fatalf("no content type known for %s; add it to ui.go and this test", name)
			}
			resp := get(t, "/ui/"+name, nil)
			body := read(t, resp)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ct {
				t.Fatalf("GET /ui/%s: %d %q; want 200 %q", name, resp.StatusCode, resp.Header.Get("Content-Type"), ct)
			}
			if body != string(want) {
				t.Errorf("GET /ui/%s does not serve controller/ui/%s (rebuild?)", name, name)
			}
			for h, v := range map[string]string{
				"X-Content-Type-Options": "nosniff",
				"X-Frame-Options":        "DENY",
				"Cache-Control":          "no-cache",
			} {
				if got := resp.Header.Get(h); got != v {
					t.Errorf("%s: %q, want %q", h, got, v)
				}
			}
			csp := resp.Header.Get("Content-Security-Policy")
			for _, d := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, d) {
					t.Errorf("Content-Security-Policy %q lacks %q", csp, d)
				}
			}
			if strings.Contains(csp, "unsafe") {
				t.Errorf("Content-Security-Policy %q allows unsafe code", csp)
			}
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			again := get(t, "/ui/"+name, http.Header{"If-None-Match": {etag}})
			if again.StatusCode != http.StatusNotModified {
				t.Errorf("GET with If-None-Match %s: %d, want 304", etag, again.StatusCode)
			}
			checkNoSecrets(t, name, body)
		})
	}

	// The jobs page answers at /ui, /ui/ and /ui/index.html; a page
	// answers without its .html; an unknown file is a JSON 404.
	index, err := os.ReadFile(filepath.Join("ui", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	job, err := os.ReadFile(filepath.Join("ui", "job.html"))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string][]byte{"/ui": index, "/ui/": index, "/ui/job": job, "/ui/job?id=3": job, "/ui/job/": job} {
		resp := get(t, p, nil)
		if body := read(t, resp); resp.StatusCode != http.StatusOK || body != string(want) {
			t.Errorf("GET %s: %d, %d bytes; want the page", p, resp.StatusCode, len(body))
		}
	}
	for _, p := range []string{"/ui/nope.js", "/ui/../api.go", "/ui/ui/index.html", "/ui/.hidden"} {
		resp := get(t, p, nil)
		body := read(t, resp)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"error"`) {
			t.Errorf("GET %s: %d %s; want a JSON 404", p, resp.StatusCode, body)
		}
	}
}

// checkNoSecrets fails when a dashboard file holds key material, a
// literal token, or code that CSP or XSS care would refuse: inline
// scripts and handlers, HTML built from strings.
func checkNoSecrets(t *testing.T, name, body string) {
	t.Helper()
	bad := map[string]*regexp.Regexp{
		"a PEM block":                       regexp.MustCompile(`-----BEGIN [A-Z ]+-----`),
		"a literal bearer token":            regexp.MustCompile(`Bearer [A-Za-z0-9._~+/=-]{6,}`),
		"a literal access_token":            regexp.MustCompile(`access_token=[A-Za-z0-9]`),
		"a password or secret assignment":   regexp.MustCompile(`(?i)(password|secret|api_?key)\s*[:=]\s*['"][^'"]+['"]`),
		"HTML built from strings":           regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write`),
		"eval":                              regexp.MustCompile(`\beval\(|new Function\(`),
		"an inline script":                  regexp.MustCompile(`<script(\s+type="module")?\s*>`),
		"an inline event handler or style":  regexp.MustCompile(`<[^>]+\s(on[a-z]+|style)=`),
		"a javascript: URL":                 regexp.MustCompile(`(?i)javascript:`),
		"a token stored beyond the session": regexp.MustCompile(`localStorage|document\.cookie`),
	}
	for what, re := range bad {
		if loc := re.FindStringIndex(body); loc != nil {
			t.Errorf("%s holds %s: %q", name, what, body[loc[0]:min(loc[1]+20, len(body))])
		}
	}
}

// TestUIBrowser drives the dashboard in headless Chromium: the jobs
// page picks up a new job by itself, the job page shows its log live
// (ANSI colours rendered, HTML shown as text), a Cancel button cancels a
// running job, the agents page drains an agent, and a pasted token is
// sent as a bearer token and as ?access_token= on the WebSocket.
// Screenshots go to $JOBSUITE_ARTIFACTS (default testdata/artifacts).
//
// The controller keeps mutual TLS: the browser talks plain HTTP to a
// test-only reverse proxy on 127.0.0.1 that forwards, WebSockets
// included, with an operator certificate.
func TestUIBrowser(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium is not installed (apt-get install -y chromium, or set JOBSUITE_CHROMIUM); skipping the browser test")
	}
	if testing.Short() {
		t.Skip("-short: skipping the browser test")
	}
	c := startCluster(t, "agent-1")
	px := startUIProxy(t, c)
	// The browser trusts the controller's key, and nothing else beyond
	// its own roots, for the direct part of the test.
	b := startBrowser(t, chromium, "--ignore-certificate-errors-spki-list="+spkiHash(t, c))
	b.diag = func() string { return "the proxy's last requests: " + px.last(12) }
	base := px.url

	// The jobs page, loaded before any job exists.
	b.navigate(base + "/ui/")
	b.waitJS("the jobs page", `document.querySelector('#jobs tbody td') !== null && document.querySelector('.auth-state').textContent === 'client certificate'`)

	checkANSI(t, b)
	checkLogView(t, b)

	gate := filepath.Join(t.TempDir(), "gate")
	slow := c.submit(jobJSON(t, map[string]any{
		"name": "slow printer", "output": "split", // stdout and stderr apart
		"command": fmt.Sprintf(`echo first line; seq 1 200; while [ ! -e %s ]; do sleep 0.05; done; `+
			`printf '\033[31mred\033[0m \033[1mbold\033[0m plain\n'; echo '<b>not markup</b>'; echo to-stderr >&2; echo last line`, gate),
	}))
	row := fmt.Sprintf(`#jobs tr[data-job="%d"]`, slow.JobID)
	b.waitJS("the new job on the jobs page", fmt.Sprintf(`document.querySelector(%q) !== null`, row))

	// Open it from the list and watch the first line arrive live.
	b.click(row + " td a")
	b.waitJS("the job page", fmt.Sprintf(`location.pathname === '/ui/job' && document.getElementById('job-title').textContent.startsWith('Job %d')`, slow.JobID))
	b.waitJS("the first line, live", `document.getElementById('log').textContent.includes('first line') && document.getElementById('log-state').textContent === 'live'`)
	if got := b.evalString(`document.getElementById('log').textContent`); strings.Contains(got, "last line") {
		t.Fatalf("the log shows the end before the gate opened: %q", got)
	}
	if st := b.evalString(`document.getElementById('job-status').textContent`); st != "running" && st != "dispatched" {
		t.Errorf("job status on the page: %q, want running", st)
	}
	// The log follows its end; scrolled up by the user, it stays put
	// and offers to follow again.
	b.waitJS("the numbers, followed", `document.getElementById('log').textContent.includes('\n200\n') && `+logAtBottom)
	b.screenshot("job-running.png")
	b.wheel("#log", -100000)
	b.waitJS("the log scrolled up", `document.getElementById('log').scrollTop === 0 && !document.getElementById('follow').hidden`)

	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b.waitJS("the rest of the log and the final status", `document.getElementById('log').textContent.includes('last line') &&
		document.getElementById('job-status').textContent === 'completed' &&
		document.getElementById('log-state').textContent.startsWith('ended: completed')`)
	checks := map[string]string{
		"stdout in order":           `[...document.querySelectorAll('#log span.out')].map(s => s.textContent).join('') === 'first line\n' + Array.from({length: 200}, (_, i) => (i + 1) + '\n').join('') + 'red bold plain\n<b>not markup</b>\nlast line\n'`,
		"red is red":                `[...document.querySelectorAll('#log span.a-fg1')].map(s => s.textContent).join('') === 'red'`,
		"bold is bold":              `[...document.querySelectorAll('#log span.a-b')].map(s => s.textContent).join('') === 'bold'`,
		"no escape codes shown":     `!document.getElementById('log').textContent.includes('\x1b')`,
		"HTML is text":              `document.querySelector('#log b') === null`,
		"stderr marked":             `[...document.querySelectorAll('#log span.err')].map(s => s.textContent).join('') === 'to-stderr\n'`,
		"one attempt, no separator": `document.querySelectorAll('#log .attempt').length === 1 && getComputedStyle(document.querySelector('#log .attempt')).display === 'none'`,
		"times hidden":              `document.querySelectorAll('#log .ts').length > 0 && getComputedStyle(document.querySelector('#log .ts')).display === 'none'`,
		"exit code shown":           `document.getElementById('log-state').textContent === 'ended: completed (exit code 0)'`,
		"attempt on agent-1":        `document.querySelector('#attempts tr td:nth-child(2)').textContent === 'agent-1'`,
		"events listed":             `document.querySelectorAll('#events tr').length >= 3`,
		"no cancel for a done job":  `document.getElementById('cancel').hidden`,
		"command in the job fields": `document.getElementById('fields').textContent.includes('echo first line')`,
	}
	for what, expr := range checks {
		if !b.evalBool(expr) {
			t.Errorf("job page: %s: false: %s", what, expr)
		}
	}
	if !b.evalBool(`document.getElementById('log').scrollTop === 0`) {
		t.Error("the log scrolled by itself after the user scrolled up")
	}
	b.click("#follow")
	b.waitJS("the log followed again", logAtBottom+` && document.getElementById('follow').hidden`)
	b.screenshot("job-completed.png")

	// A retried job: a separator where each attempt begins, the log's
	// text still exactly the output; times on request.
	retried := c.submit(jobJSON(t, map[string]any{
		"name": "retried", "retries": 1,
		"command": `printf '\033[32mattempt %s\033[0m\n' "$JOBSUITE_ATTEMPT"; [ $JOBSUITE_ATTEMPT -ge 2 ]`,
	}))
	b.navigate(fmt.Sprintf("%s/ui/job?id=%d", base, retried.JobID))
	// Ended in the log and rendered above it: the job's fields (from the
	// page's poll, which may answer after the log's end) push the
	// Timestamps button down when they arrive, and a click computed
	// before would miss it.
	b.waitJS("the retried job ended", `document.getElementById('log-state').textContent.startsWith('ended: completed') &&
		document.getElementById('job-status').textContent === 'completed' && document.querySelectorAll('#attempts tr').length === 2`)
	b.click("#timestamps")
	for what, expr := range map[string]string{
		"the output, unmarked":               `document.getElementById('log').textContent === 'attempt 1\nattempt 2\n'`,
		"two separators shown":               `[...document.querySelectorAll('#log .attempt')].map(e => getComputedStyle(e).display + ' ' + e.dataset.label.split(' · ').slice(0, 2).join(' · ')).join('|') === 'block Attempt 1 · agent-1|block Attempt 2 · agent-1'`,
		"attempt 2 after attempt 1's output": `(() => { let s = '', e = document.querySelectorAll('#log .attempt')[1].previousElementSibling; while (e) { s = e.textContent + s; e = e.previousElementSibling; } return s === 'attempt 1\n'; })()`,
		"colours kept":                       `[...document.querySelectorAll('#log span.a-fg2')].map(s => s.textContent).join('|') === 'attempt 1|attempt 2'`,
		"times shown":                        `getComputedStyle(document.querySelector('#log .ts')).display === 'inline' && /^"\d\d:\d\d:\d\d\.\d{3}  "$/.test(getComputedStyle(document.querySelector('#log .ts'), '::before').content)`,
		"button pressed":                     `document.getElementById('timestamps').getAttribute('aria-pressed') === 'true'`,
		"terminal field":                     `!document.getElementById('fields').textContent.includes('Terminal')`,
	} {
		if !b.evalBool(expr) {
			t.Errorf("retried job page: %s: false: %s", what, expr)
		}
	}
	b.screenshot("job-retried.png")

	// A running job: sign in with a token (the proxy records and strips
	// it: the controller keeps using the proxy's certificate), then
	// cancel the job with the button.
	sleeper := c.submit(jobJSON(t, map[string]any{"name": "sleeper", "command": "sleep 60"}))
	b.navigate(fmt.Sprintf("%s/ui/job?id=%d", base, sleeper.JobID))
	b.waitJS("the sleeping job running", `document.getElementById('job-status').textContent === 'running' && !document.getElementById('cancel').hidden && document.getElementById('log-state').textContent === 'live'`)

	const tok = "test-token-b64_~+/="
	b.click(".auth button")
	b.waitJS("the sign-in form", `!document.getElementById('signin').hidden`)
	b.click("#token")
	b.call("Input.insertText", map[string]any{"text": tok}, nil)
	since := px.mark()
	b.click("#signin button[type=submit]")
	b.waitJS("signed in", `document.querySelector('.auth-state').textContent === 'signed in with a token'`)
	if got := b.evalString(`sessionStorage.getItem('jobsuite.token')`); got != tok {
		t.Errorf("sessionStorage holds %q, want the token", got)
	}
	c.waitFor("the page to call the API with the token", func() bool {
		var api, ws bool
		for _, r := range px.since(since) {
			api = api || r.path == fmt.Sprintf("/jobs/%d", sleeper.JobID) && r.auth == "Bearer "+tok
			ws = ws || strings.HasPrefix(r.path, "/ws/") && r.accessToken == tok && r.auth == ""
		}
		return api && ws
	})
	b.waitJS("the log reconnected", `document.getElementById('log-state').textContent === 'live'`)

	b.click("#cancel")
	b.waitJS("the job cancelled", `document.getElementById('job-status').textContent === 'cancelled' && document.getElementById('log-state').textContent.startsWith('ended: cancelled')`)
	if d := b.dialogs(); len(d) != 1 || !strings.Contains(d[0], fmt.Sprintf("Cancel job %d", sleeper.JobID)) {
		t.Errorf("dialogs: %q; want one asking to cancel job %d", d, sleeper.JobID)
	}
	if j := c.job(sleeper.JobID); j.Status != "cancelled" {
		t.Errorf("the API shows job %d %s, want cancelled", sleeper.JobID, j.Status)
	}
	b.screenshot("job-cancelled.png")

	// Sign out: no token is sent any more.
	b.click(".auth button")
	b.waitJS("signed out", `document.querySelector('.auth-state').textContent === 'client certificate' && sessionStorage.getItem('jobsuite.token') === null`)

	// The jobs page filtered by state.
	since = px.mark()
	b.navigate(base + "/ui/?status=cancelled")
	b.waitJS("the cancelled jobs", fmt.Sprintf(`document.querySelector('#jobs tr[data-job="%d"]') !== null && document.querySelector('#jobs tr[data-job="%d"]') === null && document.getElementById('state').value === 'cancelled'`, sleeper.JobID, slow.JobID))
	for _, r := range px.since(since) {
		if r.auth != "" || r.accessToken != "" {
			t.Errorf("after signing out, %s was sent with a token", r.path)
		}
	}
	b.navigate(base + "/ui/")
	b.waitJS("all jobs", fmt.Sprintf(`document.querySelectorAll('#jobs tr[data-job="%d"], #jobs tr[data-job="%d"]').length === 2`, sleeper.JobID, slow.JobID))
	b.screenshot("jobs.png")

	// Straight to the controller, with no client certificate: the page
	// loads, the API answers 401 and the page asks for a token. A viewer
	// token reads but may not cancel; an operator token may.
	viewerTok, operatorTok := createToken(t, c, "viewer"), createToken(t, c, "operator")
	other := c.submit(jobJSON(t, map[string]any{"name": "sleeper 2", "command": "sleep 60"}))
	b.navigate(c.base + "/ui/job?id=" + fmt.Sprint(other.JobID))
	b.waitJS("the sign-in prompt", `document.getElementById('banner').textContent.includes('Not signed in') && !document.getElementById('signin').hidden`)
	signIn := func(tok string) {
		b.click("#token")
		b.call("Input.insertText", map[string]any{"text": tok}, nil)
		b.click("#signin button[type=submit]")
		b.waitJS("signed in", `document.querySelector('.auth-state').textContent === 'signed in with a token'`)
	}
	signIn(viewerTok)
	b.waitJS("the job, read with a viewer token, its log live", `document.getElementById('job-status').textContent === 'running' &&
		document.getElementById('log-state').textContent === 'live' && document.getElementById('banner').hidden`)
	// A viewer gets no Cancel button (GET /whoami says the role), and the
	// controller refuses a viewer's cancel all the same.
	b.waitJS("no Cancel for a viewer", `document.getElementById('cancel').hidden && document.querySelector('.auth-who').textContent.endsWith('· viewer')`)
	refused := b.evalString(fmt.Sprintf(`import('/ui/app.js').then(m => m.api('DELETE', '/jobs/%d')).then(() => 'cancelled', e => e.message)`, other.JobID))
	if !strings.Contains(refused, "viewer") {
		t.Errorf("a viewer's cancel through the page's API calls: %q; want refused", refused)
	}
	b.screenshot("token-viewer-refused.png")
	if j := c.job(other.JobID); j.Status != "running" {
		t.Fatalf("job %d is %s after a viewer's cancel; want running", other.JobID, j.Status)
	}
	b.click(".auth button") // sign out
	b.waitJS("the sign-in prompt again", `!document.getElementById('signin').hidden && document.getElementById('banner').textContent.includes('Not signed in')`)
	signIn(operatorTok)
	b.click("#cancel")
	b.waitJS("the job cancelled with an operator token", `document.getElementById('job-status').textContent === 'cancelled' && document.getElementById('log-state').textContent.startsWith('ended: cancelled')`)
	b.screenshot("token-cancelled.png")

	// The agents page: drain agent-1.
	b.navigate(base + "/ui/agents") // through the proxy again: certificate, no token
	b.waitJS("agent-1 active", `document.querySelector('#agents tr[data-agent="agent-1"] .badge').textContent === 'active'`)
	b.click(`#agents tr[data-agent="agent-1"] button.drain`)
	b.waitJS("agent-1 draining", `document.querySelector('#agents tr[data-agent="agent-1"] .badge').textContent === 'draining'`)
	var agents []api.AgentInfo
	c.getJSON("/agents", &agents)
	if len(agents) != 1 || !agents[0].Draining {
		t.Errorf("agents after Drain: %+v; want agent-1 draining", agents)
	}
	// Below the agents, the controllers: a single controller is a
	// cluster of one, its leader.
	b.waitJS("the controller listed as leader", `document.querySelectorAll('#controllers tr[data-member]').length === 1 && document.querySelector('#controllers tr[data-member] .badge').textContent === 'leader'`)
	b.screenshot("agents.png")

	// The schedules page: a schedule listed, paused from its button.
	if code, body := c.do("POST", "/schedules", `{"name": "nightly", "cron": "0 3 * * *", "job": {"command": "backup.sh"}}`); code != http.StatusCreated {
		t.Fatalf("create a schedule: %d %s", code, body)
	}
	b.navigate(base + "/ui/schedules")
	b.waitJS("the schedule listed", `document.querySelector('#schedules tr[data-key="nightly"] code').textContent === '0 3 * * *'`)
	b.click(`#schedules tr[data-key="nightly"] button.link`)
	b.waitJS("the schedule paused", `document.querySelector('#schedules tr[data-key="nightly"] .badge').textContent === 'paused'`)
	var sv api.ScheduleView
	c.getJSON("/schedules/nightly", &sv)
	if !sv.Paused {
		t.Errorf("the schedule after Pause: %+v", sv)
	}
	b.screenshot("schedules.png")

	// A fan-out's page: the per-host table, each child linked (on
	// agent-1, drained above: it takes jobs again first).
	if code, body := c.do("POST", "/agents/agent-1/undrain", ""); code != http.StatusOK {
		t.Fatalf("undrain: %d %s", code, body)
	}
	fo := c.fanout(`{"command": "echo from $JOBSUITE_AGENT", "fanout": {"all": true}}`)
	child := fo.Children[0].JobID
	c.waitView(fo.JobID, "completed")
	b.navigate(base + fmt.Sprintf("/ui/job?id=%d", fo.JobID))
	b.waitJS("the per-host table", fmt.Sprintf(`!document.getElementById('hosts-section').hidden &&
		document.querySelector('#hosts tr[data-key="%d"] td').textContent === 'agent-1' &&
		document.querySelector('#hosts tr[data-key="%d"] .badge').textContent === 'completed' &&
		document.querySelector('#hosts tr[data-key="%d"] td:nth-child(4)').textContent === '0'`, child, child, child))
	b.screenshot("fanout.png")
	// The child's log WebSocket: the proxy swallows its first handshake,
	// which the page gives up on (after its openTimeout) and tries again.
	// Only then is the swallowed connection dropped: Chromium may hold the
	// retry until the first handshake's connection is gone (one
	// WebSocket per host connecting at a time), which left CI's page
	// "connecting…" for good while the proxy held it.
	release := px.stick(fmt.Sprintf("/ws/jobs/%d/logs", child))
	defer release()
	b.click(fmt.Sprintf(`#hosts tr[data-key="%d"] td:nth-child(2) a`, child))
	b.waitJS("the page to give up on the swallowed handshake", fmt.Sprintf(`location.search === '?id=%d' && (document.getElementById('log-state') || {}).textContent.startsWith('disconnected')`, child))
	release()
	b.waitJS("the child's page and log", fmt.Sprintf(`location.search === '?id=%d' && document.getElementById('log').textContent.includes('from agent-1')`, child))
	if p := px.last(1000); !strings.Contains(p, fmt.Sprintf("/ws/jobs/%d/logs (swallowed)", child)) {
		t.Errorf("the child's first log handshake was not swallowed; the proxy saw: %s", p)
	}

	if errs := b.failures(); len(errs) > 0 {
		t.Errorf("the browser reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// spkiHash is the base64 SHA-256 of the controller certificate's public
// key, as Chromium's --ignore-certificate-errors-spki-list takes it.
func spkiHash(t *testing.T, c *cluster) string {
	t.Helper()
	pemBytes, err := os.ReadFile(certs.CertFile(c.dir, "controller"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("the controller certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// createToken creates an API token of role with the operator certificate.
func createToken(t *testing.T, c *cluster, role string) string {
	t.Helper()
	code, body := c.do("POST", "/tokens", jobJSON(t, map[string]any{"role": role, "name": "ui-" + role}))
	if code != http.StatusCreated {
		t.Fatalf("POST /tokens: %d %s", code, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
		t.Fatalf("POST /tokens answered no token: %v %s", err, body)
	}
	return tok.Token
}

// checkANSI runs the page's ANSI renderer (ui/log.js) on chunks of
// terminal output: each piece is "<classes>text", pieces joined by "|".
func checkANSI(t *testing.T, b *browser) {
	t.Helper()
	tests := map[string]struct {
		chunks []string
		want   string
	}{
		"plain":                      {[]string{"hello\n"}, "hello\n"},
		"red, then reset":            {[]string{"\x1b[31mred\x1b[0m plain"}, "<a-fg1>red| plain"},
		"empty SGR resets":           {[]string{"\x1b[31ma\x1b[mb"}, "<a-fg1>a|b"},
		"bold bright green":          {[]string{"\x1b[1;92mok\x1b[22m!"}, "<a-fg10 a-b>ok|<a-fg10>!"},
		"bright white on red":        {[]string{"\x1b[41;97mx\x1b[49;39my"}, "<a-fg15 a-bg1>x|y"},
		"256 and true colours":       {[]string{"\x1b[38;5;9mx\x1b[38;5;200my\x1b[38;2;1;2;3mz"}, "<a-fg9>x|y|z"},
		"a sequence split in chunks": {[]string{"a\x1b", "[3", "1mred"}, "a|<a-fg1>red"},
		"cursor and erase dropped":   {[]string{"a\x1b[2Kb\x1b[1Gc"}, "a|b|c"},
		"a title dropped":            {[]string{"\x1b]0;title\x07text"}, "text"},
		"a hyperlink's text kept":    {[]string{"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"}, "link"},
		"CRLF is a newline":          {[]string{"a\r\nb"}, "a|\nb"},
		"CRLF split":                 {[]string{"a\r", "\nb"}, "a|\nb"},
		"a lone CR is a newline":     {[]string{"10%\r20%"}, "10%|\n|20%"},
		"bell and backspace dropped": {[]string{"a\x07b\x08c"}, "a|b|c"},
	}
	for name, tt := range tests {
		chunks, err := json.Marshal(tt.chunks)
		if err != nil {
			t.Fatal(err)
		}
		got := b.evalString(`(async () => {
			const { Ansi } = await import('/ui/log.js');
			const a = new Ansi(), out = [];
			for (const c of ` + string(chunks) + `) for (const [text, cls] of a.feed(c)) out.push(cls ? '<' + cls + '>' + text : text);
			return out.join('|');
		})()`)
		if got != tt.want {
			t.Errorf("ANSI %s: %q, want %q", name, got, tt.want)
		}
	}
}

// checkLogView feeds the page's LogView (ui/log.js) output and attempt
// messages and checks what it puts in the <pre>: "[t]" for a time
// element, "{label}" for a visible separator, text otherwise.
func checkLogView(t *testing.T, b *browser) {
	t.Helper()
	got := b.evalString(`(async () => {
		const { LogView, stamp } = await import('/ui/log.js');
		const pre = document.createElement('pre');
		document.body.append(pre);
		const v = new LogView(pre);
		const b64 = (s) => btoa(s);
		const t1 = '2025-07-01T12:00:01.5Z', t2 = '2025-07-01T12:00:02Z';
		v.marker({ type: 'attempt', attempt: 1, agent: 'w1', attempts: 1 });
		v.write({ type: 'output', offset: 0, data: b64('a\nb'), time: t1 });
		v.write({ type: 'output', offset: 3, data: b64('c\nd\n'), time: t2 });
		v.marker({ type: 'attempt', attempt: 2, agent: 'w2', attempts: 2 });
		v.marker({ type: 'attempt', attempt: 2, agent: 'w2', attempts: 2 }); // again after a reconnect
		v.write({ type: 'output', offset: 7, data: b64('e\n') }); // stored before times
		v.write({ type: 'output', offset: 9, data: b64('') , time: t2 });
		v.end();
		const out = [...pre.children].map((e) => e.classList.contains('ts') ? '[' + (e.dataset.t === stamp(t1) ? 't1' : e.dataset.t === stamp(t2) ? 't2' : e.dataset.t) + ']'
			: e.classList.contains('attempt') ? '{' + e.dataset.label + (getComputedStyle(e).display === 'none' ? ' hidden' : '') + '}' : e.textContent).join('');
		pre.remove();
		return out;
	})()`)
	if want := "{Attempt 1 · w1}[t1]a\nbc\n[t2]d\n{Attempt 2 · w2}[–]e\n"; got != want {
		t.Errorf("LogView: %q, want %q", got, want)
	}
}

// logAtBottom is true while the log view shows its last line.
const logAtBottom = `(() => { const l = document.getElementById('log'); return l.scrollHeight > l.clientHeight && l.scrollHeight - l.scrollTop - l.clientHeight < 8; })()`

func jobJSON(t *testing.T, v map[string]any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// findChromium returns $JOBSUITE_CHROMIUM or a Chromium on PATH, or "".
func findChromium() string {
	if p := os.Getenv("JOBSUITE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactsDir is where the browser test saves screenshots.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("JOBSUITE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// uiProxy is a plain-HTTP reverse proxy to the controller that presents
// an operator certificate, so a browser without one can use the
// dashboard in tests. It records the token each request carried and
// strips it.
type uiProxy struct {
	url string
	mu  sync.Mutex
	log []proxied
	// swallow holds paths whose next request the proxy takes and does
	// not answer — a stuck handshake — until the browser closes it or the
	// test releases it (release).
	swallow map[string]chan struct{}
}

type proxied struct {
	path, auth, accessToken string
}

func startUIProxy(t *testing.T, c *cluster) *uiProxy {
	t.Helper()
	pool, cert, err := files(c.dir, "operator").Load()
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(c.base)
	if err != nil {
		t.Fatal(err)
	}
	p := &uiProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Keep the browser's Host: the WebSocket's origin check
			// compares it with Origin.
			pr.Out.Host = pr.In.Host
			q := pr.Out.URL.Query()
			rec := proxied{path: pr.In.URL.Path, auth: pr.In.Header.Get("Authorization"), accessToken: q.Get("access_token")}
			pr.Out.Header.Del("Authorization")
			q.Del("access_token")
			pr.Out.URL.RawQuery = q.Encode()
			p.mu.Lock()
			p.log = append(p.log, rec)
			p.mu.Unlock()
		},
		Transport: &http.Transport{TLSClientConfig: certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1")},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		release, stuck := p.swallow[r.URL.Path]
		delete(p.swallow, r.URL.Path)
		if stuck {
			p.log = append(p.log, proxied{path: r.URL.Path + " (swallowed)"})
		}
		p.mu.Unlock()
		if stuck {
			select {
			case <-r.Context().Done():
			case <-release:
				// Drop the connection: a browser that still counts the
				// handshake as pending (Chromium lets one WebSocket per
				// host be connecting at a time) lets the next one go.
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						conn.Close()
					}
				}
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// stick makes the proxy swallow the next request for path; release
// drops it.
func (p *uiProxy) stick(path string) (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.swallow == nil {
		p.swallow = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	p.swallow[path] = ch
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// last lists the paths of the newest n requests proxied.
func (p *uiProxy) last(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var paths []string
	for _, r := range p.log[max(0, len(p.log)-n):] {
		paths = append(paths, r.path)
	}
	return strings.Join(paths, " ")
}

// mark and since return the requests proxied after a point.
func (p *uiProxy) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.log)
}

func (p *uiProxy) since(n int) []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxied(nil), p.log[n:]...)
}

// browser is headless Chromium driven over the Chrome DevTools Protocol
// on one page: a small client on gorilla/websocket (a dependency
// already), enough for navigating, evaluating JavaScript, clicking with
// the mouse, typing, and screenshots.
type browser struct {
	t    *testing.T
	conn *websocket.Conn
	done chan struct{}

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	next    int64
	calls   map[int64]chan cdpMessage
	errs    []string // exceptions and policy violations
	dialogT []string // texts of the dialogs accepted

	// diag, if set, adds to a waitJS timeout's report (the requests a
	// proxy saw, say).
	diag func() string
}

type cdpMessage struct {
	ID     int64           `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

func startBrowser(t *testing.T, chromium string, flags ...string) *browser {
	t.Helper()
	profile := t.TempDir()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check", "--disable-crash-reporter",
		"--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
		"--user-data-dir=" + profile, "--window-size=1280,900",
	}, flags...)
	cmd := exec.Command(chromium, append(args, "about:blank")...)
	// Everything Chromium writes (crash reports, caches) stays in the
	// test's directory.
	cmd.Env = append(os.Environ(), "HOME="+profile, "XDG_CONFIG_HOME="+filepath.Join(profile, "config"), "XDG_CACHE_HOME="+filepath.Join(profile, "cache"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Chromium's helpers die with it
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})

	// The first line naming the DevTools WebSocket; the rest of stderr
	// is kept for an error message.
	found := make(chan string, 1)
	var tail []string
	var tailMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if m := devtoolsRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
				continue
			}
			tailMu.Lock()
			if len(tail) < 40 {
				tail = append(tail, line)
			}
			tailMu.Unlock()
		}
	}()
	var browserURL string
	select {
	case browserURL = <-found:
	case <-exited:
		tailMu.Lock()
		defer tailMu.Unlock()
		t.Fatalf("chromium exited before it listened:\n%s", strings.Join(tail, "\n"))
	case <-time.After(waitLimit):
		tailMu.Lock()
		defer tailMu.Unlock()
		t.Fatalf("chromium did not open its DevTools port within %v:\n%s", waitLimit, strings.Join(tail, "\n"))
	}

	// The page target opened with about:blank.
	u, err := url.Parse(browserURL)
	if err != nil {
		t.Fatal(err)
	}
	var pageURL string
	deadline := time.Now().Add(waitLimit)
	for pageURL == "" {
		var targets []struct {
			Type string `json:"type"`
			WS   string `json:"webSocketDebuggerUrl"`
		}
		if resp, err := http.Get("http://" + u.Host + "/json/list"); err == nil {
			json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WS != "" {
				pageURL = tg.WS
				break
			}
		}
		if pageURL == "" {
			if time.Now().After(deadline) {
				t.Fatal("chromium shows no page target")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1 << 20}
	conn, _, err := d.Dial(pageURL, nil)
	if err != nil {
		t.Fatalf("connecting to chromium's page: %v", err)
	}
	conn.SetReadLimit(64 << 20)
	b := &browser{t: t, conn: conn, done: make(chan struct{}), calls: map[int64]chan cdpMessage{}}
	go b.read()
	t.Cleanup(func() {
		conn.Close()
		<-b.done
	})
	for _, m := range []string{"Page.enable", "Runtime.enable", "Log.enable"} {
		b.call(m, nil, nil)
	}
	return b
}

// read delivers replies and handles events until the connection ends.
func (b *browser) read() {
	defer close(b.done)
	for {
		var m cdpMessage
		if err := b.conn.ReadJSON(&m); err != nil {
			b.mu.Lock()
			for id, ch := range b.calls {
				close(ch)
				delete(b.calls, id)
			}
			b.mu.Unlock()
			return
		}
		if m.ID != 0 {
			b.mu.Lock()
			ch := b.calls[m.ID]
			delete(b.calls, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		b.event(m)
	}
}

func (b *browser) event(m cdpMessage) {
	switch m.Method {
	case "Page.javascriptDialogOpening":
		var p struct {
			Message string `json:"message"`
		}
		json.Unmarshal(m.Params, &p)
		b.mu.Lock()
		b.dialogT = append(b.dialogT, p.Message)
		b.mu.Unlock()
		// Answer without waiting: this goroutine reads the reply.
		go b.send("Page.handleJavaScriptDialog", map[string]any{"accept": true})
	case "Runtime.exceptionThrown":
		var p struct {
			Details struct {
				Text      string `json:"text"`
				URL       string `json:"url"`
				Line      int    `json:"lineNumber"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		json.Unmarshal(m.Params, &p)
		b.fail(fmt.Sprintf("exception: %s %s (%s:%d)", p.Details.Text, p.Details.Exception.Description, p.Details.URL, p.Details.Line))
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		json.Unmarshal(m.Params, &p)
		var parts []string
		for _, a := range p.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		if p.Type == "error" {
			b.fail("console.error: " + strings.Join(parts, " "))
		}
	case "Log.entryAdded":
		var p struct {
			Entry struct {
				Level  string `json:"level"`
				Source string `json:"source"`
				Text   string `json:"text"`
				URL    string `json:"url"`
			} `json:"entry"`
		}
		json.Unmarshal(m.Params, &p)
		if p.Entry.Level == "error" && (p.Entry.Source == "security" || strings.Contains(p.Entry.Text, "Content Security Policy")) {
			b.fail(fmt.Sprintf("%s: %s %s", p.Entry.Source, p.Entry.Text, p.Entry.URL))
		}
	}
}

func (b *browser) fail(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errs = append(b.errs, msg)
}

func (b *browser) failures() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

func (b *browser) dialogs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogT...)
}

// send calls method and waits for its reply.
func (b *browser) send(method string, params any) (json.RawMessage, error) {
	ch := make(chan cdpMessage, 1)
	b.mu.Lock()
	b.next++
	id := b.next
	b.calls[id] = ch
	b.mu.Unlock()
	if params == nil {
		params = struct{}{}
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	b.wmu.Lock()
	err = b.conn.WriteJSON(cdpMessage{ID: id, Method: method, Params: raw})
	b.wmu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: the browser connection closed", method)
		}
		if m.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		return m.Result, nil
	case <-time.After(waitLimit):
		return nil, fmt.Errorf("%s: no answer within %v", method, waitLimit)
	}
}

// call is send that fails the test on an error and decodes into out.
func (b *browser) call(method string, params, out any) {
	b.t.Helper()
	res, err := b.send(method, params)
	if err != nil {
		b.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(res, out); err != nil {
			b.t.Fatalf("%s: %v", method, err)
		}
	}
}

// eval evaluates a JavaScript expression in the page (awaiting a
// promise) and returns its JSON value.
func (b *browser) eval(expr string) (json.RawMessage, error) {
	res, err := b.send("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return nil, err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, err
	}
	if r.Exception != nil {
		return nil, errors.New(r.Exception.Text + " " + r.Exception.Exception.Description)
	}
	return r.Result.Value, nil
}

func (b *browser) evalBool(expr string) bool {
	b.t.Helper()
	v, err := b.eval(expr)
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return string(v) == "true"
}

func (b *browser) evalString(expr string) string {
	b.t.Helper()
	v, err := b.eval(expr)
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	var s string
	json.Unmarshal(v, &s)
	return s
}

// waitJS waits up to 30s for expr to be true; on a timeout it saves a
// screenshot and logs the page's text.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(waitLimit)
	var lastErr error
	for {
		v, err := b.eval(expr)
		if err == nil && string(v) == "true" {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The log's state line first: a report cut short keeps it.
	text, _ := b.eval(`document.body ? location.href + '\nlog state: ' + (document.getElementById('log-state') || {}).textContent + '\n' + document.body.innerText.slice(0, 3000) : location.href`)
	var s string
	json.Unmarshal(text, &s)
	if b.diag != nil {
		s = b.diag() + "\n" + s
	}
	b.screenshot("failure.png")
	b.t.Fatalf("timed out waiting for %s (%s; last error %v); errors %q; the page:\n%s", what, expr, lastErr, b.failures(), s)
}

// navigate loads url and waits for the page to load.
func (b *browser) navigate(url string) {
	b.t.Helper()
	var r struct {
		ErrorText string `json:"errorText"`
	}
	b.call("Page.navigate", map[string]any{"url": url}, &r)
	if r.ErrorText != "" {
		b.t.Fatalf("navigating to %s: %s", url, r.ErrorText)
	}
	b.waitJS("the page to load", fmt.Sprintf(`location.href === %q && document.readyState === 'complete'`, url))
}

// center scrolls the element selector names into view and returns the
// middle of it in viewport coordinates.
func (b *browser) center(selector string) [2]float64 {
	b.t.Helper()
	b.waitJS(selector+" to be visible", fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.getClientRects().length > 0; })()`, selector))
	// The element must be what the browser finds at its middle: a page
	// still rendering (a poll's answer adding rows above it) may have
	// moved it, or covered it, since it became visible — a click there
	// would miss (TestUIBrowser's timestamps button did, once).
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();
		const x = r.left + r.width / 2, y = r.top + r.height / 2, hit = document.elementFromPoint(x, y);
		return hit && (hit === e || e.contains(hit)) ? [x, y] : null; })()`, selector)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := b.eval(expr)
		if err != nil {
			b.t.Fatalf("locating %s: %v", selector, err)
		}
		var xy *[2]float64
		if err := json.Unmarshal(v, &xy); err != nil {
			b.t.Fatalf("locating %s: %v", selector, err)
		}
		if xy != nil {
			return *xy
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s is visible but something else is at its middle", selector)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// click clicks the middle of the element selector names with the mouse.
func (b *browser) click(selector string) {
	b.t.Helper()
	xy := b.center(selector)
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		p := map[string]any{"type": typ, "x": xy[0], "y": xy[1]}
		if typ != "mouseMoved" {
			p["button"], p["clickCount"] = "left", 1
		}
		// A click that opens a dialog answers only once the dialog is
		// handled, which event() does.
		b.call("Input.dispatchMouseEvent", p, nil)
	}
}

// wheel turns the mouse wheel over the element selector names.
func (b *browser) wheel(selector string, deltaY float64) {
	b.t.Helper()
	xy := b.center(selector)
	b.call("Input.dispatchMouseEvent", map[string]any{"type": "mouseWheel", "x": xy[0], "y": xy[1], "deltaX": 0, "deltaY": deltaY}, nil)
}

// screenshot saves the whole page as a PNG test artifact.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	params := map[string]any{"format": "png"}
	var metrics struct {
		Size struct {
			Width  float64 `json:"width"`
			Height float64 `json:"height"`
		} `json:"cssContentSize"`
	}
	if res, err := b.send("Page.getLayoutMetrics", nil); err == nil && json.Unmarshal(res, &metrics) == nil && metrics.Size.Height > 0 {
		params["captureBeyondViewport"] = true
		params["clip"] = map[string]any{"x": 0, "y": 0, "width": metrics.Size.Width, "height": metrics.Size.Height, "scale": 1}
	}
	res, err := b.send("Page.captureScreenshot", params)
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	var r struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	file := filepath.Join(artifactsDir(b.t), strings.ReplaceAll(b.t.Name(), "/", "_")+"-"+name)
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot: %s", file)
}
