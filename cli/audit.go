package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"jobsuite/api"
)

// AuditCommand lists the audit log: "jobsuite audit".
type AuditCommand struct{ Meta }

func (c *AuditCommand) Synopsis() string { return "List who did what: the audit log" }
func (c *AuditCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite audit [options]

  Lists the controller's audit log (GET /audit), newest first: when, who
  (the certificate or token name, its role, and whether it was a
  certificate or a token), the action (submit, resubmit, cancel, drain,
  undrain, revoke, unrevoke, token_create, token_revoke), its target and
  details. Needs an operator certificate or token. Entries are kept as
  long as the controller's retain_for.

Options:

  -limit=<n>
    List at most n entries, 1 to 1000. Default: 50. With -all, the size
    of each page fetched.

  -before=<id>
    Only entries older than entry id: the next page, as printed by an
    earlier audit ("more:" on stderr).

  -all
    Follow the pages to the end and list every entry.

  -json
    Print the entries as JSON, as the controller's API returns them (one
    array, also with -all).
` + clientOptionsHelp + `

  When older entries exist than one page shows, the command that lists
  them is printed to stderr.

Example:

  $ jobsuite audit -limit 3
  TIME                 WHO       ROLE      VIA          ACTION   TARGET          DETAIL
  2025-07-01 11:58:02  alice     operator  certificate  drain    agent worker-2  -
  2025-07-01 11:57:40  ci        operator  token        submit   job 31          -
  2025-07-01 11:50:13  alice     operator  certificate  cancel   job 28          -
`)
}

func (c *AuditCommand) Run(args []string) int {
	const name = "audit"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	limit := fs.Int("limit", 50, "")
	before := fs.Uint64("before", 0, "")
	all := fs.Bool("all", false, "")
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(c.Meta, name, "unexpected argument %q", fs.Arg(0))
	}
	if *limit < 1 || *limit > 1000 {
		return usageError(c.Meta, name, "-limit must be from 1 to 1000, got %d", *limit)
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	ctx, stop := c.signalContext()
	defer stop()

	var entries []json.RawMessage
	next := ""
	if *before > 0 {
		next = strconv.FormatUint(*before, 10)
	}
	for {
		q := url.Values{"limit": {strconv.Itoa(*limit)}}
		if next != "" {
			q.Set("before", next)
		}
		raw, cur, err := getPage(ctx, client, "/audit?"+q.Encode(), "X-Next-Before")
		if err != nil {
			return c.errorf("%v", err)
		}
		var page []json.RawMessage
		if err := json.Unmarshal(raw, &page); err != nil {
			return c.errorf("the controller's answer is not a list of audit entries: %v", err)
		}
		entries = append(entries, page...)
		if cur != "" && cur == next {
			return c.errorf("the controller answered the page before %s twice; stopping", cur)
		}
		next = cur
		if !*all || next == "" {
			break
		}
	}
	if entries == nil {
		entries = []json.RawMessage{}
	}
	if *asJSON {
		raw, err := json.Marshal(entries)
		if err != nil {
			return c.errorf("%v", err)
		}
		writeRawJSON(c.Stdout, raw)
	} else if code := c.print(entries); code != ExitOK {
		return code
	}
	if next != "" {
		fmt.Fprintf(c.Stderr, "more: jobsuite audit -limit %d -before %s\n", *limit, next)
	}
	return ExitOK
}

// print shows entries as a table.
func (c *AuditCommand) print(raw []json.RawMessage) int {
	if len(raw) == 0 {
		fmt.Fprintln(c.Stdout, "No audit entries.")
		return ExitOK
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tWHO\tROLE\tVIA\tACTION\tTARGET\tDETAIL")
	for _, r := range raw {
		var e api.AuditEntry
		if err := json.Unmarshal(r, &e); err != nil {
			return c.errorf("the controller's answer holds an entry this CLI cannot read: %v", err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"),
			cell(e.Who, 32), cell(e.Role, 10), cell(e.Via, 12), cell(e.Action, 16), cell(e.Target, 32), cell(e.Detail, 60))
	}
	tw.Flush()
	return ExitOK
}
