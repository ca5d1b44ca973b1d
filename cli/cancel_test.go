package cli

import (
	"testing"
)

func TestCancel(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		"queued job": {
			args: []string{"5"}, code: ExitOK, stdout: "Job 5 cancelled\n",
		},
		"running job": {
			args: []string{"6"}, code: ExitOK, stdout: "Job 6 cancel requested; the agent is stopping it\n",
		},
		"finished job": {
			args: []string{"7"}, code: ExitError,
			stderr: "error: job 7: job 7 is completed; only queued, waiting or running jobs can be cancelled\n",
		},
		"every ID is tried": {
			args: []string{"7", "99", "5", "6"}, code: ExitError,
			stdout: "Job 5 cancelled\nJob 6 cancel requested; the agent is stopping it\n",
			stderr: "error: job 7: job 7 is completed; only queued, waiting or running jobs can be cancelled\n" +
				"error: job 99: no job with id 99\n",
		},
		"no ID": {
			args: nil, code: ExitUsage,
			stderr: "error: want at least one job ID\nRun 'jobsuite cancel -h' for usage.\n",
		},
		"bad ID is refused before any cancel": {
			args: []string{"5", "five"}, code: ExitUsage,
			stderr: "error: job id must be a positive integer, got \"five\"\nRun 'jobsuite cancel -h' for usage.\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			m, out, errb := clientTestMeta()
			if code := (&CancelCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if out.String() != tt.stdout {
				t.Errorf("stdout %q, want %q", out, tt.stdout)
			}
			if errb.String() != tt.stderr {
				t.Errorf("stderr %q, want %q", errb, tt.stderr)
			}
		})
	}
}
