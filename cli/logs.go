package cli

import (
	"strings"
)

// LogsCommand prints a job's output: "jobsuite logs".
type LogsCommand struct{ Meta }

func (c *LogsCommand) Synopsis() string { return "Print or follow a job's output" }
func (c *LogsCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite logs [options] ID

  Prints the output job ID has written so far, byte for byte: its stdout
  to stdout and its stderr to stderr.

  With -f it then follows the output until the job finishes and exits
  with the job's exit code, like 'jobsuite submit -f': 124 if it timed
  out, 130 if it was cancelled, 1 if it failed without an exit code.
  Lines starting with "jobsuite: " on stderr tell, as with submit -f,
  why the job waits, each new attempt and its agent, and a timeout or
  cancel at the end; -q leaves them out. Ctrl-C stops following but
  leaves the job running.

Options:

  -f, -follow
    Follow the output until the job finishes.

  -q
    Quiet: with -f, only the job's output (and why it ended when its
    exit code cannot tell).

  -offset=<n>
    Start at byte n of the job's output (stdout and stderr counted
    together, as 'jobsuite status' shows under Output). Default: 0.
` + clientOptionsHelp + `

Example:

  $ jobsuite logs 12
  $ jobsuite logs -f 12 > out.txt 2> err.txt
`)
}

func (c *LogsCommand) Run(args []string) int {
	const name = "logs"
	var (
		cf            clientFlags
		follow, quiet bool
	)
	fs := c.flagSet(name)
	cf.register(fs)
	fs.BoolVar(&follow, "f", false, "")
	fs.BoolVar(&follow, "follow", false, "")
	fs.BoolVar(&quiet, "q", false, "")
	offset := fs.Uint64("offset", 0, "")
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
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	return followJob(c.Meta, client, id, *offset, follow, newNarrator(client, id, quiet, nil))
}
