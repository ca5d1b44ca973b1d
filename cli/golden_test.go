package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/certs"
)

// updateGolden rewrites the golden files: go test ./cli/ -run Golden -update
var updateGolden = flag.Bool("update", false, "rewrite cli/testdata/golden/*.txt with the commands' current output")

// goldenDir holds one file per golden case: what a user sees when running
// the commands, from a fake controller answering fixed JSON. It is
// absolute: the tests move to temporary directories.
var goldenDir = func() string {
	dir, err := filepath.Abs(filepath.Join("testdata", "golden"))
	if err != nil {
		panic(err)
	}
	return dir
}()

// goldenNow is the fixed clock of the golden tests: relative times ("3m
// ago") are measured from it.
var goldenNow = time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)

// goldenAgo is a fixed time d before goldenNow.
func goldenAgo(d time.Duration) time.Time { return goldenNow.Add(-d) }

// goldenTimes are every timestamp the golden controller answers, so the
// outputs can show them in UTC whatever the local time zone is.
var goldenTimes []time.Time

// gt records and returns t, a timestamp of the golden fixtures.
func gt(d time.Duration) time.Time {
	t := goldenAgo(d)
	goldenTimes = append(goldenTimes, t)
	return t
}

func intPtr(n int) *int { return &n }

// goldenAttempt is one attempt of a golden job, as the controller's
// AttemptView sends it.
func goldenAttempt(n int, agent string, started, finished time.Time, outcome string, exit *int, signal, errText string, dur float64) map[string]any {
	a := map[string]any{"number": n, "agent": agent, "dispatched_at": started, "started_at": started, "exit_code": exit}
	if !finished.IsZero() {
		a["finished_at"] = finished
	}
	if outcome != "" {
		a["outcome"] = outcome
	}
	if signal != "" {
		a["signal"] = signal
	}
	if errText != "" {
		a["error"] = errText
	}
	if dur > 0 {
		a["duration"] = dur
	}
	return a
}

// goldenJob is a job as the controller's JobView sends it; set overrides
// the defaults.
func goldenJob(id uint64, name, command, status string, created time.Time, set map[string]any) map[string]any {
	j := map[string]any{
		"job_id": id, "name": name, "command": command, "params": "",
		"priority": "mid", "priority_value": 50, "status": status, "timeout": 0,
		"retries": 0, "max_retries": 0, "logs": true, "cancellable": true,
		"created_at": created, "exit_code": nil, "attempt": 0, "attempts": []any{}, "log_bytes": 0,
	}
	for k, v := range set {
		j[k] = v
	}
	if a, ok := j["attempts"].([]any); ok {
		j["attempt"] = len(a)
	}
	return j
}

