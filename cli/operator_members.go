package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"jobsuite/api"
)

// OperatorMembersCommand lists the controllers of a cluster:
// "jobsuite operator members".
type OperatorMembersCommand struct{ Meta }

func (c *OperatorMembersCommand) Synopsis() string { return "List the controllers of the cluster" }
func (c *OperatorMembersCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite operator members [options]

  Lists the controllers of the cluster (GET /operator/members), each as
  it answers for itself: its ID (its certificate's name), cluster
  address, role (leader, follower or candidate; unreachable when it did
  not answer within 2 s, with the reason), whether it votes, the raft
  term, the last raft entry its store applied and the last in its log (a
  follower behind the leader is catching up), how long ago a follower
  last heard from the leader, and how many agents watch it for a change
  of leader (WATCHES: agents attached to the leader keep a watch session
  with another controller, which tells them at once when a new leader
  takes over), and how it sends agents' output to the others when it
  leads (OUTPUT: channel, the default, or raft with
  -output-channel=false; every member must say the same). A single
  controller lists itself alone, as leader.

Options:

  -json
    Print the members as JSON, as the controller's API returns them.
` + clientOptionsHelp + `

Example:

  $ jobsuite operator members
  ID     ADDRESS        ROLE      VOTER  TERM  APPLIED  LAST-INDEX  LAST-CONTACT  WATCHES  OUTPUT
  ctl-1  10.0.0.1:7444  leader    yes    3     1204     1204        -             0        channel
  ctl-2  10.0.0.2:7444  follower  yes    3     1204     1204        0.1s          12       channel
  ctl-3  10.0.0.3:7444  unreachable  yes  -    -        -           -             -        -  (dial tcp 10.0.0.3:7444: connection refused)
`)
}

func (c *OperatorMembersCommand) Run(args []string) int {
	var members []api.Member
	if code, done := getList(c.Meta, "operator members", c.Help(), "/operator/members", "members", args, &members); done {
		return code
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tROLE\tVOTER\tTERM\tAPPLIED\tLAST-INDEX\tLAST-CONTACT\tWATCHES\tOUTPUT")
	for _, m := range members {
		voter := "no"
		if m.Voter {
			voter = "yes"
		}
		addr := m.ClusterAddr
		if addr == "" {
			addr = "-"
		}
		if m.Role == "unreachable" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t(%s)\n", m.ID, addr, m.Role, voter, m.Error)
			continue
		}
		contact := "-"
		if m.LastContactSeconds != nil {
			contact = fmt.Sprintf("%.1fs", *m.LastContactSeconds)
		}
		term := "-"
		if m.Term > 0 {
			term = fmt.Sprint(m.Term)
		}
		output := m.Output
		if output == "" {
			output = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", m.ID, addr, m.Role, voter, term, m.AppliedIndex, m.LastIndex, contact, m.WatchSessions, output)
	}
	tw.Flush()
	return ExitOK
}

// OperatorRemovePeerCommand removes a controller from the cluster:
// "jobsuite operator remove-peer ID".
type OperatorRemovePeerCommand struct{ Meta }

func (c *OperatorRemovePeerCommand) Synopsis() string {
	return "Remove a controller that is gone for good from the cluster"
}
func (c *OperatorRemovePeerCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite operator remove-peer [options] ID

  Removes the controller ID (its certificate's name, as 'jobsuite
  operator members' lists it) from the cluster's raft configuration
  (DELETE /operator/members/ID), for a controller that is gone for good:
  the others stop counting it for the quorum. A controller that is only
  restarting needs nothing: it rejoins by itself. The leader cannot
  remove itself: stop it, and remove it from the new leader. To bring a
  removed controller back, give it an empty data directory and start it
  with -join. Needs an operator certificate or token; audit-logged.
` + clientOptionsHelp + `

Example:

  $ jobsuite operator remove-peer ctl-3
  Removed ctl-3 from the cluster.
`)
}

func (c *OperatorRemovePeerCommand) Run(args []string) int {
	var cf clientFlags
	fs := c.flagSet("operator remove-peer")
	cf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(c.Meta, "operator remove-peer", "give the ID of one controller (see 'jobsuite operator members')")
	}
	id := fs.Arg(0)
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	err = client.do(context.Background(), "DELETE", "/operator/members/"+url.PathEscape(id), nil, nil)
	var apiErr *APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		return c.errorf("%v; 'jobsuite operator members' lists the members", err)
	case err != nil:
		return c.errorf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "Removed %s from the cluster.\n", id)
	return ExitOK
}

// OperatorTransferLeadershipCommand hands the cluster's leadership on:
// "jobsuite operator transfer-leadership".
type OperatorTransferLeadershipCommand struct{ Meta }

func (c *OperatorTransferLeadershipCommand) Synopsis() string {
	return "Hand the cluster's leadership to another controller"
}
func (c *OperatorTransferLeadershipCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite operator transfer-leadership [options]

  Asks the leader to hand its leadership to another controller (POST
  /operator/transfer-leadership; any controller forwards it to the
  leader), as a clean stop does: for maintenance of the leader's machine
  without waiting out an election timeout. Jobs keep running; the old
  leader's agents are redirected to the new one. A single controller has
  no other member to hand it to. Needs an operator certificate or token;
  audit-logged.
` + clientOptionsHelp + `

Example:

  $ jobsuite operator transfer-leadership
  Leadership handed from ctl-1 to ctl-2.
`)
}

func (c *OperatorTransferLeadershipCommand) Run(args []string) int {
	var cf clientFlags
	fs := c.flagSet("operator transfer-leadership")
	cf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() != 0 {
		return usageError(c.Meta, "operator transfer-leadership", "it takes no arguments")
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var out struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	if err := client.do(context.Background(), "POST", "/operator/transfer-leadership", nil, &out); err != nil {
		return c.errorf("%v", err)
	}
	if out.To == "" {
		fmt.Fprintf(c.Stdout, "Leadership handed on by %s; the new leader is not known yet ('jobsuite operator members' shows it).\n", out.From)
		return ExitOK
	}
	fmt.Fprintf(c.Stdout, "Leadership handed from %s to %s.\n", out.From, out.To)
	return ExitOK
}
