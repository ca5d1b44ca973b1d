package agent

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Policy restricts what an agent runs. The zero Policy restricts
// nothing: jobs run as the agent's user, in the agent's environment plus
// their own, in whatever directory they name. A job the policy refuses
// fails with an error that starts "refused by agent policy:" and says
// why; nothing of it runs (no process is started).
type Policy struct {
	// AllowCommands, when not empty, lists regular expressions (Go RE2
	// syntax, https://pkg.go.dev/regexp/syntax); a job runs only if its
	// whole command — the command and its params, exactly as handed to
	// the shell — matches at least one of them. Each pattern is anchored
	// at both ends: "make test" allows that command and nothing longer,
	// "make -C /srv/app [a-z]+" one target. '.' does not match a newline
	// unless the pattern starts with (?s). The shell still interprets
	// the command, so a pattern that lets ';', '&', '|', '$', '`', '<',
	// '>' or a newline through allows any command after them: prefer
	// character classes such as [a-z0-9_-]+ over .*.
	AllowCommands []string
	// RunAs is the user jobs run as: a user name or a numeric uid. When
	// the agent runs as root, jobs get that user's uid, primary gid and
	// supplementary groups. An agent that does not run as root refuses
	// to start unless RunAs names its own user. HOME, USER and LOGNAME
	// are set for that user.
	RunAs string
	// WorkRoot confines where jobs start: a job's directory (relative
	// ones are taken from WorkRoot), once cleaned and with its symbolic
	// links resolved, must be WorkRoot or inside it. It also becomes the
	// default directory when the agent's WorkDir is not set. It decides
	// where a job starts, not what it may reach: a job can still cd
	// elsewhere; confine it with RunAs and file permissions.
	WorkRoot string
	// CleanEnv runs jobs in a minimal environment instead of the agent's:
	// PATH (a safe default, or the agent's own if AllowEnv lists PATH),
	// HOME, USER and LOGNAME, the JOBSUITE_* variables, the variables of
	// the agent's environment named in AllowEnv, and the job's own env
	// entries — each of which must be named in AllowEnv, or the job is
	// refused.
	CleanEnv bool
	// AllowEnv lists the variable names CleanEnv lets through.
	AllowEnv []string
}

// ErrRefused is wrapped by the error of a job that the agent's policy
// refused; the job's result carries it as "refused by agent policy: WHY".
var ErrRefused = errors.New("refused by agent policy")

// safePath is the PATH jobs get with a clean environment (that of sudo's
// secure_path).
const safePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// policy is a checked Policy.
type policy struct {
	allow    []*regexp.Regexp
	patterns []string            // as configured, for messages
	cred     *syscall.Credential // nil: the agent's own user
	identity []string            // HOME, USER, LOGNAME of the job's user; nil: the environment's
	root     string              // absolute, symbolic links resolved; "" for none
	cleanEnv bool
	allowEnv map[string]bool
}

// launch is how the policy lets an attempt run.
type launch struct {
	dir  string
	env  []string
	cred *syscall.Credential
}

// newPolicy checks p for an agent whose effective uid is euid.
func newPolicy(p Policy, euid int) (*policy, error) {
	pol := &policy{cleanEnv: p.CleanEnv, allowEnv: map[string]bool{}}
	for _, s := range p.AllowCommands {
		re, err := regexp.Compile(`^(?:` + s + `)$`)
		if err != nil {
			return nil, fmt.Errorf("%w: -allow-command %q: %v", ErrConfig, s, err)
		}
		pol.allow = append(pol.allow, re)
		pol.patterns = append(pol.patterns, s)
	}
	for _, name := range p.AllowEnv {
		if !envNameRE.MatchString(name) {
			return nil, fmt.Errorf("%w: -allow-env %q is not an environment variable name", ErrConfig, name)
		}
		pol.allowEnv[name] = true
	}
	if len(p.AllowEnv) > 0 && !p.CleanEnv {
		return nil, fmt.Errorf("%w: -allow-env only applies with -clean-env (without it jobs get the agent's whole environment)", ErrConfig)
	}
	if p.RunAs != "" {
		u, err := lookupUser(p.RunAs)
		if err != nil {
			return nil, fmt.Errorf("%w: -run-as %q: %v", ErrConfig, p.RunAs, err)
		}
		cred, err := credential(u)
		if err != nil {
			return nil, fmt.Errorf("%w: -run-as %q: %v", ErrConfig, p.RunAs, err)
		}
		switch {
		case euid == 0:
			pol.cred = cred
		case int(cred.Uid) != euid:
			return nil, fmt.Errorf("%w: -run-as %s: the agent runs as uid %d, and only root can run jobs as another user; run the agent as root, or as %s, or drop -run-as", ErrConfig, u.Username, euid, u.Username)
		}
		pol.identity = identity(u)
	} else if p.CleanEnv {
		if u, err := user.LookupId(strconv.Itoa(euid)); err == nil {
			pol.identity = identity(u)
		}
	}
	if p.WorkRoot != "" {
		root, err := filepath.Abs(p.WorkRoot)
		if err == nil {
			root, err = filepath.EvalSymlinks(root)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: -work-root: %v", ErrConfig, err)
		}
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%w: -work-root %s is not a directory", ErrConfig, p.WorkRoot)
		}
		pol.root = root
	}
	return pol, nil
}

