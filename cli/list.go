package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"jobsuite/api"
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
    Only jobs in this state: blocked, queued, waiting, dispatched,
    running, completed, failed, timeout or cancelled.

  -label=<key=value>
    Only jobs labelled key=value. Repeat it for jobs carrying every one
    of the labels given.

  -parent=<id>
    Only the children of fan-out <id> (one job per host).

  -limit=<n>
    List at most n jobs, 1 to 1000. Default: 100. With -all, the size
    of each page fetched.

  -cursor=<cursor>
    Start at this page: the cursor printed by an earlier list ("more:"
    on stderr). Give the same -status, -label and -parent again.

  -all
    Follow the pages to the end and list every matching job.

  -json
    Print the jobs as JSON, as the controller's API returns them (one
    array, also with -all).
` + clientOptionsHelp + `

  When more jobs match than one page shows, the command that lists the
  next page is printed to stderr.

Example:

  $ jobsuite list -status failed -limit 20
  $ jobsuite list -label team=infra -label gpu=yes -all
  $ jobsuite list -parent 812
`)
}

func (c *ListCommand) Run(args []string) int {
	const name = "list"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	status := fs.String("status", "", "")
	parent := fs.Uint64("parent", 0, "")
	limit := fs.Int("limit", 0, "")
	labels := kvFlag{}
	fs.Var(labels, "label", "")
	cursor := fs.String("cursor", "", "")
	all := fs.Bool("all", false, "")
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
	// q is the query of every page; hint repeats it as flags.
	q, hint := url.Values{}, []string{"jobsuite", "list"}
	if *status != "" {
		q.Set("status", strings.ToLower(strings.TrimSpace(*status)))
		hint = append(hint, "-status", q.Get("status"))
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Add("label", k+"="+labels[k])
		hint = append(hint, "-label", shellQuote(k+"="+labels[k]))
	}
	if *parent > 0 {
		q.Set("parent", strconv.FormatUint(*parent, 10))
		hint = append(hint, "-parent", q.Get("parent"))
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
		hint = append(hint, "-limit", strconv.Itoa(*limit))
	}

	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	ctx, stop := c.signalContext()
	defer stop()
	var (
		raw   json.RawMessage
		pages []json.RawMessage // every page's jobs, with -all
		next  = *cursor
	)
	for {
		if next != "" {
			q.Set("cursor", next)
		}
		path := "/jobs"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var cur string
		raw, cur, err = listPage(ctx, client, path)
		if err != nil {
			return c.errorf("%v", err)
		}
		if cur != "" && cur == next {
			return c.errorf("the controller answered cursor %q twice; stopping", cur)
		}
		next = cur
		if !*all {
			break
		}
		var page []json.RawMessage
		if err := json.Unmarshal(raw, &page); err != nil {
			return c.errorf("the controller's answer is not a list of jobs: %v", err)
		}
		pages = append(pages, page...)
		if next == "" {
			if raw, err = json.Marshal(pages); err != nil {
				return c.errorf("%v", err)
			}
			break
		}
	}
	code := c.print(raw, *asJSON, next != "")
	if code == ExitOK && next != "" {
		fmt.Fprintf(c.Stderr, "more: %s -cursor %s\n", strings.Join(hint, " "), shellQuote(next))
	}
	return code
}

// print shows a JSON array of jobs as JSON or as a table; more says
// that further pages follow.
func (c *ListCommand) print(raw json.RawMessage, asJSON, more bool) int {
	if asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var jobs []api.JobView
	if err := json.Unmarshal(raw, &jobs); err != nil {
		return c.errorf("the controller's answer is not a list of jobs: %v", err)
	}
	if len(jobs) == 0 {
		if more {
			// The controller reached its scan bound before a match.
			fmt.Fprintln(c.Stdout, "No jobs on this page.")
			return ExitOK
		}
		fmt.Fprintln(c.Stdout, "No jobs.")
		return ExitOK
	}
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].JobID > jobs[j].JobID })
	now := timeNow()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\t"+colorize(c.Stdout, "STATUS")+"\tPRIORITY\tEXIT\tAGENT\tCREATED") // colorize keeps the column aligned
	for i := range jobs {
		j := &jobs[i]
		exit, agent := "-", "-"
		if j.ExitCode != nil {
			exit = strconv.Itoa(*j.ExitCode)
		}
		switch n := len(j.Attempts); {
		case n > 0 && j.Attempts[n-1].Agent != "":
			agent = j.Attempts[n-1].Agent
		case j.Agent != "": // a fan-out child, pinned
			agent = j.Agent
		case j.Fanout != nil:
			agent = fmt.Sprintf("fan-out: %d hosts", j.Fanout.Children)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, cell(j.Name, 40), colorize(c.Stdout, j.Status), priorityText(j), exit, agent, ago(j.CreatedAt, now))
	}
	tw.Flush()
	return ExitOK
}

// listPage gets one page of jobs: the raw JSON array and the cursor of
// the next page from the X-Next-Cursor header ("" on the last page).
func listPage(ctx context.Context, c *Client, path string) (json.RawMessage, string, error) {
	return getPage(ctx, c, path, "X-Next-Cursor")
}

// getPage gets one page of a paged list: the raw JSON and the response
// header next that names the next page ("" on the last page).
func getPage(ctx context.Context, c *Client, path, next string) (json.RawMessage, string, error) {
	resp, base, err := c.roundTrip(ctx, "GET", path, nil, true)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, "", fmt.Errorf("reading the answer of GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", apiError(resp.StatusCode, data)
	}
	if !json.Valid(data) {
		return nil, "", fmt.Errorf("the answer of GET %s is not JSON; is %s a jobsuite controller?", path, base)
	}
	return data, resp.Header.Get(next), nil
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// letters, digits and . _ / = : , + -.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/=:,+-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
