package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ListCommand lists jobs: "jobsuite list".
type ListCommand struct{ Meta }

func (c *ListCommand) Synopsis() string { return "List jobs, newest first" }
func (c *ListCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite list [options]

  Lists jobs newest first: ID, name, state, priority, exit code, the agent
  of the latest attempt, and when the job was created.

Options:

  -status=<state>
    Only jobs in this state: queued, waiting, dispatched, running,
    completed, failed, timeout or cancelled.

  -limit=<n>
    List at most n jobs, 1 to 1000. Default: 100.

  -json
    Print the jobs as JSON, as the controller's API returns them.
` + clientOptionsHelp + `

Example:

  $ jobsuite list -status failed -limit 20
`)
}

func (c *ListCommand) Run(args []string) int {
	const name = "list"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	status := fs.String("status", "", "")
	limit := fs.Int("limit", 0, "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(c.Meta, name, "unexpected argument %q", fs.Arg(0))
	}
	if *limit < 0 || *limit > 1000 {
		return usageError(c.Meta, name, "-limit must be from 1 to 1000, got %d", *limit)
	}
	q := url.Values{}
	if *status != "" {
		q.Set("status", strings.ToLower(strings.TrimSpace(*status)))
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	path := "/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}

	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	if err := client.do(context.Background(), "GET", path, nil, &raw); err != nil {
		return c.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var jobs []jobView
	if err := json.Unmarshal(raw, &jobs); err != nil {
		return c.errorf("the controller's answer is not a list of jobs: %v", err)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(c.Stdout, "No jobs.")
		return ExitOK
	}
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].JobID > jobs[j].JobID })
	now := time.Now()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tPRIORITY\tEXIT\tAGENT\tCREATED")
	for i := range jobs {
		j := &jobs[i]
		exit, agent := "-", "-"
		if j.ExitCode != nil {
			exit = strconv.Itoa(*j.ExitCode)
		}
		if n := len(j.Attempts); n > 0 && j.Attempts[n-1].Agent != "" {
			agent = j.Attempts[n-1].Agent
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, cell(j.Name, 40), j.Status, j.priorityText(), exit, agent, ago(j.CreatedAt, now))
	}
	tw.Flush()
	return ExitOK
}

// cell makes s fit one table cell: one line of at most max runes.
func cell(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
