package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"jobsuite/api"
)

// narrator tells, on stderr, what happens to the job that submit -f or
// logs -f follows, beside the job's own output: its ID, why it waits
// (the controller's reason, again whenever it changes), each new attempt
// with its agent and how the one before ended, a requested cancel, and
// how the job ended when its exit code does not say it (a timeout, a
// cancel, a loss, a failure after retries). Every line starts with
// "jobsuite: ", so it stands apart from what the job writes.
//
// It learns the job's state by polling GET /jobs/:id, every 250ms after
// a change and backing off to every 2s while nothing changes; the log
// WebSocket carries only output.
type narrator struct {
	client *Client
	id     uint64
	quiet  bool // -q: only what the exit code cannot say at the end

	stopPoll context.CancelFunc // ends poll; nil when it does not run
	polled   chan struct{}      // closed when poll returns

	mu      sync.Mutex
	w       *lineWriter  // stderr, shared with the job's stderr
	last    *api.JobView // the newest state seen
	reason  string       // the waiting reason told last
	told    int          // attempts told
	cancelT bool         // the cancel request was told
}

// newNarrator returns a narrator of job id; first, when not nil, is the
// job as the caller already has it (submit's answer).
func newNarrator(c *Client, id uint64, quiet bool, first *api.JobView) *narrator {
	return &narrator{client: c, id: id, quiet: quiet, last: first}
}

// lineWriter serialises the job's stderr and the narrator's lines on one
// writer, and remembers whether the job left a line open, so that a
// narration line starts on a line of its own.
type lineWriter struct {
	mu   sync.Mutex
	w    io.Writer
	open bool // the last byte written was not a newline
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(p)
	if n > 0 {
		l.open = p[n-1] != '\n'
	}
	return n, err
}

// line writes one narration line.
func (l *lineWriter) line(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prefix := "jobsuite: "
	if l.open {
		prefix = "\n" + prefix
	}
	fmt.Fprintf(l.w, prefix+format+"\n", args...)
	l.open = false
}

// attach makes the narrator write to stderr and returns the writer the
// job's stderr must go through.
func (n *narrator) attach(stderr io.Writer) io.Writer {
	n.w = &lineWriter{w: stderr}
	return n.w
}

// start tells the job's state as it is and then follows it until ctx
// is done, the job ends or stop is called.
func (n *narrator) start(ctx context.Context) {
	n.mu.Lock()
	if j := n.last; j != nil {
		n.announce(j)
	}
	n.mu.Unlock()
	if n.quiet {
		return
	}
	ctx, n.stopPoll = context.WithCancel(ctx)
	n.polled = make(chan struct{})
	go func() {
		defer close(n.polled)
		n.poll(ctx)
	}()
}

// stop ends the polling and waits for it, so nothing is told after the
// follower's last word.
func (n *narrator) stop() {
	if n.stopPoll != nil {
		n.stopPoll()
		<-n.polled
	}
}

// The narrator's polling interval: narratePoll after a change, doubling
// up to narratePollMax while nothing changes (variables for tests).
var (
	narratePoll    = 250 * time.Millisecond
	narratePollMax = 2 * time.Second
)

