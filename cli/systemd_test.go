package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// The systemd units, example configs and install.sh in scripts/ are
// checked here, next to the config loader they must agree with.

var scriptsDir = filepath.Join("..", "scripts")

// unitFile is a parsed systemd unit: section → key → values (a key may
// be given more than once).
type unitFile map[string]map[string][]string

// parseUnit parses the INI dialect of systemd units: [Section] headers,
// Key=Value lines, # and ; comments, backslash line continuations.
func parseUnit(text string) (unitFile, error) {
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	n, pending := 0, ""
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line = pending + " " + line
			pending = ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", n, line)
			}
			section = line[1 : len(line)-1]
			if _, dup := u[section]; dup {
				return nil, fmt.Errorf("line %d: section [%s] given twice", n, section)
			}
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("line %d: %q is not Key=Value inside a section", n, line)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	if pending != "" {
		return nil, fmt.Errorf("line %d: continuation at the end of the file", n)
	}
	return u, sc.Err()
}

func (u unitFile) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// systemdDuration parses the time spans used here: "30s", "11min", "1h".
func systemdDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"min", time.Minute}, {"ms", time.Millisecond}, {"s", time.Second}, {"h", time.Hour}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.Atoi(n)
			return time.Duration(v) * u.unit, err
		}
	}
	v, err := strconv.Atoi(s)
	return time.Duration(v) * time.Second, err
}

