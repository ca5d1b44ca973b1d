package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"

	"jobsuite/api"
)

// AgentsCommand lists the connected agents: "jobsuite agents".
type AgentsCommand struct{ Meta }

func (c *AgentsCommand) Synopsis() string { return "List the connected agents" }
func (c *AgentsCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agents [options]

  Lists the agents connected to the controller: name, transport (quic or
  tcp), state (active, or draining: it gets no new jobs), job slots, jobs
  running, labels, when the agent connected and when it last sent a
  heartbeat. 'jobsuite agents drain NAME' stops sending jobs to one agent,
  'jobsuite agents undrain NAME' starts again.

Options:

  -json
    Print the agents as JSON, as the controller's API returns them.
` + clientOptionsHelp + `

Example:

  $ jobsuite agents
  NAME      TRANSPORT  STATE     SLOTS  RUNNING  LABELS   CONNECTED  LAST-HEARTBEAT
  worker-1  quic       active    4      1        gpu=yes  2h ago     1s ago
  worker-2  tcp        draining  4      2        -        5d ago     just now
`)
}

func (c *AgentsCommand) Run(args []string) int {
	var agents []api.AgentInfo
	if code, done := getList(c.Meta, "agents", c.Help(), "/agents", "agents", args, &agents); done {
		return code
	}
	if len(agents) == 0 {
		fmt.Fprintln(c.Stdout, "No agents connected. Start one with 'jobsuite agent'.")
		return ExitOK
	}
	now := timeNow()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTRANSPORT\t"+colorize(c.Stdout, "STATE")+"\tSLOTS\tRUNNING\tLABELS\tCONNECTED\tLAST-HEARTBEAT")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", a.Name, cell(a.Transport, 10), colorize(c.Stdout, agentStateText(&a)), a.Slots, a.Running,
			labelsText(a.Labels), ago(a.ConnectedAt, now), ago(a.LastSeen, now))
	}
	tw.Flush()
	return ExitOK
}

// agentStateText is the agent's STATE column: active, or draining.
func agentStateText(a *api.AgentInfo) string {
	if a.Draining {
		return "draining"
	}
	return "active"
}

// AgentsDrainCommand drains an agent: "jobsuite agents drain NAME".
type AgentsDrainCommand struct{ Meta }

func (c *AgentsDrainCommand) Synopsis() string { return "Stop sending jobs to an agent" }
func (c *AgentsDrainCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agents drain [options] NAME

  Drains the connected agent NAME (POST /agents/NAME/drain): the
  controller sends it no new jobs, and the jobs it runs go on until they
  end. 'jobsuite agents' shows it as draining.

  The drain lasts as long as the agent's connection, or until 'jobsuite
  agents undrain NAME': an agent that reconnects (or restarts) takes jobs
  again. To take an agent out of
  service for good, stop it with SIGTERM (systemctl stop jobsuite-agent):
  it drains itself, waits up to its -drain-timeout for running jobs to
  finish, and exits.

Options:

  -json
    Print the agent as JSON, as the controller's API returns it.
` + clientOptionsHelp + `

Example:

  $ jobsuite agents drain worker-1
  Agent worker-1 is draining: no new jobs; 2 running
`)
}

func (c *AgentsDrainCommand) Run(args []string) int {
	return agentAction(c.Meta, "agents drain", "drain", c.Help(), args, func(agent string, a api.AgentInfo) {
		fmt.Fprintf(c.Stdout, "Agent %s is draining: no new jobs; %d running\n", agent, a.Running)
	})
}

// agentAction is the shared part of 'agents drain' and 'agents undrain':
// the client flags and -json, one agent name, POST /agents/NAME/ACTION.
// With -json it prints the answer; otherwise it calls done with it.
func agentAction(m Meta, name, action, help string, args []string, done func(agent string, a api.AgentInfo)) int {
	var cf clientFlags
	fs := m.flagSet(name)
	cf.register(fs)
	asJSON := fs.Bool("json", false, "")
	if code, ok := m.parse(fs, args, help); !ok {
		return code
	}
	agent, code, ok := agentArg(m, fs, name)
	if !ok {
		return code
	}
	client, err := newClient(m, &cf)
	if err != nil {
		return m.errorf("%v", err)
	}
	defer client.close()
	var raw json.RawMessage
	err = client.do(context.Background(), "POST", "/agents/"+agent+"/"+action, nil, &raw)
	var apiErr *APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound && apiErr.Field == "name":
		fmt.Fprintf(m.Stderr, "error: no connected agent named %s\n", agent)
		fmt.Fprintln(m.Stderr, "Run 'jobsuite agents' to list the connected agents.")
		return ExitError
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		return m.errorf("%v; does this controller support %sing agents (is it older than this CLI)?", err, action)
	case err != nil:
		return m.errorf("%v", err)
	}
	if *asJSON {
		writeRawJSON(m.Stdout, raw)
		return ExitOK
	}
	var a api.AgentInfo
	if err := json.Unmarshal(raw, &a); err != nil {
		return m.errorf("the controller's answer is not an agent: %v", err)
	}
	done(agent, a)
	return ExitOK
}

// AgentsUndrainCommand undoes a drain: "jobsuite agents undrain NAME".
type AgentsUndrainCommand struct{ Meta }

func (c *AgentsUndrainCommand) Synopsis() string { return "Send jobs to a drained agent again" }
func (c *AgentsUndrainCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite agents undrain [options] NAME

  Undoes 'jobsuite agents drain NAME' (POST /agents/NAME/undrain): the
  controller sends the connected agent NAME jobs again, at once into its
  free slots. It is recorded in the audit log, like the drain.

  An agent that drains itself because it is stopping (SIGTERM, systemctl
  stop) cannot be undrained: start it again instead.

Options:

  -json
    Print the agent as JSON, as the controller's API returns it.
` + clientOptionsHelp + `

Example:

  $ jobsuite agents undrain worker-1
  Agent worker-1 takes jobs again: 4 slots, 1 running
`)
}

func (c *AgentsUndrainCommand) Run(args []string) int {
	return agentAction(c.Meta, "agents undrain", "undrain", c.Help(), args, func(agent string, a api.AgentInfo) {
		fmt.Fprintf(c.Stdout, "Agent %s takes jobs again: %d slots, %d running\n", agent, a.Slots, a.Running)
	})
}

// agentArg takes the one agent name argument of command name, checked;
// ok is false (with the usage error printed) when it is not there or
// not a valid name.
func agentArg(m Meta, fs *flag.FlagSet, name string) (agent string, code int, ok bool) {
	if fs.NArg() != 1 {
		return "", usageError(m, name, "want one agent name, got %d arguments", fs.NArg()), false
	}
	agent = strings.TrimSpace(fs.Arg(0))
	if err := checkAgentName(agent); err != "" {
		return "", usageError(m, name, "%s", err), false
	}
	return agent, 0, true
}

// checkAgentName says what is wrong with an agent name, or "". Agent
// names are certificate names: letters, digits, '.', '_' and '-', at
// most 64 characters; so they need no escaping in a URL path.
func checkAgentName(s string) string {
	switch {
	case s == "":
		return "the agent name is empty"
	case len(s) > 64:
		return fmt.Sprintf("agent name %q is longer than 64 characters", s)
	case s == "." || s == "..":
		return fmt.Sprintf("%q is not an agent name", s)
	case strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "":
		return fmt.Sprintf("agent name %q: agent names have only letters, digits, '.', '_' and '-' (see 'jobsuite agents')", s)
	}
	return ""
}
