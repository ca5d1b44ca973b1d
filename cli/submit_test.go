package cli

import (
	"context"
	"encoding/json"
	"maps"
	"reflect"
	"strings"
	"testing"

	"jobsuite/api"
)

func TestSubmitBody(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		args []string
		want string // the JSON body the controller must receive
		out  string
	}{
		"command only": {
			args: []string{"echo", "hello", "world"},
			want: `{"command":"echo hello world"}`,
			out:  "Job 12 queued (priority mid)\n",
		},
		"one argument is taken as is": {
			args: []string{"--", "echo 'a  b' | wc -c"},
			want: `{"command":"echo 'a  b' | wc -c"}`,
			out:  "Job 12 queued (priority mid)\n",
		},
		"every flag": {
			args: []string{
				"-name", "build", "-priority", "high", "-timeout", "1m30s", "-retries", "2", "-logs=false",
				"-label", "gpu=yes", "-label", "os=linux", "-env", "A=1", "-env", "B=x=y", "-dir", "/tmp",
				"-idempotency-key", "k1", "-no-cancel", "--", "make", "-j8", "test",
			},
			want: `{"name":"build","command":"make -j8 test","priority":"high","timeout":90,"retries":2,"logs":false,
				"cancellable":false,"labels":{"gpu":"yes","os":"linux"},"env":{"A":"1","B":"x=y"},"dir":"/tmp","idempotency_key":"k1"}`,
			out: "Job 12 queued (priority high)\n",
		},
		"numeric priority and seconds": {
			args: []string{"-priority", "60", "-timeout", "30", "-retries", "0", "--", "true"},
			want: `{"command":"true","priority":60,"timeout":30,"retries":0}`,
			out:  "Job 12 queued (priority 60)\n",
		},
		"split output": {
			args: []string{"-split-output", "--", "make"},
			want: `{"command":"make","output":"split"}`,
			out:  "Job 12 queued (priority mid)\n",
		},
		"on a terminal": {
			args: []string{"-tty", "ls --color=auto"},
			want: `{"command":"ls --color=auto","tty":true}`,
			out:  "Job 12 queued (priority mid)\n",
		},
		"webhooks": {
			args: []string{"-notify", "https://a.example/h", "-notify", "https://b.example/h?t=1", "--", "make"},
			want: `{"command":"make","notify":["https://a.example/h","https://b.example/h?t=1"]}`,
			out:  "Job 12 queued (priority mid)\n",
		},
		"declining the agent's terminal": {
			args: []string{"-tty=false", "ls"},
			want: `{"command":"ls","tty":false}`,
			out:  "Job 12 queued (priority mid)\n",
		},
		"after jobs": {
			args: []string{"-after", "3,4", "-after", "7", "-after-any", "--", "true"},
			want: `{"command":"true","after":[3,4,7],"after_any":true}`,
			out:  "Job 12 queued (priority mid)\n",
		},
		"idempotent resubmit": {
			args: []string{"-idempotency-key", "dup", "true"},
			want: `{"command":"true","idempotency_key":"dup"}`,
			out:  "Job 12 already submitted with idempotency key \"dup\" (status running)\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, out, errb := clientTestMeta()
			if code := (&SubmitCommand{Meta: m}).Run(tt.args); code != ExitOK {
				t.Fatalf("exit %d, stderr %q", code, errb)
			}
			var want map[string]any
			dec := json.NewDecoder(strings.NewReader(tt.want))
			dec.UseNumber()
			if err := dec.Decode(&want); err != nil {
				t.Fatal(err)
			}
			if got := f.lastSubmit(); !reflect.DeepEqual(got, want) {
				t.Errorf("body\n got %v\nwant %v", got, want)
			}
			if out.String() != tt.out {
				t.Errorf("stdout %q, want %q", out, tt.out)
			}
		})
	}
}

func TestSubmitJSON(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&SubmitCommand{Meta: m}).Run([]string{"-json", "true"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	var v api.JobView
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if v.JobID != 12 || v.Status != "queued" {
		t.Errorf("got %+v", v)
	}
}

func TestSubmitUsageErrors(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		args []string
		err  string
	}{
		"no command":      {args: nil, err: "a command is required"},
		"blank command":   {args: []string{"  "}, err: "blank"},
		"bad priority":    {args: []string{"-priority", "urgent", "true"}, err: "-priority"},
		"priority 101":    {args: []string{"-priority", "101", "true"}, err: "-priority"},
		"bad timeout":     {args: []string{"-timeout", "soon", "true"}, err: "-timeout"},
		"timeout < 0":     {args: []string{"-timeout", "-5", "true"}, err: "-timeout"},
		"retries < 0":     {args: []string{"-retries", "-1", "true"}, err: "-retries"},
		"label not k=v":   {args: []string{"-label", "gpu", "true"}, err: "want key=value"},
		"json and follow": {args: []string{"-json", "-f", "true"}, err: "cannot be combined"},
		"tty and split":   {args: []string{"-tty", "-split-output", "true"}, err: "cannot be combined"},
		"after not an ID": {args: []string{"-after", "3,x", "true"}, err: "not a job ID"},
		"after-any alone": {args: []string{"-after-any", "true"}, err: "needs -after"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, out, errb := clientTestMeta()
			if code := (&SubmitCommand{Meta: m}).Run(tt.args); code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, ExitUsage, errb)
			}
			if !strings.HasPrefix(errb.String(), "error: ") || !strings.Contains(errb.String(), tt.err) {
				t.Errorf("stderr %q does not contain %q", errb, tt.err)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q", out)
			}
		})
	}
	if got := f.lastSubmit(); got != nil {
		t.Errorf("a submission reached the controller: %v", got)
	}
}

