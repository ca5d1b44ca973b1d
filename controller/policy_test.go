package controller_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"jobsuite/agent"
	"jobsuite/transport"
)

// startPolicyAgent starts agent name with a policy (and workDir) and
// waits until it is connected.
func (c *cluster) startPolicyAgent(name string, pol agent.Policy, workDir string) {
	c.t.Helper()
	a, err := agent.New(agent.Config{
		Controller: c.srv.AgentAddr(), TLS: files(c.dir, name), Slots: 4, Transport: transport.ModeQUIC,
		Logger: testLogger(c.t, name), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		StateDir: c.t.TempDir(), Policy: pol, WorkDir: workDir,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.agents[name] = cancel
	c.agentWG.Add(1)
	go func() {
		defer c.agentWG.Done()
		if err := a.Run(ctx); err != nil {
			c.t.Errorf("agent %s: %v", name, err)
		}
	}()
	c.waitFor("agent "+name+" connected", func() bool {
		code, b := c.do("GET", "/agents", "")
		return code == 200 && strings.Contains(string(b), `"`+name+`"`)
	})
}

// realDir is a new temporary directory with symbolic links resolved.
func realDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAgentPolicy: an agent with allowed commands and a work root runs
// what they allow and refuses the rest with the reason — and nothing of
// a refused job runs.
func TestAgentPolicy(t *testing.T) {
	c := startCluster(t)
	root := realDir(t)
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := realDir(t)
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(outside, "ran")
	c.startPolicyAgent("agent-1", agent.Policy{
		AllowCommands: []string{`echo [a-z ]+`, `pwd`, `true`},
		WorkRoot:      root,
	}, "")

	tests := map[string]struct {
		body   string
		status string
		logs   string // for a job that ran
		reason string // for a refused one
	}{
		"allowed":                {`{"command":"echo hello world"}`, "completed", "hello world\n", ""},
		"default dir is root":    {`{"command":"pwd"}`, "completed", root + "\n", ""},
		"relative dir inside":    {`{"command":"pwd","dir":"sub"}`, "completed", root + "/sub\n", ""},
		"command not allowed":    {fmt.Sprintf(`{"command":"touch %s"}`, marker), "failed", "", "refused by agent policy: command"},
		"allowed then more":      {fmt.Sprintf(`{"command":"echo hi; touch %s"}`, marker), "failed", "", "refused by agent policy: command"},
		"params make it refused": {fmt.Sprintf(`{"command":"true","params":"; touch %s"}`, marker), "failed", "", "refused by agent policy: command"},
		"dir escapes with ..":    {`{"command":"pwd","dir":"../"}`, "failed", "", "outside the work root"},
		"absolute dir escapes":   {fmt.Sprintf(`{"command":"pwd","dir":%q}`, root+"/sub/../.."), "failed", "", "outside the work root"},
		"symlink escapes":        {`{"command":"pwd","dir":"escape"}`, "failed", "", "outside the work root"},
	}
	ids := map[string]uint64{}
	for name, tc := range tests {
		ids[name] = c.submit(tc.body).JobID
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			j := c.waitState(ids[name], "completed", "failed")
			if j.Status != tc.status {
				t.Fatalf("status %s (%s), want %s", j.Status, j.Reason, tc.status)
			}
			got := c.logs(j.JobID)
			if tc.reason == "" {
				if got != tc.logs {
					t.Errorf("logs %q, want %q", got, tc.logs)
				}
				return
			}
			if !strings.Contains(j.Reason, tc.reason) || !strings.Contains(j.Reason, "refused by agent policy: ") || j.Result == nil {
				t.Errorf("reason %q, want one saying %q", j.Reason, tc.reason)
			}
			// Nothing started: no Started, no exit code, no output.
			if j.StartedAt != "" || j.ExitCode != nil || got != "" {
				t.Errorf("a refused job shows signs of running: started_at %q, exit code %v, logs %q", j.StartedAt, j.ExitCode, got)
			}
		})
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("a refused command ran: %s exists (%v)", marker, err)
	}
	// The agent still works after refusing.
	j := c.submit(`{"command":"echo still here"}`)
	if got := c.waitState(j.JobID, "completed", "failed"); got.Status != "completed" {
		t.Errorf("after the refusals: %+v", got)
	}
}

// TestAgentPolicyRunAs runs jobs as a user created for the test, with a
// clean environment; it needs root and useradd.
func TestAgentPolicyRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run jobs as another user")
	}
	for _, tool := range []string{"useradd", "userdel", "groupadd", "groupdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name, group := "jst"+hex.EncodeToString(b), "jsg"+hex.EncodeToString(b)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Skipf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("groupadd", group)
	t.Cleanup(func() { _ = exec.Command("groupdel", group).Run() })
	run("useradd", "-M", "-d", "/nonexistent/"+name, "-s", "/bin/sh", "-G", group, name)
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}

	t.Setenv("JOBSUITE_TEST_SECRET", "s3cr3t")
	t.Setenv("LANG", "C.UTF-8")
	c := startCluster(t)
	c.startPolicyAgent("agent-1", agent.Policy{RunAs: name, CleanEnv: true, AllowEnv: []string{"LANG", "GREETING"}}, "/")

	j := c.submit(`{"command":"id -u; id -g; id -G; env","env":{"GREETING":"hi"}}`)
	done := c.waitState(j.JobID, "completed", "failed")
	out := c.logs(j.JobID)
	if done.Status != "completed" {
		t.Fatalf("job %s (%s): %s", done.Status, done.Reason, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 || lines[0] != u.Uid || lines[1] != u.Gid {
		t.Fatalf("id -u, id -g = %q, want %s, %s", lines, u.Uid, u.Gid)
	}
	if groups := strings.Fields(lines[2]); !slices.Contains(groups, g.Gid) || slices.Contains(groups, "0") {
		t.Errorf("id -G = %q: want %s (%s) and not root's 0", lines[2], g.Gid, group)
	}
	env := map[string]string{}
	for _, l := range lines[3:] {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	for k, want := range map[string]string{
		"HOME": u.HomeDir, "USER": name, "LOGNAME": name, "LANG": "C.UTF-8", "GREETING": "hi",
		"JOBSUITE_JOB_ID": fmt.Sprint(j.JobID), "JOBSUITE_AGENT": "agent-1",
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["JOBSUITE_TEST_SECRET"]; ok {
		t.Error("the agent's environment leaked into a clean-env job")
	}

	// A job variable that is not allowed refuses the job.
	r := c.submit(`{"command":"true","env":{"LD_PRELOAD":"/tmp/x.so"}}`)
	if got := c.waitState(r.JobID, "completed", "failed"); got.Status != "failed" || !strings.Contains(got.Reason, "refused by agent policy: env LD_PRELOAD") {
		t.Errorf("job with a disallowed env: %s (%s)", got.Status, got.Reason)
	}

	// On a terminal, the terminal is the job user's, as after a login;
	// TERM is set in a clean environment too.
	tj := c.submit(`{"command":"test -t 1 && echo tty; test -O /proc/self/fd/1 && echo owner; stty size < /dev/tty; echo \"$TERM\"","tty":true}`)
	if got := c.waitState(tj.JobID, "completed", "failed"); got.Status != "completed" || c.logs(tj.JobID) != "tty\nowner\n24 80\nxterm-256color\n" {
		t.Errorf("tty job as %s: %s (%s), output %q", name, got.Status, got.Reason, c.logs(tj.JobID))
	}
}