func readExampleConfig(t *testing.T, role string) map[string]any {
	t.Helper()
	var cfg map[string]any
	if _, err := toml.DecodeFile(filepath.Join(scriptsDir, role+".example.toml"), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSystemdUnits(t *testing.T) {
	tests := map[string]struct {
		stopTimeout time.Duration // TimeoutStopSec
	}{
		"controller": {stopTimeout: 30 * time.Second},
		"agent":      {stopTimeout: 11 * time.Minute},
	}
	for role, tt := range tests {
		t.Run(role, func(t *testing.T) {
			path := filepath.Join(scriptsDir, "jobsuite-"+role+".service")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			u, err := parseUnit(string(data))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			want := map[string]string{
				"Service.Type":            "simple",
				"Service.ExecStart":       "/usr/local/bin/jobsuite " + role + " -config /etc/jobsuite/" + role + ".toml",
				"Service.User":            "jobsuite",
				"Service.KillSignal":      "SIGTERM",
				"Service.Restart":         "on-failure",
				"Service.NoNewPrivileges": "yes",
				"Service.ProtectSystem":   "strict",
				"Service.ProtectHome":     "read-only",
				"Service.PrivateTmp":      "yes",
				"Service.LimitNOFILE":     "65536",
				"Install.WantedBy":        "multi-user.target",
			}
			if role == "agent" {
				want["Service.KillMode"] = "mixed" // SIGTERM to the agent alone: it drains
			}
			for sk, v := range want {
				section, key, _ := strings.Cut(sk, ".")
				if got := u.get(section, key); got != v {
					t.Errorf("[%s] %s=%q, want %q", section, key, got, v)
				}
			}
			if u.get("Unit", "Description") == "" {
				t.Error("[Unit] has no Description")
			}
			stop, err := systemdDuration(u.get("Service", "TimeoutStopSec"))
			if err != nil || stop != tt.stopTimeout {
				t.Errorf("TimeoutStopSec=%q (%v), want %s", u.get("Service", "TimeoutStopSec"), err, tt.stopTimeout)
			}
			dirs := strings.Fields(u.get("Service", "StateDirectory"))
			if len(dirs) == 0 || dirs[0] != "jobsuite" {
				t.Errorf("StateDirectory=%q, want jobsuite first", u.get("Service", "StateDirectory"))
			}

			// The example config's directories are state directories,
			// so they exist, belong to the jobsuite user and are writable
			// under ProtectSystem=strict.
			cfg := readExampleConfig(t, role)
			keys := []string{"data_dir"}
			if role == "agent" {
				keys = []string{"work_dir", "state_dir"}
			}
			for _, k := range keys {
				dir, _ := cfg[k].(string)
				rel, ok := strings.CutPrefix(dir, "/var/lib/")
				if !ok || !contains(dirs, rel) {
					t.Errorf("%s = %q in %s.example.toml is not one of StateDirectory=%v (under /var/lib)", k, dir, role, dirs)
				}
			}
			if role == "agent" {
				// The unit must wait longer than the agent drains.
				drain, err := time.ParseDuration(fmt.Sprint(cfg["drain_timeout"]))
				if err != nil {
					t.Fatalf("drain_timeout in agent.example.toml: %v", err)
				}
				if grace := 5 * time.Second; stop <= drain+grace {
					t.Errorf("TimeoutStopSec %s must exceed drain_timeout %s plus the kill grace %s", stop, drain, grace)
				}
			}
		})
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on both units,
// where systemd is installed.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd); the units were only checked as INI files")
	}
	// verify checks that ExecStart's program exists: point it at an
	// executable that does.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var units []string
	for _, role := range []string{"controller", "agent"} {
		name := "jobsuite-" + role + ".service"
		data, err := os.ReadFile(filepath.Join(scriptsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "ExecStart=/usr/local/bin/jobsuite ", "ExecStart="+exe+" ")
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	mentions := strings.Contains(string(out), "jobsuite-")
	switch {
	case err != nil && !mentions:
		t.Skipf("systemd-analyze verify cannot run here (%v): %s", err, out)
	case err != nil || mentions:
		// verify exits 0 even for unknown keys and bad values; it
		// only prints them.
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestExampleConfigs loads scripts/*.example.toml through 'jobsuite
// controller -config' and 'jobsuite agent -config', the way the units
// start them: the file must load without error, so the command gets as
// far as loading the certificates (pointed at a missing file here).
func TestExampleConfigs(t *testing.T) {
	for _, role := range []string{"controller", "agent"} {
		t.Run(role, func(t *testing.T) {
			path := filepath.Join(scriptsDir, role+".example.toml")
			if _, err := os.Stat(path); err != nil {
				t.Fatal(err)
			}
			ca := filepath.Join(t.TempDir(), "no-such-ca.pem")
			code, _, stderr := runCLI(t, role, "-config", path, "-ca", ca)
			if strings.Contains(stderr, path) || strings.Contains(stderr, ".example.toml") {
				t.Fatalf("%s does not load: %s", path, stderr)
			}
			if code != ExitError || !strings.Contains(stderr, ca) {
				t.Fatalf("exit %d, stderr %q; want the error about the missing CA %s", code, stderr, ca)
			}
		})
	}
}

// TestSystemdInstallScript runs scripts/install.sh into a temporary root twice:
// the second run keeps the edited config and changes nothing else.
func TestSystemdInstallScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	script := filepath.Join(scriptsDir, "install.sh")
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n install.sh: %v\n%s", err, out)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(sc, script).CombinedOutput(); err != nil {
			t.Errorf("shellcheck install.sh: %v\n%s", err, out)
		}
	}
	tmp := t.TempDir()
	binary := filepath.Join(tmp, "jobsuite-build")
	if err := os.WriteFile(binary, []byte("#!/bin/sh\necho jobsuite\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	install := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(bash, append([]string{script}, args...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}

	for _, role := range []string{"controller", "agent"} {
		t.Run(role, func(t *testing.T) {
			root := filepath.Join(tmp, role)
			code, out := install(role, "--root", root, "--binary", binary, "--no-start")
			if code != 0 {
				t.Fatalf("install.sh %s: exit %d\n%s", role, code, out)
			}
			files := map[string]os.FileMode{
				"usr/local/bin/jobsuite":                           0o755,
				"etc/jobsuite/" + role + ".toml":                   0o640,
				"etc/jobsuite":                                     0o750 | os.ModeDir,
				"etc/jobsuite/pki":                                 0o750 | os.ModeDir,
				"etc/systemd/system/jobsuite-" + role + ".service": 0o644,
			}
			for name, mode := range files {
				fi, err := os.Stat(filepath.Join(root, name))
				if err != nil {
					t.Errorf("%s not installed: %v", name, err)
					continue
				}
				if fi.Mode() != mode {
					t.Errorf("%s has mode %s, want %s", name, fi.Mode(), mode)
				}
			}
			for src, dst := range map[string]string{
				role + ".example.toml":          "etc/jobsuite/" + role + ".toml",
				"jobsuite-" + role + ".service": "etc/systemd/system/jobsuite-" + role + ".service",
			} {
				a, _ := os.ReadFile(filepath.Join(scriptsDir, src))
				b, _ := os.ReadFile(filepath.Join(root, dst))
				if string(a) != string(b) {
					t.Errorf("%s is not a copy of scripts/%s", dst, src)
				}
			}
			if !strings.Contains(out, "Next steps") || !strings.Contains(out, "systemctl enable --now jobsuite-"+role) {
				t.Errorf("no next steps:\n%s", out)
			}
			if join := strings.Contains(out, "jobsuite agent token create"); join != (role == "agent") {
				t.Errorf("the join-token route in the next steps for the %s: %v:\n%s", role, join, out)
			}

			// Again, after the operator edited the config: it is kept.
			config := filepath.Join(root, "etc/jobsuite", role+".toml")
			if err := os.WriteFile(config, []byte("# edited\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			code, out = install(role, "--root", root, "--binary="+binary, "--no-start")
			if code != 0 {
				t.Fatalf("second install.sh %s: exit %d\n%s", role, code, out)
			}
			if b, _ := os.ReadFile(config); string(b) != "# edited\n" {
				t.Errorf("the second run overwrote the config: %q", b)
			}
			if !strings.Contains(out, "kept "+config) {
				t.Errorf("the second run does not say it kept the config:\n%s", out)
			}
		})
	}

	usage := map[string][]string{
		"no role":        nil,
		"two roles":      {"controller", "agent"},
		"unknown flag":   {"controller", "--bogus"},
		"binary no path": {"agent", "--binary"},
	}
	for name, args := range usage {
		t.Run(name, func(t *testing.T) {
			if code, out := install(args...); code != 2 || !strings.Contains(out, "install.sh") {
				t.Errorf("exit %d, want 2 with a message:\n%s", code, out)
			}
		})
	}
	t.Run("missing binary", func(t *testing.T) {
		code, out := install("agent", "--root", filepath.Join(tmp, "x"), "--binary", filepath.Join(tmp, "nope"))
		if code != 1 || !strings.Contains(out, "no jobsuite binary") {
			t.Errorf("exit %d, want 1 naming the binary:\n%s", code, out)
		}
	})
}

// TestBootstrapCertsScript: scripts/bootstrap-certs.sh -h prints its
// help instead of making a PKI in a folder named -h; without a folder it
// says what it needs; with one it makes the PKI.
func TestBootstrapCertsScript(t *testing.T) {
	script, err := filepath.Abs(filepath.Join(scriptsDir, "bootstrap-certs.sh"))
	if err != nil {
		t.Fatal(err)
	}
	binary := asJobsuite(t)
	dir := t.TempDir()
	run := func(args ...string) (int, string) {
		cmd := exec.Command("bash", append([]string{script}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "JOBSUITE="+binary)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	for _, h := range []string{"-h", "--help"} {
		if code, out := run(h); code != 0 || !strings.Contains(out, "bootstrap-certs.sh DIR") {
			t.Errorf("bootstrap-certs.sh %s: exit %d\n%s", h, code, out)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("-h made files: %v", entries)
	}
	for args, want := range map[string]string{"": "say where the PKI goes", "--bogus": "unknown option"} {
		if code, out := run(strings.Fields(args)...); code != 2 || !strings.Contains(out, want) {
			t.Errorf("bootstrap-certs.sh %s: exit %d, %q; want 2 and %q", args, code, out, want)
		}
	}
	if code, out := run("pki", "localhost", "127.0.0.1"); code != 0 || !strings.Contains(out, "PKI ready in pki") {
		t.Fatalf("bootstrap-certs.sh pki: exit %d\n%s", code, out)
	}
	for _, f := range []string{"ca.pem", "controller.pem", "controller-key.pem", "operator.pem", "operator-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "pki", f)); err != nil {
			t.Error(err)
		}
	}
}

// asJobsuite returns a jobsuite command for scripts: this test binary,
// which runs the CLI when JOBSUITE_TEST_AS_CLI is set (TestMain).
func asJobsuite(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jobsuite")
	script := "#!/bin/sh\nJOBSUITE_TEST_AS_CLI=1 exec " + strconv.Quote(self) + " \"$@\"\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
