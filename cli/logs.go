package cli

import (
	"flag"
	"math"
	"strings"
)

// LogsCommand prints a job's output: "jobsuite logs".
type LogsCommand struct{ Meta }

func (c *LogsCommand) Synopsis() string { return "Print or follow a job's output" }
func (c *LogsCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite logs [options] ID

  Prints the output job ID has written so far, byte for byte, to stdout:
  by default a job's stdout and stderr are one stream, in the order it
  wrote them (so is the output of a job on a terminal). A job submitted
  with -split-output has them apart: its stdout goes to stdout and its
  stderr to stderr, the order between the two only approximate.

  Where each attempt of a retried job begins, a line on stderr says so
  ("--- attempt 2 on worker-1, 2025-07-01T12:00:00Z ---"); the output
  on stdout stays exactly what the job wrote.

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

  -attempt=<n>
    Only the output of attempt n (1 is the first). With -f, follow it
    until that attempt ends and exit with its exit code, whatever the
    job does next.

  -timestamps
    Start each line with the time its output reached the controller,
    in UTC to the millisecond (the controller keeps one time per piece
    of output it receives, so lines that came together share it).
` + clientOptionsHelp + `

Example:

  $ jobsuite logs 12
  $ jobsuite logs -f 12 > out.txt
  $ jobsuite logs -attempt 2 -timestamps 12
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
	attempt := fs.Uint("attempt", 0, "")
	timestamps := fs.Bool("timestamps", false, "")
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
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["attempt"] && (*attempt == 0 || *attempt > math.MaxUint32) {
		return usageError(c.Meta, name, "-attempt must be an attempt number, 1 or more; got %d", *attempt)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	return followJobWith(c.Meta, client, &follower{id: id, offset: *offset, follow: follow, attempt: uint32(*attempt), timestamps: *timestamps},
		newNarrator(client, id, quiet, nil))
}
