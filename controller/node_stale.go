package controller

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller/store"
)

// Stale reads (?stale=1). GET /jobs, GET /jobs/:id and GET /jobs/:id/logs
// with stale=1 (or true) are answered by whichever node receives them,
// from its own store, without forwarding: a follower's view may lag the
// leader's by what it has not applied yet, and it keeps answering while
// there is no leader (an election, a partition). Every such answer says
// how stale it may be, in headers:
//
//	Jobsuite-Last-Contact   seconds since this node last heard from the
//	                        leader (0 on the leader itself; for a node
//	                        that led, at most since it stopped leading)
//	Jobsuite-Applied-Index  the last raft entry this node's store applied
//	                        (compare it between nodes)
//	Jobsuite-Known-Leader   whether this node knows a leader now
//
// and it is bounded: a node that has not heard from a leader for longer
// than Config.MaxStale (-max-stale, default 10 s), or never since it
// started, answers 503 with Retry-After instead, so a node cut off from
// its cluster does not serve an ever older view. The leader answers a
// stale read like any other (its view is the committed one).
//
// A stale read is authenticated as every request is, against this
// node's own copy of the tokens and revocations (read from its store,
// again whenever its applied index moved). ?live= is ignored: live state
// is the leader's, which holds the agent sessions. Any other endpoint
// ignores stale=1 and is forwarded as usual.
//
// A read that a snapshot install cuts short (a follower catching up
// swaps its store for the snapshot's and closes the old one under the
// read) is tried again on the new store once the install is done,
// waiting up to staleRetryWait (1 s); only a read that fails that way
// twice, or whose install does not finish in time, gets 503 with
// Retry-After.

// Headers of a stale read.
const (
	hdrLastContact  = "Jobsuite-Last-Contact"
	hdrAppliedIndex = "Jobsuite-Applied-Index"
	hdrKnownLeader  = "Jobsuite-Known-Leader"
)

// staleRead reports whether r asks for a stale read of an endpoint that
// serves one, and which: "list", "get" or "logs" with the job ID.
func staleRead(r *http.Request) (what, id string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "", ""
	}
	switch r.URL.Query().Get("stale") {
	case "1", "true":
	default:
		return "", ""
	}
	p := strings.TrimRight(r.URL.Path, "/")
	rest, ok := strings.CutPrefix(p, "/jobs")
	switch {
	case !ok:
		return "", ""
	case rest == "":
		return "list", ""
	case !strings.HasPrefix(rest, "/"):
		return "", ""
	}
	id, sub, _ := strings.Cut(rest[1:], "/")
	switch {
	case id == "":
		return "", ""
	case sub == "":
		return "get", id
	case sub == "logs":
		return "logs", id
	}
	return "", ""
}

// staleness writes the stale-read headers and decides whether this node
// may answer one: ok false means the answer (503) is written.
func (n *Node) staleness(w http.ResponseWriter, leading bool) bool {
	r := n.raftNode()
	applied, _ := n.fsm.Applied()
	w.Header().Set(hdrAppliedIndex, strconv.FormatUint(applied, 10))
	if r == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "controller %s has not joined its cluster yet; retry, or ask another controller", n.id)
		return false
	}
	addr, _ := r.LeaderWithID()
	w.Header().Set(hdrKnownLeader, strconv.FormatBool(addr != ""))
	if leading || r.State() == raft.Leader {
		w.Header().Set(hdrLastContact, "0")
		return true
	}
	// A node that led has the leader's view as of when it stopped.
	lc := r.LastContact()
	if led := n.ledAt.Load(); led != 0 && time.Unix(0, led).After(lc) {
		lc = time.Unix(0, led)
	}
	if lc.IsZero() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "controller %s has not heard from a leader since it started, so it serves no stale reads; retry, or ask another controller", n.id)
		return false
	}
	age := time.Since(lc)
	w.Header().Set(hdrLastContact, strconv.FormatFloat(age.Seconds(), 'f', 3, 64))
	if age > n.cfg.MaxStale {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "controller %s last heard from a leader %s ago, over its bound for stale reads (-max-stale %s); retry, or ask another controller",
			n.id, age.Round(time.Millisecond), n.cfg.MaxStale)
		return false
	}
	return true
}

// serveStale answers a stale read from this node's own store. A read
// that a snapshot install cut short (its store was swapped and closed
// under it) is tried again on the new store, once, after waiting up to
// staleRetryWait for the install to finish; only if that fails too does
// the client get 503 with Retry-After.
func (n *Node) serveStale(w http.ResponseWriter, r *http.Request, what, id string) {
	if !n.staleness(w, false) {
		return
	}
	if what == "get" {
		q := r.URL.Query()
		q.Del("live")
		r = r.Clone(r.Context())
		r.URL.RawQuery = q.Encode()
	}
	retryStale(w, n.id, func(g *swapGuard) {
		restores := n.fsm.Stats().Restores
		st := n.fsm.Store() // for this try: a snapshot's restore may swap it
		g.swapped = func() bool { return n.fsm.Store() != st }
		g.wait = func() bool { return n.waitRestored(r.Context(), st, restores) }
		applied, _ := n.fsm.Applied()
		w.Header().Set(hdrAppliedIndex, strconv.FormatUint(applied, 10))
		if n.staleHook != nil {
			n.staleHook()
		}
		n.readStale(g, r, st, what, id)
	})
}

