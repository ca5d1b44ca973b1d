package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// ResubmitCommand runs a job again: "jobsuite resubmit ID".
type ResubmitCommand struct{ Meta }

func (c *ResubmitCommand) Synopsis() string { return "Run a job again, as a new job" }
func (c *ResubmitCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite resubmit [options] ID

  Queues a new job made like job ID, whatever state ID is in: the same
  name, command, params, priority, timeout, retries, logs, cancellable,
  labels, env, dir and retry backoff, but not its idempotency key
  (POST /jobs/resubmit). It prints the new job's ID, and warns when no
  connected agent can run it, like 'jobsuite submit'.

  With -f it follows the new job like 'jobsuite submit -f': its output
  on stdout and stderr, what happens to it on stderr, and its exit code.

Options:

  -f, -follow
    Follow the new job's output and exit with its exit code.

  -q
    Quiet: with -f only the job's output; without -f only the new job's
    ID on stdout.

  -json
    Print the new job as JSON (not with -f).
` + clientOptionsHelp + `

Example:

  $ jobsuite resubmit 12
  Job 31 queued (a copy of job 12, priority high)
`)
}

func (c *ResubmitCommand) Run(args []string) int {
	const name = "resubmit"
	var (
		cf                    clientFlags
		follow, quiet, asJSON bool
	)
	fs := c.flagSet(name)
	cf.register(fs)
	fs.BoolVar(&follow, "f", false, "")
	fs.BoolVar(&follow, "follow", false, "")
	fs.BoolVar(&quiet, "q", false, "")
	fs.BoolVar(&asJSON, "json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(c.Meta, name, "want one job ID, got %d arguments", fs.NArg())
	}
	id, err := parseJobID(fs.Arg(0))
	if err != nil {
		return usageError(c.Meta, name, "%v", err)
	}
	if follow && asJSON {
		return usageError(c.Meta, name, "-json and -f cannot be combined: -f writes the job's output")
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	if err := client.do(context.Background(), "POST", "/jobs/resubmit", map[string]uint64{"job_id": id}, &raw); err != nil {
		return c.errorf("%v", err)
	}
	job, code, done := queued(c.Meta, client, raw, asJSON, follow, quiet)
	if done {
		return code
	}
	fmt.Fprintf(c.Stdout, "Job %d %s (a copy of job %d, priority %s)\n", job.JobID, job.Status, id, priorityText(&job))
	warnBlocked(c.Stderr, &job)
	return ExitOK
}
