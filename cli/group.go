package cli

import (
	"strings"

	mcli "github.com/mitchellh/cli"
)

// groupCommand is a parent command such as "jobsuite certs": it only
// explains its subcommands, which mitchellh/cli lists after its help.
type groupCommand struct {
	synopsis string
	help     string
}

func (g *groupCommand) Synopsis() string      { return g.synopsis }
func (g *groupCommand) Help() string          { return strings.TrimSpace(g.help) }
func (g *groupCommand) Run(args []string) int { return mcli.RunResultHelp }

func groupCommands() map[string]mcli.CommandFactory {
	groups := map[string]*groupCommand{
		"certs": {
			synopsis: "Revoke certificates and list revocations",
			help: `
Usage: jobsuite certs <subcommand> [options]

  Revokes certificates so the controller refuses them on both listeners,
  lists revocations and takes them back. Issuing certificates is
  'jobsuite tls'.

Example:

  jobsuite certs revoke -cert pki/alice.pem -reason "left the team"
  jobsuite certs revoked
`,
		},
		"token": {
			synopsis: "Create, list and revoke API tokens",
			help: `
Usage: jobsuite token <subcommand> [options]

  API tokens are bearer tokens for browsers and scripts, an alternative to
  a client certificate, with the role viewer (read) or operator (read and
  write). The controller keeps only their hashes.

Example:

  export JOBSUITE_TOKEN=$(jobsuite token create -role viewer -ttl 8h)
  jobsuite token list
`,
		},
		"schedule": {
			synopsis: "Run jobs on a cron timing: create, list, show, pause, resume, delete, run-now",
			help: `
Usage: jobsuite schedule <subcommand> [options]

  A schedule queues a job at every occurrence of a cron timing (5 fields,
  @hourly-style descriptors or @every 90s, in a time zone you name),
  fired by the controller's durable timers. The job takes the options of
  'jobsuite submit'.

Example:

  jobsuite schedule create -name backup -cron '0 3 * * *' -tz Europe/Paris -- /usr/local/bin/backup
  jobsuite schedule list
  jobsuite schedule run-now backup
`,
		},
		"agent token": {
			synopsis: "Create, list and revoke join tokens for enrolling agents",
			help: `
Usage: jobsuite agent token <subcommand> [options]

  A join token lets a new agent enroll without copying keys: the agent
  makes its own key and gets a certificate from the controller.

Example:

  jobsuite agent token create -ttl 30m -uses 1
`,
		},
	}
	out := map[string]mcli.CommandFactory{}
	for name, g := range groups {
		out[name] = func() (mcli.Command, error) { return g, nil }
	}
	return out
}