// staleRetryWait bounds how long a stale read cut short by a snapshot
// install waits for the install to finish before its one retry.
const staleRetryWait = time.Second

// retryStale runs read with a swapGuard on w; when the guard held back
// a swap's 500 (nothing was written) and the install finished within
// the guard's wait, it runs read once more, whose answer stands (a
// second swap's 500 becomes 503 with Retry-After).
func retryStale(w http.ResponseWriter, node string, read func(g *swapGuard)) {
	g := &swapGuard{ResponseWriter: w, hold: true}
	read(g)
	if g.held && g.wait() {
		g = &swapGuard{ResponseWriter: w}
		read(g)
	} else if g.held {
		g.retry = true // the install did not finish in time: 503
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	g.finish(node)
}

// waitRestored waits up to staleRetryWait for the snapshot install that
// swapped st out to finish (the FSM counts it once the new store is
// live and its applied index published); false if it did not, or ctx
// ended.
func (n *Node) waitRestored(ctx context.Context, st *store.Store, restores uint64) bool {
	deadline := time.Now().Add(staleRetryWait)
	for {
		if n.fsm.Store() != st && n.fsm.Stats().Restores > restores {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readStale is one try of a stale read on store st.
func (n *Node) readStale(g *swapGuard, r *http.Request, st *store.Store, what, id string) {
	sec, err := n.stale.security(st, n)
	if err != nil && g.swapped() {
		writeError(g, http.StatusInternalServerError, "controller %s installed a snapshot while reading", n.id) // the guard's to turn
		return
	}
	if err != nil {
		n.log.Error("stale read: reading the tokens and revocations", "error", err)
		writeError(g, http.StatusInternalServerError, "reading this controller's tokens and revocations failed")
		return
	}
	// A Server of the store alone: no scheduler (nil: the handlers
	// report the stored state), no committer, no agents.
	s := &Server{cfg: n.cfg, st: st, sec: sec, log: n.log.Named("stale")}
	h := map[string]httprouter.Handle{"list": s.handleList, "get": s.handleGet, "logs": s.handleLogs}[what]
	s.auth(certs.RoleViewer, h)(g, r, httprouter.Params{{Key: "id", Value: id}})
}

// swapGuard turns the 500 of a stale read whose store was swapped under
// it (a snapshot installed meanwhile closes the old one), when it is
// the answer's first write: with hold set it writes nothing and records
// held, so that the read can be tried again on the new store
// (retryStale); without, it becomes a 503 with Retry-After: the read is
// worth retrying, and nothing is broken. A 500 after something was
// written (a streamed log cut short) cannot be taken back and passes.
type swapGuard struct {
	http.ResponseWriter
	swapped func() bool
	wait    func() bool // waits for the install to finish (hold)
	hold    bool        // hold a swap's 500 back for a retry
	held    bool        // a swap's 500 was held back: nothing was written
	retry   bool        // the 500 became a 503: its body is replaced
	wrote   bool        // a header went out
}

func (g *swapGuard) WriteHeader(code int) {
	if !g.wrote && code == http.StatusInternalServerError && g.swapped() {
		if g.hold {
			g.held = true
			return
		}
		g.retry = true
		g.Header().Set("Retry-After", "1")
		code = http.StatusServiceUnavailable
	}
	g.wrote = true
	g.ResponseWriter.WriteHeader(code)
}

func (g *swapGuard) Write(b []byte) (int, error) {
	if g.retry || g.held {
		return len(b), nil // the 500's body; finish writes the 503's
	}
	if !g.wrote {
		g.wrote = true // an implicit 200
	}
	return g.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes of
// a streamed log).
func (g *swapGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// finish writes the 503's body if the answer became one.
func (g *swapGuard) finish(node string) {
	if g.retry {
		_ = json.NewEncoder(g.ResponseWriter).Encode(api.Error{Error: "controller " + node + " installed a snapshot while reading; retry"})
	}
}

// staleSecurity is a follower's copy of the tokens and revocations for
// stale reads, read again when the store or its applied index changed.
type staleSecurity struct {
	mu      sync.Mutex
	st      *store.Store
	applied uint64
	sec     *security
}

func (c *staleSecurity) security(st *store.Store, n *Node) (*security, error) {
	applied, _ := n.fsm.Applied()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sec != nil && c.st == st && c.applied == applied {
		return c.sec, nil
	}
	// Read-only: no committer, no audit retention (the leader prunes).
	sec, err := loadSecurity(st, nil, n.log.Named("auth"), 0)
	if err != nil {
		return nil, err
	}
	c.st, c.applied, c.sec = st, applied, sec
	return sec, nil
}
