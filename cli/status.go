package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"jobsuite/api"
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

  With -live, the controller also asks the agent running the job how it
  is doing right now: process ID, time since it started, CPU time and
  memory (RSS) of its whole process group, the number of processes,
  the output written so far and its last line. When the job is not
  running, its agent is not connected, or the agent does not answer
  within -wait, the live part says "stale" and why instead: the command
  does not hang.

Options:

  -json
    Print the job as JSON, as the controller's API returns it (with a
    "live" object when -live is given).

  -live
    Ask the job's agent for its live state (GET /jobs/ID?live=1).

  -wait=<duration>
    With -live, how long the controller waits for the agent's answer,
    e.g. 500ms or 2s; at most 30s. Default: the controller's (500ms).
` + clientOptionsHelp + `

Example:

  $ jobsuite status 12
  $ jobsuite status -live -wait 1s 12
  ID:       12
  ...
  Live:        agent worker-1, attempt 1
    PID:       48121
    Elapsed:   2m13s
    CPU:       1m2s user, 3.5s sys
    RSS:       212.4 MiB
    Processes: 3
    Output:    1.2 MiB (1258291 bytes)
    Last line: [ 42%] Building CXX object src/parser.o
`)
}

func (c *StatusCommand) Run(args []string) int {
	const name = "status"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	asJSON := fs.Bool("json", false, "")
	live := fs.Bool("live", false, "")
	wait := fs.Duration("wait", 0, "")
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
	waitSet := false
	fs.Visit(func(f *flag.Flag) { waitSet = waitSet || f.Name == "wait" })
	switch {
	case waitSet && !*live:
		return usageError(c.Meta, name, "-wait applies only with -live")
	case waitSet && (*wait <= 0 || *wait > maxLiveWait):
		return usageError(c.Meta, name, "-wait must be a duration between 1ms and %s, e.g. 500ms; got %s", maxLiveWait, *wait)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()

	path := fmt.Sprintf("/jobs/%d", id)
	ctx := context.Background()
	if *live {
		q := url.Values{"live": {"1"}}
		if waitSet {
			q.Set("wait", wait.String())
		}
		path += "?" + q.Encode()
		// The controller answers within the wait; don't let a stuck one
		// hold us much longer than that.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max(*wait, defaultLiveWait)+liveSlack)
		defer cancel()
	}
	var raw json.RawMessage
	if err := client.do(ctx, "GET", path, nil, &raw); err != nil {
		if ctx.Err() != nil {
			return c.errorf("the controller did not answer within %s: %v", max(*wait, defaultLiveWait)+liveSlack, err)
		}
		return c.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var job api.JobView
	if err := json.Unmarshal(raw, &job); err != nil {
		return c.errorf("the controller's answer is not a job: %v", err)
	}
	printJob(c.Stdout, &job, timeNow())
	if len(job.Children) > 0 {
		fmt.Fprintln(c.Stdout, "Hosts:")
		hostTable(c.Stdout, job.Children)
	}
	c.printWebhooks(ctx, client, &job)
	if *live {
		var lv struct {
			Live *api.LiveView `json:"live"`
		}
		if err := json.Unmarshal(raw, &lv); err != nil {
			return c.errorf("the controller's live part is not what this CLI expects: %v", err)
		}
		printLive(c.Stdout, lv.Live)
	}
	return ExitOK
}

// printWebhooks writes the outcomes of a finished job's webhook
// deliveries (its notified and notify_failed events), if it has any.
// Best effort: a controller that cannot say leaves them out.
func (c *StatusCommand) printWebhooks(ctx context.Context, client *Client, j *api.JobView) {
	if j.FinishedAt == nil {
		return // deliveries are recorded on finished jobs only
	}
	var evs []api.Event
	if err := client.do(ctx, "GET", fmt.Sprintf("/jobs/%d/events", j.JobID), nil, &evs); err != nil {
		return
	}
	first := true
	for _, e := range evs {
		if e.Type != "notified" && e.Type != "notify_failed" {
			continue
		}
		if first {
			fmt.Fprintln(c.Stdout, "Webhooks:")
			first = false
		}
		fmt.Fprintf(c.Stdout, "  %s %s\n", e.Time.Local().Format(time.TimeOnly), visibleLine(e.Message))
	}
}

// Waits of status -live: the controller's default and upper bound.
const (
	defaultLiveWait = 500 * time.Millisecond
	maxLiveWait     = 30 * time.Second
)

// liveSlack is how much longer than the wait status -live gives the
// whole request before it gives up on the controller (a variable for
// tests).
var liveSlack = 10 * time.Second

// printLive writes the live part of a job after printJob's lines.
func printLive(w io.Writer, l *api.LiveView) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	defer tw.Flush()
	switch {
	case l == nil:
		fmt.Fprintf(tw, "Live:\tnot available (the controller sent no live part; it may be older than this CLI)\n")
		return
	case l.Stale:
		why := l.Error
		if why == "" {
			why = "no answer from the agent"
		}
		fmt.Fprintf(tw, "Live:\tstale (%s)\n", oneLine(why))
		return
	}
	fmt.Fprintf(tw, "Live:\tagent %s, attempt %d\n", l.Agent, l.Attempt)
	line := func(key, format string, args ...any) {
		fmt.Fprintf(tw, "  %s:\t"+format+"\n", append([]any{key}, args...)...)
	}
	if l.PID > 0 {
		line("PID", "%d", l.PID)
	} else {
		line("PID", "- (not started)")
	}
	line("Elapsed", "%s", secondsText(l.Elapsed))
	line("CPU", "%s user, %s sys", secondsText(l.UserCPU), secondsText(l.SystemCPU))
	line("RSS", "%s", bytesText(l.RSS))
	line("Processes", "%d", l.Processes)
	if l.OutputBytes < 1024 {
		line("Output", "%s", bytesText(l.OutputBytes))
	} else {
		line("Output", "%s (%d bytes)", bytesText(l.OutputBytes), l.OutputBytes)
	}
	last := oneLine(visibleLine(l.LastLine))
	if last == "" {
		last = "-"
	}
	line("Last line", "%s", last)
}

// bytesText shows a byte count in binary units: 512 B, 1.5 KiB, 212.4 MiB.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// visibleLine is what a terminal shows of a line a job wrote: without
// escape sequences, and after a carriage return (a progress bar redraws
// its line) the last text written.
func visibleLine(s string) string {
	s = stripEscapes(s)
	parts := strings.Split(s, "\r")
	for i := len(parts) - 1; i >= 0; i-- {
		if strings.TrimSpace(parts[i]) != "" {
			return parts[i]
		}
	}
	return ""
}

// stripEscapes removes terminal escape sequences from s: CSI ("\x1b[0m",
// colours and cursor moves), OSC up to BEL or ST (titles, links) and
// two-character escapes, the way a terminal would not show them. A
// sequence cut off at the end is removed too.
func stripEscapes(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != 0x1b {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i + 1
		switch {
		case j < len(s) && s[j] == '[': // CSI: parameters, then a final byte
			j++
			for j < len(s) && s[j] >= 0x20 && s[j] <= 0x3f {
				j++
			}
			if j < len(s) && s[j] >= 0x40 && s[j] <= 0x7e {
				j++
			}
		case j < len(s) && s[j] == ']': // OSC: up to BEL or ESC \
			for j++; j < len(s) && s[j] != 0x07 && !(s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\'); j++ {
			}
			switch {
			case j < len(s) && s[j] == 0x07:
				j++
			case j < len(s):
				j += 2
			}
		case j < len(s):
			j++
		}
		i = j
	}
	return b.String()
}

// oneLine makes text safe to print on one terminal line: control
// characters (escape sequences, carriage returns) become U+FFFD, tabs
// spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case unicode.IsControl(r):
			return '\uFFFD'
		}
		return r
	}, s)
}

// printJob writes a job as aligned "Key: value" lines.
func printJob(w io.Writer, j *api.JobView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(key, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{key}, args...)...)
	}
	line("ID", "%d", j.JobID)
	line("Name", "%s", j.Name)
	status := colorize(w, j.Status)
	if j.CancelRequested && j.Status != "cancelled" {
		status += " (cancel requested)"
	}
	line("Status", "%s", status)
	if j.Reason != "" {
		line("Reason", "%s", j.Reason)
	}
	line("Command", "%s", commandLine(j))
	line("Priority", "%s", priorityText(j))
	if j.Timeout > 0 {
		line("Timeout", "%s", secondsText(j.Timeout))
	}
	if j.MaxRetries > 0 {
		line("Retries", "%d", j.MaxRetries)
	}
	if len(j.Labels) > 0 {
		line("Labels", "%s", labelsText(j.Labels))
	}
	if len(j.After) > 0 {
		ids := make([]string, len(j.After))
		for i, id := range j.After {
			ids[i] = strconv.FormatUint(id, 10)
		}
		how := "once all completed"
		if j.AfterAny {
			how = "once all ended, whatever their outcome"
		}
		line("After", "jobs %s (%s)", strings.Join(ids, ", "), how)
	}
	if j.Schedule != "" {
		line("Schedule", "%s", j.Schedule)
	}
	if j.Parent != 0 {
		line("Fan-out", "child of job %d, pinned to agent %s", j.Parent, j.Agent)
	}
	if f := j.Fanout; f != nil {
		who := "every agent"
		if len(f.Labels) > 0 {
			who = "agents matching " + labelsText(f.Labels)
		}
		if f.IncludeDisconnected {
			who += ", disconnected ones included"
		}
		how := "all at once"
		if f.Batch > 0 {
			how = fmt.Sprintf("%d at a time", f.Batch)
		}
		if f.MaxFailures != nil {
			how += fmt.Sprintf(", stops at %d failures", *f.MaxFailures)
		}
		line("Fan-out", "%d hosts (%s), %s", f.Children, who, how)
	}
	if len(j.Notify) > 0 {
		line("Notify", "%s", strings.Join(j.Notify, ", "))
	}
	if j.Dir != "" {
		line("Dir", "%s", j.Dir)
	}
	switch { // ordered output is the default and goes unsaid
	case j.TTY != nil && *j.TTY:
		line("Streams", "a terminal (stdout and stderr are one stream)")
	case j.Output == "split":
		line("Streams", "split: stdout and stderr apart, the order between them approximate")
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

// timeNow is the clock relative times ("3m ago") are measured from, in
// status, list and agents (a variable for tests).
var timeNow = time.Now

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
