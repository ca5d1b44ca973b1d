package cli

import (
	"flag"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"

	"jobsuite/cli/logsink"
)

// logFlags are the logging flags of the long-running commands.
type logFlags struct {
	level string
	json  bool
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: trace, debug, info, warn or error")
	fs.BoolVar(&l.json, "log-json", false, "log JSON lines instead of text")
}

// logger builds the root logger, or an error naming the bad level. It
// writes through a logsink.Writer on out (one write(2) for every line
// that arrives while the previous write is in progress, instead of one
// per line); the command must write its own messages to stderr through
// the same sink, so they stay in order with the log lines, and Close it
// before returning.
func (l *logFlags) logger(name string, out io.Writer) (hclog.Logger, *logsink.Writer, error) {
	level := hclog.LevelFromString(l.level)
	if level == hclog.NoLevel {
		return nil, nil, fmt.Errorf("-log-level %q: use trace, debug, info, warn or error", l.level)
	}
	sink := logsink.New(out, 0)
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           level,
		Output:          sink,
		JSONFormat:      l.json,
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z0700",
	}), sink, nil
}