func lookupUser(s string) (*user.User, error) {
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		return user.LookupId(s)
	}
	return user.Lookup(s)
}

// credential is u's uid, primary gid and supplementary groups.
func credential(u *user.User) (*syscall.Credential, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid %q is not a number", u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid %q is not a number", u.Gid)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("listing the groups of %s: %v", u.Username, err)
	}
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("group id %q is not a number", s)
		}
		if uint32(g) != cred.Gid {
			cred.Groups = append(cred.Groups, uint32(g))
		}
	}
	return cred, nil
}

func identity(u *user.User) []string {
	home := u.HomeDir
	if home == "" {
		home = "/"
	}
	return []string{"HOME=" + home, "USER=" + u.Username, "LOGNAME=" + u.Username}
}

// checkWorkDir checks the agent's default directory against the work
// root and returns the directory jobs start in by default.
func (p *policy) checkWorkDir(dir string) (string, error) {
	if p.root == "" {
		return dir, nil
	}
	if dir == "" {
		return p.root, nil
	}
	real, err := p.dir(dir)
	if err != nil {
		return "", fmt.Errorf("%w: -work-dir: %s", ErrConfig, strings.TrimPrefix(err.Error(), ErrRefused.Error()+": "))
	}
	return real, nil
}

// prepare checks an attempt against the policy and says how to run it:
// command as given to the shell, dir the job's directory ("" for the
// agent's default, workDir), agentEnv the agent's environment, vars the
// JOBSUITE_* variables and jobEnv the job's KEY=VALUE entries. An error
// wraps ErrRefused and says why; nothing may then run.
func (p *policy) prepare(command, dir, workDir string, agentEnv, vars, jobEnv []string) (launch, error) {
	if err := p.command(command); err != nil {
		return launch{}, err
	}
	if dir == "" {
		dir = workDir
	}
	dir, err := p.dir(dir)
	if err != nil {
		return launch{}, err
	}
	env, err := p.env(agentEnv, vars, jobEnv)
	if err != nil {
		return launch{}, err
	}
	return launch{dir: dir, env: env, cred: p.cred}, nil
}

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// command checks a command against the allowed patterns.
func (p *policy) command(cmd string) error {
	if len(p.allow) == 0 {
		return nil
	}
	for _, re := range p.allow {
		if re.MatchString(cmd) {
			return nil
		}
	}
	if len(p.patterns) > 3 {
		return refused("command %s matches none of the agent's %d allowed command patterns (-allow-command)", quoteShort(cmd), len(p.patterns))
	}
	return refused("command %s matches none of the agent's allowed command patterns (-allow-command %s)", quoteShort(cmd), strings.Join(quoteAll(p.patterns), ", "))
}

// dir resolves a job's directory inside the work root.
func (p *policy) dir(dir string) (string, error) {
	if p.root == "" {
		return dir, nil
	}
	if dir == "" {
		return p.root, nil
	}
	abs := dir
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(p.root, abs)
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(abs))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", refused("dir %s cannot be resolved inside the work root %s: %v", quoteShort(dir), p.root, err)
	}
	if !within(p.root, real) {
		return "", refused("dir %s resolves to %s, outside the work root %s", quoteShort(dir), real, p.root)
	}
	return real, nil
}

// within says whether path is root or below it; both are clean and
// absolute.
func within(root, path string) bool {
	if root == "/" || path == root {
		return true
	}
	return strings.HasPrefix(path, root+string(filepath.Separator))
}

// env builds a job's environment. Later entries win over earlier ones
// with the same name (os/exec keeps the last).
func (p *policy) env(agentEnv, vars, jobEnv []string) ([]string, error) {
	if !p.cleanEnv {
		env := make([]string, 0, len(agentEnv)+len(p.identity)+len(vars)+len(jobEnv))
		env = append(env, agentEnv...)
		env = append(env, p.identity...)
		env = append(env, vars...)
		return append(env, jobEnv...), nil
	}
	var bad []string
	for _, kv := range jobEnv {
		if name, _, _ := strings.Cut(kv, "="); !p.allowEnv[name] {
			bad = append(bad, name)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		allowed := "none are"
		if len(p.allowEnv) > 0 {
			names := make([]string, 0, len(p.allowEnv))
			for n := range p.allowEnv {
				names = append(names, n)
			}
			sort.Strings(names)
			allowed = "allowed: " + strings.Join(names, ", ")
		}
		return nil, refused("env %s: the agent runs jobs in a clean environment and lets through only the variables of -allow-env (%s)", strings.Join(bad, ", "), allowed)
	}
	env := []string{"PATH=" + safePath}
	env = append(env, p.identity...)
	for _, kv := range agentEnv {
		name, _, _ := strings.Cut(kv, "=")
		identity := p.identity == nil && (name == "HOME" || name == "USER" || name == "LOGNAME")
		if p.allowEnv[name] || identity {
			env = append(env, kv)
		}
	}
	env = append(env, vars...)
	return append(env, jobEnv...), nil
}

// quoteShort quotes s for a message, shortened to 200 bytes.
func quoteShort(s string) string {
	const max = 200
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

func quoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strconv.Quote(s)
	}
	return out
}
