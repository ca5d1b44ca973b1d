package cli

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Output of a fan-out (issue 17), several hosts' jobs on one terminal:
// hostLines prefixes every line with its host, as pdsh and Salt do, so
// lines from different hosts interleave but never mix within a line;
// hostBlocks (-group) holds each host's output and prints it as one
// block when that host's job ends, so each host reads top to bottom.

// hostLines writes whole lines, each prefixed with its host's name
// padded to the longest, to one writer. Each host's partial last line
// waits for its newline (or Close).
type hostLines struct {
	mu    sync.Mutex
	w     io.Writer
	width int
}

// newHostLines prefixes lines for hosts, aligned to the longest name.
func newHostLines(w io.Writer, hosts []string) *hostLines {
	h := &hostLines{w: w}
	for _, name := range hosts {
		h.width = max(h.width, len(name))
	}
	return h
}

// host returns the writer of one host's output. Close flushes a last
// line that has no newline.
func (h *hostLines) host(name string) io.WriteCloser {
	return &hostLine{h: h, prefix: name + ":" + strings.Repeat(" ", h.width-len(name)+1)}
}

type hostLine struct {
	h      *hostLines
	prefix string
	part   []byte // a line begun, not ended
}

func (l *hostLine) Write(p []byte) (int, error) {
	n := len(p)
	var out []byte
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.part = append(l.part, p...)
			break
		}
		out = append(out, l.prefix...)
		out = append(out, l.part...)
		out = append(out, p[:i+1]...)
		l.part = l.part[:0]
		p = p[i+1:]
	}
	if len(out) == 0 {
		return n, nil
	}
	l.h.mu.Lock()
	defer l.h.mu.Unlock()
	if _, err := l.h.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}

func (l *hostLine) Close() error {
	if len(l.part) == 0 {
		return nil
	}
	_, err := l.Write([]byte{'\n'})
	return err
}

// hostBlocks holds each host's output until its job ends, then prints it
// whole under a header line. Output beyond memLimit per host goes to a
// temporary file, so a chatty host cannot exhaust memory.
type hostBlocks struct {
	mu       sync.Mutex
	w        io.Writer
	memLimit int
}

func newHostBlocks(w io.Writer) *hostBlocks { return &hostBlocks{w: w, memLimit: 1 << 20} }

// hostBlock is one host's held output.
type hostBlock struct {
	b    *hostBlocks
	name string
	mem  bytes.Buffer
	file *os.File // once mem passed memLimit
	err  error
}

func (b *hostBlocks) host(name string) *hostBlock { return &hostBlock{b: b, name: name} }

func (h *hostBlock) Write(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	if h.file == nil && h.mem.Len()+len(p) > h.b.memLimit {
		f, err := os.CreateTemp("", "jobsuite-host-*")
		if err != nil {
			h.err = fmt.Errorf("holding %s's output: %w", h.name, err)
			return 0, h.err
		}
		_ = os.Remove(f.Name()) // gone when closed
		if _, err := f.Write(h.mem.Bytes()); err != nil {
			_ = f.Close()
			h.err = fmt.Errorf("holding %s's output: %w", h.name, err)
			return 0, h.err
		}
		h.mem.Reset()
		h.file = f
	}
	if h.file != nil {
		if _, err := h.file.Write(p); err != nil {
			h.err = fmt.Errorf("holding %s's output: %w", h.name, err)
			return 0, h.err
		}
		return len(p), nil
	}
	return h.mem.Write(p)
}

// end prints the host's block under a header saying how its job ended
// (e.g. "exit 0"), and lets go of what it held.
func (h *hostBlock) end(how string) error {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if h.err != nil {
		return h.err
	}
	header := "=== " + h.name
	if how != "" {
		header += " (" + how + ")"
	}
	if _, err := io.WriteString(h.b.w, header+" ===\n"); err != nil {
		return err
	}
	var body io.Reader = &h.mem
	if h.file != nil {
		defer h.file.Close()
		if _, err := h.file.Seek(0, io.SeekStart); err != nil {
			return err
		}
		body = h.file
	}
	last := byte('\n')
	lw := &lastByte{w: h.b.w, last: &last}
	if _, err := io.Copy(lw, body); err != nil {
		return err
	}
	if last != '\n' {
		_, err := h.b.w.Write([]byte{'\n'})
		return err
	}
	return nil
}

// lastByte remembers the last byte written through it.
type lastByte struct {
	w    io.Writer
	last *byte
}

func (l *lastByte) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		*l.last = p[n-1]
	}
	return n, err
}

// countOrPercent parses a count ("3") or a share ("25%") of total, for
// -batch and -max-failures: a share rounds up, so "10%" of 5 hosts is 1,
// and is at least 1 when the share is not 0%.
func countOrPercent(s string, total int) (int, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 {
			return 0, fmt.Errorf("%q: a share is 0%% to 100%%", s)
		}
		n := int(math.Ceil(v*float64(total)/100 - 1e-9))
		if v > 0 {
			n = max(n, 1)
		}
		return min(n, total), nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q: give a number of hosts (3) or a share (25%%)", s)
	}
	return v, nil
}
