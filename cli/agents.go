package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// AgentsCommand lists the connected agents: "jobsuite agents".
type AgentsCommand struct{ Meta }

func (c *AgentsCommand) Synopsis() string { return "List the connected agents" }
func (c *AgentsCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agents [options]

  Lists the agents connected to the controller: name, transport (quic or
  tcp), job slots, jobs running, labels, when the agent connected and when
  it last sent a heartbeat.

Options:

  -json
    Print the agents as JSON, as the controller's API returns them.
` + clientOptionsHelp + `

Example:

  $ jobsuite agents
  NAME      TRANSPORT  SLOTS  RUNNING  LABELS   CONNECTED  LAST-HEARTBEAT
  worker-1  quic       4      1        gpu=yes  2h ago     1s ago
`)
}

func (c *AgentsCommand) Run(args []string) int {
	const name = "agents"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	asJSON := fs.Bool("json", false, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(c.Meta, name, "unexpected argument %q", fs.Arg(0))
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	if err := client.do(context.Background(), "GET", "/agents", nil, &raw); err != nil {
		return c.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(c.Stdout, raw)
		return ExitOK
	}
	var agents []agentInfo
	if err := json.Unmarshal(raw, &agents); err != nil {
		return c.errorf("the controller's answer is not a list of agents: %v", err)
	}
	if len(agents) == 0 {
		fmt.Fprintln(c.Stdout, "No agents connected. Start one with 'jobsuite agent'.")
		return ExitOK
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTRANSPORT\tSLOTS\tRUNNING\tLABELS\tCONNECTED\tLAST-HEARTBEAT")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", a.Name, cell(a.Transport, 10), a.Slots, a.Running,
			labelsText(a.Labels), ago(a.ConnectedAt, now), ago(a.LastSeen, now))
	}
	tw.Flush()
	return ExitOK
}
