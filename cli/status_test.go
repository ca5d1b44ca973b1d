package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/certs"
)

func TestStatus(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&StatusCommand{Meta: m}).Run([]string{"12"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	for _, want := range []string{
		"ID:        12\n",
		"Name:      build\n",
		"Status:    failed\n",
		"Reason:    attempt 1 failed: exit code 3\n",
		"Command:   make test\n",
		"Priority:  high\n",
		"Labels:    gpu=yes,os=linux\n",
		"Created:", "m ago)\n",
		"Started:", "Finished:",
		"Duration:  1.5s\n",
		"Exit code: 3\n",
		"Attempts:  1\n",
		"#1  agent worker-1  failed  exit code 3, 1.5s",
		"Webhooks:\n", "job.finished webhook to https://hooks.example/x delivered (200) after 3 tries\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&StatusCommand{Meta: m}).Run([]string{"-json", "12"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	var v map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if v["job_id"] != float64(12) || v["priority_value"] != float64(75) {
		t.Errorf("got %v", v)
	}
}

func TestStatusErrors(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		args []string
		code int
		err  string
	}{
		"unknown job": {args: []string{"99"}, code: ExitError, err: "error: no job with id 99\n"},
		"no id":       {args: nil, code: ExitUsage, err: "want one job ID"},
		"two ids":     {args: []string{"1", "2"}, code: ExitUsage, err: "want one job ID"},
		"zero":        {args: []string{"0"}, code: ExitUsage, err: "positive integer"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, out, errb := clientTestMeta()
			if code := (&StatusCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errb)
			}
			if tt.code == ExitError && errb.String() != tt.err || !strings.Contains(errb.String(), tt.err) {
				t.Errorf("stderr %q, want %q", errb, tt.err)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q", out)
			}
		})
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := map[string]struct {
		t    time.Time
		want string
	}{
		"zero":    {time.Time{}, "-"},
		"now":     {now.Add(-300 * time.Millisecond), "just now"},
		"seconds": {now.Add(-3 * time.Second), "3s ago"},
		"minutes": {now.Add(-5*time.Minute - 10*time.Second), "5m ago"},
		"hours":   {now.Add(-26 * time.Hour), "26h ago"},
		"days":    {now.Add(-72 * time.Hour), "3d ago"},
		"future":  {now.Add(90 * time.Second), "in 1m"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ago(tt.t, now); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// extendFake points the CLI at a server with f's certificates whose
// handler extra answers what it knows (returning true) and leaves the
// rest to f.
func extendFake(t *testing.T, f *fakeController, extra func(w http.ResponseWriter, r *http.Request) bool) {
	t.Helper()
	pool, err := certs.LoadPool(f.pki.ca())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(f.pki.ctlCert, f.pki.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !extra(w, r) {
			f.serve(w, r)
		}
	}))
	srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.useEnv(t)
	t.Setenv(envAddr, srv.URL)
}

// liveFake answers GET /jobs/ID?live=1 for job 20 (running, fresh live
// part), 5 (stale) and 6 (no live part, like an older controller), and
// records the queries; job 7 never answers until the client gives up.
type liveFake struct {
	mu      sync.Mutex
	queries []string
}

func (l *liveFake) lastQuery() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queries) == 0 {
		return ""
	}
	return l.queries[len(l.queries)-1]
}

func (l *liveFake) serve(w http.ResponseWriter, r *http.Request) bool {
	var id uint64
	if _, err := fmt.Sscanf(r.URL.Path, "/jobs/%d", &id); err != nil || r.Method != "GET" || r.URL.Query().Get("live") == "" {
		return false
	}
	l.mu.Lock()
	l.queries = append(l.queries, r.URL.RawQuery)
	l.mu.Unlock()
	j := fakeJob(id, "running")
	started := fakeCreated.Add(time.Second)
	j["started_at"], j["attempt"] = started, 1
	j["attempts"] = []any{map[string]any{"number": 1, "agent": "worker-1", "dispatched_at": started, "started_at": started, "exit_code": nil}}
	switch id {
	case 20:
		j["live"] = map[string]any{
			"stale": false, "agent": "worker-1", "attempt": 1, "pid": 4242, "elapsed": 133.4,
			"user_cpu": 62.25, "system_cpu": 3.5, "rss": 222707302, "processes": 3,
			"output_bytes": 1258291, "last_line": "\x1b[1m[ 42%]\x1b[0m\tBuilding parser.o\r",
		}
	case 5:
		j["live"] = map[string]any{"stale": true, "agent": "worker-1", "attempt": 1,
			"error": "agent did not answer in time (waited 500ms)", "output_bytes": 0, "last_line": ""}
	case 6:
	case 7:
		<-r.Context().Done()
		return true
	default:
		return false
	}
	fakeJSON(w, http.StatusOK, j)
	return true
}

