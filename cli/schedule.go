package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	mcli "github.com/mitchellh/cli"

	"jobsuite/api"
)

// Schedules (issue 17): "jobsuite schedule create|list|show|pause|
// resume|delete|run-now", over the controller's /schedules routes.

// scheduleCommands returns the schedule commands, to be merged into
// clientCommands.
func scheduleCommands(m Meta) map[string]mcli.CommandFactory {
	return map[string]mcli.CommandFactory{
		"schedule create":  func() (mcli.Command, error) { return &ScheduleCreateCommand{Meta: m}, nil },
		"schedule list":    func() (mcli.Command, error) { return &ScheduleListCommand{Meta: m}, nil },
		"schedule show":    func() (mcli.Command, error) { return scheduleAct(m, "show"), nil },
		"schedule pause":   func() (mcli.Command, error) { return scheduleAct(m, "pause"), nil },
		"schedule resume":  func() (mcli.Command, error) { return scheduleAct(m, "resume"), nil },
		"schedule delete":  func() (mcli.Command, error) { return scheduleAct(m, "delete"), nil },
		"schedule run-now": func() (mcli.Command, error) { return scheduleAct(m, "run-now"), nil },
	}
}

// ScheduleCreateCommand creates a schedule: "jobsuite schedule create".
type ScheduleCreateCommand struct{ Meta }

func (c *ScheduleCreateCommand) Synopsis() string {
	return "Create a schedule that runs a job on a cron timing"
}
func (c *ScheduleCreateCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite schedule create [options] -name NAME -cron SPEC [--] COMMAND...

  Creates a schedule (POST /schedules) that queues COMMAND as a job at
  every occurrence of SPEC, as 'jobsuite submit' would, with the job
  options below; its jobs are named after the schedule. The controller
  fires it from its own durable timers: a restart (even kill -9) never
  runs one occurrence twice.

Options:

  -name=<name>
    The schedule's name: 1-63 letters, digits, '.', '_' or '-'.
    Required.

  -cron=<spec>
    When it runs: 5 fields (minute hour day-of-month month day-of-week,
    such as '*/5 * * * *' or '0 3 * * 1-5'), a descriptor (@hourly,
    @daily, @weekly, @monthly, @yearly) or @every with a duration
    (@every 90s). Required.

  -tz=<zone>
    The IANA time zone SPEC is read in, such as Europe/Paris. Default:
    UTC (never the controller's own zone).

  -overlap=<skip|allow|replace>
    What an occurrence does while the previous job has not ended: skip
    it, start another job anyway, or cancel the previous job and start
    the new one. Default: skip.

  -catch-up=<one|none>
    Occurrences missed while no controller ran: run the most recent one
    once (never a burst), or none. Default: one.

  -paused
    Create the schedule paused ('jobsuite schedule resume NAME').

  -json
    Print the schedule created as JSON.

Job options:

` + scheduledJobOptionsHelp() + `
` + clientOptionsHelp + `

Example:

  $ jobsuite schedule create -name backup -cron '0 3 * * *' -tz Europe/Paris -timeout 1h -- /usr/local/bin/backup
  Schedule backup created: 0 3 * * * (Europe/Paris), next run 2026-01-02 03:00:00 (in 14h)
`)
}

func (c *ScheduleCreateCommand) Run(args []string) int {
	const name = "schedule create"
	var (
		cf     clientFlags
		jf     = newJobFlags()
		sr     api.ScheduleRequest
		asJSON bool
	)
	jf.scheduled = true
	fs := c.flagSet(name)
	cf.register(fs)
	jf.register(fs)
	fs.StringVar(&sr.Name, "name", "", "")
	fs.StringVar(&sr.Cron, "cron", "", "")
	fs.StringVar(&sr.TZ, "tz", "", "")
	fs.StringVar(&sr.Overlap, "overlap", "", "")
	fs.StringVar(&sr.CatchUp, "catch-up", "", "")
	fs.BoolVar(&sr.Paused, "paused", false, "")
	fs.BoolVar(&asJSON, "json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	switch {
	case sr.Name == "":
		return usageError(c.Meta, name, "-name is required: the schedule's name")
	case sr.Cron == "":
		return usageError(c.Meta, name, "-cron is required, as in -cron '*/5 * * * *' or -cron '@every 90s'")
	}
	switch sr.Overlap {
	case "", "skip", "allow", "replace":
	default:
		return usageError(c.Meta, name, "-overlap must be skip, allow or replace, got %q", sr.Overlap)
	}
	switch sr.CatchUp {
	case "", "one", "none":
	default:
		return usageError(c.Meta, name, "-catch-up must be one or none, got %q", sr.CatchUp)
	}
	req, err := jf.request(fs, "schedule create -name backup -cron @daily")
	if err != nil {
		return usageError(c.Meta, name, "%v", err)
	}
	req.Name = sr.Name
	if sr.Job, err = json.Marshal(req); err != nil {
		return c.errorf("encoding the job: %v", err)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	if err := client.do(context.Background(), "POST", "/schedules", sr, &raw); err != nil {
		return c.errorf("%v", err)
	}
	if asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var v api.ScheduleView
	if err := json.Unmarshal(raw, &v); err != nil {
		return c.errorf("the controller's answer is not a schedule: %v", err)
	}
	fmt.Fprintf(c.Stdout, "Schedule %s created: %s (%s), %s\n", v.Name, v.Cron, v.TZ, nextText(&v, timeNow()))
	return ExitOK
}

// nextText says when a schedule runs next.
func nextText(v *api.ScheduleView, now time.Time) string {
	if v.Paused || v.Next == nil {
		return "paused"
	}
	return "next run " + v.Next.Local().Format("2006-01-02 15:04:05") + " (" + ago(*v.Next, now) + ")"
}

// ScheduleListCommand lists schedules: "jobsuite schedule list".
type ScheduleListCommand struct{ Meta }

func (c *ScheduleListCommand) Synopsis() string { return "List schedules" }
func (c *ScheduleListCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite schedule list [options]

  Lists the schedules (GET /schedules) by name: their timing, when they
  run next, the last job they created and its state, and how many jobs
  they created and occurrences they skipped.

Options:

  -json
    Print the schedules as JSON.
` + clientOptionsHelp + `

Example:

  $ jobsuite schedule list
  NAME    CRON       TZ   NEXT             LAST-JOB  LAST-STATE  FIRED  SKIPPED
  backup  0 3 * * *  UTC  in 14h           41        completed   12     0
`)
}

