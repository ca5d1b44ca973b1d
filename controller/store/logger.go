package store

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// pebbleLogger routes Pebble's own log lines through hclog: its chatty
// informational lines (flushes, compactions, WAL rotation) at debug level,
// errors at error level.
type pebbleLogger struct {
	log hclog.Logger
}

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.IsDebug() {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble on unrecoverable corruption and must not
// return. Panicking (rather than os.Exit) lets deferred cleanup and a
// stack trace happen.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error("fatal: " + msg)
	panic("pebble: " + msg)
}
