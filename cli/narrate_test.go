package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	mcli "github.com/mitchellh/cli"

	"jobsuite/api"
	"jobsuite/certs"
)

// scriptedController plays one job's life: POST /jobs answers stages[0],
// and each GET /jobs/ID the next stage (the last one once there). The
// log WebSocket sends output, then, once a GET has answered the last
// stage (at once with noPoll), the end message; with hang set it never
// ends.
type scriptedController struct {
	srv    *httptest.Server
	stages []map[string]any
	output []api.LogMessage
	end    api.LogMessage
	hang   bool
	noPoll bool // the client reads no job (-q): end at once

	mu   sync.Mutex
	gets int
	last chan struct{} // closed when the last stage was answered
}

func newScriptedController(t *testing.T, stages []map[string]any, output []api.LogMessage, end api.LogMessage) *scriptedController {
	t.Helper()
	s := &scriptedController{stages: stages, output: output, end: end, last: make(chan struct{})}
	pki := newTestPKI(t)
	pool, err := certs.LoadPool(pki.ca())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(pki.ctlCert, pki.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	clearClientEnv(t)
	t.Setenv(envAddr, s.srv.URL)
	t.Setenv(envCACert, pki.ca())
	t.Setenv(envClientCert, pki.opCert)
	t.Setenv(envClientKey, pki.opKey)
	oldPoll, oldMax := narratePoll, narratePollMax
	narratePoll, narratePollMax = time.Millisecond, 2*time.Millisecond
	t.Cleanup(func() { narratePoll, narratePollMax = oldPoll, oldMax })
	return s
}

func (s *scriptedController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := s.stages[0]["job_id"]
	switch {
	case r.Method == "POST" && r.URL.Path == "/jobs":
		fakeJSON(w, http.StatusCreated, s.stages[0])
	case r.Method == "GET" && r.URL.Path == fmt.Sprintf("/jobs/%v", id):
		s.mu.Lock()
		s.gets++
		i := min(s.gets, len(s.stages)-1)
		if i == len(s.stages)-1 && s.gets == len(s.stages)-1 {
			close(s.last)
		}
		s.mu.Unlock()
		fakeJSON(w, http.StatusOK, s.stages[i])
	case r.URL.Path == fmt.Sprintf("/ws/jobs/%v/logs", id):
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for _, m := range s.output {
			if err := conn.WriteJSON(m); err != nil {
				return
			}
		}
		if s.hang {
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					return
				}
			}
		}
		if !s.noPoll {
			select {
			case <-s.last:
			case <-r.Context().Done():
				return
			}
		}
		_ = conn.WriteJSON(s.end)
	default:
		fakeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	}
}

// stage is job 7 in state status with reason and attempts, as the API
// shows it.
func stage(status, reason string, attempts ...map[string]any) map[string]any {
	j := fakeJob(7, status)
	j["reason"] = reason
	j["timeout"] = 5.0
	j["attempts"] = append([]any{}, anys(attempts)...)
	return j
}

