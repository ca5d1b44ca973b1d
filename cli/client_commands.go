package cli

import mcli "github.com/mitchellh/cli"

// clientCommands returns the commands that talk to a controller, to be
// merged into commands().
func clientCommands(m Meta) map[string]mcli.CommandFactory {
	return map[string]mcli.CommandFactory{
		"submit": func() (mcli.Command, error) { return &SubmitCommand{Meta: m}, nil },
		"status": func() (mcli.Command, error) { return &StatusCommand{Meta: m}, nil },
		"list":   func() (mcli.Command, error) { return &ListCommand{Meta: m}, nil },
		"cancel": func() (mcli.Command, error) { return &CancelCommand{Meta: m}, nil },
		"logs":   func() (mcli.Command, error) { return &LogsCommand{Meta: m}, nil },
		"agents": func() (mcli.Command, error) { return &AgentsCommand{Meta: m}, nil },
		// Nested: "jobsuite agents drain NAME".
		"agents drain": func() (mcli.Command, error) {
			return &AgentsDrainCommand{Meta: m}, nil
		},
	}
}
