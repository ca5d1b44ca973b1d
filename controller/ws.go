package controller

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/store"
)

const (
	wsWriteTimeout = 10 * time.Second
	// wsSlowest is what a follower must take per wsWriteTimeout: a text
	// message of n bytes gets ceil(n / wsSlowest) times wsWriteTimeout,
	// as if it were sent in chunks of wsSlowest (3.2 KB/s at least).
	wsSlowest    = 32 << 10
	wsPingEvery  = 30 * time.Second
	wsReadChunk  = 256 << 10
	wsStateEvery = 50 * time.Millisecond
)

// upgrader's write buffer holds a whole text message of up to
// wsReadChunk bytes, so that one goes to TLS in one Write: full 16 KiB
// records and one short one, where a message per 32 KiB chunk cost a
// third record (and syscall) for its frame header alone. The buffers
// are pooled: a follower holds one only while it writes a message.
var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: wsReadChunk,
	WriteBufferPool: &sync.Pool{},
	Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
		writeError(w, status, "websocket: %v", reason)
	},
}

// handleLogSocket streams a job's output over a WebSocket: first what is
// stored (from ?offset=), then live output as it arrives, and closes when
// the job reaches a final state (or at once with ?follow=0).
//
// format=text (default, what original job_suite clients read): text
// messages of up to wsReadChunk bytes of output each, stdout and stderr
// interleaved, invalid UTF-8 replaced; message boundaries carry no
// meaning; the close frame's reason states the outcome.
// format=json: an api.LogMessage per output chunk, stream-tagged, timed and
// byte-exact; with attempts=1, an "attempt" message where each attempt's
// output begins (sent only when asked, so older clients see no change).
//
// attempt=N streams attempt N's output only (in json, after its
// "attempt" message) and ends once that attempt has ended, whatever
// the job does next.
func (s *Server) handleLogSocket(w http.ResponseWriter, r *http.Request, p httprouter.Params) {
	id, ok := jobID(w, p)
	if !ok {
		return
	}
	offset, ok := queryOffset(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "text"
	}
	if format != "text" && format != "json" {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "format must be text or json, got " + format, Field: "format"})
		return
	}
	follow := true
	switch q.Get("follow") {
	case "", "1", "true", "yes":
	case "0", "false", "no":
		follow = false
	default:
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "follow must be true or false", Field: "follow"})
		return
	}
	markers := false
	switch q.Get("attempts") {
	case "", "0", "false", "no":
	case "1", "true", "yes":
		markers = true
	default:
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "attempts must be true or false", Field: "attempts"})
		return
	}
	if markers && format != "json" {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "attempts=1 needs format=json: attempt messages are JSON", Field: "attempts"})
		return
	}
	j, ok := s.getJob(w, id)
	if !ok {
		return
	}
	only, ok := queryAttempt(w, r, j)
	if !ok {
		return
	}
	f := &follower{conn: nil, json: format == "json", offset: offset, stop: math.MaxUint64, markers: markers, only: only}
	if only > 0 {
		start, _, _ := attemptRange(j, only)
		f.offset = max(offset, start)
		f.markers = f.json
	}
	// A follower's place is taken before the upgrade, so that one over
	// the limit gets a plain HTTP answer.
	bell, unsubscribe, ok := s.hub.Subscribe(id, s.cfg.MaxFollowers)
	if !ok {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusTooManyRequests, api.Error{
			Error: fmt.Sprintf("job %d already has %d log followers, the most the controller allows (-max-followers); try again later, or read GET /jobs/%d/logs", id, s.cfg.MaxFollowers, id),
			JobID: id,
		})
		return
	}
	defer unsubscribe()
	var hdr http.Header // the upgrade's answer is written by the upgrader
	if by := w.Header().Get(hdrServedBy); by != "" {
		hdr = http.Header{hdrServedBy: {by}}
	}
	conn, err := upgrader.Upgrade(w, r, hdr)
	if err != nil {
		return // the upgrader answered
	}
	defer conn.Close()
	conn.SetReadLimit(4096)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // the client sends nothing we need; reading notices it leaving
		defer cancel()
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()

	ping := time.NewTicker(wsPingEvery)
	defer ping.Stop()

	f.conn = conn
	if f.markers {
		// Markers from the first attempt that begins at or after where
		// this connection starts (a resumed one may repeat the marker of
		// an attempt that begins exactly there).
		f.see(j)
		f.next = len(f.attempts)
		for i, a := range f.attempts {
			if a.LogStart >= f.offset {
				f.next = i
				break
			}
		}
		if only > 0 {
			f.next = int(only) - 1
		}
	}
	// Reading the job's state costs a store lookup, which, while the job
	// writes output fast, mostly misses the memtable and decompresses
	// table blocks: it is read at most every wsStateEvery (a timer wakes
	// the follower for the next one), and output is sent in between.
	var checked time.Time // when the state was last read
	recheck := time.NewTimer(wsStateEvery)
	defer recheck.Stop()
	for {
		if err := s.sendOutput(id, f); err != nil {
			return
		}
		if wait := wsStateEvery - time.Since(checked); follow && wait > 0 {
			recheck.Reset(wait)
		} else {
			// State first, then output: a job seen final has all its
			// output stored already, so draining after this read misses
			// nothing.
			j, err := s.st.Get(id)
			if err != nil {
				return
			}
			if s.replica != nil {
				s.replica.job = j // its state bounds what readLimit serves
			}
			checked = time.Now()
			ended := false // attempt=N: N has ended
			if only > 0 {
				if cur := s.sched.Snapshot(id); cur != nil {
					j = cur
				}
				_, end, done := attemptRange(j, only)
				if done {
					f.stop, ended = end, true
				}
			}
			if j.State.Terminal() || !follow || ended {
				if err := s.sendOutput(id, f); err != nil {
					return
				}
				if s.replica.holds(j, f) {
					f.end(j)
					return
				}
			}
			if s.replica != nil {
				// Nobody rings a follower node's hub when a round
				// changes the job: look again.
				recheck.Reset(wsStateEvery)
				if s.replica.stalled(j, f, ended) {
					f.retry(fmt.Sprintf("controller %s lacks job %d's output at %d; reconnect from there", s.replica.node, id, f.offset))
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-bell:
		case <-recheck.C:
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(wsWriteTimeout)); err != nil {
				return
			}
		}
	}
}

