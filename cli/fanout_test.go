package cli

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	mcli "github.com/mitchellh/cli"

	"jobsuite/api"
)

// TestDevFanout fans a command out to dev's two agents with the CLI:
// -f prefixes each line with its host, -group prints each host's
// output as one block, the exit code is the worst child's, and status
// shows the per-host table.
func TestDevFanout(t *testing.T) {
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

	// Lines prefixed with the host, each host's in its order. Batch 1
	// runs agent-1's child before agent-2's, but the two followers print
	// as their streams deliver, so the hosts' lines may interleave: only
	// each host's own order is promised. agent-2 exits 4: the worst child.
	script := `echo "one $JOBSUITE_AGENT"; echo two; [ "$JOBSUITE_AGENT" = agent-1 ] || exit 4`
	code, out, errOut := runCLI(t, "submit", "-all", "-batch", "1", "-f", "-q", "--", script)
	perHost := map[string][]string{}
	for _, line := range strings.SplitAfter(out, "\n") {
		if host, rest, ok := strings.Cut(line, ": "); ok {
			perHost[host] = append(perHost[host], rest)
		} else if line != "" {
			perHost["?"] = append(perHost["?"], line)
		}
	}
	wantHosts := map[string][]string{"agent-1": {"one agent-1\n", "two\n"}, "agent-2": {"one agent-2\n", "two\n"}}
	if code != 4 || !reflect.DeepEqual(perHost, wantHosts) || errOut != "" {
		t.Errorf("submit -all -f: exit %d, stdout %q, stderr %q; want 4, each host's lines %q, \"\"", code, out, errOut, wantHosts)
	}
	// -group: one block per host, each under its header.
	code, out, _ = runCLI(t, "submit", "-all", "-f", "-q", "-group", "--", script)
	blocks := map[string]string{
		"agent-1": "=== agent-1 (exit 0) ===\none agent-1\ntwo\n",
		"agent-2": "=== agent-2 (failed: exit 4) ===\none agent-2\ntwo\n",
	}
	if code != 4 || (out != blocks["agent-1"]+blocks["agent-2"] && out != blocks["agent-2"]+blocks["agent-1"]) {
		t.Errorf("submit -all -f -group: exit %d, stdout %q", code, out)
	}
	// All completed: 0.
	if code, _, _ := runCLI(t, "submit", "-all", "-f", "-q", "--", "true"); code != 0 {
		t.Errorf("a fan-out that completed everywhere: exit %d", code)
	}
	// A selector nobody matches: an error naming it.
	code, _, errOut = runCLI(t, "submit", "-all", "-label", "role=none", "--", "true")
	if code != ExitError || !strings.Contains(errOut, "role=none") {
		t.Errorf("no agent matches: exit %d, stderr %q", code, errOut)
	}
	// Without -f: the parent and its hosts; status shows the table.
	code, out, _ = runCLI(t, "submit", "-all", "-batch", "50%", "--", "true")
	if code != 0 || !strings.Contains(out, "fanned out to 2 hosts, 1 at a time: agent-1, agent-2") {
		t.Fatalf("submit -all: exit %d, stdout %q", code, out)
	}
	id := strings.Fields(out)[1]
	if code, _, _ := runCLI(t, "wait", id); code != 0 {
		t.Errorf("wait on the parent: exit %d", code)
	}
	code, out, _ = runCLI(t, "status", id)
	if code != 0 || !strings.Contains(out, "2 completed") || !strings.Contains(out, "HOST") ||
		!strings.Contains(out, "agent-1") || !strings.Contains(out, "agent-2") {
		t.Errorf("status of the parent: exit %d, stdout %q", code, out)
	}
}

func TestWorstExit(t *testing.T) {
	code := func(c int) *int { return &c }
	tests := map[string]struct {
		ends []api.LogMessage
		want int
	}{
		"all completed":           {[]api.LogMessage{{Status: "completed"}, {Status: "completed"}}, 0},
		"a failure wins":          {[]api.LogMessage{{Status: "timeout"}, {Status: "failed", ExitCode: code(2)}, {Status: "cancelled"}}, 2},
		"highest failing code":    {[]api.LogMessage{{Status: "failed", ExitCode: code(2)}, {Status: "failed", ExitCode: code(7)}}, 7},
		"timeout over cancel":     {[]api.LogMessage{{Status: "cancelled"}, {Status: "timeout"}}, ExitTimeout},
		"lost counts as failed":   {[]api.LogMessage{{Status: "completed"}, {Status: "failed"}}, ExitError},
		"cancelled over complete": {[]api.LogMessage{{Status: "completed"}, {Status: "cancelled"}}, ExitInterrupted},
	}
	for name, tc := range tests {
		if got := worstExit(tc.ends); got != tc.want {
			t.Errorf("%s: %d, want %d", name, got, tc.want)
		}
	}
}