func (c *ScheduleListCommand) Run(args []string) int {
	var list []api.ScheduleView
	if code, done := getList(c.Meta, "schedule list", c.Help(), "/schedules", "schedules", args, &list); done {
		return code
	}
	now := timeNow()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCRON\tTZ\tNEXT\tLAST-JOB\tLAST-STATE\tFIRED\tSKIPPED")
	for _, v := range list {
		next := "paused"
		if !v.Paused && v.Next != nil {
			next = ago(*v.Next, now)
		}
		last, state := "-", "-"
		if v.LastJob != 0 {
			last, state = fmt.Sprint(v.LastJob), v.LastStatus
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", v.Name, v.Cron, v.TZ, next, last, colorize(c.Stdout, state), v.Fired, v.Skipped)
	}
	tw.Flush()
	return ExitOK
}

// ScheduleActCommand is a command on one schedule by name: show,
// pause, resume, delete and run-now.
type ScheduleActCommand struct {
	Meta
	verb     string
	synopsis string
	help     string
	method   string
	suffix   string // after /schedules/NAME
}

func scheduleAct(m Meta, verb string) *ScheduleActCommand {
	c := &ScheduleActCommand{Meta: m, verb: verb, method: "POST"}
	switch verb {
	case "show":
		c.method, c.synopsis = "GET", "Show a schedule"
		c.help = "Shows schedule NAME (GET /schedules/NAME): its timing, policies, job, next run and last job."
	case "pause":
		c.suffix, c.synopsis = "/pause", "Pause a schedule"
		c.help = "Pauses schedule NAME: it creates no jobs until resumed."
	case "resume":
		c.suffix, c.synopsis = "/resume", "Resume a paused schedule"
		c.help = "Resumes schedule NAME: it runs at its next occurrence from now on; what it\n  missed while paused does not run."
	case "delete":
		c.method, c.synopsis = "DELETE", "Delete a schedule"
		c.help = "Deletes schedule NAME: it creates no more jobs; the jobs it created stay."
	case "run-now":
		c.suffix, c.synopsis = "/run", "Run a schedule's job now"
		c.help = "Queues schedule NAME's job now, whatever its timing, pause and overlap\n  policy, and prints the job's ID; its next run stays."
	}
	return c
}

func (c *ScheduleActCommand) Synopsis() string { return c.synopsis }
func (c *ScheduleActCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite schedule `+c.verb+` [options] NAME

  `+c.help+`

Options:

  -json
    Print the answer as JSON.
`+clientOptionsHelp) + "\n\nExample:\n\n  $ jobsuite schedule " + c.verb + " backup"
}

func (c *ScheduleActCommand) Run(args []string) int {
	name := "schedule " + c.verb
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(c.Meta, name, "want one schedule name ('jobsuite schedule list' shows them), got %d arguments", fs.NArg())
	}
	sched := fs.Arg(0)
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	if err := client.do(context.Background(), c.method, "/schedules/"+url.PathEscape(sched)+c.suffix, nil, &raw); err != nil {
		return c.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	now := timeNow()
	if c.verb == "run-now" {
		var run api.ScheduleRun
		if err := json.Unmarshal(raw, &run); err != nil {
			return c.errorf("the controller's answer is not a run: %v", err)
		}
		fmt.Fprintf(c.Stdout, "Job %d %s from schedule %s\n", run.Job.JobID, run.Job.Status, sched)
		return ExitOK
	}
	var v api.ScheduleView
	if err := json.Unmarshal(raw, &v); err != nil {
		return c.errorf("the controller's answer is not a schedule: %v", err)
	}
	switch c.verb {
	case "pause":
		fmt.Fprintf(c.Stdout, "Schedule %s paused\n", v.Name)
	case "resume":
		fmt.Fprintf(c.Stdout, "Schedule %s resumed, %s\n", v.Name, nextText(&v, now))
	case "delete":
		fmt.Fprintf(c.Stdout, "Schedule %s deleted (it had created %d jobs)\n", v.Name, v.Fired)
	default:
		showSchedule(c.Stdout, &v, now)
	}
	return ExitOK
}

// showSchedule writes schedule v as "jobsuite schedule show" does.
func showSchedule(w io.Writer, v *api.ScheduleView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{k}, args...)...)
	}
	line("Name", "%s", v.Name)
	line("Cron", "%s (%s)", v.Cron, v.TZ)
	state := "active"
	if v.Paused {
		state = "paused"
	}
	line("State", "%s", state)
	if !v.Paused && v.Next != nil {
		line("Next run", "%s", timeText(*v.Next, now))
	}
	line("Overlap", "%s", v.Overlap)
	line("Catch-up", "%s", v.CatchUp)
	cmd := v.Job.Command
	var params string
	if json.Unmarshal(v.Job.Params, &params) == nil && params != "" {
		cmd += " " + params
	}
	line("Command", "%s", cmd)
	if len(v.Job.Labels) > 0 {
		line("Labels", "%s", labelsText(v.Job.Labels))
	}
	if v.LastJob != 0 {
		at := "-"
		if v.LastFired != nil {
			at = timeText(*v.LastFired, now)
		}
		line("Last job", "%d, %s (occurrence %s)", v.LastJob, colorize(w, v.LastStatus), at)
	}
	line("Jobs created", "%d", v.Fired)
	line("Skipped", "%d", v.Skipped)
	line("Created", "%s", timeText(v.CreatedAt, now))
	tw.Flush()
}
