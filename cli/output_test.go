package cli

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	mcli "github.com/mitchellh/cli"
)

// TestDevOutput drives a dev controller and its agents with the CLI:
// ordered output on stdout, split output on both streams, a job on a
// terminal, and a retried job read as a whole (with a marker on stderr
// where the retry begins), attempt by attempt and with timestamps.
func TestDevOutput(t *testing.T) {
	for _, k := range []string{"JOBSUITE_ADDR", "JOBSUITE_CACERT", "JOBSUITE_CLIENT_CERT", "JOBSUITE_CLIENT_KEY", "JOBSUITE_TOKEN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Chdir(t.TempDir())
	var devOut, devErr bytes.Buffer
	m := Meta{UI: &mcli.BasicUi{Writer: &devOut, ErrorWriter: &devErr}, Stdout: &syncWriter{w: &devOut}, Stderr: &syncWriter{w: &devErr}}
	stop := startDev(t, m)
	defer stop()
	waitUntil(t, "dev's agents", func() bool {
		code, out, _ := runCLI(t, "agents")
		return code == 0 && strings.Contains(out, "agent-1") && strings.Contains(out, "agent-2")
	})

	type want struct {
		code           int
		stdout, stderr string
	}
	check := func(w want, args ...string) {
		t.Helper()
		code, out, errOut := runCLI(t, args...)
		if code != w.code || out != w.stdout || errOut != w.stderr {
			t.Errorf("jobsuite %s: exit %d, stdout %q, stderr %q; want %d, %q, %q", strings.Join(args, " "), code, out, errOut, w.code, w.stdout, w.stderr)
		}
	}
	// -q: the narration ("jobsuite: job 1 queued", ...) has tests of its
	// own; here stderr holds only what the job and the markers write.
	check(want{0, "out1\nerr1\nout2\nerr2\ntail", ""}, "submit", "-f", "-q", "--", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf tail")
	check(want{0, "out\n", "err\n"}, "submit", "-f", "-q", "-split-output", "--", "echo out; echo err >&2")
	check(want{0, "tty\nxterm-256color\n", ""}, "submit", "-f", "-q", "-tty", "--", `test -t 1 && echo tty; echo "$TERM"`)

	// Job 4: attempt 1 fails, attempt 2 completes.
	code, out, errOut := runCLI(t, "submit", "-f", "-q", "-retries", "1", "--", `echo "attempt $JOBSUITE_ATTEMPT"; echo err >&2; [ $JOBSUITE_ATTEMPT -ge 2 ]`)
	if code != 0 || out != "attempt 1\nerr\nattempt 2\nerr\n" || !regexp.MustCompile(`^--- attempt 2 on agent-[12], \S+Z ---\n$`).MatchString(errOut) {
		t.Fatalf("retried job: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "logs", "4")
	if code != 0 || out != "attempt 1\nerr\nattempt 2\nerr\n" ||
		!regexp.MustCompile(`^--- attempt 1 on agent-[12], \S+Z ---\n--- attempt 2 on agent-[12], \S+Z ---\n$`).MatchString(errOut) {
		t.Errorf("logs of the retried job: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	check(want{0, "attempt 1\nerr\n", ""}, "logs", "-attempt", "1", "4")
	check(want{0, "attempt 2\nerr\n", ""}, "logs", "-attempt", "2", "4")
	check(want{1, "attempt 1\nerr\n", ""}, "logs", "-f", "-attempt", "1", "4")
	check(want{1, "", "error: job 4 has 2 attempts so far; attempt must be between 1 and 2\n"}, "logs", "-attempt", "3", "4")
	code, out, _ = runCLI(t, "logs", "-timestamps", "-attempt", "2", "4")
	if code != 0 || !regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z attempt 2\n)(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z err\n)$`).MatchString(out) {
		t.Errorf("logs -timestamps: exit %d, stdout %q", code, out)
	}
}