// goldenJobs are the jobs of the golden controller, by ID.
var goldenJobs = func() map[uint64]map[string]any {
	jobs := map[uint64]map[string]any{}
	add := func(j map[string]any) { jobs[j["job_id"].(uint64)] = j }

	// 5: cancelled before it ran.
	add(goldenJob(5, "cleanup", "rm -rf /tmp/cache", "cancelled", gt(26*time.Hour), map[string]any{
		"finished_at": gt(25 * time.Hour), "reason": "cancelled before it ran",
	}))
	// 6: running, cancelled by 'jobsuite cancel' (202).
	s6 := gt(50 * time.Second)
	add(goldenJob(6, "soak", "./soak.sh", "running", gt(time.Minute), map[string]any{
		"started_at": s6, "attempts": []any{goldenAttempt(1, "worker-1", s6, time.Time{}, "", nil, "", "", 0)},
	}))
	// 7: completed, with labels, timeout, dir and output.
	s7, f7 := gt(5*24*time.Hour-2*time.Second), gt(5*24*time.Hour-95*time.Second)
	add(goldenJob(7, "nightly-backup", "pg_dump -Fc app", "completed", gt(5*24*time.Hour), map[string]any{
		"params": "-f /backup/app.dump", "priority": "low", "priority_value": 25, "timeout": 3600.0,
		"labels": map[string]string{"zone": "eu-1", "disk": "ssd"}, "dir": "/srv/backup",
		"started_at": s7, "finished_at": f7, "duration": 93.0, "exit_code": 0, "log_bytes": 2048,
		"reason":   "attempt 1 completed: exit code 0",
		"attempts": []any{goldenAttempt(1, "worker-2", s7, f7, "completed", intPtr(0), "", "", 93.0)},
	}))
	// 12: failed with exit code 3; its stdout and stderr kept apart.
	s12, f12 := gt(3*time.Minute-time.Second), gt(3*time.Minute-2500*time.Millisecond)
	add(goldenJob(12, "build", "make", "failed", gt(3*time.Minute), map[string]any{
		"params": "test", "priority": "high", "priority_value": 75, "output": "split",
		"reason":     "attempt 1 failed: exit code 3",
		"started_at": s12, "finished_at": f12, "duration": 1.5, "exit_code": 3, "log_bytes": 15,
		"attempts": []any{goldenAttempt(1, "worker-1", s12, f12, "failed", intPtr(3), "", "", 1.5)},
	}))
	// 13: timed out, killed by SIGTERM.
	s13, f13 := gt(3*time.Hour-time.Second), gt(3*time.Hour-61*time.Second)
	add(goldenJob(13, "slow", "sleep 600", "timeout", gt(3*time.Hour), map[string]any{
		"timeout": 60.0, "reason": "attempt 1 timeout: killed by SIGTERM",
		"started_at": s13, "finished_at": f13, "duration": 60.0, "exit_code": 143,
		"attempts": []any{goldenAttempt(1, "worker-1", s13, f13, "timeout", intPtr(143), "SIGTERM", "", 60.0)},
	}))
	// 14: failed once, waiting to retry.
	s14, f14 := gt(2*time.Second), gt(time.Second)
	add(goldenJob(14, "flaky-test", "go test ./...", "waiting", gt(46*time.Second), map[string]any{
		"retries": 3, "max_retries": 3, "reason": "attempt 1 failed (exit code 1); retry 1 of 3 in 4s",
		"retry_at": goldenNow.Add(3 * time.Second), "started_at": s14, "log_bytes": 812,
		"attempts": []any{goldenAttempt(1, "worker-2", s14, f14, "failed", intPtr(1), "", "", 0.8)},
	}))
	goldenTimes = append(goldenTimes, goldenNow.Add(3*time.Second))
	// 15: completed on its third attempt.
	s15a, f15a := gt(2*time.Hour), gt(2*time.Hour-20*time.Second)
	s15b, f15b := gt(2*time.Hour-25*time.Second), gt(2*time.Hour-85*time.Second)
	s15c, f15c := gt(2*time.Hour-95*time.Second), gt(2*time.Hour-107*time.Second)
	add(goldenJob(15, "integration", "./ci/integration.sh", "completed", gt(2*time.Hour+time.Second), map[string]any{
		"timeout": 60.0, "retries": 2, "max_retries": 2, "reason": "attempt 3 completed: exit code 0",
		"started_at": s15a, "finished_at": f15c, "duration": 107.0, "exit_code": 0, "log_bytes": 48213,
		"attempts": []any{
			goldenAttempt(1, "worker-2", s15a, f15a, "lost", nil, "", "agent worker-2 stopped sending heartbeats", 0),
			goldenAttempt(2, "worker-1", s15b, f15b, "timeout", intPtr(143), "SIGTERM", "", 60.0),
			goldenAttempt(3, "worker-1", s15c, f15c, "completed", intPtr(0), "", "", 12.25),
		},
	}))
	// 16: failed, killed by a signal.
	s16, f16 := gt(10*time.Minute), gt(10*time.Minute-4200*time.Millisecond)
	add(goldenJob(16, "render", "blender -b scene.blend -a", "failed", gt(10*time.Minute+time.Second), map[string]any{
		"reason":     "attempt 1 failed: killed by SIGKILL",
		"started_at": s16, "finished_at": f16, "duration": 4.2, "exit_code": 137, "log_bytes": 300,
		"attempts": []any{goldenAttempt(1, "gpu-7f3a9c", s16, f16, "failed", intPtr(137), "SIGKILL", "", 4.2)},
	}))
	// 20: running, a long name and a numeric priority; its agent answers -live.
	s20 := gt(2*time.Minute + 13*time.Second)
	add(goldenJob(20, "train-model-resnet50-imagenet-full-sweep-lr-0.1-batch-256", "python train.py", "running", gt(12*time.Minute), map[string]any{
		"params": "--epochs 90", "priority": 80.0, "priority_value": 80,
		"labels": map[string]string{"gpu": "true"}, "started_at": s20, "log_bytes": 1258291,
		"attempts": []any{goldenAttempt(1, "gpu-7f3a9c", s20, time.Time{}, "", nil, "", "", 0)},
		"live": map[string]any{
			"stale": false, "agent": "gpu-7f3a9c", "attempt": 1, "pid": 48121, "elapsed": 133.0,
			"user_cpu": 62.0, "system_cpu": 3.5, "rss": 222713446, "processes": 3,
			"output_bytes": 1258291, "last_line": "[ 42%] epoch 38/90\tloss 0.913\x1b[0m",
		},
	}))
	// 21: queued, no agent carries its labels.
	add(goldenJob(21, "deploy", "make -C /srv/app deploy", "queued", gt(500*time.Millisecond), map[string]any{
		"priority": "high", "priority_value": 75, "labels": map[string]string{"gpu": "yes", "zone": "us-2"},
		"reason": "no connected agent matches labels gpu=yes,zone=us-2",
	}))
	// 23: running on an agent that has gone away; its live part is stale;
	// a cancel is pending.
	s23 := gt(40 * time.Minute)
	add(goldenJob(23, "", "tail -f /var/log/syslog", "running", gt(41*time.Minute), map[string]any{
		"cancel_requested": true, "reason": "cancel requested; waiting for the agent to stop it",
		"started_at": s23, "log_bytes": 700,
		"attempts": []any{goldenAttempt(1, "worker-3", s23, time.Time{}, "", nil, "", "", 0)},
		"live":     map[string]any{"stale": true, "agent": "worker-3", "attempt": 1, "error": "agent worker-3 is not connected"},
	}))
	return jobs
}()

