package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
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
