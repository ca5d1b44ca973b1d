package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// StatusCommand shows one job: "jobsuite status".
type StatusCommand struct{ Meta }

func (c *StatusCommand) Synopsis() string { return "Show a job's state, result and attempts" }
func (c *StatusCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite status [options] ID

  Shows job ID: its state and why it is in it, its command, when it was
  created, started and finished, its exit code, and every attempt with
  the agent that ran it and the outcome.

Options:

  -json
    Print the job as JSON, as the controller's API returns it.
` + clientOptionsHelp + `

Example:

  $ jobsuite status 12
`)
}

func (c *StatusCommand) Run(args []string) int {
	const name = "status"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	asJSON := fs.Bool("json", false, "")
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
	var raw json.RawMessage
	if err := client.do(context.Background(), "GET", fmt.Sprintf("/jobs/%d", id), nil, &raw); err != nil {
		return c.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var job jobView
	if err := json.Unmarshal(raw, &job); err != nil {
		return c.errorf("the controller's answer is not a job: %v", err)
	}
	printJob(c.Stdout, &job, time.Now())
	return ExitOK
}

// printJob writes a job as aligned "Key: value" lines.
func printJob(w io.Writer, j *jobView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(key, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{key}, args...)...)
	}
	line("ID", "%d", j.JobID)
	line("Name", "%s", j.Name)
	status := j.Status
	if j.CancelPending && status != "cancelled" {
		status += " (cancel requested)"
	}
	line("Status", "%s", status)
	if j.Reason != "" {
		line("Reason", "%s", j.Reason)
	}
	line("Command", "%s", j.commandLine())
	line("Priority", "%s", j.priorityText())
	if j.Timeout > 0 {
		line("Timeout", "%s", secondsText(j.Timeout))
	}
	if j.MaxRetries > 0 {
		line("Retries", "%d", j.MaxRetries)
	}
	if len(j.Labels) > 0 {
		line("Labels", "%s", labelsText(j.Labels))
	}
	if j.Dir != "" {
		line("Dir", "%s", j.Dir)
	}
	line("Created", "%s", timeText(j.CreatedAt, now))
	if j.RetryAt != nil {
		line("Retry at", "%s", timeText(*j.RetryAt, now))
	}
	if j.StartedAt != nil {
		line("Started", "%s", timeText(*j.StartedAt, now))
	}
	if j.FinishedAt != nil {
		line("Finished", "%s", timeText(*j.FinishedAt, now))
	}
	if j.Duration != nil {
		line("Duration", "%s", secondsText(*j.Duration))
	}
	if j.ExitCode != nil {
		line("Exit code", "%d", *j.ExitCode)
	}
	if j.LogBytes > 0 {
		line("Output", "%d bytes ('jobsuite logs %d')", j.LogBytes, j.JobID)
	}
	if len(j.Attempts) == 0 {
		line("Attempts", "none yet")
	} else {
		line("Attempts", "%d", len(j.Attempts))
	}
	tw.Flush()
	if len(j.Attempts) == 0 {
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range j.Attempts {
		outcome := a.Outcome
		if outcome == "" {
			outcome = "running"
		}
		var detail []string
		if a.ExitCode != nil {
			detail = append(detail, fmt.Sprintf("exit code %d", *a.ExitCode))
		}
		if a.Signal != "" {
			detail = append(detail, a.Signal)
		}
		if a.Duration > 0 {
			detail = append(detail, secondsText(a.Duration))
		}
		if a.Error != "" {
			detail = append(detail, a.Error)
		}
		fmt.Fprintf(tw, "  #%d\tagent %s\t%s\t%s\n", a.Number, a.Agent, outcome, strings.Join(detail, ", "))
	}
	tw.Flush()
}

// timeText shows t in local time with how long ago it was.
func timeText(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s)", t.Local().Format("2006-01-02 15:04:05"), ago(t, now))
}

// secondsText shows a number of seconds as a Go duration: 1.5s, 2m30s.
func secondsText(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Minute:
		d = d.Round(time.Second)
	case d >= time.Second:
		d = d.Round(time.Millisecond)
	}
	return d.String()
}

// labelsText shows labels as k=v pairs sorted by key, or "-".
func labelsText(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}
