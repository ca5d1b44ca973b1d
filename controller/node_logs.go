package controller

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"jobsuite/certs"
	"jobsuite/controller/store"
)

// Logs from any node (issue 14, design note 8.5). With the output
// channel (the default; not with Config.OutputInRaft) every node stores
// every job's output as the leader streams it, so a follower serves GET
// /jobs/:id/logs and /ws/jobs/:id/logs from its own copy instead of
// forwarding them, and
// its WebSocket followers see output a few milliseconds behind the
// leader's: the node's Follower rings this node's log hub (Node.logHub)
// for each chunk it stores, and its Repairer for each job it repaired.
// Without the channel a follower forwards them as every read (its copy
// grows only as rounds apply, and its hub would not ring).
//
// What a follower answers must be what the leader would have answered
// when the request arrived, and it must never serve a short log:
//
//   - Committed state. Before it reads the job the follower asks the
//     leader for its applied index (opStatus on a kept connection, one
//     round trip) and waits until its own store applied that much
//     (at most logReadWait): every write acknowledged before the
//     request is then in its store, so the job, its state, its attempts
//     and its LogBytes are at least as new as the leader's were. No
//     leader known, the leader not answering as leader, or a store too
//     far behind: the request is forwarded as before (which waits for a
//     leader and answers 503 when there is none).
//   - No hole. A finished attempt's (or job's) output is served only if
//     this copy holds every byte of the range asked for up to its end
//     (store.LogHole); otherwise the request is forwarded, and the
//     node's Repairer fetches the hole meanwhile. A running attempt is
//     served only while a leader streams to this node (outchan.Follower
//     .Streaming) and with no hole below what it holds (a node that
//     missed chunks of an earlier term holds later ones past a hole
//     until the attempt ends and is repaired).
//   - Contiguous reads. A follower's reads stop at the first byte it
//     lacks (Server.readLog), where the leader's read past it.
//   - Final bytes only. Of a running job it serves output only up to
//     the end the leader counted and sent on the output stream
//     (outchan.Follower.DurableEnd), or the job's LogBytes and its
//     running attempt's LogStart (replicaLogs.limit): bytes past it may
//     be cut if the attempt is lost. The leader serves up to the same
//     end (Server.readLimit).
//   - The end. A WebSocket follow ends only when the job (or attempt=N)
//     has ended in this node's store and this copy holds every byte up
//     to its end; until then it waits for the bytes (the stream's
//     stragglers, the repair). A follow that waits in vain — no leader
//     streams to this node, a hole does not fill, the end's bytes do
//     not come — for replicaStall is closed with 1013 (try again later)
//     and the offset it reached in the reason: the CLI reconnects from
//     there, to the next controller it knows.
//
// ?offset= resumes on any node, the leader's or a follower's, as the
// offsets are the job's log offsets everywhere. Every answer a follower
// serves itself carries Jobsuite-Served-By with its ID (a forwarded one
// the leader's).

// logReadWait bounds a follower's wait for the leader's applied index
// before it serves a log itself; past it the request is forwarded.
const logReadWait = 2 * time.Second

// replicaStall is how long, at RaftMultiplier 1, a follower's log
// WebSocket waits for bytes its node lacks before it asks the client to
// reconnect (an election takes 1–3 s at multiplier 1).
const replicaStall = 5 * time.Second

// logRead reports whether r reads a job's log: GET /jobs/:id/logs, or
// /ws/jobs/:id/logs (ws).
func logRead(r *http.Request) (ws bool, id uint64, ok bool) {
	if r.Method != http.MethodGet {
		return false, 0, false
	}
	p, ws := strings.CutPrefix(r.URL.Path, "/ws")
	p, ok = strings.CutPrefix(p, "/jobs/")
	if !ok {
		return false, 0, false
	}
	p, ok = strings.CutSuffix(p, "/logs")
	if !ok {
		return false, 0, false
	}
	id, err := strconv.ParseUint(p, 10, 64)
	if err != nil {
		return false, 0, false
	}
	return ws, id, true
}

