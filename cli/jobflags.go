package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"jobsuite/api"
)

// jobFlags are the flags that describe a job: submit's, which schedule
// create takes too for the jobs it creates. One flag set, registered by
// both.
type jobFlags struct {
	// scheduled leaves out -name (schedule create's -name names the
	// schedule; its jobs are named after it) and -idempotency-key
	// (each occurrence's job is a new one).
	scheduled            bool
	req                  api.SubmitRequest
	priority, tmo        string
	params               string
	retries              int
	logs                 bool
	labels, env          kvFlag
	notify               listFlag
	noCancel, split, tty bool
}

func newJobFlags() *jobFlags { return &jobFlags{labels: kvFlag{}, env: kvFlag{}} }

// register adds the job flags to fs.
func (j *jobFlags) register(fs *flag.FlagSet) {
	if !j.scheduled {
		fs.StringVar(&j.req.Name, "name", "", "")
		fs.StringVar(&j.req.IdempotencyKey, "idempotency-key", "", "")
	}
	fs.StringVar(&j.params, "params", "", "")
	fs.StringVar(&j.priority, "priority", "", "")
	fs.StringVar(&j.tmo, "timeout", "", "")
	fs.IntVar(&j.retries, "retries", 0, "")
	fs.BoolVar(&j.logs, "logs", true, "")
	fs.Var(j.labels, "label", "")
	fs.Var(j.env, "env", "")
	fs.StringVar(&j.req.Dir, "dir", "", "")
	fs.BoolVar(&j.noCancel, "no-cancel", false, "")
	fs.BoolVar(&j.split, "split-output", false, "")
	fs.BoolVar(&j.tty, "tty", false, "")
	fs.Var(&j.notify, "notify", "")
}

// request is the job fs's flags and arguments describe (fs parsed);
// the error is a usage error. example is the command in the hint for a
// missing command.
func (j *jobFlags) request(fs *flag.FlagSet, example string) (api.SubmitRequest, error) {
	req := j.req
	switch words := fs.Args(); len(words) {
	case 0:
		return req, fmt.Errorf("a command is required, as in 'jobsuite %s -- echo hello'", example)
	case 1:
		req.Command = words[0]
	default:
		req.Command = strings.Join(words, " ")
	}
	if strings.TrimSpace(req.Command) == "" {
		return req, fmt.Errorf("the command is blank")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if j.priority != "" {
		p, err := parsePriority(j.priority)
		if err != nil {
			return req, fmt.Errorf("-priority: %v", err)
		}
		req.Priority, _ = json.Marshal(p) // a string or an int: cannot fail
	}
	if j.params != "" {
		req.Params, _ = json.Marshal(j.params) // a string: cannot fail
	}
	if j.tmo != "" {
		secs, err := parseTimeout(j.tmo)
		if err != nil {
			return req, fmt.Errorf("-timeout: %v", err)
		}
		req.Timeout = &secs
	}
	if set["retries"] {
		if j.retries < 0 {
			return req, fmt.Errorf("-retries must not be negative, got %d", j.retries)
		}
		r := j.retries
		req.Retries = &r
	}
	if set["logs"] {
		l := j.logs
		req.Logs = &l
	}
	if j.noCancel {
		f := false
		req.Cancellable = &f
	}
	if j.split {
		if j.tty {
			return req, fmt.Errorf("-tty and -split-output cannot be combined: a terminal is one stream")
		}
		req.Output = "split"
	}
	if set["tty"] {
		t := j.tty
		req.TTY = &t
	}
	if len(j.labels) > 0 {
		req.Labels = j.labels
	}
	if len(j.env) > 0 {
		req.Env = j.env
	}
	if len(j.notify) > 0 {
		req.Notify = j.notify
	}
	return req, nil
}

// uintsFlag is a repeatable flag of job IDs, each value one ID or a
// comma-separated list.
type uintsFlag []uint64

func (f *uintsFlag) String() string {
	parts := make([]string, len(*f))
	for i, id := range *f {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, ",")
}

func (f *uintsFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		id, err := strconv.ParseUint(strings.TrimSpace(p), 10, 64)
		if err != nil || id == 0 {
			return fmt.Errorf("%q is not a job ID", p)
		}
		*f = append(*f, id)
	}
	return nil
}

// jobOptionsHelp is the help of the job flags.
const jobOptionsHelp = `  -name=<name>
    A name for the job. Default: the first words of the command.

  -params=<args>
    Appended to the command after a space: the original job_suite's
    params. Default: none.

  -priority=<low|mid|high|0-100>
    Higher priorities run first, in order of submission within a
    priority. Default: mid.

  -timeout=<duration>
    Kill the job after this long: a duration such as 90s or 5m, or a
    number of seconds. Default: none.

  -retries=<n>
    Run the job again, after a backoff, up to n times when it fails,
    times out or its agent is lost. Default: 0.

  -logs=<true|false>
    Capture the job's output. Default: true.

  -label=<key=value>
    Run only on an agent carrying this label. May be repeated.

  -env=<NAME=value>
    Set an environment variable for the job. May be repeated.

  -dir=<path>
    The working directory of the job on the agent.

  -idempotency-key=<key>
    Submitting again with the same key returns the job already queued
    instead of queueing a second one: safe to retry. Without it, each
    'jobsuite submit' makes a key of its own, so that its own retries
    (-retry-timeout) never queue the job twice.

  -no-cancel
    The job cannot be cancelled.

  -split-output
    Keep the job's stdout and stderr apart (two pipes) instead of one
    stream in write order: -f and 'jobsuite logs' then print them to
    stdout and stderr, but the order between the two is only as the
    agent read them, so an error may show up away from the line it
    follows.

  -tty
    Run the job on a pseudo-terminal (80x24, TERM=xterm-256color unless
    -env sets TERM), so tools that check for one keep their colours and
    line buffering; stdin stays empty. Its output is one stream. Agents
    started with -tty do this for every job; -tty=false declines it.

  -notify=<url>
    POST a signed JSON notification to this URL when the job ends
    (a webhook, retried until delivered or given up; the job's events
    say which). https:// only unless the controller allows http, and
    only to hosts its allowlist names (README "Webhooks"). May be
    repeated.
`

// scheduledJobOptionsHelp is jobOptionsHelp without the flags a
// schedule's job does not take (jobFlags.scheduled).
func scheduledJobOptionsHelp() string {
	var keep []string
	for _, p := range strings.Split(jobOptionsHelp, "\n\n") {
		if strings.HasPrefix(p, "  -name=") || strings.HasPrefix(p, "  -idempotency-key=") {
			continue
		}
		keep = append(keep, p)
	}
	return strings.Join(keep, "\n\n")
}
