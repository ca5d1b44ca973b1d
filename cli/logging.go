package cli

import (
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

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
// writes through a logsink.Writer on out (one write(2) for the lines
// of each DefaultLinger, or that arrive while the previous write is in
// progress, instead of one per line); the command must write its own messages to stderr through
// the same sink, so they stay in order with the log lines, and Close it
// before returning.
func (l *logFlags) logger(name string, out io.Writer) (hclog.Logger, *logsink.Writer, error) {
	return NewLogger(name, l.level, l.json, out)
}

// NewLogger builds a root logger as the controller, agent and dev
// commands do: level is trace, debug, info, warn or error; json selects
// JSON lines. It writes through the returned logsink.Writer on out,
// which the caller must Close before returning. The benchmark's child
// processes use it, so they log as the real commands do.
func NewLogger(name, levelName string, json bool, out io.Writer) (hclog.Logger, *logsink.Writer, error) {
	level := hclog.LevelFromString(levelName)
	if level == hclog.NoLevel {
		return nil, nil, fmt.Errorf("-log-level %q: use trace, debug, info, warn or error", levelName)
	}
	sink := logsink.NewLinger(out, 0, logsink.DefaultLinger)
	opts := &hclog.LoggerOptions{
		Name:            name,
		Level:           level,
		Output:          sink,
		JSONFormat:      json,
		IncludeLocation: false,
		TimeFormat:      logTimeFormat,
	}
	if !json {
		// The same lines, with the time written by stampWriter instead
		// of hclog's time.Format on every line.
		opts.DisableTime = true
		opts.Output = &stampWriter{w: sink}
	}
	return hclog.New(opts), sink, nil
}

// logTimeFormat is the time at the start of a text log line.
const logTimeFormat = "2006-01-02T15:04:05.000Z0700"

// stampWriter writes each Write (hclog writes one entry per Write) to w
// after the current local time in logTimeFormat and a space, which is
// what hclog writes itself unless DisableTime. It formats the date, the
// time to the second and the zone once per second and appends only the
// milliseconds on each line: the controller logs a line per job
// transition, and time.Format was half of that line's cost.
type stampWriter struct {
	w io.Writer

	mu   sync.Mutex
	sec  int64  // the Unix second head and zone are for
	head []byte // "2006-01-02T15:04:05" of sec
	zone []byte // "Z0700" of sec
	buf  []byte
}

func (s *stampWriter) Write(p []byte) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = appendStamp(s.buf[:0], now, s)
	s.buf = append(s.buf, ' ')
	s.buf = append(s.buf, p...)
	if _, err := s.w.Write(s.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// appendStamp appends t in logTimeFormat, reusing c's formatting of t's
// second. Zone changes (daylight saving) happen on whole seconds, so
// one second has one zone.
func appendStamp(dst []byte, t time.Time, c *stampWriter) []byte {
	if sec := t.Unix(); sec != c.sec || c.head == nil {
		c.sec = sec
		c.head = t.AppendFormat(c.head[:0], "2006-01-02T15:04:05")
		c.zone = t.AppendFormat(c.zone[:0], "Z0700")
	}
	dst = append(dst, c.head...)
	ms := t.Nanosecond() / 1e6
	dst = append(dst, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(dst, c.zone...)
}