// poll reads the job until ctx is done or the job ends.
func (n *narrator) poll(ctx context.Context) {
	minPoll, maxPoll := narratePoll, narratePollMax
	wait := minPoll
	first := n.last == nil // nothing was announced yet
	for pause := !first; ; pause = true {
		if pause {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		j, err := n.get(ctx)
		if err != nil {
			// The follower reports a controller that cannot be reached.
			wait = min(wait*2, maxPoll)
			continue
		}
		n.mu.Lock()
		changed := true
		if first {
			n.announce(j)
			first = false
		} else {
			changed = n.update(j)
		}
		n.mu.Unlock()
		if isFinal(j.Status) {
			return
		}
		if changed {
			wait = minPoll
		} else {
			wait = min(wait*2, maxPoll)
		}
	}
}

// get reads the job, giving up after a few seconds.
func (n *narrator) get(ctx context.Context) (*api.JobView, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var j api.JobView
	if err := n.client.do(ctx, "GET", fmt.Sprintf("/jobs/%d", n.id), nil, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// isFinal reports whether a job in state s never changes again.
func isFinal(s string) bool {
	switch s {
	case "completed", "failed", "timeout", "cancelled":
		return true
	}
	return false
}

// announce tells the job's state when the narrator starts: queued (and
// why, when no agent can take it), or the attempt running. The caller
// holds n.mu.
func (n *narrator) announce(j *api.JobView) {
	n.last = j
	n.told = len(j.Attempts)
	if n.quiet || isFinal(j.Status) {
		return
	}
	switch {
	case j.Status == "queued" && blocked(j.Reason):
		n.reason = j.Reason
		n.w.line("job %d queued: %s", j.JobID, j.Reason)
	case j.Status == "queued":
		n.w.line("job %d queued", j.JobID)
	case j.Status == "waiting", j.Status == "blocked":
		n.reason = j.Reason
		n.w.line("job %d %s: %s", j.JobID, j.Status, j.Reason)
	case len(j.Attempts) > 0:
		a := j.Attempts[len(j.Attempts)-1]
		n.w.line("job %d %s: attempt %d on %s", j.JobID, j.Status, a.Number, a.Agent)
	default:
		n.w.line("job %d %s", j.JobID, j.Status)
	}
	n.cancelT = j.CancelRequested
}

// blocked reports whether a queued job's reason says that no agent can
// take it (rather than that all are busy): worth telling at once.
func blocked(reason string) bool {
	return strings.HasPrefix(reason, "no connected agent") || strings.HasPrefix(reason, "waiting for an agent to connect")
}

// update tells what changed since the last state seen and reports
// whether anything did. The caller holds n.mu.
func (n *narrator) update(j *api.JobView) bool {
	prev := n.last
	n.last = j
	changed := prev == nil || prev.Status != j.Status || len(prev.Attempts) != len(j.Attempts) || prev.Reason != j.Reason
	for n.told < len(j.Attempts) {
		a := j.Attempts[n.told]
		n.told++
		line := fmt.Sprintf("job %d attempt %d on %s", j.JobID, a.Number, a.Agent)
		if n.told > 1 && n.reason == "" {
			// The retry's reason was not seen: say how the attempt before ended.
			line += " (" + attemptEnd(j.Attempts[n.told-2]) + ")"
		}
		n.reason = ""
		n.w.line("%s", line)
	}
	switch j.Status {
	case "queued", "waiting", "blocked":
		if j.Reason != "" && j.Reason != n.reason {
			n.reason = j.Reason
			n.w.line("job %d %s: %s", j.JobID, j.Status, j.Reason)
		}
	}
	if j.CancelRequested && !n.cancelT && !isFinal(j.Status) {
		n.cancelT = true
		n.w.line("job %d: cancel requested; waiting for its agent to stop it", j.JobID)
	}
	return changed
}

// attemptEnd says how an attempt ended: "failed: exit code 3".
func attemptEnd(a api.AttemptView) string {
	outcome := a.Outcome
	if outcome == "" {
		outcome = "ended"
	}
	var detail []string
	if a.ExitCode != nil {
		detail = append(detail, fmt.Sprintf("exit code %d", *a.ExitCode))
	}
	if a.Signal != "" {
		detail = append(detail, a.Signal)
	}
	if a.Error != "" {
		detail = append(detail, a.Error)
	}
	if len(detail) == 0 {
		return "attempt " + fmt.Sprint(a.Number) + " " + outcome
	}
	return fmt.Sprintf("attempt %d %s: %s", a.Number, outcome, strings.Join(detail, ", "))
}

// end tells how the job ended, from the log's end message, when its
// exit code does not say it all: a timeout, a cancel, a failure without
// an exit code (told even with -q), or a failure after more than one
// attempt.
func (n *narrator) end(end api.LogMessage) {
	n.stop()
	var final *api.JobView
	if !n.quiet {
		// The attempts the polling missed (a quick retry) are told first.
		final, _ = n.get(context.Background())
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case final != nil && n.last == nil:
		n.announce(final) // a finished job: nothing to tell but its end
	case final != nil:
		n.update(final)
	}
	why := end.Reason
	attempts := 0
	if n.last != nil {
		attempts = len(n.last.Attempts)
		if why == "" {
			why = n.last.Reason
		}
	}
	say := func(format string, args ...any) {
		if why != "" {
			format += ": %s"
			args = append(args, why)
		}
		n.w.line(format, args...)
	}
	switch {
	case failedWithoutCode(end):
		say("job %d %s", n.id, end.Status)
	case n.quiet:
	case end.Status == "timeout":
		limit := ""
		if n.last != nil && n.last.Timeout > 0 {
			limit = " (its timeout is " + secondsText(n.last.Timeout) + ")"
		}
		say("job %d timed out%s", n.id, limit)
	case end.Status == "cancelled":
		say("job %d cancelled", n.id)
	case end.Status == "failed" && attempts > 1:
		say("job %d failed after %d attempts", n.id, attempts)
	}
}

// interrupted tells, after Ctrl-C, that the job goes on without us: it
// asks the controller for the job's state, and says what it last knew
// if the controller does not answer in time.
func (n *narrator) interrupted() {
	n.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var j api.JobView
	err := n.client.do(ctx, "GET", fmt.Sprintf("/jobs/%d", n.id), nil, &j)
	n.mu.Lock()
	defer n.mu.Unlock()
	cur := n.last
	if err == nil {
		cur = &j
	}
	n.w.mu.Lock()
	n.w.open = true // after the ^C the terminal echoed
	n.w.mu.Unlock()
	switch {
	case cur == nil:
		n.w.line("stopped following job %d; it goes on ('jobsuite cancel %d' stops it)", n.id, n.id)
	case cur.Status == "queued":
		why := ""
		if cur.Reason != "" {
			why = " (" + cur.Reason + ")"
		}
		n.w.line("job %d is still queued%s; 'jobsuite cancel %d' removes it", n.id, why, n.id)
	case cur.Status == "waiting":
		n.w.line("job %d is waiting to retry (%s); 'jobsuite cancel %d' stops it", n.id, cur.Reason, n.id)
	case cur.Status == "blocked":
		n.w.line("job %d is still blocked (%s); 'jobsuite cancel %d' removes it", n.id, cur.Reason, n.id)
	case isFinal(cur.Status):
		n.w.line("job %d %s", n.id, cur.Status)
	default:
		where := ""
		if len(cur.Attempts) > 0 {
			where = " on " + cur.Attempts[len(cur.Attempts)-1].Agent
		}
		n.w.line("job %d is still %s%s; 'jobsuite cancel %d' stops it", n.id, cur.Status, where, n.id)
	}
}

// warnBlocked warns on w when no connected agent can take job j.
func warnBlocked(w io.Writer, j *api.JobView) {
	if j.Status == "queued" && blocked(j.Reason) {
		fmt.Fprintf(w, "warning: job %d waits: %s; it runs once a matching agent connects ('jobsuite agents' lists them)\n", j.JobID, j.Reason)
	}
}