// sendOutput sends f the output stored from its offset on until there is
// no more: the newest from the hub's memory, older output from the
// store. A failed store read ends it early; only a failed send is an
// error.
func (s *Server) sendOutput(id uint64, f *follower) error {
	// A running attempt's output only as far as it is final (readLimit).
	stop := min(f.stop, s.readLimit(id))
	for f.offset < stop {
		chunks, ok := s.hub.Read(id, f.offset, wsReadChunk)
		f.gap = false
		if !ok {
			var err error
			if chunks, f.gap, err = s.readLog(id, f.offset, wsReadChunk); err != nil {
				return nil
			}
		}
		if f.markers || f.only > 0 {
			// Read after the output: an attempt's record is stored (and
			// in the scheduler) before its agent gets the Dispatch, so
			// the job read now knows the attempt of every chunk read.
			f.refresh(s, id)
			stop = min(stop, f.stop)
		}
		chunks = clipChunks(chunks, stop)
		if len(chunks) == 0 {
			return f.markersUpTo(f.offset) // attempts that began without output yet
		}
		if !f.json {
			if err := f.text(chunks); err != nil {
				return err
			}
			continue
		}
		for _, c := range chunks {
			if err := f.outputs(c); err != nil {
				return err
			}
		}
	}
	return f.markersUpTo(f.offset) // at stop: attempt=N's marker, if it wrote nothing
}

// readLimit is where job id's output that readers may be served ends
// for now: with the output channel, a running attempt's output only as
// far as it is final — counted on a quorum, so never cut off the log if
// the attempt is lost (else a client that read past the cut and resumed
// from there would get the next attempt's bytes at that offset). On the
// leader that is the scheduler's durable end (sched.DurableEnd), on a
// follower the end the leader sent (replicaLogs.limit). Elsewhere, and
// for a job that ended, the whole stored log (math.MaxUint64): a single
// controller serves only what its committer made durable.
func (s *Server) readLimit(id uint64) uint64 {
	switch {
	case s.replica != nil:
		return s.replica.limit(s.st, id)
	case s.out != nil:
		if end, ok := s.sched.DurableEnd(id); ok {
			return end
		}
	}
	return math.MaxUint64
}

