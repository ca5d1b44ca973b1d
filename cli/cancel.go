package cli

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"jobsuite/api"
)

// CancelCommand cancels jobs: "jobsuite cancel".
type CancelCommand struct{ Meta }

func (c *CancelCommand) Synopsis() string { return "Cancel queued or running jobs" }
func (c *CancelCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite cancel [options] ID...

  Cancels each job ID. A queued or waiting job is cancelled at once; a
  running job's agent is told to stop it (SIGTERM to its process group,
  then SIGKILL after a grace period), and 'jobsuite status ID' shows when
  it has. A job that has finished, or was submitted with -no-cancel,
  cannot be cancelled.

  Every ID is tried; the exit status is 1 if any of them failed.
` + clientOptionsHelp + `

Example:

  $ jobsuite cancel 12 13
  Job 12 cancelled
  Job 13 cancel requested; the agent is stopping it
`)
}

func (c *CancelCommand) Run(args []string) int {
	const name = "cancel"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(c.Meta, name, "want at least one job ID")
	}
	ids := make([]uint64, 0, fs.NArg())
	for _, a := range fs.Args() {
		id, err := parseJobID(a)
		if err != nil {
			return usageError(c.Meta, name, "%v", err)
		}
		ids = append(ids, id)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	code := ExitOK
	for _, id := range ids {
		var job api.JobView
		status, err := client.request(context.Background(), "DELETE", fmt.Sprintf("/jobs/%d", id), nil, &job)
		switch {
		case err != nil:
			code = c.errorf("job %d: %v", id, err)
		case status == http.StatusAccepted && job.Fanout != nil:
			fmt.Fprintf(c.Stdout, "Job %d (a fan-out) cancel requested; children not started are cancelled, the agents are stopping the running ones\n", id)
		case status == http.StatusAccepted:
			fmt.Fprintf(c.Stdout, "Job %d cancel requested; the agent is stopping it\n", id)
		default:
			fmt.Fprintf(c.Stdout, "Job %d cancelled\n", id)
		}
	}
	return code
}
