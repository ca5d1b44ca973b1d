package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
)

// waitServer is a controller whose jobs go through scripted states: each
// GET /jobs/ID answers the next state of ID's script, then repeats the
// last. A state "503" answers 503 once instead. IDs without a script do
// not exist.
type waitServer struct {
	mu     sync.Mutex
	script map[uint64][]string
	gets   map[uint64]int
}

func newWaitServer(t *testing.T, script map[uint64][]string) *waitServer {
	t.Helper()
	w := &waitServer{script: script, gets: map[uint64]int{}}
	pki := newTestPKI(t)
	pool, err := certs.LoadPool(pki.ca())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.LoadKeyPair(pki.ctlCert, pki.ctlKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(w.serve))
	srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	(&fakeController{srv: srv, pki: pki}).useEnv(t)
	return w
}

func (w *waitServer) serve(rw http.ResponseWriter, r *http.Request) {
	raw, ok := strings.CutPrefix(r.URL.Path, "/jobs/")
	id, err := strconv.ParseUint(raw, 10, 64)
	if !ok || err != nil || r.Method != "GET" {
		fakeError(rw, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
		return
	}
	w.mu.Lock()
	states, ok := w.script[id]
	n := w.gets[id]
	w.gets[id]++
	w.mu.Unlock()
	if !ok {
		fakeError(rw, http.StatusNotFound, "no job with id "+raw, "job_id", raw)
		return
	}
	state := states[min(n, len(states)-1)]
	if state == "503" {
		fakeError(rw, http.StatusServiceUnavailable, "the store is busy")
		return
	}
	j := fakeJob(id, state)
	switch state {
	case "completed":
		j["exit_code"] = 0
	case "failed":
		j["exit_code"], j["reason"] = 3, "attempt 1 failed: exit code 3"
	case "cancelled":
		j["exit_code"], j["reason"] = 143, "cancelled by the API"
	}
	fakeJSON(rw, http.StatusOK, j)
}

func TestWait(t *testing.T) {
	defer func(d time.Duration) { waitPoll = d }(waitPoll)
	waitPoll = 5 * time.Millisecond
	tests := map[string]struct {
		script map[uint64][]string
		args   []string
		code   int
		stdout string
		stderr []string // substrings of stderr, in order
	}{
		"all complete": {
			script: map[uint64][]string{1: {"queued", "running", "completed"}, 2: {"running", "running", "running", "completed"}},
			args:   []string{"1", "2"}, code: ExitOK,
			stdout: "job 1 completed (exit code 0)\njob 2 completed (exit code 0)\n",
			stderr: []string{"2 jobs: 1 queued, 1 running\n", "2 jobs: 1 running, 1 completed\n", "2 jobs: 2 completed\n"},
		},
		"one failed": {
			script: map[uint64][]string{1: {"running", "completed"}, 2: {"running", "failed"}},
			args:   []string{"1", "2"}, code: ExitError,
			stdout: "job 1 completed (exit code 0)\njob 2 failed (exit code 3): attempt 1 failed: exit code 3\n",
			stderr: []string{"2 jobs: 1 completed, 1 failed\n"},
		},
		"cancelled": {
			script: map[uint64][]string{5: {"running", "cancelled"}},
			args:   []string{"5"}, code: ExitError,
			stdout: "job 5 cancelled (exit code 143): cancelled by the API\n",
			stderr: []string{"1 job: 1 running\n", "1 job: 1 cancelled\n"},
		},
		"timeout state": {
			script: map[uint64][]string{5: {"timeout"}},
			args:   []string{"5"}, code: ExitError, stdout: "job 5 timeout\n",
		},
		"already finished": {
			script: map[uint64][]string{7: {"completed"}},
			args:   []string{"7"}, code: ExitOK, stdout: "job 7 completed (exit code 0)\n",
		},
		"the same ID twice is one job": {
			script: map[uint64][]string{7: {"completed"}},
			args:   []string{"7", "7"}, code: ExitOK, stdout: "job 7 completed (exit code 0)\n",
			stderr: []string{"1 job: 1 completed\n"},
		},
		"unknown job": {
			script: map[uint64][]string{7: {"running"}},
			args:   []string{"7", "99"}, code: ExitError,
			stderr: []string{"error: job 99: no job with id 99\n"},
		},
		"a busy controller is asked again": {
			script: map[uint64][]string{1: {"running", "503", "completed"}},
			args:   []string{"1"}, code: ExitOK, stdout: "job 1 completed (exit code 0)\n",
			stderr: []string{"warning: the store is busy; asking again\n", "the controller answers again\n"},
		},
		"-timeout": {
			script: map[uint64][]string{1: {"completed"}, 2: {"running"}}, // one state: a loaded machine may poll only once in 50ms
			args:   []string{"-timeout", "50ms", "1", "2"}, code: ExitError,
			stdout: "job 1 completed (exit code 0)\n",
			stderr: []string{"error: timed out after 50ms; not finished: job 2 (running)\n"},
		},
		"no ID": {
			args: nil, code: ExitUsage,
			stderr: []string{"error: want at least one job ID\nRun 'jobsuite wait -h' for usage.\n"},
		},
		"bad ID": {
			args: []string{"1", "x"}, code: ExitUsage,
			stderr: []string{"error: job id must be a positive integer, got \"x\"\n"},
		},
		"negative -timeout": {
			args: []string{"-timeout", "-1s", "1"}, code: ExitUsage,
			stderr: []string{"error: -timeout must be 0 (no limit) or a positive duration"},
		},
		"unknown flag": {
			args: []string{"-follow", "1"}, code: ExitUsage,
			stderr: []string{"flag provided but not defined: -follow"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			newWaitServer(t, tt.script)
			m, out, errb := clientTestMeta()
			if code := (&WaitCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errb)
			}
			if out.String() != tt.stdout {
				t.Errorf("stdout %q, want %q", out, tt.stdout)
			}
			rest := errb.String()
			for _, want := range tt.stderr {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("stderr lacks %q (in order); stderr:\n%s", want, errb)
					break
				}
				rest = rest[i+len(want):]
			}
			if strings.ContainsAny(errb.String()+out.String(), "\r\x1b") {
				t.Errorf("terminal control codes in output to a buffer: %q %q", out, errb)
			}
		})
	}
}

