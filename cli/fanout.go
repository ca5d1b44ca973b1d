package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"

	"jobsuite/api"
)

// Fan-out on the command line (issue 17): submit -all [-label k=v]
// [-batch N|N%] [-max-failures N|N%] [-include-disconnected] makes a
// parent job and one child per agent; submit -f follows every child at
// once, each line prefixed with its host (hostLines), or with -group
// each host's output as one block when its child ends (hostBlocks). The
// exit code is the worst child's (worstExit).

// fanoutFlags are submit's fan-out flags (not a schedule's: a schedule
// fires single jobs).
type fanoutFlags struct {
	all, offline       bool
	batch, maxFailures string
}

func (f *fanoutFlags) register(fs interface {
	BoolVar(*bool, string, bool, string)
	StringVar(*string, string, string, string)
}) {
	fs.BoolVar(&f.all, "all", false, "")
	fs.BoolVar(&f.offline, "include-disconnected", false, "")
	fs.StringVar(&f.batch, "batch", "", "")
	fs.StringVar(&f.maxFailures, "max-failures", "", "")
}

// apply turns req into a fan-out when -all is set: the job's labels
// become the selector. Without -all the fan-out flags are usage errors.
func (f *fanoutFlags) apply(req *api.SubmitRequest) error {
	if !f.all {
		switch {
		case f.batch != "":
			return errors.New("-batch needs -all: it is the rollout of a fan-out")
		case f.maxFailures != "":
			return errors.New("-max-failures needs -all: it stops the rollout of a fan-out")
		case f.offline:
			return errors.New("-include-disconnected needs -all")
		}
		return nil
	}
	fo := &api.FanoutRequest{All: true, Labels: req.Labels, IncludeDisconnected: f.offline}
	req.Labels = nil
	for _, c := range []struct {
		flag, v string
		to      *[]byte
	}{{"-batch", f.batch, (*[]byte)(&fo.Batch)}, {"-max-failures", f.maxFailures, (*[]byte)(&fo.MaxFailures)}} {
		if c.v == "" {
			continue
		}
		if _, err := countOrPercent(c.v, 100); err != nil {
			return fmt.Errorf("%s: %v", c.flag, err)
		}
		*c.to = []byte(fmt.Sprintf("%q", c.v))
	}
	req.Fanout = fo
	return nil
}

// fanoutHelp is the help of submit's fan-out flags.
const fanoutHelp = `  -all
    Fan out: run the command on every agent (with -label, every agent
    carrying those labels), chosen when the job is submitted. The job
    becomes a parent with one child per agent; 'jobsuite status' on it
    shows the per-host table.

  -batch=<n|n%>
    With -all: at most n children run at once (a percentage of the
    hosts rounds up); the others wait their turn. Default: all at once.

  -max-failures=<n|n%>
    With -all: once n children failed or timed out, no further child
    starts and the ones not started are cancelled. Default: no limit.

  -include-disconnected
    With -all: also agents known from an earlier connection but not
    connected now; their children wait for them, and fail when they do
    not connect within the controller's -offline-timeout.

  -group
    With -f on a fan-out: print each host's output as one block when
    its child ends, instead of lines prefixed with the host as they
    come.
`

// worstExit is the exit code of a fan-out from its children's ends:
// the worst of them — a failure over a timeout over a cancel over a
// completion, and among failures the highest exit code.
func worstExit(ends []api.LogMessage) int {
	rank := func(m api.LogMessage) int {
		switch m.Status {
		case "completed":
			return 0
		case "cancelled":
			return 1
		case "timeout":
			return 2
		}
		return 3
	}
	worst, code := -1, ExitOK
	for _, e := range ends {
		r, c := rank(e), jobExitCode(e)
		if r > worst || (r == worst && c > code) {
			worst, code = r, c
		}
	}
	return code
}

// endHow says how a child ended, for its block header or last line:
// "exit 0", "failed: exit 3", "cancelled: rollout stopped ...".
func endHow(e api.LogMessage) string {
	switch {
	case e.Status == "completed":
		return "exit 0"
	case e.ExitCode != nil:
		return fmt.Sprintf("%s: exit %d", e.Status, *e.ExitCode)
	case e.Reason != "":
		return e.Status + ": " + e.Reason
	}
	return e.Status
}

// followFanout follows every child of fan-out parent p and returns the
// worst child's exit code. Unless quiet, lines on stderr say what was
// fanned out and how each host ended.
func followFanout(m Meta, c *Client, p api.JobView, group, quiet bool) int {
	parent := m.Ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt)
	defer stop()
	hosts := make([]string, len(p.Children))
	for i, ch := range p.Children {
		hosts[i] = ch.Agent
	}
	if !quiet {
		fmt.Fprintf(m.Stderr, "jobsuite: job %d: fan-out to %d hosts (%s)\n", p.JobID, len(hosts), strings.Join(hosts, ", "))
	}
	out, errs := newHostLines(m.Stdout, hosts), newHostLines(m.Stderr, hosts)
	blocks := newHostBlocks(m.Stdout)
	ends := make([]api.LogMessage, len(p.Children))
	fails := make([]error, len(p.Children))
	var wg sync.WaitGroup
	for i, ch := range p.Children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &follower{client: c, id: ch.JobID, follow: true}
			var block *hostBlock
			if group {
				block = blocks.host(ch.Agent)
				f.stdout, f.stderr = block, block
			} else {
				o, e := out.host(ch.Agent), errs.host(ch.Agent)
				defer o.Close()
				defer e.Close()
				f.stdout, f.stderr = o, e
			}
			ends[i], fails[i] = f.run(ctx)
			if fails[i] != nil {
				return
			}
			if group {
				fails[i] = block.end(endHow(ends[i]))
			} else if ends[i].Status != "completed" && !quiet {
				fmt.Fprintf(m.Stderr, "jobsuite: %s: job %d %s\n", ch.Agent, ch.JobID, endHow(ends[i]))
			}
		}()
	}
	wg.Wait()
	for i, err := range fails {
		switch {
		case errors.Is(err, errInterrupted):
			fmt.Fprintf(m.Stderr, "\njob %d is still running; 'jobsuite cancel %d' stops it and its children\n", p.JobID, p.JobID)
			return ExitInterrupted
		case err != nil:
			return m.errorf("host %s (job %d): %v", p.Children[i].Agent, p.Children[i].JobID, err)
		}
	}
	code := worstExit(ends)
	if !quiet {
		var v api.JobView
		if err := c.do(ctx, "GET", fmt.Sprintf("/jobs/%d", p.JobID), nil, &v); err == nil {
			fmt.Fprintf(m.Stderr, "jobsuite: job %d %s: %s\n", p.JobID, v.Status, v.Reason)
		}
	}
	return code
}

// hostTable writes a fan-out parent's children, one host a line.
func hostTable(w io.Writer, children []api.ChildView) {
	width := len("HOST")
	for _, ch := range children {
		width = max(width, len(ch.Agent))
	}
	fmt.Fprintf(w, "  %-*s  %-8s  %-10s  %-4s  %s\n", width, "HOST", "JOB", "STATUS", "EXIT", "REASON")
	for _, ch := range children {
		exit := "-"
		if ch.ExitCode != nil {
			exit = fmt.Sprint(*ch.ExitCode)
		}
		fmt.Fprintf(w, "  %-*s  %-8d  %-10s  %-4s  %s\n", width, ch.Agent, ch.JobID, ch.Status, exit, ch.Reason)
	}
}
