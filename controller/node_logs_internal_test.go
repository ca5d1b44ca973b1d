package controller

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/hub"
	"jobsuite/controller/store"
)

// replicaStore is a follower's store holding job 1 with one attempt,
// running or (done) completed with a log of total bytes, of which it
// holds the chunks given.
func replicaStore(t *testing.T, done bool, total uint64, chunks ...store.Chunk) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{Logger: hclog.NewNullLogger(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	t0 := time.Unix(1_700_000_000, 0).UTC()
	j := &store.Job{ID: 1, Name: "j", Command: "true", State: store.Queued, CreatedAt: t0, QueuedAt: t0}
	cmds := []store.Command{store.NewTransition(j, store.Event{Time: t0, Type: "submitted"})}
	r := j.Clone()
	r.State = store.Running
	r.Attempts = append(r.Attempts, store.Attempt{Number: 1, Agent: "a", DispatchedAt: t0})
	cmds = append(cmds, store.NewTransition(r, store.Event{Time: t0, Type: "running"}))
	if done {
		zero := 0
		d := r.Clone()
		d.State, d.FinishedAt, d.LogBytes = store.Completed, t0, total
		d.Attempts[0].Outcome, d.Attempts[0].ExitCode, d.Attempts[0].OutputBytes = store.OutcomeCompleted, &zero, total
		cmds = append(cmds, store.NewTransition(d, store.Event{Time: t0, Type: "completed"}))
	}
	for _, c := range chunks {
		cmds = append(cmds, &store.Output{Job: 1, Chunk: c})
	}
	res, err := st.Apply(cmds...)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range res {
		if x.Err != nil {
			t.Fatalf("command %d: %v", i, x.Err)
		}
	}
	return st
}

// replicaSocket serves job 1's log WebSocket from s (no authentication)
// and dials it with query.
func replicaSocket(t *testing.T, s *Server, query string) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.handleLogSocket(w, r, httprouter.Params{{Key: "id", Value: "1"}})
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	return ws
}