func TestStatusLive(t *testing.T) {
	tests := map[string]struct {
		args  []string
		query string
		want  []string
	}{
		"fresh": {
			args:  []string{"-live", "20"},
			query: "live=1",
			want: []string{
				"Status:   running\n",
				"#1  agent worker-1  running",
				"Live:        agent worker-1, attempt 1\n",
				"  PID:       4242\n",
				"  Elapsed:   2m13s\n",
				"  CPU:       1m2s user, 3.5s sys\n",
				"  RSS:       212.4 MiB\n",
				"  Processes: 3\n",
				"  Output:    1.2 MiB (1258291 bytes)\n",
				"  Last line: [ 42%] Building parser.o\n",
			},
		},
		"wait": {
			args:  []string{"-live", "-wait", "2s", "20"},
			query: "live=1&wait=2s",
			want:  []string{"Live:        agent worker-1, attempt 1\n"},
		},
		"stale": {
			args:  []string{"-live", "5"},
			query: "live=1",
			want:  []string{"\nLive: stale (agent did not answer in time (waited 500ms))\n"},
		},
		"older controller": {
			args:  []string{"-live", "6"},
			query: "live=1",
			want:  []string{"\nLive: not available (the controller sent no live part"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFakeController(t)
			var l liveFake
			extendFake(t, f, l.serve)
			m, out, errb := clientTestMeta()
			if code := (&StatusCommand{Meta: m}).Run(tt.args); code != ExitOK {
				t.Fatalf("exit %d, stderr %q", code, errb)
			}
			if got := l.lastQuery(); got != tt.query {
				t.Errorf("query %q, want %q", got, tt.query)
			}
			for _, want := range tt.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestStatusLiveJSON(t *testing.T) {
	f := newFakeController(t)
	var l liveFake
	extendFake(t, f, l.serve)
	m, out, errb := clientTestMeta()
	if code := (&StatusCommand{Meta: m}).Run([]string{"-json", "-live", "-wait", "250ms", "20"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	if got := l.lastQuery(); got != "live=1&wait=250ms" {
		t.Errorf("query %q", got)
	}
	var v struct {
		JobID uint64         `json:"job_id"`
		Live  map[string]any `json:"live"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if v.JobID != 20 || v.Live["pid"] != float64(4242) || v.Live["stale"] != false {
		t.Errorf("got %+v", v)
	}
}

// TestStatusLiveNeverHangs: a controller that does not answer is given
// up on once the wait and liveSlack have passed.
func TestStatusLiveNeverHangs(t *testing.T) {
	f := newFakeController(t)
	var l liveFake
	extendFake(t, f, l.serve)
	old := liveSlack
	liveSlack = 100 * time.Millisecond
	t.Cleanup(func() { liveSlack = old })
	m, out, errb := clientTestMeta()
	if code := (&StatusCommand{Meta: m}).Run([]string{"-live", "-wait", "1ms", "7"}); code != ExitError {
		t.Fatalf("exit %d, want %d; stderr %q", code, ExitError, errb)
	}
	if want := "error: the controller did not answer within 600ms"; !strings.HasPrefix(errb.String(), want) {
		t.Errorf("stderr %q, want it to start with %q", errb, want)
	}
	if out.Len() != 0 {
		t.Errorf("stdout %q", out)
	}
}

func TestStatusLiveUsage(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		args []string
		err  string
	}{
		"wait without live": {args: []string{"-wait", "1s", "20"}, err: "-wait applies only with -live"},
		"zero wait":         {args: []string{"-live", "-wait", "0s", "20"}, err: "-wait must be a duration between 1ms and 30s"},
		"long wait":         {args: []string{"-live", "-wait", "1m", "20"}, err: "-wait must be a duration between 1ms and 30s"},
		"bad wait":          {args: []string{"-live", "-wait", "soon", "20"}, err: `invalid value "soon" for flag -wait`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, out, errb := clientTestMeta()
			if code := (&StatusCommand{Meta: m}).Run(tt.args); code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, ExitUsage, errb)
			}
			if !strings.Contains(errb.String(), tt.err) {
				t.Errorf("stderr %q, want %q", errb, tt.err)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q", out)
			}
		})
	}
}

func TestBytesText(t *testing.T) {
	tests := map[string]struct {
		n    uint64
		want string
	}{
		"zero":  {0, "0 B"},
		"bytes": {1023, "1023 B"},
		"KiB":   {1536, "1.5 KiB"},
		"MiB":   {222707302, "212.4 MiB"},
		"GiB":   {3 << 30, "3.0 GiB"},
		"max":   {1<<64 - 1, "16.0 EiB"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := bytesText(tt.n); got != tt.want {
				t.Errorf("bytesText(%d) = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
}

// TestStripEscapes: status -live shows a job's last line without the
// terminal escape sequences in it, which would otherwise print as U+FFFD.
func TestStripEscapes(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"plain":              {"epoch 3 loss 0.9", "epoch 3 loss 0.9"},
		"colours":            {"\x1b[1;31mred\x1b[0m done", "red done"},
		"a reset at the end": {"loss 0.913\x1b[0m", "loss 0.913"},
		"cursor and erase":   {"\x1b[2K\x1b[1G[ 42%]", "[ 42%]"},
		"an OSC title (BEL)": {"\x1b]0;title\x07text", "text"},
		"an OSC link (ST)":   {"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"},
		"a two-byte escape":  {"a\x1b=b", "ab"},
		"cut off at the end": {"ok \x1b[3", "ok "},
		"a lone ESC":         {"ok\x1b", "ok"},
	}
	for in, want := range map[string]string{
		"\x1b[1m[ 42%]\x1b[0m\tBuilding parser.o\r": "[ 42%]\tBuilding parser.o",
		"10%\r20%\r30%": "30%",
		"done\r\r":      "done",
		"\r":            "",
	} {
		if got := visibleLine(in); got != want {
			t.Errorf("visibleLine(%q) = %q, want %q", in, got, want)
		}
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := stripEscapes(tt.in); got != tt.want {
				t.Errorf("stripEscapes(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got := oneLine(stripEscapes(tt.in)); strings.ContainsRune(got, '\uFFFD') {
				t.Errorf("%q still shows U+FFFD: %q", tt.in, got)
			}
		})
	}
}
