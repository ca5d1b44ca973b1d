package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"jobsuite/api"
)

// SubmitCommand queues a job: "jobsuite submit".
type SubmitCommand struct{ Meta }

func (c *SubmitCommand) Synopsis() string { return "Queue a job, optionally following its output" }
func (c *SubmitCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite submit [options] [--] COMMAND...

  Queues COMMAND to run with /bin/sh -c on an agent and prints the job's
  ID. Several words are joined with spaces; a single argument is taken as
  is, so quote a command that holds shell syntax. Put -- before a command
  that has flags of its own.

  With -f the output of the job follows byte for byte, and the command
  exits with the job's exit code, like ssh: 124 if it timed out, 130 if
  it was cancelled, 1 if it failed without an exit code (its agent was
  lost, it could not start). The job's stdout and stderr share one pipe,
  so its output is one stream in the order it wrote it, printed on
  stdout; with -split-output they stay apart and go to stdout and
  stderr. Lines jobsuite adds go to stderr: where a retry begins, why a
  job failed, and lines starting with "jobsuite: " that tell what
  happens to the job meanwhile: its ID, why it waits (no agent matches
  its labels, no free slot), each attempt and the agent it runs on, how
  an attempt before a retry ended, and a timeout or cancel at the end;
  -q leaves those out. Ctrl-C stops following but leaves the job queued
  or running, and says which.

  Without -f it prints the job's ID, and warns on stderr when no
  connected agent can run the job (none is connected, or none matches
  its labels): the job waits until one connects.

Options:

` + jobOptionsHelp + `
` + fanoutHelp + `
  -after=<id>[,<id>...]
    Run the job only after these jobs completed: until then it is
    blocked, and it is cancelled if one of them fails, times out or is
    cancelled. Every job named must exist. May be repeated.

  -after-any
    With -after: run once those jobs ended, whatever their outcome.

  -f, -follow
    Follow the job's output and exit with its exit code.

  -q
    Quiet: with -f, only the job's output (and why it ended when its
    exit code cannot tell: lost, could not start); without -f, only the
    job's ID on stdout, for scripts: ID=$(jobsuite submit -q -- make).

  -json
    Print the queued job as JSON (not with -f).

Defaults file:

  The [submit] table of ./jobsuite.toml, or else of ./config.toml, or
  else of ~/.config/jobsuite/config.toml
  ($XDG_CONFIG_HOME/jobsuite/config.toml), sets defaults for -name,
  -params, -priority, -timeout, -retries, -logs, -split-output, -tty,
  -label and -env; flags override it, and -label and -env add to its
  tables. Unknown keys and bad values are errors naming the file, line
  and key.

    [submit]
    name     = "nightly"
    params   = "--verbose"     # or ["--out", "a b.txt"], each quoted
    priority = "high"          # or 0-100
    timeout  = "10m"           # or a number of seconds
    retries  = 2
    logs     = true
    split_output = false
    tty      = false
    labels   = {gpu = "yes"}
    env      = {CI = "1"}

  The original job_suite's config.toml, with its keys (name, params,
  priority, timeout, retries, logs) at the top level and no [submit]
  table, is read as it is. ./config.toml is read only when it has a
  [submit] table or one of those keys, so another tool's config.toml in
  the folder is left alone.
` + clientOptionsHelp + `

Example:

  $ jobsuite submit -priority high -timeout 10m -label gpu=yes -- make -j8 test
  Job 12 queued (priority high)

  $ jobsuite submit -f -- 'echo hello; exit 3'
  hello
  $ echo $?
  3

  $ jobsuite submit -all -label role=web -batch 1 -f -- uptime
  jobsuite: job 20: fan-out to 2 hosts (web-1, web-2)
  web-1:  10:01:02 up 3 days,  2 users,  load average: 0.10, 0.05, 0.01
  web-2:  10:01:03 up 9 days,  0 users,  load average: 0.00, 0.00, 0.00
  jobsuite: job 20 completed: 2 completed
