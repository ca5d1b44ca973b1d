package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"time"

	"jobsuite/api"
	"jobsuite/internal/backoff"
)

// Exit codes of a command mirroring a job that did not exit by itself.
const (
	ExitTimeout     = 124 // the job was killed at its timeout, like coreutils timeout
	ExitInterrupted = 130 // the job was cancelled, or the user pressed Ctrl-C
)

// jobExitCode maps the end of a job to the exit code of the command that
// mirrors it (submit -f, logs -f), the way ssh mirrors a remote command:
//
//	completed                            → 0
//	failed with the process's exit code  → that code; a process killed by
//	                                       signal N reports 128+N
//	timeout                              → 124, like coreutils timeout
//	cancelled                            → 130, like a shell's Ctrl-C
//	failed without an exit code (lost,
//	could not start), or anything else   → 1
func jobExitCode(end api.LogMessage) int {
	if end.Attempt > 0 { // the end of one attempt (logs -attempt N)
		return attemptExitCode(end)
	}
	return endExitCode(end.Status, end.ExitCode)
}

// attemptExitCode maps the end of one attempt like jobExitCode does a
// job's: its outcome, lost counting as a failure without an exit code.
func attemptExitCode(end api.LogMessage) int {
	return endExitCode(end.Outcome, end.ExitCode)
}

// endExitCode maps how a job or an attempt ended (a state or an
// outcome, which share their names) and its exit code to ours.
func endExitCode(how string, code *int) int {
	switch how {
	case "completed":
		return ExitOK
	case "timeout":
		return ExitTimeout
	case "cancelled":
		return ExitInterrupted
	case "failed":
		if code != nil && *code > 0 && *code < 256 {
			return *code
		}
	}
	return ExitError
}

// failedWithoutCode reports whether a job failed in a way its exit code
// cannot tell (lost, could not start): the follower then explains it.
func failedWithoutCode(end api.LogMessage) bool {
	return end.Status == "failed" && jobExitCode(end) == ExitError
}

// errInterrupted is returned by follower.run when the user pressed Ctrl-C.
var errInterrupted = errors.New("interrupted")

// errNoAttempts is returned by follower.run with -attempt when the
// controller sends output without the attempt's marker first: it is older
// than attempt=N and sends the whole log.
var errNoAttempts = errors.New("the controller does not serve one attempt's output (-attempt): upgrade it, or read the whole log")

// follower copies a job's log from the log WebSocket to stdout and
// stderr, stream by stream and byte-exact, reconnecting from the last
// byte received when the connection drops before the end. A job with
// ordered output (the default) or a terminal has one stream, stdout; a
// split one has both. Where a retried job's attempts begin, a marker
// line goes to stderr, never into the output.
type follower struct {
	client *Client
	id     uint64
	follow bool   // wait for the job to finish (follow=1), else stop at the stored end
	offset uint64 // log bytes received so far: where a reconnect resumes
	stdout io.Writer
	stderr io.Writer

	attempt    uint32 // only this attempt's output (logs -attempt); 0: all
	timestamps bool   // start each line with the time its output arrived
	marked     uint32 // the last attempt announced (or, with attempt, seen)
	lineStart  map[io.Writer]bool
	midLine    bool // the output written last, on either stream, did not end a line

	tries   int           // reconnects in a row before giving up; 0 means 5
	backoff time.Duration // wait before the first reconnect, doubled each time, jittered down to half; 0 means 250ms

	connected bool // a WebSocket was opened once: only then are failures retried

	n *narrator // tells the job's progress on stderr (narrate.go); nil: quiet
}

