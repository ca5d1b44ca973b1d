package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mcli "github.com/mitchellh/cli"

	"jobsuite/agent"
)

// TestMain points XDG_CONFIG_HOME at an empty folder, so a
// ~/.config/jobsuite/config.toml of whoever runs the tests cannot change
// what 'jobsuite submit' sends.
func TestMain(m *testing.M) {
	if os.Getenv("JOBSUITE_TEST_AS_CLI") == "1" {
		// The test binary standing in for jobsuite (asJobsuite).
		os.Exit(Run(os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "jobsuite-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// configTestFlags registers one flag of every kind the commands use.
func configTestFlags() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	fs.String("data-dir", "", "")
	fs.String("http", "127.0.0.1:8443", "")
	fs.Int("slots", 0, "")
	fs.Bool("log-json", false, "")
	fs.String("log-level", "info", "")
	fs.Duration("lease-ttl", 0, "")
	fs.String("labels", "", "")
	fs.String("config", "", "")
	return fs
}

func TestConfigFile(t *testing.T) {
	opts := configOptions{
		skip:   []string{"config"},
		tables: []string{"labels"},
		check:  map[string]func(string) error{"log-level": checkLogLevel},
	}
	tests := map[string]struct {
		file string
		args []string
		want map[string]string // flag values after loading
		errs []string          // each must appear in the error, in this order
	}{
		"every kind of value": {
			file: `# controller
data_dir = "/var/lib/jobsuite"
slots = 4
log_json = true
lease_ttl = "20s"
labels = {gpu = "true", zone = "a"}
`,
			want: map[string]string{"data-dir": "/var/lib/jobsuite", "slots": "4", "log-json": "true",
				"lease-ttl": "20s", "labels": "gpu=true,zone=a", "http": "127.0.0.1:8443"},
		},
		"flags override the file": {
			file: "data_dir = \"/from/file\"\nslots = 4\nlabels = {gpu = \"true\"}\n",
			args: []string{"-slots", "8", "-labels", "zone=b"},
			want: map[string]string{"data-dir": "/from/file", "slots": "8", "labels": "zone=b"},
		},
		"labels as a table section": {
			file: "slots = 1\n\n[labels]\ngpu = \"true\"\nrack = 7\nssd = true\n",
			want: map[string]string{"labels": "gpu=true,rack=7,ssd=true", "slots": "1"},
		},
		"labels as dotted keys": {
			file: "labels.gpu = \"true\"\nlabels.zone = \"a\"\n",
			want: map[string]string{"labels": "gpu=true,zone=a"},
		},
		"labels as a string": {
			file: "labels = \"gpu=true\"\n",
			want: map[string]string{"labels": "gpu=true"},
		},
		"quoted keys": {
			file: "\"data_dir\" = \"/q\"\n'slots' = 2\n",
			want: map[string]string{"data-dir": "/q", "slots": "2"},
		},
		"empty file": {
			file: "# nothing\n",
			want: map[string]string{"data-dir": "", "slots": "0"},
		},
		"unknown key": {
			file: "data_dir = \"/x\"\n\nbogus = 1\n",
			errs: []string{`cfg.toml:3: key "bogus": unknown key`, "\ncfg.toml: known keys: data_dir, http, labels, lease_ttl, log_json, log_level, slots"},
		},
		"unknown table": {
			file: "slots = 1\n[server]\nport = 1\n",
			errs: []string{`cfg.toml:2: key "server": unknown key`},
		},
		"dashed key": {
			file: "data-dir = \"/x\"\n",
			errs: []string{`cfg.toml:1: key "data-dir": unknown key (did you mean data_dir?)`},
		},
		"misspelt key": {
			file: "\nleast_ttl = \"5s\"\n",
			errs: []string{`cfg.toml:2: key "least_ttl": unknown key (did you mean lease_ttl?)`},
		},
		"config is not a key": {
			file: "config = \"other.toml\"\n",
			errs: []string{`cfg.toml:1: key "config": unknown key`},
		},
		"string for an integer": {
			file: "data_dir = \"/x\"\nslots = \"four\"\n",
			errs: []string{`cfg.toml:2: key "slots": must be an integer, got string "four"`},
		},
		"float for an integer": {
			file: "slots = 2.5\n",
			errs: []string{`cfg.toml:1: key "slots": must be an integer, got float 2.5`},
		},
		"string for a bool": {
			file: "\n\n  log_json = \"yes\"\n",
			errs: []string{`cfg.toml:3: key "log_json": must be true or false, got string "yes"`},
		},
		"number for a string": {
			file: "http = 8443\n",
			errs: []string{`cfg.toml:1: key "http": must be a string, got integer 8443`},
		},
		"duration without quotes": {
			file: "lease_ttl = 15\n",
			errs: []string{`cfg.toml:1: key "lease_ttl": must be a duration in quotes, such as "15s" or "5m", got integer 15`},
		},
		"bad duration": {
			file: "lease_ttl = \"15 seconds\"\n",
			errs: []string{`cfg.toml:1: key "lease_ttl": must be a duration such as "15s" or "5m", got string "15 seconds"`},
		},
		"bad value a check refuses": {
			file: "log_level = \"loud\"\n",
			errs: []string{`cfg.toml:1: key "log_level": want trace, debug, info, warn or error, got "loud"`},
		},
		"nested table in labels": {
			file: "[labels]\ngpu = {model = \"a100\"}\n",
			errs: []string{`cfg.toml:2: key "labels.gpu": must be a string, got table`},
		},
		"array for labels": {
			file: "labels = [\"gpu=true\"]\n",
			errs: []string{`cfg.toml:1: key "labels": must be a table such as {gpu = "true"}, got array`},
		},
		"bad value overridden by a flag is still an error": {
			file: "slots = \"x\"\n",
			args: []string{"-slots", "2"},
			errs: []string{`cfg.toml:1: key "slots": must be an integer`},
		},
		"every problem, in file order": {
			file: "zzz = 1\nslots = true\naaa = 2\n",
			errs: []string{`cfg.toml:1: key "zzz": unknown key`, `cfg.toml:2: key "slots": must be an integer`, `cfg.toml:3: key "aaa": unknown key`},
		},
		"lines in a multi-line string are not keys": {
			file: "data_dir = \"\"\"\nbogus = 1\n\"\"\"\nbogus = 2\n",
			errs: []string{`cfg.toml:4: key "bogus": unknown key`},
		},
		"syntax error": {
			file: "data_dir = \"/x\"\nslots = = 3\n",
			errs: []string{`cfg.toml:2: `},
		},
		"duplicate key": {
			file: "slots = 1\nslots = 2\n",
			errs: []string{`cfg.toml:2: key "slots": `, "already been defined"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cfg.toml")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			fs := configTestFlags()
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := loadConfigFile(fs, path, opts)
			if len(tt.errs) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tt.errs)
				}
				msg := strings.ReplaceAll(err.Error(), path, "cfg.toml")
				rest := msg
				for _, want := range tt.errs {
					i := strings.Index(rest, want)
					if i < 0 {
						t.Fatalf("error\n%s\ndoes not contain, in order, %q", msg, want)
					}
					rest = rest[i+len(want):]
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.want {
				if got := fs.Lookup(name).Value.String(); got != want {
					t.Errorf("-%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestConfigFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	err := loadConfigFile(configTestFlags(), path, controllerConfig)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want an error naming %s", err, path)
	}
}

func TestConfigKeyLines(t *testing.T) {
	doc := `a = 1
  "b.c" = 2   # a quoted key with a dot
d.e = 3
[t]
x = 4
[t.u]
'y' = 5
[[arr]]
z = """
not = a key
"""
w = {v = 1}
`
	want := map[string]int{"a": 1, `"b.c"`: 2, "d": 3, "d.e": 3, "t": 4, "t.x": 5, "t.u": 6, "t.u.y": 7, "arr": 8, "arr.z": 9, "arr.w": 12}
	if got := keyLines(doc); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	if n := lineOf(keyLines(doc), []string{"arr", "w", "v"}); n != 12 {
		t.Errorf("a key of an inline table: line %d, want 12", n)
	}
}

// TestConfigThroughCommands runs 'jobsuite controller -config' and
// 'jobsuite agent -config' as a user would.
func TestConfigThroughCommands(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	tests := map[string]struct {
		cmd  string
		args []string
		code int
		err  string // stderr must contain it
	}{
		"controller unknown key": {
			cmd:  "controller",
			args: []string{"-config", write("c1.toml", "data_dir = \"/x\"\nleast_ttl = \"5s\"\n")},
			code: ExitError, err: `c1.toml:2: key "least_ttl": unknown key (did you mean lease_ttl?)`,
		},
		"controller wrong type": {
			cmd:  "controller",
			args: []string{"-config", write("c2.toml", "\n\nlog_json = 1\n")},
			code: ExitError, err: `c2.toml:3: key "log_json": must be true or false, got integer 1`,
		},
		"controller flag overrides file": {
			cmd: "controller",
			args: []string{"-config", write("c3.toml", fmt.Sprintf("data_dir = %q\nca = %q\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
				dir, filepath.Join(missing, "from-file.pem"))), "-ca", filepath.Join(missing, "from-flag.pem")},
			code: ExitError, err: "from-flag.pem",
		},
		"controller missing file": {
			cmd:  "controller",
			args: []string{"-config", filepath.Join(missing, "controller.toml")},
			code: ExitError, err: "missing/controller.toml",
		},
		"agent labels not a table": {
			cmd:  "agent",
			args: []string{"-config", write("a1.toml", "controller = \"ctl:7443\"\nlabels = 5\n")},
			code: ExitError, err: `a1.toml:2: key "labels": must be a table such as {gpu = "true"}, got integer 5`,
		},
		"agent bad transport": {
			cmd:  "agent",
			args: []string{"-config", write("a2.toml", "transport = \"udp\"\n")},
			code: ExitError, err: `a2.toml:1: key "transport": `,
		},
		"agent negative slots": {
			cmd:  "agent",
			args: []string{"-config", write("a3.toml", "slots = -1\n")},
			code: ExitError, err: `a3.toml:1: key "slots": must be at least 1`,
		},
		"agent flag overrides file": {
			cmd: "agent",
			args: []string{"-config", write("a4.toml", fmt.Sprintf("controller = \"ctl:7443\"\nca = %q\ncert = \"c.pem\"\nkey = \"k.pem\"\nlabels = {gpu = \"true\"}\n",
				filepath.Join(missing, "from-file.pem"))), "-ca", filepath.Join(missing, "from-flag.pem")},
			code: ExitError, err: "from-flag.pem",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := runCLI(t, append([]string{tt.cmd}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.err) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.code, tt.err)
			}
			if strings.Contains(tt.err, "from-flag") && strings.Contains(stderr, "from-file") {
				t.Errorf("the file won over the flag: %s", stderr)
			}
		})
	}
}

// TestControllerRunsFromConfigFile starts a controller configured only
// by a file and checks that the file's settings took effect.
func TestControllerRunsFromConfigFile(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "controller.toml")
	cfg := fmt.Sprintf(`# every key of jobsuite controller
data_dir   = %q
ca         = %q
cert       = %q
key        = %q
http       = "127.0.0.1:0"
listen     = "127.0.0.1:0"
lease_ttl  = "9s"
kill_grace = "2s"
log_level  = "debug"
log_json   = true
`, filepath.Join(dir, "data"), pki.ca(), pki.ctlCert, pki.ctlKey)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := Meta{UI: &mcli.BasicUi{Writer: &stderr, ErrorWriter: &stderr}, Stdout: &stderr, Stderr: &stderr, Ctx: ctx}
	done := make(chan int, 1)
	go func() { done <- (&ControllerCommand{Meta: m}).Run([]string{"-config", path}) }()

	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(stderr.String(), "controller ready") {
		select {
		case code := <-done:
			t.Fatalf("controller exited %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	// log_json: every line is a JSON object; the data directory was used.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("log_json = true, but a log line is not JSON: %q", line)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("data_dir was not used: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer safe to write and read from several
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSubmitConfigDefaults checks that 'jobsuite submit' takes its
// defaults from ./jobsuite.toml or ~/.config/jobsuite/config.toml, and
// that flags win.
func TestSubmitConfigDefaults(t *testing.T) {
	f := newFakeController(t)
	const full = `# submit defaults
[submit]
name = "nightly"
priority = "high"
timeout = "1m30s"
retries = 2
logs = false
labels = {gpu = "yes", os = "linux"}
env = {A = "1", B = "x=y"}
`
	tests := map[string]struct {
		cwd, home string // ./jobsuite.toml and $XDG_CONFIG_HOME/jobsuite/config.toml ("" = none)
		orig      string // ./config.toml, as the original job_suite CLI read it
		args      []string
		want      string // the JSON body the controller must receive
		err       string // or the error on stderr (exit 1, nothing sent)
	}{
		"no file": {
			args: []string{"true"},
			want: `{"command":"true"}`,
		},
		"every key from ./jobsuite.toml": {
			cwd:  full,
			args: []string{"make", "test"},
			want: `{"name":"nightly","command":"make test","priority":"high","timeout":90,"retries":2,"logs":false,
				"labels":{"gpu":"yes","os":"linux"},"env":{"A":"1","B":"x=y"}}`,
		},
		"from ~/.config/jobsuite/config.toml": {
			home: "[submit]\npriority = 60\ntimeout = 30\n",
			args: []string{"true"},
			want: `{"command":"true","priority":60,"timeout":30}`,
		},
		"./jobsuite.toml comes first": {
			cwd:  "[submit]\npriority = \"low\"\n",
			home: "[submit]\npriority = \"high\"\nretries = 5\n",
			args: []string{"true"},
			want: `{"command":"true","priority":"low"}`,
		},
		"flags override the file": {
			cwd: full,
			args: []string{"-name", "adhoc", "-priority", "low", "-timeout", "5", "-retries", "0", "-logs=true",
				"-label", "gpu=no", "-env", "B=2", "--", "true"},
			want: `{"name":"adhoc","command":"true","priority":"low","timeout":5,"retries":0,"logs":true,
				"labels":{"gpu":"no","os":"linux"},"env":{"A":"1","B":"2"}}`,
		},
		"output keys": {
			cwd:  "[submit]\ntty = true\n",
			args: []string{"true"},
			want: `{"command":"true","tty":true}`,
		},
		"split output from the file": {
			home: "[submit]\nsplit_output = true\n",
			args: []string{"true"},
			want: `{"command":"true","output":"split"}`,
		},
		"empty file": {
			home: "# nothing yet\n",
			args: []string{"true"},
			want: `{"command":"true"}`,
		},
		"unknown key": {
			cwd:  "[submit]\nname = \"x\"\nprio = \"high\"\n",
			args: []string{"true"},
			err:  `jobsuite.toml:3: key "submit.prio": unknown key` + "\njobsuite.toml: known keys: env, labels, logs, name, params, priority, retries, split_output, timeout, tty (see 'jobsuite submit -h')",
		},
		"key outside [submit]": {
			cwd:  "priority = \"high\"\n[submit]\nretries = 1\n",
			args: []string{"true"},
			err:  `jobsuite.toml:1: key "priority": outside the [submit] table: put every key in [submit], or write none of them in a table`,
		},
		"the original job_suite's flat ./config.toml": {
			orig: "name = \"train\"\nparams = \"--epochs 90\"\npriority = \"high\"\ntimeout = 3600\nretries = 1\nlogs = true\n",
			args: []string{"python", "train.py"},
			want: `{"name":"train","command":"python train.py","params":"--epochs 90","priority":"high","timeout":3600,"retries":1,"logs":true}`,
		},
		"params as an array, each quoted": {
			orig: "params = [\"--out\", \"a b.txt\"]\n",
			args: []string{"true"},
			want: `{"command":"true","params":"--out 'a b.txt'"}`,
		},
		"-params wins": {
			orig: "params = \"--a\"\n",
			args: []string{"-params", "--b", "true"},
			want: `{"command":"true","params":"--b"}`,
		},
		"flat keys in jobsuite.toml": {
			cwd:  "priority = \"low\"\nretries = 3\n",
			args: []string{"true"},
			want: `{"command":"true","priority":"low","retries":3}`,
		},
		"./jobsuite.toml before ./config.toml": {
			cwd:  "[submit]\npriority = \"low\"\n",
			orig: "priority = \"high\"\n",
			args: []string{"true"},
			want: `{"command":"true","priority":"low"}`,
		},
		"another tool's config.toml is left alone": {
			orig: "title = \"My blog\"\n[server]\nport = 8080\n",
			home: "[submit]\nretries = 2\n",
			args: []string{"true"},
			want: `{"command":"true","retries":2}`,
		},
		"an unknown key beside the original's": {
			orig: "name = \"x\"\nprio = 3\n",
			args: []string{"true"},
			err:  `config.toml:2: key "prio": unknown key`,
		},
		"params neither string nor list": {
			orig: "params = 3\n",
			args: []string{"true"},
			err:  `config.toml:1: key "params": must be a string or an array of strings, got integer 3`,
		},
		"a flag-only key": {
			cwd:  "[submit]\ndir = \"/tmp\"\n",
			args: []string{"true"},
			err:  `jobsuite.toml:2: key "submit.dir": unknown key`,
		},
		"wrong type": {
			cwd:  "[submit]\nretries = \"two\"\n",
			args: []string{"true"},
			err:  `jobsuite.toml:2: key "submit.retries": must be an integer, got string "two"`,
		},
		"bad priority": {
			cwd:  "[submit]\n\npriority = 101\n",
			args: []string{"true"},
			err:  `jobsuite.toml:3: key "submit.priority": want low, mid, high or an integer from 0 to 100`,
		},
		"negative retries": {
			cwd:  "[submit]\nretries = -1\n",
			args: []string{"true"},
			err:  `jobsuite.toml:2: key "submit.retries": must not be negative`,
		},
		"bad env name in a table": {
			cwd:  "[submit]\nenv = {A = {B = 1}}\n",
			args: []string{"true"},
			err:  `jobsuite.toml:2: key "submit.env.A": must be a string, got table`,
		},
		"labels not a table": {
			cwd:  "[submit]\nlabels = \"gpu=yes\"\n",
			args: []string{"true"},
			err:  `jobsuite.toml:2: key "submit.labels": must be a table such as {NAME = "value"}, got string "gpu=yes"`,
		},
		"error in the home file": {
			home: "[submit]\nlogs = \"no\"\n",
			args: []string{"true"},
			err:  `jobsuite/config.toml:2: key "submit.logs": must be true or false`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f.useEnv(t)
			home := t.TempDir()
			t.Setenv("XDG_CONFIG_HOME", home)
			if tt.cwd != "" {
				if err := os.WriteFile("jobsuite.toml", []byte(tt.cwd), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.orig != "" {
				if err := os.WriteFile("config.toml", []byte(tt.orig), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.home != "" {
				p := filepath.Join(home, "jobsuite", "config.toml")
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(tt.home), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := f.lastSubmit()
			m, _, errb := clientTestMeta()
			code := (&SubmitCommand{Meta: m}).Run(tt.args)
			if tt.err != "" {
				if code != ExitError || !strings.Contains(errb.String(), tt.err) {
					t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errb, ExitError, tt.err)
				}
				if got := f.lastSubmit(); !reflect.DeepEqual(got, before) {
					t.Errorf("a submission reached the controller: %v", got)
				}
				return
			}
			if code != ExitOK {
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
		})
	}
}

// configKeys lists the keys the config file of cmd knows, as the
// error for an unknown key names them.
func configKeys(t *testing.T, cmd string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe.toml")
	if err := os.WriteFile(path, []byte("zz_probe = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, stderr := runCLI(t, cmd, "-config", path)
	m := regexp.MustCompile(`known keys: ([a-z0-9_, ]+)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("%s: no list of known keys in %q", cmd, stderr)
	}
	return strings.Split(strings.TrimSpace(m[1]), ", ")
}

// TestConfigKeysDocumented checks that every key of the controller's and
// the agent's config file — one per flag, so a new flag adds one — is
// documented in the command's help and in the README's Configuration
// section, and that the help documents -config.
func TestConfigKeysDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration")
	if !ok {
		t.Fatal("README.md has no '## Configuration' section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	m, _, _ := clientTestMeta()
	helps := map[string]string{"controller": (&ControllerCommand{Meta: m}).Help(), "agent": (&AgentCommand{Meta: m}).Help()}
	for cmd, help := range helps {
		if !strings.Contains(help, "-config FILE") {
			t.Errorf("%s -h does not document -config FILE", cmd)
		}
		for _, key := range configKeys(t, cmd) {
			re := regexp.MustCompile(`(?m)^\s*#?\s*` + regexp.QuoteMeta(key) + `\s*=`)
			if !re.MatchString(help) {
				t.Errorf("%s -h does not document the config key %s (as a line '%s = ...')", cmd, key, key)
			}
			if !strings.Contains(section, "`"+key+"`") && !re.MatchString(section) {
				t.Errorf("README's Configuration section does not document the %s key %s", cmd, key)
			}
		}
	}
	for _, key := range submitConfig.only {
		if !strings.Contains(section, key) {
			t.Errorf("README's Configuration section does not document the submit key %s", key)
		}
	}
}

// TestAgentConfigControllers: the agent's controller key takes one
// address, several comma-separated, or an array of them.
func TestAgentConfigControllers(t *testing.T) {
	for name, tt := range map[string]struct {
		file, want, err string
	}{
		"one":         {file: `controller = "a:7443"`, want: "a:7443"},
		"commas":      {file: `controller = "a:7443,b:7443"`, want: "a:7443,b:7443"},
		"array":       {file: `controller = ["a:7443", "b:7443", "c:7443"]`, want: "a:7443,b:7443,c:7443"},
		"no port":     {file: `controller = ["a:7443", "b"]`, err: `key "controller": controller address "b"`},
		"comma in it": {file: `controller = ["a:1,b:2"]`, err: `key "controller": must be a string or an array of strings without commas`},
		"not strings": {file: `controller = [7443]`, err: `key "controller": must be a string or an array of strings without commas`},
		"a table":     {file: `controller = {a = "b"}`, err: `key "controller": must be a string or an array of strings`},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.toml")
			if err := os.WriteFile(path, []byte(tt.file+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			fs := flag.NewFlagSet("agent", flag.ContinueOnError)
			cfg := agent.DefaultConfig()
			agentFlags(fs, &cfg, &agentFlagValues{})
			err := loadConfigFile(fs, path, agentConfig)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil || cfg.Controller != tt.want {
				t.Fatalf("controller %q (%v), want %q", cfg.Controller, err, tt.want)
			}
		})
	}
}