`)
}

func (c *SubmitCommand) Run(args []string) int {
	const name = "submit"
	var (
		cf            clientFlags
		jf            = newJobFlags()
		after         uintsFlag
		afterAny      bool
		follow        bool
		asJSON, quiet bool
		ff            fanoutFlags
		group         bool
	)
	fs := c.flagSet(name)
	cf.register(fs)
	jf.register(fs)
	ff.register(fs)
	fs.BoolVar(&group, "group", false, "")
	fs.Var(&after, "after", "")
	fs.BoolVar(&afterAny, "after-any", false, "")
	fs.BoolVar(&follow, "f", false, "")
	fs.BoolVar(&follow, "follow", false, "")
	fs.BoolVar(&asJSON, "json", false, "")
	fs.BoolVar(&quiet, "q", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if err := loadSubmitDefaults(fs); err != nil {
		return c.errorf("%v", err)
	}

	if follow && asJSON {
		return usageError(c.Meta, name, "-json and -f cannot be combined: -f writes the job's output")
	}
	req, err := jf.request(fs, "submit")
	if err != nil {
		return usageError(c.Meta, name, "%v", err)
	}
	if afterAny && len(after) == 0 {
		return usageError(c.Meta, name, "-after-any needs -after: the jobs to wait for")
	}
	req.After, req.AfterAny = after, afterAny
	if err := ff.apply(&req); err != nil {
		return usageError(c.Meta, name, "%v", err)
	}
	if group && (req.Fanout == nil || !follow) {
		return usageError(c.Meta, name, "-group needs -all and -f: it groups a fan-out's output by host")
	}
	if req.Fanout != nil && len(after) > 0 {
		return usageError(c.Meta, name, "-after cannot be combined with -all (a job can run -after a fan-out, not the reverse)")
	}

	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	// Every submit carries an idempotency key, one per invocation unless
	// the user gave one: a try whose answer was lost (a controller that
	// died, a leader that changed) is retried, and the controller then
	// returns the job the first try created instead of a second one.
	generated := req.IdempotencyKey == ""
	if generated {
		if req.IdempotencyKey, err = newIdempotencyKey(); err != nil {
			return c.errorf("%v", err)
		}
	}
	var raw json.RawMessage
	status, err := client.request(context.Background(), "POST", "/jobs", req, &raw)
	if err != nil {
		return c.errorf("%v", err)
	}
	if req.Fanout != nil {
		return c.fannedOut(client, raw, asJSON, follow, group, quiet)
	}
	job, code, done := queued(c.Meta, client, raw, asJSON, follow, quiet)
	if done {
		return code
	}
	if status == http.StatusOK && !generated { // our own retry finding our job is no news
		fmt.Fprintf(c.Stdout, "Job %d already submitted with idempotency key %q (status %s)\n", job.JobID, req.IdempotencyKey, job.Status)
		return ExitOK
	}
	if job.Status == "blocked" || job.Status == "cancelled" {
		// Decided by the jobs it runs after: say what it waits for, or
		// which of them did not complete.
		fmt.Fprintf(c.Stdout, "Job %d %s (priority %s): %s\n", job.JobID, job.Status, priorityText(&job), job.Reason)
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "Job %d %s (priority %s)\n", job.JobID, job.Status, priorityText(&job))
	warnBlocked(c.Stderr, &job)
	return ExitOK
}

// fannedOut is what submit does with a fan-out's parent (raw): print
// it, or follow its children (-f).
func (c *SubmitCommand) fannedOut(client *Client, raw json.RawMessage, asJSON, follow, group, quiet bool) int {
	if asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var p api.JobView
	if err := json.Unmarshal(raw, &p); err != nil || p.Fanout == nil {
		return c.errorf("the controller's answer is not a fan-out: %v", err)
	}
	switch {
	case follow:
		return followFanout(c.Meta, client, p, group, quiet)
	case quiet:
		fmt.Fprintln(c.Stdout, p.JobID)
		return ExitOK
	}
	hosts := make([]string, len(p.Children))
	for i, ch := range p.Children {
		hosts[i] = ch.Agent
	}
	how := "all at once"
	if p.Fanout.Batch > 0 {
		how = fmt.Sprintf("%d at a time", p.Fanout.Batch)
	}
	fmt.Fprintf(c.Stdout, "Job %d fanned out to %d hosts, %s: %s\n", p.JobID, len(hosts), how, strings.Join(hosts, ", "))
	return ExitOK
}

// newIdempotencyKey makes the key of one submit that was given none:
// "cli-" and 128 random bits in hex.
func newIdempotencyKey() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making an idempotency key: %w", err)
	}
	return "cli-" + hex.EncodeToString(b[:]), nil
}

// queued is what submit and resubmit do with the job the controller
// queued (raw): print it as JSON, follow it (-f), or print only its ID
// (-q). done is false when the caller still prints its line.
func queued(m Meta, client *Client, raw json.RawMessage, asJSON, follow, quiet bool) (job api.JobView, code int, done bool) {
	if asJSON {
		writeRawJSON(m.Stdout, raw)
		return job, ExitOK, true
	}
	if err := json.Unmarshal(raw, &job); err != nil {
		return job, m.errorf("the controller's answer is not a job: %v", err), true
	}
	switch {
	case follow:
		return job, followJob(m, client, job.JobID, 0, true, newNarrator(client, job.JobID, quiet, &job)), true
	case quiet:
		fmt.Fprintln(m.Stdout, job.JobID)
		return job, ExitOK, true
	}
	return job, ExitOK, false
}

// parsePriority accepts low, mid (med, medium), high, or an integer
// 0–100; names stay names in the request, numbers become numbers.
func parsePriority(s string) (any, error) {
	switch p := strings.ToLower(strings.TrimSpace(s)); p {
	case "low", "mid", "med", "medium", "high":
		return p, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 100 {
		return nil, fmt.Errorf("want low, mid, high or an integer from 0 to 100, got %q", s)
	}
	return n, nil
}

// parseTimeout accepts a Go duration (90s, 5m, 1h30m) or a number of
// seconds, and returns seconds.
func parseTimeout(s string) (float64, error) {
	s = strings.TrimSpace(s)
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil {
		d, derr := time.ParseDuration(s)
		if derr != nil {
			return 0, fmt.Errorf("want a duration such as 90s or 5m, or a number of seconds, got %q", s)
		}
		secs = d.Seconds()
	}
	if secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, fmt.Errorf("must not be negative, got %q", s)
	}
	return secs, nil
}

// kvFlag is a repeatable key=value flag.
type kvFlag map[string]string

func (f kvFlag) String() string {
	parts := make([]string, 0, len(f))
	for k, v := range f {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (f kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	f[strings.TrimSpace(k)] = v
	return nil
}
