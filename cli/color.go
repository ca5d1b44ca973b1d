package cli

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Colours of job and agent states on a terminal: green for success,
// red for failure, yellow for what needs attention, blue for work in
// progress. Every sequence is five bytes, "\x1b[NNm", and every coloured
// word ends with the four-byte reset, so each coloured word is nine
// bytes longer than it looks: a text/tabwriter column stays aligned when
// all of its cells go through colorize, the header too (a word with no
// colour of its own gets the terminal's default colour, 39).
var stateColors = map[string]string{
	"completed":  "\x1b[32m", // green
	"active":     "\x1b[32m",
	"failed":     "\x1b[31m", // red
	"lost":       "\x1b[31m",
	"timeout":    "\x1b[33m", // yellow
	"waiting":    "\x1b[33m",
	"blocked":    "\x1b[35m", // magenta
	"draining":   "\x1b[33m",
	"running":    "\x1b[34m", // blue
	"dispatched": "\x1b[36m", // cyan
	"queued":     "\x1b[90m", // grey
	"cancelled":  "\x1b[90m",
}

const (
	colorDefault = "\x1b[39m"
	colorReset   = "\x1b[0m"
)

// colorize returns state coloured for w when w is a terminal and the
// user has not asked for no colour: NO_COLOR set to anything but ""
// (https://no-color.org) or TERM=dumb. Otherwise, and always for files,
// pipes and buffers, it returns state unchanged.
func colorize(w io.Writer, state string) string {
	if !useColor(w) {
		return state
	}
	c, ok := stateColors[state]
	if !ok {
		c = colorDefault
	}
	return c + state + colorReset
}

// useColor reports whether escape codes may be written to w.
func useColor(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	return isTerminal(w)
}

// isTerminal reports whether w is a terminal (a file whose descriptor
// answers a terminal ioctl).
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