type follower struct {
	conn   *websocket.Conn
	json   bool
	offset uint64
	carry  []byte // an incomplete UTF-8 sequence held for the next text message
	gap    bool   // the last read stopped at a hole (a follower's own copy)

	// stop is where the output sent ends: math.MaxUint64, or with
	// ?attempt=N (only) the end of attempt N once it has ended.
	stop uint64
	only uint32

	// markers: send an "attempt" message before each attempt's output
	// (of attempt only, with only); attempts as last read, the next
	// one to announce, and whether the record read is final.
	markers  bool
	attempts []store.Attempt
	next     int
	final    bool
}

// refresh reads the job's attempts anew unless they are final: from the
// scheduler while it holds the job, else from the store (a finished
// job's record no longer changes). With only, it sets stop once the
// attempt has ended.
func (f *follower) refresh(s *Server, id uint64) {
	if f.final {
		return
	}
	j := s.sched.Snapshot(id)
	if j == nil {
		var err error
		if j, err = s.st.Get(id); err != nil {
			return
		}
		f.final = j.State.Terminal()
	}
	f.see(j)
}

// see takes the attempts of j, a version of the job.
func (f *follower) see(j *store.Job) {
	if len(j.Attempts) < len(f.attempts) {
		return // an older version than one seen
	}
	f.attempts = j.Attempts
	if f.only > 0 && int(f.only) <= len(j.Attempts) {
		if _, end, ended := attemptRange(j, f.only); ended {
			f.stop = end
		}
	}
}

// outputs sends chunk c (format=json), cut where an attempt begins,
// each piece after the markers due before it.
func (f *follower) outputs(c store.Chunk) error {
	for len(c.Data) > 0 {
		if err := f.markersUpTo(c.Offset); err != nil {
			return err
		}
		piece := c
		if f.markers && f.next < len(f.attempts) {
			if at := f.attempts[f.next].LogStart; at > c.Offset && at-c.Offset < uint64(len(c.Data)) {
				piece.Data = c.Data[:at-c.Offset]
			}
		}
		if err := f.output(piece); err != nil {
			return err
		}
		c.Offset += uint64(len(piece.Data))
		c.Data = c.Data[len(piece.Data):]
	}
	return nil
}

// markersUpTo sends the markers of the attempts, from the next one on,
// that begin at or before off (only attempt only's, with only).
func (f *follower) markersUpTo(off uint64) error {
	if !f.markers {
		return nil
	}
	for f.next < len(f.attempts) {
		a := f.attempts[f.next]
		if a.LogStart > off || f.only > 0 && a.Number != f.only {
			return nil
		}
		_ = f.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
		if err := f.conn.WriteJSON(api.LogMessage{Type: "attempt", Attempt: a.Number, Agent: a.Agent, Time: a.DispatchedAt,
			Offset: a.LogStart, Attempts: len(f.attempts)}); err != nil {
			return err
		}
		f.next++
	}
	return nil
}

// output sends chunk c as one api.LogMessage (format=json).
func (f *follower) output(c store.Chunk) error {
	f.offset = c.Offset + uint64(len(c.Data))
	_ = f.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	stream := "stdout"
	if c.Stream == 2 {
		stream = "stderr"
	}
	return f.conn.WriteJSON(api.LogMessage{Type: "output", Offset: c.Offset, Stream: stream, Data: c.Data, Time: c.Time})
}

// text sends chunks, contiguous output from f.offset on, as one text
// message (none if they hold only part of a rune).
func (f *follower) text(chunks []store.Chunk) error {
	n := 0
	for _, c := range chunks {
		n += len(c.Data)
	}
	timeout := textTimeout(n)
	var w io.WriteCloser
	for _, c := range chunks {
		f.offset = c.Offset + uint64(len(c.Data))
		data := f.runes(c.Data)
		if len(data) == 0 {
			continue
		}
		if w == nil {
			_ = f.conn.SetWriteDeadline(time.Now().Add(timeout))
			var err error
			if w, err = f.conn.NextWriter(websocket.TextMessage); err != nil {
				return err
			}
		}
		if err := writeValid(w, data); err != nil {
			return err
		}
	}
	if w == nil {
		return nil
	}
	return w.Close()
}

// textTimeout is how long a text message of n bytes may take to send.
func textTimeout(n int) time.Duration {
	return wsWriteTimeout * time.Duration(max(1, (n+wsSlowest-1)/wsSlowest))
}

