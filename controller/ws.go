package controller

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/julienschmidt/httprouter"

	"jobsuite/controller/store"
)

// LogMessage is one message of the log WebSocket in format=json.
// Type "output" carries Data (base64 in JSON, so any bytes survive);
// the last message has Type "end" and the job's final status.
type LogMessage struct {
	Type     string      `json:"type"` // output | end
	Offset   uint64      `json:"offset,omitempty"`
	Stream   string      `json:"stream,omitempty"` // stdout | stderr
	Data     []byte      `json:"data,omitempty"`
	Status   store.State `json:"status,omitempty"`
	ExitCode *int        `json:"exit_code,omitempty"`
	Signal   string      `json:"signal,omitempty"`
	Reason   string      `json:"reason,omitempty"`
}

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
// format=json: a LogMessage per output chunk, stream-tagged and
// byte-exact.
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
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "format must be text or json, got " + format, Field: "format"})
		return
	}
	follow := true
	switch q.Get("follow") {
	case "", "1", "true", "yes":
	case "0", "false", "no":
		follow = false
	default:
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "follow must be true or false", Field: "follow"})
		return
	}
	if _, ok := s.getJob(w, id); !ok {
		return
	}
	// A follower's place is taken before the upgrade, so that one over
	// the limit gets a plain HTTP answer.
	bell, unsubscribe, ok := s.hub.subscribe(id, s.cfg.MaxFollowers)
	if !ok {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusTooManyRequests, errorBody{
			Error: fmt.Sprintf("job %d already has %d log followers, the most the controller allows (-max-followers); try again later, or read GET /jobs/%d/logs", id, s.cfg.MaxFollowers, id),
			JobID: id,
		})
		return
	}
	defer unsubscribe()
	conn, err := upgrader.Upgrade(w, r, nil)
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

	f := &follower{conn: conn, json: format == "json", offset: offset}
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
			checked = time.Now()
			if j.State.Terminal() || !follow {
				if err := s.sendOutput(id, f); err != nil {
					return
				}
				f.end(j)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-bell.c:
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
	for {
		chunks, ok := s.hub.read(id, f.offset, wsReadChunk)
		if !ok {
			var err error
			if chunks, err = s.st.ReadLog(id, f.offset, wsReadChunk); err != nil {
				return nil
			}
		}
		if len(chunks) == 0 {
			return nil
		}
		if !f.json {
			if err := f.text(chunks); err != nil {
				return err
			}
			continue
		}
		for _, c := range chunks {
			if err := f.output(c); err != nil {
				return err
			}
		}
	}
}

type follower struct {
	conn   *websocket.Conn
	json   bool
	offset uint64
	carry  []byte // an incomplete UTF-8 sequence held for the next text message
}

// output sends chunk c as one LogMessage (format=json).
func (f *follower) output(c store.Chunk) error {
	f.offset = c.Offset + uint64(len(c.Data))
	_ = f.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	stream := "stdout"
	if c.Stream == 2 {
		stream = "stderr"
	}
	return f.conn.WriteJSON(LogMessage{Type: "output", Offset: c.Offset, Stream: stream, Data: c.Data})
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
	if f.json {
		var sig string
		if v.Result != nil {
			sig = v.Result.Signal
		}
		_ = f.conn.WriteJSON(LogMessage{Type: "end", Status: j.State, ExitCode: v.ExitCode, Signal: sig, Reason: j.Reason})
	}
	if len(reason) > 120 {
		reason = reason[:120]
	}
	_ = f.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, reason), time.Now().Add(wsWriteTimeout))
}