func anys(ms []map[string]any) []any {
	out := make([]any, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func attempt(n int, agent, outcome string, exit *int) map[string]any {
	a := map[string]any{"number": n, "agent": agent, "dispatched_at": fakeCreated, "exit_code": exit}
	if outcome != "" {
		a["outcome"] = outcome
	}
	return a
}

// TestSubmitFollowNarrates: submit -f tells on stderr, in order, why the
// job waits, each attempt and its agent, how the one before a retry
// ended, and a timeout or cancel at the end; -q only what the exit code
// cannot tell. The job's stdout is untouched.
func TestSubmitFollowNarrates(t *testing.T) {
	three := 3
	const noMatch = "no connected agent matches labels gpu=yes"
	retried := []map[string]any{
		stage("queued", noMatch),
		stage("queued", noMatch),
		stage("queued", "waiting for a free slot on an agent matching gpu=yes"),
		stage("running", "", attempt(1, "gpu-1", "", nil)),
		stage("waiting", "attempt 1 failed (exit code 3); retry 1 of 1 in 1s", attempt(1, "gpu-1", "failed", &three)),
		stage("running", "", attempt(1, "gpu-1", "failed", &three), attempt(2, "gpu-2", "", nil)),
		stage("timeout", "attempt 2 timeout: killed by SIGTERM", attempt(1, "gpu-1", "failed", &three), attempt(2, "gpu-2", "timeout", nil)),
	}
	out := []api.LogMessage{{Type: "output", Stream: "stdout", Data: []byte("one\n")}, {Type: "output", Offset: 4, Stream: "stdout", Data: []byte("two\n")}}
	cancelled := func() map[string]any {
		j := stage("running", "cancel requested; waiting for the agent to stop it", attempt(1, "a1", "", nil))
		j["cancel_requested"] = true
		return j
	}()
	tests := map[string]struct {
		args   []string
		stages []map[string]any
		end    api.LogMessage
		quiet  bool
		code   int
		stderr string
	}{
		"blocked, retried, timed out": {
			args: []string{"-f", "--", "train"}, stages: retried,
			end:  api.LogMessage{Type: "end", Status: "timeout", Reason: "attempt 2 timeout: killed by SIGTERM"},
			code: ExitTimeout,
			stderr: "jobsuite: job 7 queued: " + noMatch + "\n" +
				"jobsuite: job 7 queued: waiting for a free slot on an agent matching gpu=yes\n" +
				"jobsuite: job 7 attempt 1 on gpu-1\n" +
				"jobsuite: job 7 waiting: attempt 1 failed (exit code 3); retry 1 of 1 in 1s\n" +
				"jobsuite: job 7 attempt 2 on gpu-2\n" +
				"jobsuite: job 7 timed out (its timeout is 5s): attempt 2 timeout: killed by SIGTERM\n",
		},
		"quiet": {
			args: []string{"-f", "-q", "--", "train"}, stages: retried, quiet: true,
			end:  api.LogMessage{Type: "end", Status: "timeout", Reason: "attempt 2 timeout: killed by SIGTERM"},
			code: ExitTimeout,
		},
		"a quick retry is told at the end": {
			args: []string{"-f", "--", "train"},
			stages: []map[string]any{
				stage("queued", "waiting for a free slot"),
				stage("failed", "attempt 2 failed: exit code 3", attempt(1, "a1", "failed", &three), attempt(2, "a2", "failed", &three)),
			},
			end:  api.LogMessage{Type: "end", Status: "failed", ExitCode: &three, Reason: "attempt 2 failed: exit code 3"},
			code: 3,
			stderr: "jobsuite: job 7 queued\n" +
				"jobsuite: job 7 attempt 1 on a1\n" +
				"jobsuite: job 7 attempt 2 on a2 (attempt 1 failed: exit code 3)\n" +
				"jobsuite: job 7 failed after 2 attempts: attempt 2 failed: exit code 3\n",
		},
		"cancelled": {
			args: []string{"-f", "--", "sleep 60"},
			stages: []map[string]any{
				stage("queued", "waiting for a free slot"),
				stage("running", "", attempt(1, "a1", "", nil)),
				cancelled,
				stage("cancelled", "attempt 1 cancelled: killed by SIGTERM", attempt(1, "a1", "cancelled", nil)),
			},
			end:  api.LogMessage{Type: "end", Status: "cancelled", Reason: "attempt 1 cancelled: killed by SIGTERM"},
			code: ExitInterrupted,
			stderr: "jobsuite: job 7 queued\n" +
				"jobsuite: job 7 attempt 1 on a1\n" +
				"jobsuite: job 7: cancel requested; waiting for its agent to stop it\n" +
				"jobsuite: job 7 cancelled: attempt 1 cancelled: killed by SIGTERM\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := newScriptedController(t, tt.stages, out, tt.end)
			s.noPoll = tt.quiet
			m, stdout, stderr := clientTestMeta()
			if code := (&SubmitCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if stdout.String() != "one\ntwo\n" {
				t.Errorf("stdout %q, want the job's output alone", stdout)
			}
			if stderr.String() != tt.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, tt.stderr)
			}
		})
	}
}

