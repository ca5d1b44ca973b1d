package agent

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestPolicyCommands(t *testing.T) {
	pol, err := newPolicy(Policy{AllowCommands: []string{
		`echo [a-z]+`,
		`make -C /srv/app (build|test)`,
		`true|false`,
	}}, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		command string
		allowed bool
	}{
		"exact match":               {"echo hello", true},
		"alternative":               {"make -C /srv/app test", true},
		"top-level alternation":     {"false", true},
		"alternation stays inside":  {"true; rm -rf /", false},
		"prefix only":               {"echo", false},
		"suffix appended":           {"echo hello; touch /tmp/x", false},
		"prefix prepended":          {"touch /tmp/x; echo hello", false},
		"newline smuggles a second": {"echo hello\ntouch /tmp/x", false},
		"other command":             {"rm -rf /", false},
		"empty":                     {"", false},
		"class excludes metachars":  {"echo a$(id)", false},
		"unlisted target":           {"make -C /srv/app deploy", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := pol.command(tc.command)
			if tc.allowed && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.allowed {
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("allowed, or not ErrRefused: %v", err)
				}
				if !strings.HasPrefix(err.Error(), "refused by agent policy: command ") {
					t.Errorf("message %q", err)
				}
			}
		})
	}
	// No pattern: everything runs.
	open, err := newPolicy(Policy{}, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	if err := open.command("rm -rf /"); err != nil {
		t.Errorf("zero policy refused a command: %v", err)
	}
}