// serveLogs serves a job's log from this follower's own copy when it
// may (localLogs), and forwards the request to the leader otherwise.
func (n *Node) serveLogs(w http.ResponseWriter, r *http.Request, ws bool, id uint64) {
	st, why := n.localLogs(r, id)
	if st == nil {
		n.log.Debug("log read forwarded to the leader", "job", id, "why", why)
		n.forward(w, r)
		return
	}
	sec, err := n.stale.security(st, n)
	if err != nil {
		n.log.Debug("log read forwarded to the leader", "job", id, "why", err)
		n.forward(w, r)
		return
	}
	// A Server of the store alone, as for a stale read, with this
	// node's hub: no scheduler (nil: the handlers read the stored
	// state), no committer, no agents.
	s := &Server{cfg: n.cfg, st: st, sec: sec, log: n.log.Named("logs"), hub: n.logHub,
		replica: &replicaLogs{node: n.id, streaming: n.follower.Streaming, durable: n.follower.DurableEnd,
			stall: replicaStall * time.Duration(n.cfg.RaftMultiplier)}}
	h := s.handleLogs
	if ws {
		h = s.handleLogSocket
	}
	w.Header().Set(hdrServedBy, n.id)
	s.auth(certs.RoleViewer, h)(w, r, httprouter.Params{{Key: "id", Value: strconv.FormatUint(id, 10)}})
}

// localLogs decides whether this follower may serve r, a read of job
// id's log, from its own copy: it returns the store to serve it from,
// or nil and why not.
func (n *Node) localLogs(r *http.Request, id uint64) (*store.Store, string) {
	q := r.URL.Query()
	var from uint64
	if raw := q.Get("offset"); raw != "" {
		var err error
		if from, err = strconv.ParseUint(raw, 10, 64); err != nil {
			return nil, "a malformed offset (the leader answers it)"
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), logReadWait)
	defer cancel()
	idx, err := n.readIndex(ctx)
	if err != nil {
		return nil, err.Error()
	}
	if err := n.fsm.WaitApplied(ctx, idx); err != nil {
		return nil, err.Error()
	}
	st := n.fsm.Store()
	j, err := st.Get(id)
	if err != nil {
		return nil, err.Error() // no such job: the leader answers 404
	}
	end, ended := j.LogBytes, j.State.Terminal()
	if raw := q.Get("attempt"); raw != "" {
		a, err := strconv.ParseUint(raw, 10, 32)
		if err != nil || a == 0 || int(a) > len(j.Attempts) {
			return nil, "a bad attempt (the leader answers it)"
		}
		var start uint64
		start, end, ended = attemptRange(j, uint32(a))
		from = max(from, start)
	}
	if ended {
		_, _, hole, err := st.LogHole(id, from, end)
		switch {
		case err != nil:
			return nil, err.Error()
		case hole:
			return nil, "this copy lacks part of the ended output (being repaired)"
		}
		return st, ""
	}
	if !n.follower.Streaming() {
		return nil, "no leader streams output to this node"
	}
	// A hole with bytes past it: this node missed chunks of the running
	// attempt (they are repaired once it ends).
	_, hend, hole, err := st.LogHole(id, from, math.MaxUint64)
	switch {
	case err != nil:
		return nil, err.Error()
	case hole && hend < math.MaxUint64:
		return nil, "this copy lacks part of the running output"
	}
	return st, ""
}

// readIndex asks the leader for its applied index: once this node's
// store has applied that much, it holds every write the leader had
// acknowledged when asked.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	r := n.raftNode()
	if r == nil {
		return 0, errNoLeader
	}
	addr, id := r.LeaderWithID()
	if addr == "" || string(id) == n.id {
		return 0, errNoLeader
	}
	var st memberStatus
	if err := n.logConns.Call(ctx, string(addr), opStatus, nil, &st); err != nil {
		return 0, fmt.Errorf("asking the leader %s for its applied index: %w", id, err)
	}
	if st.State != "leader" {
		return 0, fmt.Errorf("%s answered as %s, not as the leader", id, st.State)
	}
	return st.AppliedIndex, nil
}