// run follows until the end message and returns it. A connection that
// drops is reopened from f.offset, up to f.tries times in a row without
// progress; an error answer (4xx), a failure to write locally or a first
// connection that fails are returned at once. It returns errInterrupted
// when ctx is cancelled.
func (f *follower) run(ctx context.Context) (api.LogMessage, error) {
	tries, delay := f.tries, f.backoff
	if tries == 0 {
		tries = 5
	}
	if delay == 0 {
		delay = 250 * time.Millisecond
	}
	retry := backoff.Policy{Base: delay, Down: 0.5} // no cap: tries bounds it
	failures := 0
	for {
		before := f.offset
		end, err := f.once(ctx)
		if ctx.Err() != nil {
			return api.LogMessage{}, errInterrupted
		}
		if err == nil {
			return end, nil
		}
		var apiErr *APIError
		var werr *writeError
		if !f.connected || errors.As(err, &apiErr) && apiErr.Status < 500 || errors.As(err, &werr) || errors.Is(err, errNoAttempts) {
			return api.LogMessage{}, err
		}
		if f.offset > before {
			failures = 0
		}
		// Any controller of a cluster serves the log from any offset:
		// reconnect to the next address, in case this one went away.
		f.client.moveOn()
		failures++
		if failures > tries {
			return api.LogMessage{}, fmt.Errorf("lost the log stream of job %d after %d reconnects: %w", f.id, tries, err)
		}
		// Between half and all of backoff·2^(failures-1): followers of a
		// controller that restarted do not all come back at once.
		wait := retry.Delay(failures, rand.Float64())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return api.LogMessage{}, errInterrupted
		case <-t.C:
		}
	}
}

// once follows one WebSocket connection until the end message or an error.
func (f *follower) once(ctx context.Context) (api.LogMessage, error) {
	q := url.Values{"format": {"json"}, "follow": {"0"}, "attempts": {"1"}}
	if f.follow {
		q.Set("follow", "1")
	}
	if f.attempt > 0 {
		q.Del("attempts")
		q.Set("attempt", strconv.FormatUint(uint64(f.attempt), 10))
	}
	if f.offset > 0 {
		q.Set("offset", strconv.FormatUint(f.offset, 10))
	}
	conn, err := f.client.websocket(ctx, fmt.Sprintf("/ws/jobs/%d/logs?%s", f.id, q.Encode()))
	if err != nil {
		return api.LogMessage{}, err
	}
	f.connected = true
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return api.LogMessage{}, fmt.Errorf("reading the log of job %d: %w", f.id, err)
		}
		var m api.LogMessage
		if err := json.Unmarshal(data, &m); err != nil {
			return api.LogMessage{}, fmt.Errorf("the log of job %d holds a malformed message: %w", f.id, err)
		}
		switch m.Type {
		case "output":
			if f.attempt > 0 && f.marked != f.attempt {
				// A controller that does not know attempt=N sends the
				// whole log: refuse to pass it off as one attempt.
				return api.LogMessage{}, errNoAttempts
			}
			if err := f.output(m); err != nil {
				return api.LogMessage{}, err
			}
		case "attempt":
			if err := f.announce(m); err != nil {
				return api.LogMessage{}, err
			}
		case "end":
			return m, nil
		}
		// Other types are newer than this CLI: skip them.
	}
}

// writeError is a failure to write the job's output locally.
type writeError struct{ err error }

