package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	mcli "github.com/mitchellh/cli"
)

// Version is the jobsuite release, set at build time with
// -ldflags "-X jobsuite/cli.Version=...".
var Version = "0.1.0-dev"

// Exit codes shared by all commands. A command that mirrors a job
// (submit -f, logs -f) exits with the job's own exit code instead.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed: bad input, controller error
	ExitUsage = 2 // wrong flags or arguments
	// ExitRefused: 'jobsuite agent' was refused by the controller for
	// good (a revoked certificate, a wrong role or name, an unsupported
	// protocol version); restarting it does not help.
	ExitRefused = 3
	// ExitUnknownCommand: the first words name no command, as a shell
	// answers for a program it cannot find.
	ExitUnknownCommand = 127
)

// Run runs the jobsuite command line with args (without the program
// name) and returns the process exit code.
func Run(args []string) int {
	return run(args, os.Stdin, os.Stdout, os.Stderr)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ui := &mcli.BasicUi{Reader: stdin, Writer: stdout, ErrorWriter: stderr}
	m := Meta{UI: ui, Stdout: stdout, Stderr: stderr}
	cmds := commands(m)
	if len(args) > 0 && args[0] == "help" {
		// 'jobsuite help submit' is 'jobsuite submit -h'.
		args = append(append([]string{}, args[1:]...), "-h")
	}
	if code, unknown := unknownCommand(stderr, args, cmds); unknown {
		return code
	}
	c := &mcli.CLI{
		Name:         "jobsuite",
		Version:      "jobsuite " + Version,
		Args:         args,
		Commands:     withCompletion(m, cmds),
		Autocomplete: true,
		HelpWriter:   stdout,
		ErrorWriter:  stderr,
		HelpFunc:     helpFunc,
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(stderr, "jobsuite: %v\n", err)
		return ExitError
	}
	if code == ExitOK {
		bin, _ := os.Executable()
		completionNote(stdout, args, bin)
	}
	return code
}

// helpFunc is 'jobsuite -h': the commands, then how to get more.
func helpFunc(cmds map[string]mcli.CommandFactory) string {
	return strings.TrimRight(mcli.BasicHelpFunc("jobsuite")(cmds), "\n") + `

Run 'jobsuite COMMAND -h' (or 'jobsuite help COMMAND') for a command's
options and examples. Shell completion of commands, flags, job IDs and
agent names: 'jobsuite -autocomplete-install' (bash, zsh, fish).`
}

// Meta is what every command gets: where to write, and the context
// long-running commands stop with.
type Meta struct {
	UI     mcli.Ui
	Stdout io.Writer
	Stderr io.Writer
	// Ctx, when set, stops long-running commands (tests use it); SIGINT
	// and SIGTERM always do.
	Ctx context.Context

	// capture, when set, makes the command record its FlagSet and stop
	// at parse: how completion learns a command's flags (complete.go).
	capture *flagCapture
}

// signalContext is done on SIGINT, SIGTERM or when m.Ctx is done.
func (m Meta) signalContext() (context.Context, context.CancelFunc) {
	parent := m.Ctx
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
}

// flagSet returns a quiet FlagSet: parse reports its errors together
// with the command's help.
func (m Meta) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if m.capture != nil {
		m.capture.fs = fs
	}
	return fs
}

// parse parses args and turns flag errors into an exit code: 0 and a
// printed help for -h, ExitUsage with the error and where the help is
// for bad flags. ok is false when the command must return code.
func (m Meta) parse(fs *flag.FlagSet, args []string, help string) (code int, ok bool) {
	if m.capture != nil {
		return ExitOK, false // completion wanted the flags only
	}
	err := fs.Parse(args)
	if err == nil {
		return 0, true
	}
	if err == flag.ErrHelp {
		fmt.Fprintln(m.Stdout, strings.TrimSpace(help))
		return ExitOK, false
	}
	fmt.Fprintf(m.Stderr, "error: %v\nRun 'jobsuite %s -h' for usage.\n", err, fs.Name())
	return ExitUsage, false
}

// errorf prints an error line to stderr and returns ExitError.
func (m Meta) errorf(format string, args ...any) int {
	fmt.Fprintf(m.Stderr, "error: "+format+"\n", args...)
	return ExitError
}

func commands(m Meta) map[string]mcli.CommandFactory {
	cmds := map[string]mcli.CommandFactory{
		"version":    func() (mcli.Command, error) { return &VersionCommand{Meta: m}, nil },
		"controller": func() (mcli.Command, error) { return &ControllerCommand{Meta: m}, nil },
		"agent":      func() (mcli.Command, error) { return &AgentCommand{Meta: m}, nil },
		"dev":        func() (mcli.Command, error) { return &DevCommand{Meta: m}, nil },
	}
	for k, v := range tlsCommands(m) {
		cmds[k] = v
	}
	for k, v := range clientCommands(m) {
		cmds[k] = v
	}
	for k, v := range operatorCommands(m) {
		cmds[k] = v
	}
	for k, v := range groupCommands() {
		if _, taken := cmds[k]; !taken {
			cmds[k] = v
		}
	}
	return cmds
}

// VersionCommand prints the version.
type VersionCommand struct{ Meta }

func (c *VersionCommand) Help() string {
	return "Usage: jobsuite version\n\n  Prints the jobsuite version.\n\nExample:\n\n  $ jobsuite version\n  jobsuite 0.1.0"
}
func (c *VersionCommand) Synopsis() string { return "Print the jobsuite version" }
func (c *VersionCommand) Run(args []string) int {
	fmt.Fprintf(c.Stdout, "jobsuite %s\n", Version)
	return ExitOK
}
