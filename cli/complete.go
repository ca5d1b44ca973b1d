package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	mcli "github.com/mitchellh/cli"
	"github.com/posener/complete"

	"jobsuite/api"
)

// Shell completion. 'jobsuite -autocomplete-install' (mitchellh/cli,
// posener/complete) adds 'complete -C /path/to/jobsuite jobsuite' to
// ~/.bashrc (or ~/.bash_profile) and ~/.zshrc where they exist, and a
// completion file for fish; the shell then asks this binary what may
// follow. It completes command names, every command's flags (and the
// values of a few: states, priorities, roles, files), job IDs where a
// command takes one, and agent names, the last two read from the
// controller the command line would use.

// withCompletion wraps every command so that mitchellh/cli finds its
// flags and argument predictor.
func withCompletion(m Meta, cmds map[string]mcli.CommandFactory) map[string]mcli.CommandFactory {
	out := make(map[string]mcli.CommandFactory, len(cmds))
	for name, f := range cmds {
		out[name] = func() (mcli.Command, error) {
			cmd, err := f()
			if err != nil {
				return nil, err
			}
			return &completing{Command: cmd, meta: m, name: name}, nil
		}
	}
	return out
}

// completing is a command with what the shell may complete after it.
type completing struct {
	mcli.Command
	meta Meta
	name string
}

// jobIDCommands and agentCommands take a job ID or an agent name.
var (
	jobIDCommands = map[string]bool{"status": true, "cancel": true, "logs": true, "wait": true, "resubmit": true}
	agentCommands = map[string]bool{"agents drain": true, "agents undrain": true, "agents revoke": true}
)

func (c *completing) AutocompleteArgs() complete.Predictor {
	switch {
	case jobIDCommands[c.name]:
		return complete.PredictFunc(func(complete.Args) []string { return predictJobs(c.meta) })
	case agentCommands[c.name]:
		return complete.PredictFunc(func(complete.Args) []string { return predictAgents(c.meta) })
	case c.name == "submit":
		return complete.PredictAnything
	}
	return complete.PredictNothing
}

func (c *completing) AutocompleteFlags() complete.Flags {
	fs := commandFlags(c.meta, c.name)
	if fs == nil {
		return nil
	}
	flags := complete.Flags{}
	fs.VisitAll(func(f *flag.Flag) {
		flags["-"+f.Name] = flagPredictor(f)
	})
	return flags
}

// flagValues are the values some flags take, for completion.
var flagValues = map[string][]string{
	"status":    {"blocked", "queued", "waiting", "dispatched", "running", "completed", "failed", "timeout", "cancelled"},
	"priority":  {"low", "mid", "high"},
	"role":      {"operator", "viewer", "agent", "controller"},
	"transport": {"auto", "quic", "tcp"},
	"log-level": {"trace", "debug", "info", "warn", "error"},
}

// fileFlags take a path.
var fileFlags = map[string]bool{
	"ca-cert": true, "client-cert": true, "client-key": true, "ca": true, "cert": true, "key": true,
	"ca-key": true, "config": true,
}

func flagPredictor(f *flag.Flag) complete.Predictor {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return complete.PredictNothing
	}
	switch {
	case flagValues[f.Name] != nil:
		return complete.PredictSet(flagValues[f.Name]...)
	case fileFlags[f.Name]:
		return complete.PredictFiles("*")
	case f.Name == "dir" || f.Name == "data-dir" || f.Name == "state-dir" || f.Name == "work-dir":
		return complete.PredictDirs("*")
	}
	return complete.PredictAnything
}

// commandFlags returns the flags of command name: the command runs in
// capture mode, where flagSet keeps its FlagSet and parse stops it before
// it does anything. Commands without flags give nil.
func commandFlags(m Meta, name string) *flag.FlagSet {
	m.capture = &flagCapture{}
	m.Stdout, m.Stderr = io.Discard, io.Discard
	m.UI = &mcli.BasicUi{Reader: strings.NewReader(""), Writer: io.Discard, ErrorWriter: io.Discard}
	factory, ok := commands(m)[name]
	if !ok {
		return nil
	}
	cmd, err := factory()
	if err != nil {
		return nil
	}
	switch cmd.(type) {
	case *groupCommand, *VersionCommand:
		return nil // Run does not parse flags
	}
	cmd.Run(nil)
	return m.capture.fs
}

// flagCapture holds the FlagSet of a command run in capture mode.
type flagCapture struct {
	fs *flag.FlagSet
}

// completionTimeout bounds the controller's answer to a completion: a
// shell must not hang on a Tab.
const completionTimeout = 1500 * time.Millisecond

// predictJobs returns the IDs of the newest jobs, or nothing when the
// controller cannot be reached.
func predictJobs(m Meta) []string {
	var jobs []api.JobView
	if !fromController(m, "/jobs?limit=50", &jobs) {
		return nil
	}
	out := make([]string, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, strconv.FormatUint(j.JobID, 10))
	}
	return out
}

// predictAgents returns the names of the connected agents.
func predictAgents(m Meta) []string {
	var agents []api.AgentInfo
	if !fromController(m, "/agents", &agents) {
		return nil
	}
	out := make([]string, 0, len(agents))
	for _, a := range agents {
		out = append(out, a.Name)
	}
	sort.Strings(out)
	return out
}

// fromController GETs path into out within completionTimeout, with the
// settings a command line would use; false when that fails.
func fromController(m Meta, path string, out any) bool {
	c, err := newClient(m, nil)
	if err != nil {
		return false
	}
	defer c.close()
	c.retryFor = 0 // a completion that waits is worse than none
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	return c.do(ctx, "GET", path, nil, out) == nil
}

// completionInstalled is what -autocomplete-install prints once done.
const completionInstalled = `Shell completion for jobsuite is installed: ~/.bashrc (or ~/.bash_profile)
and ~/.zshrc, where they exist, now run 'complete -C %s jobsuite', and
fish has ~/.config/fish/completions/jobsuite.fish. Open a new shell, then
press Tab after 'jobsuite' for commands, after '-' for flags, and where a
job ID or an agent name goes. 'jobsuite -autocomplete-uninstall' removes it.
`

// isCompletionFlag reports whether arg asks mitchellh/cli to install or
// uninstall completion.
func isCompletionFlag(arg, which string) bool {
	arg = strings.TrimLeft(arg, "-")
	return arg == "autocomplete-"+which
}

// completionNote prints what -autocomplete-install and -uninstall did.
func completionNote(w io.Writer, args []string, binary string) {
	for _, a := range args {
		switch {
		case isCompletionFlag(a, "install"):
			fmt.Fprintf(w, completionInstalled, binary)
		case isCompletionFlag(a, "uninstall"):
			fmt.Fprintln(w, "Shell completion for jobsuite is uninstalled; open a new shell.")
		}
	}
}
