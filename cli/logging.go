package cli

import (
	"flag"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
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

// logger builds the root logger, or an error naming the bad level.
func (l *logFlags) logger(name string, out io.Writer) (hclog.Logger, error) {
	level := hclog.LevelFromString(l.level)
	if level == hclog.NoLevel {
		return nil, fmt.Errorf("-log-level %q: use trace, debug, info, warn or error", l.level)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           level,
		Output:          out,
		JSONFormat:      l.json,
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z0700",
	}), nil
}
