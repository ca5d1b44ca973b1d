package cli

import mcli "github.com/mitchellh/cli"

// clientCommands returns the commands that talk to a controller, to be
// merged into commands().
func clientCommands(m Meta) map[string]mcli.CommandFactory {
	cmds := map[string]mcli.CommandFactory{
		"submit": func() (mcli.Command, error) { return &SubmitCommand{Meta: m}, nil },
		"status": func() (mcli.Command, error) { return &StatusCommand{Meta: m}, nil },
		"list":   func() (mcli.Command, error) { return &ListCommand{Meta: m}, nil },
		"cancel": func() (mcli.Command, error) { return &CancelCommand{Meta: m}, nil },
		"logs":   func() (mcli.Command, error) { return &LogsCommand{Meta: m}, nil },
		"agents": func() (mcli.Command, error) { return &AgentsCommand{Meta: m}, nil },
		"wait":   func() (mcli.Command, error) { return &WaitCommand{Meta: m}, nil },
		// The operator's control room: resubmit.go, audit.go, agents.go.
		"resubmit":       func() (mcli.Command, error) { return &ResubmitCommand{Meta: m}, nil },
		"audit":          func() (mcli.Command, error) { return &AuditCommand{Meta: m}, nil },
		"agents undrain": func() (mcli.Command, error) { return &AgentsUndrainCommand{Meta: m}, nil },
		// Nested: "jobsuite agents drain NAME".
		"agents drain": func() (mcli.Command, error) {
			return &AgentsDrainCommand{Meta: m}, nil
		},
		// Revocation (revoke.go) and API tokens (token.go); mitchellh/cli
		// lists the subcommands for "jobsuite certs" and "jobsuite token".
		"agents revoke":  func() (mcli.Command, error) { return &AgentsRevokeCommand{Meta: m}, nil },
		"certs revoke":   func() (mcli.Command, error) { return &CertsRevokeCommand{Meta: m}, nil },
		"certs revoked":  func() (mcli.Command, error) { return &CertsRevokedCommand{Meta: m}, nil },
		"certs unrevoke": func() (mcli.Command, error) { return &CertsUnrevokeCommand{Meta: m}, nil },
		"token create":   func() (mcli.Command, error) { return &TokenCreateCommand{Meta: m}, nil },
		"token list":     func() (mcli.Command, error) { return &TokenListCommand{Meta: m}, nil },
		"token revoke":   func() (mcli.Command, error) { return &TokenRevokeCommand{Meta: m}, nil },
		// Join tokens (agent_token.go): "jobsuite agent token create".
		"agent token create": func() (mcli.Command, error) { return &AgentTokenCreateCommand{Meta: m}, nil },
		"agent token list":   func() (mcli.Command, error) { return &AgentTokenListCommand{Meta: m}, nil },
		"agent token revoke": func() (mcli.Command, error) { return &AgentTokenRevokeCommand{Meta: m}, nil },
	}
	for k, v := range scheduleCommands(m) { // schedule.go
		cmds[k] = v
	}
	return cmds
}