func TestWaitJSON(t *testing.T) {
	defer func(d time.Duration) { waitPoll = d }(waitPoll)
	waitPoll = 5 * time.Millisecond
	newWaitServer(t, map[uint64][]string{1: {"running", "completed"}, 2: {"failed"}})
	m, out, errb := clientTestMeta()
	if code := (&WaitCommand{Meta: m}).Run([]string{"-json", "2", "1", "2"}); code != ExitError {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, errb)
	}
	var jobs []api.JobView
	if err := json.Unmarshal(out.Bytes(), &jobs); err != nil {
		t.Fatalf("stdout is not a JSON array of jobs: %v\n%s", err, out)
	}
	if len(jobs) != 2 || jobs[0].JobID != 2 || jobs[0].Status != "failed" || jobs[1].JobID != 1 || jobs[1].Status != "completed" {
		t.Errorf("jobs %+v; want job 2 failed, job 1 completed", jobs)
	}
}

func TestWaitInterrupted(t *testing.T) {
	defer func(d time.Duration) { waitPoll = d }(waitPoll)
	waitPoll = 5 * time.Millisecond
	w := newWaitServer(t, map[uint64][]string{1: {"running"}})
	ctx, cancel := context.WithCancel(context.Background())
	m, _, errb := clientTestMeta()
	m.Ctx = ctx
	done := make(chan int, 1)
	go func() { done <- (&WaitCommand{Meta: m}).Run([]string{"1"}) }()
	for {
		w.mu.Lock()
		n := w.gets[1]
		w.mu.Unlock()
		if n >= 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != ExitInterrupted || !strings.Contains(errb.String(), "interrupted; the jobs keep running") {
			t.Errorf("exit %d, stderr %q; want 130 and a note that the jobs keep running", code, errb)
		}
	case <-time.After(waitLimit):
		t.Fatal("wait did not stop when its context ended")
	}
}

// TestWaitProgressTerminal: on a terminal the counts are one line
// rewritten in place and left on screen at the end.
func TestWaitProgressTerminal(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	var buf bytes.Buffer
	p := &progress{w: &buf, tty: true, start: time.Now()}
	jobs := []*waitJob{{view: api.JobView{Status: "running"}, seen: true}, {view: api.JobView{Status: "queued"}, seen: true}}
	p.show(jobs)
	p.show(jobs)
	p.clear()
	jobs[1].view.Status = "completed"
	p.show(jobs)
	p.done()
	want := "\r\x1b[K2 jobs: 1 queued, 1 running  (0s)" +
		"\r\x1b[K2 jobs: 1 queued, 1 running  (0s)" +
		"\r\x1b[K" +
		"\r\x1b[K2 jobs: 1 running, 1 completed  (0s)" +
		"\r\x1b[K2 jobs: 1 running, 1 completed\n"
	if buf.String() != want {
		t.Errorf("terminal progress:\n%q\nwant\n%q", buf.String(), want)
	}
}