// runes returns data, after the bytes carried from the previous chunk,
// without a rune cut at its end, which it carries to the next.
func (f *follower) runes(data []byte) []byte {
	// data is never modified: it may be shared with other followers.
	if len(f.carry) > 0 { // rare: a rune was cut at the previous chunk's end
		data = append(f.carry, data...)
		f.carry = nil
	}
	// Hold back a rune cut at the chunk's end.
	for i := 1; i <= 3 && i <= len(data); i++ {
		b := data[len(data)-i]
		if b < 0x80 {
			break
		}
		if utf8.RuneStart(b) {
			if !utf8.FullRune(data[len(data)-i:]) {
				f.carry = append([]byte(nil), data[len(data)-i:]...)
				data = data[:len(data)-i]
			}
			break
		}
	}
	return data
}

// writeValid writes data to w with each run of invalid UTF-8 replaced by
// U+FFFD exactly as strings.ToValidUTF8 does. Valid data (the common
// case) is written as it is, in one piece.
func writeValid(w io.Writer, data []byte) error {
	if utf8.Valid(data) {
		_, err := w.Write(data)
		return err
	}
	return validUTF8(data, w.Write)
}

// writeText sends data as one text message, made valid UTF-8 by
// writeValid.
func writeText(conn *websocket.Conn, data []byte) error {
	w, err := conn.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if err := writeValid(w, data); err != nil {
		return err
	}
	return w.Close()
}

var replacementChar = []byte("\uFFFD")

// validUTF8 passes data to emit in pieces whose concatenation is
// strings.ToValidUTF8(string(data), "\uFFFD"): valid spans as slices of
// data, one replacement character per run of invalid bytes.
func validUTF8(data []byte, emit func([]byte) (int, error)) error {
	start := 0 // first byte of the valid span not emitted yet
	invalid := false
	for i := 0; i < len(data); {
		if data[i] < utf8.RuneSelf {
			i++
			invalid = false
			continue
		}
		_, n := utf8.DecodeRune(data[i:])
		if n > 1 {
			i += n
			invalid = false
			continue
		}
		if !invalid {
			if start < i {
				if _, err := emit(data[start:i]); err != nil {
					return err
				}
			}
			if _, err := emit(replacementChar); err != nil {
				return err
			}
			invalid = true
		}
		i++
		start = i
	}
	if start < len(data) {
		if _, err := emit(data[start:]); err != nil {
			return err
		}
	}
	return nil
}

// retry closes the connection with 1013 (try again later) and reason:
// a client resumes by offset, from another controller if it has several.
func (f *follower) retry(reason string) {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	_ = f.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, reason), time.Now().Add(wsWriteTimeout))
}

func (f *follower) end(j *store.Job) {
	_ = f.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	if len(f.carry) > 0 && !f.json {
		_ = writeText(f.conn, f.carry)
	}
	v := viewJob(j, "")
	reason := fmt.Sprintf("job %d %s", j.ID, j.State)
	if !j.State.Terminal() {
		reason = fmt.Sprintf("job %d is %s; end of stored output", j.ID, j.State)
	} else if v.ExitCode != nil {
		reason += fmt.Sprintf(" (exit code %d)", *v.ExitCode)
	}
	m := api.LogMessage{Type: "end", Status: string(j.State), ExitCode: v.ExitCode, Reason: j.Reason}
	if v.Result != nil {
		m.Signal = v.Result.Signal
	}
	if f.only > 0 && int(f.only) <= len(j.Attempts) {
		a := j.Attempts[f.only-1]
		m.Attempt, m.Outcome, m.ExitCode, m.Signal, m.Reason = f.only, string(a.Outcome), a.ExitCode, a.Signal, a.Error
		reason = fmt.Sprintf("job %d attempt %d %s", j.ID, f.only, a.Outcome)
		if a.Outcome == "" {
			reason = fmt.Sprintf("job %d attempt %d is running; end of stored output", j.ID, f.only)
		} else if a.ExitCode != nil {
			reason += fmt.Sprintf(" (exit code %d)", *a.ExitCode)
		}
	}
	if f.json {
		_ = f.conn.WriteJSON(m)
	}
	if len(reason) > 120 {
		reason = reason[:120]
	}
	_ = f.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, reason), time.Now().Add(wsWriteTimeout))
}