func (e *writeError) Error() string { return "writing the job's output: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// output writes the part of m not received yet to its stream.
func (f *follower) output(m api.LogMessage) error {
	data := m.Data
	end := m.Offset + uint64(len(data))
	if end <= f.offset {
		return nil // received before a reconnect
	}
	if m.Offset < f.offset {
		data = data[f.offset-m.Offset:]
	}
	w := f.stdout
	if m.Stream == "stderr" {
		w = f.stderr
	}
	var err error
	if f.timestamps {
		err = f.writeTimed(w, data, m.Time)
	} else {
		_, err = w.Write(data)
	}
	if err != nil {
		return &writeError{err}
	}
	if len(data) > 0 {
		f.midLine = data[len(data)-1] != '\n'
	}
	f.offset = end
	return nil
}

// stampLayout is how -timestamps shows the time output arrived: UTC,
// milliseconds; output stored before the controller kept times shows
// stampUnknown instead.
const stampLayout = "2006-01-02T15:04:05.000Z07:00"

var stampUnknown = fmt.Sprintf("%-*s", len(stampLayout)-5, "-")

// writeTimed writes data to w with the time at the start of each line
// that begins in it: a line's time is that of the output its first byte
// came in (the controller keeps one per chunk it receives).
func (f *follower) writeTimed(w io.Writer, data []byte, at time.Time) error {
	if f.lineStart == nil {
		f.lineStart = map[io.Writer]bool{}
	}
	stamp := stampUnknown
	if !at.IsZero() {
		stamp = at.UTC().Format(stampLayout)
	}
	var b []byte
	for len(data) > 0 {
		if started, seen := f.lineStart[w]; started || !seen {
			b = append(append(b, stamp...), ' ')
		}
		i := bytes.IndexByte(data, '\n') + 1
		if i == 0 {
			i = len(data)
		}
		b = append(b, data[:i]...)
		f.lineStart[w] = data[i-1] == '\n'
		data = data[i:]
	}
	_, err := w.Write(b)
	return err
}

// announce handles an "attempt" message: with -attempt it only checks
// that the controller serves that attempt; else it prints where a
// retried job's attempt begins, on stderr, once per attempt — for the
// first attempt only when the job already has more than one.
func (f *follower) announce(m api.LogMessage) error {
	if f.attempt > 0 {
		if m.Attempt == f.attempt {
			f.marked = m.Attempt
		}
		return nil
	}
	if m.Attempt <= f.marked {
		return nil // announced before a reconnect
	}
	f.marked = m.Attempt
	if m.Attempt == 1 && m.Attempts <= 1 {
		return nil
	}
	line := fmt.Sprintf("--- attempt %d", m.Attempt)
	if m.Agent != "" {
		line += " on " + m.Agent
	}
	if !m.Time.IsZero() {
		line += ", " + m.Time.UTC().Format(time.RFC3339)
	}
	line += " ---\n"
	if f.midLine {
		line = "\n" + line // the output stopped mid-line
	}
	if _, err := io.WriteString(f.stderr, line); err != nil {
		return &writeError{err}
	}
	return nil
}

// followJob follows job id's log for the submit -f and logs commands and
// returns the command's exit code: the job's (jobExitCode) when follow
// is set, else 0 once the stored log is written. With follow, n (if not
// nil) tells the job's progress on stderr.
func followJob(m Meta, c *Client, id, offset uint64, follow bool, n *narrator) int {
	return followJobWith(m, c, &follower{id: id, offset: offset, follow: follow}, n)
}

// followJobWith is followJob with f's options (attempt, timestamps) set.
func followJobWith(m Meta, c *Client, f *follower, n *narrator) int {
	parent := m.Ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt)
	defer stop()
	f.client, f.stdout, f.stderr = c, m.Stdout, m.Stderr
	if f.follow && n != nil {
		f.stderr = n.attach(m.Stderr)
		f.n = n
		n.start(ctx)
		defer n.stop()
	}
	return finishFollow(ctx, m, f)
}

// finishFollow runs f and turns its outcome into an exit code.
func finishFollow(ctx context.Context, m Meta, f *follower) int {
	end, err := f.run(ctx)
	switch {
	case errors.Is(err, errInterrupted):
		switch {
		case f.follow && f.n != nil:
			f.n.interrupted()
		case f.follow:
			fmt.Fprintf(m.Stderr, "\njob %d is still running; 'jobsuite cancel %d' stops it\n", f.id, f.id)
		}
		return ExitInterrupted
	case err != nil:
		return m.errorf("%v", err)
	case !f.follow:
		return ExitOK
	}
	if end.Attempt > 0 { // -attempt N: the attempt's end, not the job's
		if (end.Outcome == "failed" || end.Outcome == "lost") && end.ExitCode == nil { // lost, could not start
			if end.Reason != "" {
				fmt.Fprintf(m.Stderr, "job %d attempt %d %s: %s\n", f.id, end.Attempt, end.Outcome, end.Reason)
			} else {
				fmt.Fprintf(m.Stderr, "job %d attempt %d %s\n", f.id, end.Attempt, end.Outcome)
			}
		}
		return attemptExitCode(end)
	}
	if f.n != nil {
		f.n.end(end)
	} else if failedWithoutCode(end) {
		if end.Reason != "" {
			fmt.Fprintf(m.Stderr, "job %d %s: %s\n", f.id, end.Status, end.Reason)
		} else {
			fmt.Fprintf(m.Stderr, "job %d %s\n", f.id, end.Status)
		}
	}
	return jobExitCode(end)
}
