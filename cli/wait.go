package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"jobsuite/api"
)

// WaitCommand blocks until jobs finish: "jobsuite wait".
type WaitCommand struct{ Meta }

func (c *WaitCommand) Synopsis() string { return "Wait until jobs finish" }
func (c *WaitCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite wait [options] ID...

  Waits until every job ID has reached a final state: completed, failed,
  timeout or cancelled. It asks the controller for each unfinished job
  twice a second (GET /jobs/ID). Each job is reported on stdout when it
  finishes:

    job 12 completed (exit code 0)
    job 13 failed (exit code 3): attempt 1 failed: exit code 3

  Progress goes to stderr: on a terminal, one line with the number of
  jobs in each state, updated in place; otherwise a line each time those
  numbers change. The jobs keep running when wait stops (Ctrl-C, -timeout).
  A controller that stops answering is asked again until it does (or
  -timeout passes); an unknown job ID or a refused certificate ends the
  wait at once.

Exit codes:

  0    every job completed
  1    a job failed, timed out or was cancelled; -timeout passed first; or
       the controller refused (an unknown job ID, a certificate it does
       not accept)
  2    wrong flags or arguments
  130  interrupted (Ctrl-C)

Options:

  -timeout=<duration>
    Stop waiting after this long, e.g. 90s or 10m, and exit 1 naming the
    jobs not finished. Default: 0, wait as long as it takes.

  -json
    Print the jobs at the end, as the controller's API returns them, as
    one JSON array in the order given (instead of a line per job).
` + clientOptionsHelp + `

Example:

  $ jobsuite wait 12 13 14
  job 12 completed (exit code 0)
  job 14 completed (exit code 0)
  job 13 failed (exit code 3): attempt 1 failed: exit code 3
  3 jobs: 2 completed, 1 failed
  $ echo $?
  1
  $ jobsuite wait -timeout 30m -json 12 13 14 > results.json
`)
}

// waitPoll is how often wait asks about each unfinished job (a variable
// for tests).
var waitPoll = 500 * time.Millisecond

// stateOrder is the order states are counted in on the progress line.
var stateOrder = []string{"blocked", "queued", "waiting", "dispatched", "running", "completed", "failed", "timeout", "cancelled"}

// finalState reports whether a job in state s never changes again.
func finalState(s string) bool {
	switch s {
	case "completed", "failed", "timeout", "cancelled":
		return true
	}
	return false
}

// waitJob is one job waited for: its latest answer.
type waitJob struct {
	id       uint64
	raw      json.RawMessage
	view     api.JobView
	seen     bool // answered at least once
	reported bool // its final line is printed
}

func (c *WaitCommand) Run(args []string) int {
	const name = "wait"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	timeout := fs.Duration("timeout", 0, "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(c.Meta, name, "want at least one job ID")
	}
	if *timeout < 0 {
		return usageError(c.Meta, name, "-timeout must be 0 (no limit) or a positive duration such as 10m, got %s", *timeout)
	}
	var jobs []*waitJob
	seen := map[uint64]bool{}
	for _, a := range fs.Args() {
		id, err := parseJobID(a)
		if err != nil {
			return usageError(c.Meta, name, "%v", err)
		}
		if !seen[id] {
			seen[id] = true
			jobs = append(jobs, &waitJob{id: id})
		}
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	ctx, stop := c.signalContext()
	defer stop()
	var deadline <-chan time.Time
	if *timeout > 0 {
		t := time.NewTimer(*timeout)
		defer t.Stop()
		deadline = t.C
	}

	p := &progress{w: c.Stderr, tty: isTerminal(c.Stderr), start: time.Now()}
	contacted := false // the controller answered once: later failures are retried
	var failing error  // the error of the last round, if it failed
	for {
		var roundErr error
		for _, j := range jobs {
			if j.seen && finalState(j.view.Status) {
				continue
			}
			err := j.fetch(ctx, client)
			if ctx.Err() != nil {
				p.clear()
				fmt.Fprintf(c.Stderr, "interrupted; the jobs keep running\n")
				return ExitInterrupted
			}
			var apiErr *APIError
			switch {
			case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
				p.clear()
				return c.errorf("job %d: %v", j.id, err)
			case errors.As(err, &apiErr) && apiErr.Status < 500:
				p.clear()
				return c.errorf("%v", err)
			case err != nil && !contacted:
				return c.errorf("%v", err)
			case err != nil:
				roundErr = err
			default:
				contacted = true
				if finalState(j.view.Status) && !j.reported && !*asJSON {
					j.reported = true
					p.clear()
					fmt.Fprintln(c.Stdout, finishedLine(c.Stdout, &j.view))
				}
			}
			if roundErr != nil {
				break // ask again next round
			}
		}
		switch {
		case roundErr != nil && failing == nil:
			p.clear()
			fmt.Fprintf(c.Stderr, "warning: %v; asking again\n", roundErr)
		case roundErr == nil && failing != nil:
			p.clear()
			fmt.Fprintf(c.Stderr, "the controller answers again\n")
		}
		failing = roundErr
		p.show(jobs)
		if allFinal(jobs) {
			p.done()
			break
		}
		select {
		case <-ctx.Done():
			p.clear()
			fmt.Fprintf(c.Stderr, "interrupted; the jobs keep running\n")
			return ExitInterrupted
		case <-deadline:
			p.done()
			var left []string
			for _, j := range jobs {
				if !j.seen || !finalState(j.view.Status) {
					left = append(left, fmt.Sprintf("%d (%s)", j.id, orDefault(j.view.Status, "unknown")))
				}
			}
			if *asJSON {
				printWaitJSON(c.Stdout, jobs)
			}
			return c.errorf("timed out after %s; not finished: job %s", *timeout, strings.Join(left, ", "))
		case <-time.After(waitPoll):
		}
	}
	if *asJSON {
		printWaitJSON(c.Stdout, jobs)
	}
	for _, j := range jobs {
		if j.view.Status != "completed" {
			return ExitError
		}
	}
	return ExitOK
}

// fetch asks the controller for the job.
func (j *waitJob) fetch(ctx context.Context, c *Client) error {
	var raw json.RawMessage
	if err := c.do(ctx, "GET", fmt.Sprintf("/jobs/%d", j.id), nil, &raw); err != nil {
		return err
	}
	var v api.JobView
	if err := json.Unmarshal(raw, &v); err != nil || v.Status == "" {
		return fmt.Errorf("the controller's answer for job %d is not a job: %v", j.id, err)
	}
	j.raw, j.view, j.seen = raw, v, true
	return nil
}

func allFinal(jobs []*waitJob) bool {
	for _, j := range jobs {
		if !j.seen || !finalState(j.view.Status) {
			return false
		}
	}
	return true
}

// finishedLine is the line reporting a finished job.
func finishedLine(w io.Writer, j *api.JobView) string {
	s := fmt.Sprintf("job %d %s", j.JobID, colorize(w, j.Status))
	if j.ExitCode != nil {
		s += fmt.Sprintf(" (exit code %d)", *j.ExitCode)
	}
	if j.Status != "completed" && j.Reason != "" {
		s += ": " + oneLine(j.Reason)
	}
	return s
}

// printWaitJSON prints the jobs' latest answers as one JSON array.
func printWaitJSON(w io.Writer, jobs []*waitJob) {
	out := make([]json.RawMessage, 0, len(jobs))
	for _, j := range jobs {
		if j.seen {
			out = append(out, j.raw)
		}
	}
	data, _ := json.MarshalIndent(out, "", "  ")
	writeRawJSON(w, data)
}

func orDefault(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// progress shows how many jobs are in each state on stderr: on a
// terminal one line rewritten in place, else a line when the counts
// change.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	last  string // the counts last shown
	shown bool   // a terminal line is on screen
}

// counts is "3 jobs: 1 running, 2 completed".
func (p *progress) counts(jobs []*waitJob) string {
	n := map[string]int{}
	for _, j := range jobs {
		n[orDefault(j.view.Status, "unknown")]++
	}
	var parts []string
	for _, s := range stateOrder {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[s], colorize(p.w, s)))
			delete(n, s)
		}
	}
	var other []string // states newer than this CLI, or "unknown" (no answer yet)
	for s := range n {
		other = append(other, s)
	}
	sort.Strings(other)
	for _, s := range other {
		parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
	}
	noun := "jobs"
	if len(jobs) == 1 {
		noun = "job"
	}
	return fmt.Sprintf("%d %s: %s", len(jobs), noun, strings.Join(parts, ", "))
}

func (p *progress) show(jobs []*waitJob) {
	line := p.counts(jobs)
	if p.tty {
		elapsed := time.Since(p.start).Truncate(time.Second)
		fmt.Fprintf(p.w, "\r\x1b[K%s  (%s)", line, elapsed)
		p.shown = true
	} else if line != p.last {
		fmt.Fprintln(p.w, line)
	}
	p.last = line
}

// clear removes the terminal line before other output.
func (p *progress) clear() {
	if p.tty && p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

// done leaves the last counts on screen and ends the line.
func (p *progress) done() {
	if p.tty && p.shown {
		fmt.Fprintf(p.w, "\r\x1b[K%s\n", p.last)
		p.shown = false
	}
}