// replicaLogs is what a Server that serves a job's log from a
// follower's own copy knows besides the store (Server.replica): who it
// is, whether a leader streams to it, and how long a WebSocket follow
// may wait for bytes it lacks. One per request.
type replicaLogs struct {
	node      string
	streaming func() bool
	// durable is the node's Follower.DurableEnd: how far the leader said
	// a job's output is final.
	durable func(job uint64) (uint64, bool)
	stall   time.Duration
	// job is the job as last read from this node's store (limit reads
	// it once; the WebSocket follow sets it each time it reads the job).
	job *store.Job

	mark  uint64    // the follow's offset when last seen moving
	since time.Time // since when it has not moved while waiting
	// looked, if set, is called each time the follow looked at the job
	// and did not end (tests).
	looked func()
}

// readLog reads job id's output from from on, up to max bytes. On a
// follower's own copy (s.replica) it stops at the first byte missing:
// gap says bytes past it are stored. Elsewhere it reads as
// store.ReadLog does.
func (s *Server) readLog(id, from uint64, max int) (chunks []store.Chunk, gap bool, err error) {
	chunks, err = s.st.ReadLog(id, from, max)
	if err != nil || s.replica == nil {
		return chunks, false, err
	}
	pos := from
	for i, c := range chunks {
		if c.Offset != pos {
			return chunks[:i], true, nil
		}
		pos += uint64(len(c.Data))
	}
	return chunks, false, nil
}

// limit is where job id's output this follower's copy may serve ends
// (Server.readLimit): all of an ended job's; of one still active, what
// is final — below its LogBytes and its running attempt's LogStart
// (ended attempts' output), and up to the end the leader counted and
// sent (durable). A job read before the leader's end arrived, or before
// its next attempt was applied, only serves less: every end involved is
// final, whatever attempt it was counted for.
func (rl *replicaLogs) limit(st *store.Store, id uint64) uint64 {
	if rl.job == nil || rl.job.ID != id {
		j, err := st.Get(id)
		if err != nil {
			return 0
		}
		rl.job = j
	}
	j := rl.job
	if j.State.Terminal() {
		return math.MaxUint64
	}
	end := j.LogBytes
	if c := j.Current(); c != nil {
		end = max(end, c.LogStart)
	}
	if rl.durable != nil {
		if d, ok := rl.durable(id); ok {
			end = max(end, d)
		}
	}
	return end
}

// holds reports whether a follow that reached the end of job j (or of
// its attempt f.only) may end: on a follower's copy, once it sent every
// byte up to that end; elsewhere always (the leader's copy is the one
// the end was decided on).
func (rl *replicaLogs) holds(j *store.Job, f *follower) bool {
	if rl == nil {
		return true
	}
	switch {
	case f.only > 0 && f.stop != math.MaxUint64:
		return f.offset >= f.stop
	case j.State.Terminal():
		return f.offset >= j.LogBytes
	}
	return true // follow=0 on a running job: what is stored now
}

// stalled reports whether a follow on a follower's copy has waited
// longer than rl.stall, without moving, for bytes this node lacks: a
// hole it stopped at, the bytes below an end, or any at all while no
// leader streams to this node. ended says attempt f.only has ended.
func (rl *replicaLogs) stalled(j *store.Job, f *follower, ended bool) bool {
	if rl.looked != nil {
		rl.looked()
	}
	now := time.Now()
	var waiting bool
	switch {
	case f.gap:
		waiting = true
	case j.State.Terminal() || ended:
		waiting = !rl.holds(j, f)
	default:
		waiting = !rl.streaming()
	}
	if !waiting || f.offset != rl.mark || rl.since.IsZero() {
		rl.mark, rl.since = f.offset, now
		return false
	}
	return now.Sub(rl.since) > rl.stall
}