func TestSubmitServerError(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, _, errb := clientTestMeta()
	if code := (&SubmitCommand{Meta: m}).Run([]string{"fail"}); code != ExitError {
		t.Fatalf("exit %d, want %d", code, ExitError)
	}
	if want := "error: field \"priority\": must be low"; !strings.HasPrefix(errb.String(), want) {
		t.Errorf("stderr %q, want it to start with %q", errb, want)
	}
}

func TestSubmitFollow(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	code := (&SubmitCommand{Meta: m}).Run([]string{"-f", "--", "sh", "-c", "exit 3"})
	if code != 3 {
		t.Errorf("exit %d, want 3 (the job's exit code)", code)
	}
	if out.String() != "hello\nbye\n" {
		t.Errorf("stdout %q, want the job's stdout only", out)
	}
	if got := withoutNarration(errb.String()); got != "oops\n" {
		t.Errorf("stderr %q, want the job's stderr and narration lines (jobsuite: ...) only", errb)
	}
	if q := f.lastQuery(); !strings.Contains(q, "format=json") || !strings.Contains(q, "follow=1") {
		t.Errorf("WebSocket query %q", q)
	}
	// The submit goes over HTTP/2, the WebSocket over HTTP/1.1 (its
	// upgrade is a GET).
	f.mu.Lock()
	protos := maps.Clone(f.protos)
	f.mu.Unlock()
	if protos["POST HTTP/2.0"] != 1 || protos["POST HTTP/1.1"] != 0 || protos["GET HTTP/1.1"] == 0 {
		t.Errorf("requests by protocol %v: want the POST over HTTP/2 and the WebSocket's GET over HTTP/1.1", protos)
	}
}

func TestFollowInterrupted(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, _, errb := clientTestMeta()
	client, err := newClient(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out strings.Builder
	// Ctrl-C as soon as the first output arrives.
	stdout := writerFunc(func(p []byte) (int, error) { out.Write(p); cancel(); return len(p), nil })
	fl := &follower{client: client, id: 20, follow: true, stdout: stdout, stderr: m.Stderr}
	if code := finishFollow(ctx, m, fl); code != ExitInterrupted {
		t.Errorf("exit %d, want %d", code, ExitInterrupted)
	}
	if out.String() != "working\n" {
		t.Errorf("stdout %q", out.String())
	}
	if want := "job 20 is still running; 'jobsuite cancel 20' stops it"; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q does not contain %q", errb, want)
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

func TestJobExitCode(t *testing.T) {
	code := func(n int) *int { return &n }
	tests := map[string]struct {
		end     api.LogMessage
		want    int
		explain bool
	}{
		"completed":           {end: api.LogMessage{Status: "completed", ExitCode: code(0)}, want: 0},
		"failed with code":    {end: api.LogMessage{Status: "failed", ExitCode: code(3)}, want: 3},
		"killed by SIGKILL":   {end: api.LogMessage{Status: "failed", ExitCode: code(137), Signal: "SIGKILL"}, want: 137},
		"timeout":             {end: api.LogMessage{Status: "timeout", ExitCode: code(143)}, want: 124},
		"cancelled":           {end: api.LogMessage{Status: "cancelled", ExitCode: code(143)}, want: 130},
		"lost":                {end: api.LogMessage{Status: "failed", Reason: "attempt 1 lost"}, want: 1, explain: true},
		"could not start":     {end: api.LogMessage{Status: "failed", ExitCode: code(-1)}, want: 1, explain: true},
		"failed with code 0?": {end: api.LogMessage{Status: "failed", ExitCode: code(0)}, want: 1, explain: true},
		"unknown state":       {end: api.LogMessage{Status: "exploded"}, want: 1},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := jobExitCode(tt.end); got != tt.want {
				t.Errorf("jobExitCode = %d, want %d", got, tt.want)
			}
			if got := failedWithoutCode(tt.end); got != tt.explain {
				t.Errorf("failedWithoutCode = %v, want %v", got, tt.explain)
			}
		})
	}
}

// withoutNarration drops the narrator's lines ("jobsuite: ...") from
// stderr, leaving what the job wrote.
func withoutNarration(stderr string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(line, "jobsuite: ") {
			b.WriteString(line)
		}
	}
	return b.String()
}