// TestSubmitFollowInterrupted: Ctrl-C on a job no agent can run says it
// is still queued, and why, instead of "still running".
func TestSubmitFollowInterrupted(t *testing.T) {
	const noMatch = "no connected agent matches labels gpu=yes"
	s := newScriptedController(t, []map[string]any{stage("queued", noMatch)}, nil, api.LogMessage{})
	s.hang = true
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := Meta{UI: &mcli.BasicUi{Writer: &stdout, ErrorWriter: &stderr}, Stdout: &stdout, Stderr: &stderr, Ctx: ctx}
	done := make(chan int, 1)
	go func() { done <- (&SubmitCommand{Meta: m}).Run([]string{"-f", "-label", "gpu=yes", "--", "train"}) }()
	waitUntil(t, "the reason on stderr", func() bool { return strings.Contains(stderr.String(), noMatch) })
	cancel()
	if code := <-done; code != ExitInterrupted {
		t.Errorf("exit %d, want %d", code, ExitInterrupted)
	}
	want := "jobsuite: job 7 queued: " + noMatch + "\n\njobsuite: job 7 is still queued (" + noMatch + "); 'jobsuite cancel 7' removes it\n"
	if got := stderr.String(); got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// TestSubmitWarnsWhenBlocked: a plain submit warns when no agent can run
// the job; -q prints only the ID.
func TestSubmitWarnsWhenBlocked(t *testing.T) {
	tests := map[string]struct {
		reason         string
		args           []string
		stdout, stderr string
	}{
		"no agent matches": {
			reason: "no connected agent matches labels gpu=yes", args: []string{"--", "train"},
			stdout: "Job 7 queued (priority mid)\n",
			stderr: "warning: job 7 waits: no connected agent matches labels gpu=yes; it runs once a matching agent connects ('jobsuite agents' lists them)\n",
		},
		"no agent at all": {
			reason: "waiting for an agent to connect", args: []string{"--", "train"},
			stdout: "Job 7 queued (priority mid)\n",
			stderr: "warning: job 7 waits: waiting for an agent to connect; it runs once a matching agent connects ('jobsuite agents' lists them)\n",
		},
		"busy agents are no news": {
			reason: "waiting for a free slot", args: []string{"--", "train"},
			stdout: "Job 7 queued (priority mid)\n",
		},
		"quiet": {
			reason: "no connected agent matches labels gpu=yes", args: []string{"-q", "--", "train"},
			stdout: "7\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			newScriptedController(t, []map[string]any{stage("queued", tt.reason)}, nil, api.LogMessage{})
			m, stdout, stderr := clientTestMeta()
			if code := (&SubmitCommand{Meta: m}).Run(tt.args); code != ExitOK {
				t.Errorf("exit %d", code)
			}
			if stdout.String() != tt.stdout || stderr.String() != tt.stderr {
				t.Errorf("stdout %q, stderr %q; want %q, %q", stdout, stderr, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestLineWriter: a narration line after output that ended mid-line
// starts on a line of its own.
func TestLineWriter(t *testing.T) {
	var b strings.Builder
	l := &lineWriter{w: &b}
	l.Write([]byte("partial"))
	l.line("job %d %s", 1, "queued")
	l.Write([]byte("whole\n"))
	l.line("next")
	if want := "partial\njobsuite: job 1 queued\nwhole\njobsuite: next\n"; b.String() != want {
		t.Errorf("%q, want %q", b.String(), want)
	}
}

// TestNarrationWithDev runs submit -f against 'jobsuite dev' as a new
// user would: a job no agent can run is told why at once (from the
// submission's answer, before any output) and Ctrl-C says it is still
// queued; a retried job and a timed-out one say what happened.
func TestNarrationWithDev(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that runs jobsuite dev")
	}
	for _, k := range []string{envAddr, envCACert, envClientCert, envClientKey} {
		t.Setenv(k, "")
	}
	t.Chdir(t.TempDir())
	var devOut, devErr lockedBuffer
	dm := Meta{UI: &mcli.BasicUi{Writer: &devOut, ErrorWriter: &devErr}, Stdout: &devOut, Stderr: &devErr}
	stop := startDev(t, dm)
	defer stop()
	waitUntil(t, "the dev agents", func() bool {
		code, out, _ := runCLI(t, "agents")
		return code == 0 && strings.Contains(out, "agent-2")
	})

	// A job no agent can run.
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := Meta{UI: &mcli.BasicUi{Writer: &stdout, ErrorWriter: &stderr}, Stdout: &stdout, Stderr: &stderr, Ctx: ctx}
	done := make(chan int, 1)
	go func() { done <- (&SubmitCommand{Meta: m}).Run([]string{"-f", "-label", "gpu=yes", "--", "nvidia-smi"}) }()
	const why = "no connected agent matches labels gpu=yes"
	waitUntil(t, "the reason", func() bool { return strings.Contains(stderr.String(), why) })
	if got := stderr.String(); !strings.HasPrefix(got, "jobsuite: job ") || !strings.Contains(got, " queued: "+why+"\n") {
		t.Errorf("stderr %q; want the job queued and why, first", got)
	}
	cancel()
	if code := <-done; code != ExitInterrupted {
		t.Errorf("exit %d after Ctrl-C, want %d", code, ExitInterrupted)
	}
	if got := stderr.String(); !strings.Contains(got, "is still queued ("+why+"); 'jobsuite cancel ") || strings.Contains(got, "running") {
		t.Errorf("stderr after Ctrl-C %q; want 'still queued' and why", got)
	}

	tests := map[string]struct {
		args []string
		code int
		want []string
	}{
		"retried": {
			args: []string{"-f", "-retries", "1", "--", "echo try; exit 3"}, code: 3,
			want: []string{"attempt 1 on agent-", "attempt 2 on agent-", "failed after 2 attempts: attempt 2 failed: exit code 3\n"},
		},
		"timed out": {
			args: []string{"-f", "-timeout", "1", "--", "echo try; sleep 30"}, code: ExitTimeout,
			want: []string{"attempt 1 on agent-", "timed out (its timeout is 1s): attempt 1 timeout"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"submit"}, tt.args...)...)
			if code != tt.code || strings.Count(out, "try\n") < 1 {
				t.Errorf("exit %d, stdout %q; want %d and the output", code, out, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
}