func readLogMessage(t *testing.T, ws *websocket.Conn) api.LogMessage {
	t.Helper()
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	var m api.LogMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// finalTo is a Follower.DurableEnd that says job 1's output is final
// to end.
func finalTo(end uint64) func(uint64) (uint64, bool) {
	return func(job uint64) (uint64, bool) { return end, job == 1 }
}

// A follow on a follower's own copy stops at a hole and ends only once
// the copy holds every byte up to the job's LogBytes: the job ended in
// this store while the bytes [5, 8) were still missing.
func TestReplicaFollowEndsOnlyWithEveryByte(t *testing.T) {
	st := replicaStore(t, true, 11, store.Chunk{Offset: 0, Stream: 1, Data: []byte("hello")}, store.Chunk{Offset: 8, Stream: 1, Data: []byte("rld")})
	h := hub.New()
	looked := make(chan struct{}, 1)
	s := &Server{st: st, hub: h, log: hclog.NewNullLogger(), replica: &replicaLogs{node: "n1", streaming: func() bool { return true }, stall: time.Minute,
		looked: func() {
			select {
			case looked <- struct{}{}:
			default:
			}
		}}}
	ws := replicaSocket(t, s, "format=json")
	msgs := socketMessages(ws)
	if m := <-msgs; m.Type != "output" || m.Offset != 0 || string(m.Data) != "hello" {
		t.Fatalf("first message %+v", m)
	}
	// The follow saw the job ended with [5, 8) missing, and waits.
	select {
	case <-looked:
	case m, ok := <-msgs:
		t.Fatalf("after the hole, before it filled: %+v (open %v); the follow must wait", m, ok)
	}
	// The hole fills (a straggler, the repair) and rings the hub.
	if _, err := st.Apply(&store.Output{Job: 1, Chunk: store.Chunk{Offset: 5, Stream: 1, Data: []byte(" wo")}}); err != nil {
		t.Fatal(err)
	}
	h.Ring(1)
	var got strings.Builder
	got.WriteString("hello")
	for {
		m, ok := <-msgs
		if !ok {
			t.Fatalf("the connection ended after %q without an end message", got.String())
		}
		if m.Type == "end" {
			if m.Status != "completed" {
				t.Fatalf("end %+v", m)
			}
			break
		}
		if m.Type != "output" || m.Offset != uint64(got.Len()) {
			t.Fatalf("after %d bytes: %+v (the follow must not end, or skip, at the hole)", got.Len(), m)
		}
		got.Write(m.Data)
	}
	if got.String() != "hello world" {
		t.Fatalf("followed %q", got.String())
	}
}

// A follow on a follower's copy that waits in vain — a hole that does
// not fill, no leader streaming to the node — is closed with 1013 and
// the offset it reached, for the client to resume elsewhere; one on a
// leader's copy reads past the hole as before.
func TestReplicaFollowStalls(t *testing.T) {
	for name, tc := range map[string]struct {
		done      bool
		streaming bool
		chunks    []store.Chunk
	}{
		"hole below the end":       {done: true, streaming: true, chunks: []store.Chunk{{Offset: 0, Stream: 1, Data: []byte("hello")}, {Offset: 8, Stream: 1, Data: []byte("rld")}}},
		"end's bytes missing":      {done: true, streaming: true, chunks: []store.Chunk{{Offset: 0, Stream: 1, Data: []byte("hello")}}},
		"hole in a running output": {streaming: true, chunks: []store.Chunk{{Offset: 0, Stream: 1, Data: []byte("hello")}, {Offset: 8, Stream: 1, Data: []byte("rld")}}},
		"no stream":                {chunks: []store.Chunk{{Offset: 0, Stream: 1, Data: []byte("hello")}}},
	} {
		t.Run(name, func(t *testing.T) {
			st := replicaStore(t, tc.done, 11, tc.chunks...)
			s := &Server{st: st, hub: hub.New(), log: hclog.NewNullLogger(), replica: &replicaLogs{node: "n1", streaming: func() bool { return tc.streaming },
				durable: finalTo(11), stall: 100 * time.Millisecond}}
			ws := replicaSocket(t, s, "format=json")
			if m := readLogMessage(t, ws); m.Type != "output" || string(m.Data) != "hello" {
				t.Fatalf("first message %+v", m)
			}
			_, _, err := ws.ReadMessage()
			if !websocket.IsCloseError(err, websocket.CloseTryAgainLater) || !strings.Contains(err.Error(), "at 5;") {
				t.Fatalf("after the stall: %v, want close 1013 naming offset 5", err)
			}
		})
	}
	t.Run("leader's copy", func(t *testing.T) {
		st := replicaStore(t, true, 11, store.Chunk{Offset: 0, Stream: 1, Data: []byte("hello")}, store.Chunk{Offset: 8, Stream: 1, Data: []byte("rld")})
		s := &Server{st: st, hub: hub.New(), log: hclog.NewNullLogger()}
		ws := replicaSocket(t, s, "format=json")
		var got []string
		for {
			m := readLogMessage(t, ws)
			if m.Type == "end" {
				break
			}
			got = append(got, fmt.Sprintf("%d:%s", m.Offset, m.Data))
		}
		if strings.Join(got, ",") != "0:hello,8:rld" {
			t.Fatalf("leader's follow sent %v", got)
		}
	})
}

// A follower's copy serves a running attempt's output only as far as
// the leader said it is final (Follower.DurableEnd): it holds 11 bytes,
// the leader counted 5, and the follow waits there — a GET stops there
// too — until the end moves and rings the hub. With no end heard it
// serves nothing of the attempt; once the job ended, all of it.
func TestReplicaServesOnlyFinalOutput(t *testing.T) {
	st := replicaStore(t, false, 0, store.Chunk{Offset: 0, Stream: 1, Data: []byte("hello")}, store.Chunk{Offset: 5, Stream: 1, Data: []byte(" world")})
	h := hub.New()
	var mu sync.Mutex
	final, heard := uint64(5), true
	looked := make(chan struct{}, 1)
	rl := func() *replicaLogs {
		return &replicaLogs{node: "n1", streaming: func() bool { return true }, stall: time.Minute,
			durable: func(job uint64) (uint64, bool) {
				mu.Lock()
				defer mu.Unlock()
				return final, heard && job == 1
			},
			looked: func() {
				select {
				case looked <- struct{}{}:
				default:
				}
			}}
	}
	get := func() string {
		s := &Server{st: st, hub: h, log: hclog.NewNullLogger(), replica: rl()}
		w := httptest.NewRecorder()
		s.handleLogs(w, httptest.NewRequest("GET", "/jobs/1/logs", nil), httprouter.Params{{Key: "id", Value: "1"}})
		return w.Body.String()
	}
	if got := get(); got != "hello" {
		t.Fatalf("GET while final to 5: %q, want %q", got, "hello")
	}
	s := &Server{st: st, hub: h, log: hclog.NewNullLogger(), replica: rl()}
	ws := replicaSocket(t, s, "format=json")
	msgs := socketMessages(ws)
	if m := <-msgs; m.Type != "output" || m.Offset != 0 || string(m.Data) != "hello" {
		t.Fatalf("first message %+v", m)
	}
	for range 2 { // it looked at the job twice and sent nothing more
		select {
		case <-looked:
		case m := <-msgs:
			t.Fatalf("past the final end: %+v", m)
		}
	}
	mu.Lock()
	final = 11
	mu.Unlock()
	h.Ring(1)
	if m := <-msgs; m.Type != "output" || m.Offset != 5 || string(m.Data) != " world" {
		t.Fatalf("after the end moved: %+v", m)
	}
	if got := get(); got != "hello world" {
		t.Fatalf("GET while final to 11: %q", got)
	}
	mu.Lock()
	heard = false
	mu.Unlock()
	if got := get(); got != "" {
		t.Fatalf("GET with no end heard: %q, want nothing of the running attempt", got)
	}
	done := replicaStore(t, true, 11, store.Chunk{Offset: 0, Stream: 1, Data: []byte("hello world")})
	s = &Server{st: done, hub: h, log: hclog.NewNullLogger(), replica: rl()}
	w := httptest.NewRecorder()
	s.handleLogs(w, httptest.NewRequest("GET", "/jobs/1/logs", nil), httprouter.Params{{Key: "id", Value: "1"}})
	if got := w.Body.String(); got != "hello world" {
		t.Fatalf("GET of the ended job: %q", got)
	}
}

// socketMessages delivers the log messages ws reads, until it fails.
func socketMessages(ws *websocket.Conn) <-chan api.LogMessage {
	msgs := make(chan api.LogMessage, 16)
	go func() {
		defer close(msgs)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var m api.LogMessage
			_ = json.Unmarshal(b, &m)
			msgs <- m
		}
	}()
	return msgs
}