func TestPolicyConfigErrors(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Skip("no current user:", err)
	}
	other := "root"
	if me.Uid == "0" {
		other = "nobody"
	}
	if _, err := user.Lookup(other); err != nil {
		t.Skipf("no user %s: %v", other, err)
	}
	notRoot := 12345
	if me.Uid != "0" {
		notRoot, _ = strconv.Atoi(me.Uid)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		p    Policy
		euid int
		want string
	}{
		"bad regexp":              {Policy{AllowCommands: []string{"echo ("}}, 0, "-allow-command"},
		"bad env name":            {Policy{CleanEnv: true, AllowEnv: []string{"A-B"}}, 0, "-allow-env"},
		"allow-env without clean": {Policy{AllowEnv: []string{"LANG"}}, 0, "-clean-env"},
		"unknown user":            {Policy{RunAs: "no-such-user-jobsuite"}, 0, "-run-as"},
		"another user, not root":  {Policy{RunAs: other}, notRoot, "only root can run jobs as another user"},
		"missing work root":       {Policy{WorkRoot: filepath.Join(t.TempDir(), "nope")}, 0, "-work-root"},
		"work root is a file":     {Policy{WorkRoot: file}, 0, "not a directory"},
	}
	if other == "root" {
		tests["root by uid, not root"] = struct {
			p    Policy
			euid int
			want string
		}{Policy{RunAs: "0"}, notRoot, "only root"}
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := newPolicy(tc.p, tc.euid)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
	// Running as oneself needs no root and no credential.
	pol, err := newPolicy(Policy{RunAs: me.Username}, mustAtoi(t, me.Uid))
	if err != nil {
		t.Fatal(err)
	}
	if me.Uid != "0" && pol.cred != nil {
		t.Errorf("run-as oneself set a credential: %+v", pol.cred)
	}
	if !slices.Contains(pol.identity, "USER="+me.Username) {
		t.Errorf("identity = %q", pol.identity)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPolicyRunAsRoot(t *testing.T) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	pol, err := newPolicy(Policy{RunAs: "nobody"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if pol.cred == nil || strconv.Itoa(int(pol.cred.Uid)) != u.Uid || strconv.Itoa(int(pol.cred.Gid)) != u.Gid {
		t.Fatalf("credential = %+v, want uid %s gid %s", pol.cred, u.Uid, u.Gid)
	}
	l, err := pol.prepare("id -u", "", "", []string{"HOME=/root", "USER=root", "PATH=/bin"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.cred != pol.cred {
		t.Error("prepare dropped the credential")
	}
	// The last of duplicate names wins in os/exec: the job's user's.
	if got := lastValue(l.env, "USER"); got != "nobody" {
		t.Errorf("USER = %q in %q", got, l.env)
	}
	if got := lastValue(l.env, "HOME"); got != u.HomeDir {
		t.Errorf("HOME = %q, want %q", got, u.HomeDir)
	}
}

// lastValue is the value of name that os/exec would give the process.
func lastValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, _ := strings.Cut(kv, "="); k == name {
			v = val
		}
	}
	return v
}

// realTempDir is t.TempDir with symbolic links resolved.
func realTempDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPolicyWorkRoot(t *testing.T) {
	base := realTempDir(t)
	root := filepath.Join(base, "root")
	for _, d := range []string{"root/a/b", "outside"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a/b", filepath.Join(root, "inner")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(root, filepath.Join(base, "link-to-root")); err != nil {
		t.Fatal(err)
	}
	// The root itself is given through a symbolic link: it is resolved.
	pol, err := newPolicy(Policy{WorkRoot: filepath.Join(base, "link-to-root")}, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		dir  string
		want string // resolved directory; "" for a refusal
		why  string // part of the refusal
	}{
		"default is the root":     {"", root, ""},
		"root itself":             {root, root, ""},
		"inside":                  {filepath.Join(root, "a", "b"), filepath.Join(root, "a", "b"), ""},
		"relative is under root":  {"a/b", filepath.Join(root, "a", "b"), ""},
		"dot-dot staying inside":  {root + "/a/../a/b", filepath.Join(root, "a", "b"), ""},
		"symlink staying inside":  {"inner", filepath.Join(root, "a", "b"), ""},
		"dot-dot escape":          {root + "/../outside", "", "outside the work root"},
		"relative dot-dot escape": {"../outside", "", "outside the work root"},
		"parent":                  {"..", "", "outside the work root"},
		"symlink escape":          {"escape", "", "outside the work root"},
		"absolute elsewhere":      {"/etc", "", "outside the work root"},
		"prefix is not inside":    {root + "x", "", "cannot be resolved"},
		"missing":                 {"a/nope", "", "no such file or directory"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := pol.dir(tc.dir)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("dir(%q) = %q, %v; want %q", tc.dir, got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("dir(%q) = %q, %v; want a refusal saying %q", tc.dir, got, err, tc.why)
			}
		})
	}
	// A sibling that shares the root's name as a prefix is outside.
	if err := os.Mkdir(root+"x", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := pol.dir(root + "x"); !errors.Is(err, ErrRefused) {
		t.Errorf("sibling %sx allowed: %v", root, err)
	}
	// The agent's -work-dir must be inside the root too.
	if _, err := pol.checkWorkDir(filepath.Join(base, "outside")); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "-work-dir: dir") || !strings.Contains(err.Error(), "outside the work root") {
		t.Errorf("work dir outside the root: %v", err)
	}
	if d, err := pol.checkWorkDir(""); err != nil || d != root {
		t.Errorf("default work dir = %q, %v; want the root %q", d, err, root)
	}
}

func TestPolicyEnv(t *testing.T) {
	agentEnv := []string{"PATH=/agent/bin", "HOME=/agent", "USER=agent", "LOGNAME=agent", "LANG=C.UTF-8", "SECRET=s3cr3t", "JOBSUITE_ADDR=x"}
	vars := []string{"JOBSUITE_JOB_ID=7"}
	me, _ := user.LookupId(strconv.Itoa(os.Geteuid()))
	tests := map[string]struct {
		p       Policy
		jobEnv  []string
		want    map[string]string // name → value ("" absent)
		refused string
	}{
		"open": {
			Policy{}, []string{"K=V", "PATH=/job"},
			map[string]string{"PATH": "/job", "SECRET": "s3cr3t", "LANG": "C.UTF-8", "K": "V", "JOBSUITE_JOB_ID": "7", "HOME": "/agent"}, "",
		},
		"clean": {
			Policy{CleanEnv: true}, nil,
			map[string]string{"PATH": safePath, "SECRET": "", "LANG": "", "JOBSUITE_ADDR": "", "JOBSUITE_JOB_ID": "7"}, "",
		},
		"clean with allowed names": {
			Policy{CleanEnv: true, AllowEnv: []string{"LANG", "K"}}, []string{"K=V"},
			map[string]string{"PATH": safePath, "LANG": "C.UTF-8", "K": "V", "SECRET": ""}, "",
		},
		"clean with PATH allowed": {
			Policy{CleanEnv: true, AllowEnv: []string{"PATH"}}, nil,
			map[string]string{"PATH": "/agent/bin"}, "",
		},
		"clean refuses a job variable": {
			Policy{CleanEnv: true, AllowEnv: []string{"LANG"}}, []string{"K=V", "LD_PRELOAD=/x.so"},
			nil, "env K, LD_PRELOAD",
		},
		"clean refuses with no allow list": {
			Policy{CleanEnv: true}, []string{"K=V"},
			nil, "none are",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pol, err := newPolicy(tc.p, os.Geteuid())
			if err != nil {
				t.Fatal(err)
			}
			env, err := pol.env(agentEnv, vars, tc.jobEnv)
			if tc.refused != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("env = %q, %v; want a refusal saying %q", env, err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got := lastValue(env, k); got != v {
					t.Errorf("%s = %q, want %q (env %q)", k, got, v, env)
				}
			}
			if tc.p.CleanEnv && me != nil {
				if got := lastValue(env, "USER"); got != me.Username {
					t.Errorf("USER = %q, want %q", got, me.Username)
				}
				if got := lastValue(env, "HOME"); got != me.HomeDir {
					t.Errorf("HOME = %q, want %q", got, me.HomeDir)
				}
			}
		})
	}
}

// TestPolicyRefusalRunsNothing: prepare refuses before anything runs,
// and the refusal is what an agent reports.
func TestPolicyRefusalRunsNothing(t *testing.T) {
	dir := realTempDir(t)
	marker := filepath.Join(dir, "ran")
	pol, err := newPolicy(Policy{AllowCommands: []string{`echo [a-z]+`}, WorkRoot: dir}, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ command, dir string }{
		"command": {"touch " + marker, ""},
		"dir":     {"echo hi", "../"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := pol.prepare(tc.command, tc.dir, "", os.Environ(), nil, nil)
			if !errors.Is(err, ErrRefused) || !strings.HasPrefix(err.Error(), "refused by agent policy: ") {
				t.Fatalf("prepare: %v", err)
			}
		})
	}
	l, err := pol.prepare("echo hi", "", "", pathEnv(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c captured
	res := Run(context.Background(), Spec{Command: "echo hi; pwd", Env: l.env, Dir: l.dir, Credential: l.cred, Capture: true}, nil, c.out(t))
	if res.Outcome != OutcomeCompleted || c.stdout.String() != "hi\n"+dir+"\n" {
		t.Errorf("allowed job: %+v, output %q", res, c.stdout.String())
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("a refused job ran: %s exists (%v)", marker, err)
	}
}