// goldenAgents is the answer of GET /agents.
var goldenAgents = []any{
	map[string]any{
		"name": "worker-1", "labels": map[string]string{"gpu": "yes", "zone": "eu-1"}, "slots": 4, "running": 1,
		"transport": "quic", "address": "10.0.0.11:50123", "version": "0.1.0",
		"connected_at": gt(2 * time.Hour), "last_heartbeat": gt(time.Second), "draining": false,
	},
	map[string]any{
		"name": "worker-2", "labels": map[string]string{}, "slots": 4, "running": 2,
		"transport": "tcp", "address": "10.0.0.12:41000", "version": "0.1.0",
		"connected_at": gt(5 * 24 * time.Hour), "last_heartbeat": gt(200 * time.Millisecond), "draining": true,
	},
	map[string]any{
		"name": "gpu-7f3a9c", "labels": map[string]string{"gpu": "true", "team": "ml"}, "slots": 8, "running": 8,
		"transport": "quic", "address": "10.0.1.7:50200", "version": "0.1.0",
		"connected_at": gt(26 * time.Hour), "last_heartbeat": gt(3 * time.Second), "draining": false,
	},
}

// goldenAudit is the answer of GET /audit, newest first.
var goldenAudit = []any{
	map[string]any{"id": 9, "time": gt(2 * time.Minute), "who": "alice", "role": "operator", "via": "certificate", "credential": "1f", "action": "drain", "target": "agent worker-2"},
	map[string]any{"id": 8, "time": gt(3 * time.Minute), "who": "ci", "role": "operator", "via": "token", "credential": "9a8b", "action": "submit", "target": "job 12"},
	map[string]any{"id": 7, "time": gt(time.Hour), "who": "alice", "role": "operator", "via": "certificate", "credential": "1f", "action": "resubmit", "target": "job 11", "detail": "a copy of job 7"},
}

// goldenController answers the API routes the golden cases use with the
// fixed jobs and agents above.
type goldenController struct {
	mu   sync.Mutex
	keys map[string]bool // idempotency keys already submitted
	next uint64          // ID of the next job submitted
}

