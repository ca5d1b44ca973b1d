package cli

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestLogs(t *testing.T) {
	tests := map[string]struct {
		args           []string
		drops          int
		code           int
		stdout, stderr string
		query          string
	}{
		"stored output": {
			args: []string{"12"}, code: ExitOK,
			stdout: "hello\nbye\n", stderr: "oops\n", query: "follow=0",
		},
		"follow": {
			args: []string{"-f", "12"}, code: 3,
			stdout: "hello\nbye\n", stderr: "oops\n", query: "follow=1",
		},
		"offset inside a chunk": {
			args: []string{"-offset", "8", "12"}, code: ExitOK,
			stdout: "bye\n", stderr: "ps\n", query: "offset=8",
		},
		"reconnects without duplicates": {
			args: []string{"-follow", "12"}, drops: 2, code: 3,
			stdout: "hello\nbye\n", stderr: "oops\n", query: "offset=11",
		},
		"lost job explains itself": {
			args: []string{"-f", "13"}, code: ExitError,
			stderr: "jobsuite: job 13 failed: attempt 1 lost: agent worker-1 stopped sending heartbeats\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFakeController(t)
			f.useEnv(t)
			f.drops = tt.drops
			m, out, errb := clientTestMeta()
			if code := (&LogsCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errb)
			}
			if out.String() != tt.stdout {
				t.Errorf("stdout %q, want %q", out, tt.stdout)
			}
			if errb.String() != tt.stderr {
				t.Errorf("stderr %q, want %q", errb, tt.stderr)
			}
			if q := f.lastQuery(); !strings.Contains(q, tt.query) {
				t.Errorf("last WebSocket query %q does not contain %q", q, tt.query)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.wsConns != tt.drops+1 {
				t.Errorf("%d WebSocket connections, want %d", f.wsConns, tt.drops+1)
			}
		})
	}
}

func TestLogsErrors(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		args []string
		code int
		err  string
	}{
		"unknown job": {args: []string{"99"}, code: ExitError, err: "error: no job with id 99\n"},
		"no id":       {args: nil, code: ExitUsage, err: "want one job ID"},
		"bad id":      {args: []string{"x"}, code: ExitUsage, err: "positive integer"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, _, errb := clientTestMeta()
			if code := (&LogsCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errb)
			}
			if !strings.Contains(errb.String(), tt.err) {
				t.Errorf("stderr %q does not contain %q", errb, tt.err)
			}
		})
	}
}

func TestFollowGivesUp(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	f.drops = 100 // every connection drops after its first message
	m, out, errb := clientTestMeta()
	client, err := newClient(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.close()
	fl := &follower{client: client, id: 12, follow: true, stdout: m.Stdout, stderr: m.Stderr, tries: 2, backoff: time.Millisecond}
	if code := finishFollow(context.Background(), m, fl); code != ExitError {
		t.Errorf("exit %d, want %d", code, ExitError)
	}
	// The tries start over after each connection that made progress: all
	// the output arrives, once; then 2 reconnects bring nothing.
	if out.String() != "hello\nbye\n" {
		t.Errorf("stdout %q", out)
	}
	if want := "oops\nerror: lost the log stream of job 12 after 2 reconnects"; !strings.HasPrefix(errb.String(), want) {
		t.Errorf("stderr %q does not start with %q", errb, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wsConns != 5 {
		t.Errorf("%d WebSocket connections, want 5 (3 with output, 2 reconnects without)", f.wsConns)
	}
}

// TestLogsAttempts reads job 14, retried once: markers on stderr where
// each attempt begins (after a newline if the output stopped mid-line),
// the output on stdout as it is; one attempt with -attempt, exiting with
// its code under -f; times at the start of lines with -timestamps.
func TestLogsAttempts(t *testing.T) {
	tests := map[string]struct {
		args           []string
		code           int
		stdout, stderr string
		query          string
	}{
		"markers": {
			args: []string{"14"}, code: ExitOK, query: "attempts=1",
			stdout: "one\none" + "two\n",
			stderr: "--- attempt 1 on worker-1, 2025-07-01T12:00:00Z ---\n" +
				"\n--- attempt 2 on worker-2, 2025-07-01T12:01:00Z ---\n",
		},
		"resumed past the first attempt": {
			args: []string{"-offset", "7", "14"}, code: ExitOK,
			stdout: "two\n",
			stderr: "--- attempt 2 on worker-2, 2025-07-01T12:01:00Z ---\n",
		},
		"one attempt": {
			args: []string{"-attempt", "2", "14"}, code: ExitOK, query: "attempt=2",
			stdout: "two\n",
		},
		"one attempt, followed to its failure": {
			args: []string{"-f", "-attempt", "1", "14"}, code: 4, query: "attempt=1",
			stdout: "one\none",
		},
		"timestamps": {
			args: []string{"-timestamps", "-attempt", "1", "14"}, code: ExitOK,
			// The second line began in the first chunk: its time.
			stdout: "2025-07-01T12:00:01.500Z one\n2025-07-01T12:00:01.500Z one",
		},
		"timestamps, unknown time": {
			args: []string{"-timestamps", "-attempt", "2", "14"}, code: ExitOK,
			stdout: "-                        two\n",
		},
		"a controller without attempt=N": {
			args: []string{"-attempt", "1", "12"}, code: ExitError,
			stderr: "error: the controller does not serve one attempt's output (-attempt): upgrade it, or read the whole log\n",
		},
		"attempt 0": {
			args: []string{"-attempt", "0", "14"}, code: ExitUsage,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFakeController(t)
			f.useEnv(t)
			m, out, errb := clientTestMeta()
			if code := (&LogsCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errb)
			}
			if tt.code == ExitUsage {
				return
			}
			if out.String() != tt.stdout {
				t.Errorf("stdout %q, want %q", out, tt.stdout)
			}
			if errb.String() != tt.stderr {
				t.Errorf("stderr %q, want %q", errb, tt.stderr)
			}
			if q := f.lastQuery(); !strings.Contains(q, tt.query) {
				t.Errorf("last WebSocket query %q does not contain %q", q, tt.query)
			}
		})
	}
}