func (g *goldenController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		fakeError(w, http.StatusUnauthorized, "a client certificate is required")
		return
	}
	withoutLive := func(j map[string]any) map[string]any {
		out := make(map[string]any, len(j))
		for k, v := range j {
			if k != "live" {
				out[k] = v
			}
		}
		return out
	}
	var id uint64
	n, err := fmt.Sscanf(r.URL.Path, "/jobs/%d", &id)
	isJob := err == nil && n == 1 && r.URL.Path == fmt.Sprintf("/jobs/%d", id)
	switch {
	case r.Method == "GET" && r.URL.Path == "/jobs":
		var list []any
		for _, j := range goldenJobs {
			if s := r.URL.Query().Get("status"); s != "" && j["status"] != s {
				continue
			}
			list = append(list, withoutLive(j))
		}
		// Newest first, like the controller.
		sort.Slice(list, func(a, b int) bool {
			return list[a].(map[string]any)["job_id"].(uint64) > list[b].(map[string]any)["job_id"].(uint64)
		})
		if r.URL.Query().Get("limit") == "3" {
			list = list[:3]
			w.Header().Set("X-Next-Cursor", "eyJpZCI6MTN9")
		}
		if list == nil {
			list = []any{}
		}
		fakeJSON(w, http.StatusOK, list)
	case r.Method == "POST" && r.URL.Path == "/jobs":
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			fakeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
			return
		}
		g.mu.Lock()
		key, _ := body["idempotency_key"].(string)
		repeat := key != "" && g.keys[key]
		if key != "" {
			g.keys[key] = true
		}
		if !repeat {
			g.next++
		}
		jid := g.next
		g.mu.Unlock()
		name, _ := body["name"].(string)
		j := goldenJob(jid, name, body["command"].(string), "queued", goldenNow, map[string]any{"reason": "waiting for a free slot"})
		if p, ok := body["priority"]; ok {
			j["priority"] = p
		}
		if repeat {
			j["status"], j["reason"] = "running", ""
			fakeJSON(w, http.StatusOK, j)
			return
		}
		fakeJSON(w, http.StatusCreated, j)
	case isJob && goldenJobs[id] == nil:
		fakeError(w, http.StatusNotFound, fmt.Sprintf("no job with id %d", id), "job_id", fmt.Sprint(id))
	case isJob && r.Method == "GET":
		j := goldenJobs[id]
		switch {
		case r.URL.Query().Get("live") == "":
			j = withoutLive(j)
		case j["live"] == nil && id == 5:
			// An older controller, without live parts.
		case j["live"] == nil:
			j = withoutLive(j)
			j["live"] = map[string]any{"stale": true, "error": "the job is not running"}
		}
		fakeJSON(w, http.StatusOK, j)
	case isJob && r.Method == "DELETE":
		j := withoutLive(goldenJobs[id])
		switch j["status"] {
		case "queued", "waiting":
			j["status"] = "cancelled"
			fakeJSON(w, http.StatusOK, j)
		case "running":
			j["cancel_requested"] = true
			fakeJSON(w, http.StatusAccepted, j)
		default:
			fakeError(w, http.StatusConflict, "job already finished; only queued, waiting or running jobs can be cancelled", "status", j["status"].(string))
		}
	case r.Method == "GET" && r.URL.Path == "/agents":
		fakeJSON(w, http.StatusOK, goldenAgents)
	case r.Method == "POST" && r.URL.Path == "/jobs/resubmit":
		var body struct {
			JobID uint64 `json:"job_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || goldenJobs[body.JobID] == nil {
			fakeError(w, http.StatusNotFound, fmt.Sprintf("no job with id %d", body.JobID), "job_id", fmt.Sprint(body.JobID))
			return
		}
		g.mu.Lock()
		g.next++
		jid := g.next
		g.mu.Unlock()
		orig := goldenJobs[body.JobID]
		j := goldenJob(jid, orig["name"].(string), orig["command"].(string), "queued", goldenNow, map[string]any{
			"priority": orig["priority"], "priority_value": orig["priority_value"], "labels": orig["labels"], "reason": "waiting for a free slot",
		})
		if body.JobID == 21 {
			j["reason"] = orig["reason"]
		}
		fakeJSON(w, http.StatusCreated, j)
	case r.Method == "POST" && strings.HasPrefix(r.URL.Path, "/agents/") && strings.HasSuffix(r.URL.Path, "/undrain"):
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/agents/"), "/undrain")
		for _, a := range goldenAgents {
			if a := a.(map[string]any); a["name"] == name {
				out := map[string]any{}
				for k, v := range a {
					out[k] = v
				}
				out["draining"] = false
				fakeJSON(w, http.StatusOK, out)
				return
			}
		}
		fakeError(w, http.StatusNotFound, "no connected agent named "+strconv.Quote(name), "field", "name")
	case r.Method == "GET" && r.URL.Path == "/audit":
		entries := goldenAudit
		if r.URL.Query().Get("before") == "8" {
			entries = goldenAudit[2:]
		} else if r.URL.Query().Get("limit") == "2" {
			entries = goldenAudit[:2]
			w.Header().Set("X-Next-Before", "8")
		}
		fakeJSON(w, http.StatusOK, entries)
	default:
		fakeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	}
}

// goldenCase is one golden file: the commands run, in order, each with
// its arguments after "jobsuite".
type goldenCase [][]string

// one is a golden case of a single command.
func one(args ...string) goldenCase { return goldenCase{args} }

// goldenCases are the commands whose human output is reviewed in
// testdata/golden, by file name (without .txt).
var goldenCases = map[string]goldenCase{
	"version":           one("version"),
	"version-flag":      one("-version"),
	"list":              one("list"),
	"list-more":         one("list", "-limit", "3"),
	"list-empty":        one("list", "-status", "dispatched"),
	"status":            one("status", "7"),
	"status-failed":     one("status", "12"),
	"status-attempts":   one("status", "15"),
	"status-retrying":   one("status", "14"),
	"status-signal":     one("status", "16"),
	"status-timeout":    one("status", "13"),
	"status-queued":     one("status", "21"),
	"status-unknown":    one("status", "99"),
	"status-live":       one("status", "-live", "20"),
	"status-live-stale": one("status", "-live", "23"),
	"status-live-done":  one("status", "-live", "7"),
	"status-live-old":   one("status", "-live", "5"),
	"agents":            one("agents"),
	"wait":              one("wait", "7", "12", "13", "5"),
	"wait-one":          one("wait", "7"),
	"wait-unknown":      one("wait", "7", "99"),
	"submit":            {{"submit", "--", "make", "test"}, {"submit", "-priority", "high", "-name", "deploy", "--", "make -C /srv/app deploy"}, {"submit", "-priority", "80", "--", "python train.py"}},
	"submit-idempotent": {
		{"submit", "-idempotency-key", "deploy-42", "--", "make deploy"},
		{"submit", "-idempotency-key", "deploy-42", "--", "make deploy"},
	},
	"cancel":       one("cancel", "21", "6", "7"),
	"cancel-usage": one("cancel", "abc"),

	// The operator's control room.
	"resubmit":       {{"resubmit", "12"}, {"resubmit", "21"}, {"resubmit", "-q", "7"}, {"resubmit", "99"}},
	"agents-undrain": {{"agents", "undrain", "worker-2"}, {"agents", "undrain", "nobody"}},
	"audit":          one("audit"),
	"audit-pages":    {{"audit", "-limit", "2"}, {"audit", "-limit", "2", "-before", "8"}},

	// Mistakes a new user makes.
	"unknown-command": {{"sumbit", "--", "make"}, {"lsit"}, {"agents", "dran", "worker-1"}, {"xyzzy"}},
	"unknown-flag":    one("status", "-bogus", "7"),
	"help-command":    one("help", "version"),
}

// TestGolden runs each golden case against a fake controller with a
// fixed clock and compares what the commands print with
// testdata/golden/NAME.txt.
func TestGolden(t *testing.T) {
	ctl := &goldenController{}
	pki := newTestPKI(t)
	pool, err := certs.LoadPool(pki.ca())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(pki.ctlCert, pki.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(ctl)
	srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	goldenEnv(t)
	t.Setenv(envAddr, srv.URL)
	t.Setenv(envCACert, pki.ca())
	t.Setenv(envClientCert, pki.opCert)
	t.Setenv(envClientKey, pki.opKey)

	// Addresses and paths that change from run to run.
	replacer := strings.NewReplacer(srv.URL, "https://127.0.0.1:PORT", pki.dir, "PKI")
	names := make([]string, 0, len(goldenCases))
	for name := range goldenCases {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			ctl.mu.Lock() // each case starts with job 31 and no keys
			ctl.keys, ctl.next = map[string]bool{}, 30
			ctl.mu.Unlock()
			var out strings.Builder
			for _, args := range goldenCases[name] {
				out.WriteString(runGolden(args))
			}
			checkGolden(t, name, replacer.Replace(out.String()))
		})
	}
}

// TestGoldenHelp compares 'jobsuite -h' and every command's -h with
// testdata/golden/help*.txt, so that help text changes are reviewed.
func TestGoldenHelp(t *testing.T) {
	goldenEnv(t)
	m, _, _ := clientTestMeta()
	names := []string{""}
	seen := map[string]bool{}
	for name := range commands(m) {
		// Parents without a command of their own ("tls", "token") list
		// their subcommands.
		words := strings.Fields(name)
		for i := 1; i <= len(words); i++ {
			if n := strings.Join(words[:i], " "); !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	for _, name := range names {
		file := "help"
		if name != "" {
			file += "-" + strings.ReplaceAll(name, " ", "-")
		}
		t.Run(file, func(t *testing.T) {
			args := append(strings.Fields(name), "-h")
			checkGolden(t, file, runGolden(args))
		})
	}
}

// goldenEnv makes the output stable: no colours, a fixed clock and
// version, no connection settings or config files of whoever runs it.
func goldenEnv(t *testing.T) {
	t.Helper()
	clearClientEnv(t)
	t.Setenv(envToken, "")
	t.Setenv("NO_COLOR", "1")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	oldNow, oldVersion := timeNow, Version
	timeNow = func() time.Time { return goldenNow }
	Version = "1.2.3"
	t.Cleanup(func() { timeNow, Version = oldNow, oldVersion })
}

// runGolden runs jobsuite with args as main does and shows what it
// printed: the command line, its stdout, then its stderr after
// "--- stderr" if it wrote any, then "--- exit code N" if N is not 0.
func runGolden(args []string) string {
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(""), &stdout, &stderr)
	var b strings.Builder
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	fmt.Fprintf(&b, "$ jobsuite %s\n", strings.Join(quoted, " "))
	section := func(text string) {
		b.WriteString(utcTimes(text))
		if text != "" && !strings.HasSuffix(text, "\n") {
			b.WriteString("\n--- (no newline at the end)\n")
		}
	}
	section(stdout.String())
	if stderr.Len() > 0 {
		b.WriteString("--- stderr\n")
		section(stderr.String())
	}
	if code != 0 {
		fmt.Fprintf(&b, "--- exit code %d\n", code)
	}
	b.WriteString("\n")
	return b.String()
}

// utcTimes rewrites the golden timestamps, which the commands show in
// local time, in UTC: the golden files read as if TZ=UTC.
func utcTimes(s string) string {
	const layout = "2006-01-02 15:04:05"
	var pairs []string
	for _, t := range goldenTimes {
		if local, utc := t.Local().Format(layout), t.UTC().Format(layout); local != utc {
			pairs = append(pairs, local, utc)
		}
	}
	if len(pairs) == 0 {
		return s
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// checkGolden compares got with testdata/golden/name.txt, or writes it
// there with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join(goldenDir, name+".txt")
	rel := filepath.Join("testdata", "golden", name+".txt")
	if *updateGolden {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s is missing; run 'go test ./cli/ -run Golden -update' to write it", rel)
	}
	if d := firstDiff(string(data), got); d != "" {
		t.Errorf("output differs from %s:\n%s\nIf the change is intended, run 'go test ./cli/ -run Golden -update' and review the diff.", rel, d)
	}
}

// firstDiff describes the first line where want and got differ, or
// returns "" when they are equal.
func firstDiff(want, got string) string {
	if want == got {
		return ""
	}
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		w, g := "(end of file)", "(end of output)"
		if i < len(wl) {
			w = fmt.Sprintf("%q", wl[i])
		}
		if i < len(gl) {
			g = fmt.Sprintf("%q", gl[i])
		}
		if w != g {
			return fmt.Sprintf("line %d:\n  golden: %s\n  got:    %s", i+1, w, g)
		}
	}
	return "they differ in their line endings"
}

// TestFirstDiff checks the message a golden mismatch gives.
func TestFirstDiff(t *testing.T) {
	tests := map[string]struct{ want, got, diff string }{
		"equal":       {"a\nb\n", "a\nb\n", ""},
		"changed":     {"a\nb\nc\n", "a\nB\nc\n", "line 2:\n  golden: \"b\"\n  got:    \"B\""},
		"got longer":  {"a\n", "a\nb\n", "line 2:\n  golden: \"\"\n  got:    \"b\""},
		"got shorter": {"a\nb", "a", "line 2:\n  golden: \"b\"\n  got:    (end of output)"},
		"trailing":    {"a \n", "a\n", "line 1:\n  golden: \"a \"\n  got:    \"a\""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if d := firstDiff(tt.want, tt.got); d != tt.diff {
				t.Errorf("got %q, want %q", d, tt.diff)
			}
		})
	}
}

// TestEveryCommandHasAnExample: every command's -h shows an example, as
// the operator-experience issue asks.
func TestEveryCommandHasAnExample(t *testing.T) {
	var out, errOut bytes.Buffer
	for name, factory := range commands(Meta{Stdout: &out, Stderr: &errOut}) {
		cmd, err := factory()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cmd.Help(), "Example") {
			t.Errorf("jobsuite %s -h has no example", name)
		}
	}
}
