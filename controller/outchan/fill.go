package outchan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"jobsuite/controller/store"
)

// Gap fill (design note 8.4) uses two requests on the cluster port's
// request/answer RPC (ALPNCluster), served by every node:
const (
	// OpEnd asks a node for the end of its durable output of an attempt.
	OpEnd = "output-end"
	// OpRead asks a node for a range of a job's stored output.
	OpRead = "output-read"
)

// readMax bounds one OpRead answer's data (it travels as base64 JSON
// in an RPC answer of at most 1 MiB).
const readMax = 512 << 10

// EndRequest and EndAnswer are OpEnd's body and answer.
type EndRequest struct {
	Job      uint64 `json:"job"`
	Attempt  uint32 `json:"attempt"`
	LogStart uint64 `json:"log_start"`
	// Term is the asking leader's: the node first stops acknowledging
	// chunks of streams of lower terms (Follower.Fence), so a deposed
	// leader cannot count, after this answer, bytes the answer left
	// out. 0 from a controller of an earlier release.
	Term uint64 `json:"term,omitempty"`
}

// EndAnswer: End is where the node's synced output of the attempt ends
// (LogStart when it holds none of it).
type EndAnswer struct {
	End uint64 `json:"end"`
}

// ReadRequest and ReadAnswer are OpRead's body and answer: the chunks of
// [From, To), at most readMax bytes of them.
type ReadRequest struct {
	Job  uint64 `json:"job"`
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// ReadAnswer holds the chunks read, in offset order.
type ReadAnswer struct {
	Chunks []store.Chunk `json:"chunks"`
}

// AttemptEnd is this node's answer to OpEnd: it syncs its store first,
// so the end it names is durable here, then reads where the attempt's
// output ends: the end of what it holds from LogStart on without a hole,
// but never past the attempt's
// recorded end once it ended, and LogStart when the store does not hold
// the attempt (then it has none of its output either: chunks are stored
// only once their attempt is).
func AttemptEnd(st *store.Store, r EndRequest) (EndAnswer, error) {
	if err := st.SyncOutput(); err != nil {
		return EndAnswer{}, err
	}
	j, err := st.Get(r.Job)
	if errors.Is(err, store.ErrNotFound) {
		return EndAnswer{End: r.LogStart}, nil
	}
	if err != nil {
		return EndAnswer{}, err
	}
	n := int(r.Attempt)
	if n == 0 || n > len(j.Attempts) {
		return EndAnswer{End: r.LogStart}, nil
	}
	end, err := st.LogEnd(r.Job)
	if err != nil {
		return EndAnswer{}, err
	}
	if n < len(j.Attempts) {
		end = min(end, j.Attempts[n].LogStart)
	} else if j.Attempts[n-1].Outcome != "" || j.State.Terminal() {
		end = min(end, j.LogBytes)
	}
	// Only what it holds without a hole counts (a node that missed some
	// chunks holds later ones).
	if start, _, hole, err := st.LogHole(r.Job, r.LogStart, end); err != nil {
		return EndAnswer{}, err
	} else if hole {
		end = start
	}
	return EndAnswer{End: max(end, r.LogStart)}, nil
}

// ReadRange is this node's answer to OpRead.
func ReadRange(st *store.Store, r ReadRequest) (ReadAnswer, error) {
	if r.To <= r.From {
		return ReadAnswer{}, nil
	}
	chunks, err := st.ReadLog(r.Job, r.From, int(min(r.To-r.From, readMax)))
	if err != nil {
		return ReadAnswer{}, err
	}
	return ReadAnswer{Chunks: chunks}, nil
}

// Handlers returns the handlers of OpEnd and OpRead for a node whose
// store st returns, in the shape of cluster.Handler. fence, if set, is
// the node's Follower.Fence, called with an OpEnd's term before it is
// answered.
func Handlers(st func() *store.Store, fence func(term uint64)) map[string]func(ctx context.Context, peer string, body json.RawMessage) (any, error) {
	return map[string]func(context.Context, string, json.RawMessage) (any, error){
		OpEnd: func(_ context.Context, _ string, body json.RawMessage) (any, error) {
			var r EndRequest
			if err := json.Unmarshal(body, &r); err != nil {
				return nil, err
			}
			if fence != nil && r.Term > 0 {
				fence(r.Term)
			}
			return AttemptEnd(st(), r)
		},
		OpRead: func(_ context.Context, _ string, body json.RawMessage) (any, error) {
			var r ReadRequest
			if err := json.Unmarshal(body, &r); err != nil {
				return nil, err
			}
			return ReadRange(st(), r)
		},
	}
}

// Caller sends a request to a peer's cluster address (cluster.Identity.Call).
type Caller func(ctx context.Context, addr, op string, body, out any) error

// Fill makes attempt's output durable on a quorum as far as any quorum
// may have acknowledged it, before this term's leader takes the
// attempt's stream (or loses the attempt): it asks every peer for its
// end of the attempt's output and waits until peers that with itself
// form a quorum answered; the largest end covers every byte a previous
// leader acknowledged (any two quorums intersect). It fetches what it
// lacks of that from a peer that has it, then appends the range from the
// smallest end heard (below it, every node that answered holds the
// bytes durably, a quorum) to the largest through the term's channel
// and waits until a quorum holds it. It returns that end; bytes past it
// were never acknowledged, and the agent sends them again.
func (l *Leader) Fill(ctx context.Context, call Caller, job uint64, attempt uint32, logStart uint64) (uint64, error) {
	st := l.o.Store()
	if l.o.Fence != nil {
		l.o.Fence(l.st.term) // this node may still take a deposed leader's stream
	}
	own, err := AttemptEnd(st, EndRequest{Job: job, Attempt: attempt, LogStart: logStart, Term: l.st.term})
	if err != nil {
		return 0, err
	}
	peers, q := l.o.Peers()
	type answer struct {
		peer Peer
		end  uint64
		err  error
	}
	answers := make(chan answer, len(peers))
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n := 0
	for _, p := range peers {
		if p.ID == l.o.Self {
			continue
		}
		n++
		go func() {
			var a EndAnswer
			err := call(actx, p.Addr, OpEnd, EndRequest{Job: job, Attempt: attempt, LogStart: logStart, Term: l.st.term}, &a)
			answers <- answer{p, a.End, err}
		}()
	}
	lo, hi, holder := own.End, own.End, Peer{}
	heard := 1
	for i := 0; i < n && heard < q; i++ {
		a := <-answers
		if a.err != nil {
			continue
		}
		heard++
		lo = min(lo, a.end)
		if a.end > hi {
			hi, holder = a.end, a.peer
		}
	}
	if heard < q {
		return 0, fmt.Errorf("%w: gap fill of job %d attempt %d heard %d of %d", ErrNoQuorum, job, attempt, heard, q)
	}
	// Fetch what this node lacks, store it here through the channel
	// (which also sends it to the followers).
	var last uint64
	for pos := own.End; pos < hi; {
		var ra ReadAnswer
		if err := call(ctx, holder.Addr, OpRead, ReadRequest{Job: job, From: pos, To: hi}, &ra); err != nil {
			return 0, err
		}
		if len(ra.Chunks) == 0 {
			return 0, fmt.Errorf("gap fill of job %d: %s has nothing at %d (said it ends at %d)", job, holder.ID, pos, hi)
		}
		for _, c := range ra.Chunks {
			if c.Offset != pos {
				return 0, fmt.Errorf("gap fill of job %d: %s sent a chunk at %d, expected %d", job, holder.ID, c.Offset, pos)
			}
			data := c.Data[:min(uint64(len(c.Data)), hi-pos)]
			if last, err = l.Append(job, attempt, pos, c.Stream, c.Time, data); err != nil {
				return 0, err
			}
			pos += uint64(len(data))
		}
	}
	// What the others may lack, from lo to what this node had already.
	for pos := lo; pos < own.End; {
		chunks, err := st.ReadLog(job, pos, int(min(own.End-pos, readMax)))
		if err != nil {
			return 0, err
		}
		if len(chunks) == 0 {
			return 0, fmt.Errorf("gap fill of job %d: own log has nothing at %d (ends at %d)", job, pos, own.End)
		}
		for _, c := range chunks {
			if c.Offset != pos {
				return 0, fmt.Errorf("gap fill of job %d: own log has a hole at %d", job, pos)
			}
			if last, err = l.Append(job, attempt, pos, c.Stream, c.Time, c.Data); err != nil {
				return 0, err
			}
			pos += uint64(len(c.Data))
		}
	}
	if last > 0 {
		if err := l.WaitDurable(ctx, last); err != nil {
			return 0, err
		}
	}
	return hi, nil
}

// fill is one attempt's gap fill in a term: the first caller runs it,
// later ones wait for it and share its result.
type fill struct {
	attempt uint32
	done    chan struct{}
	end     uint64
	err     error
}

// FillOnce is Fill, run once per attempt in the term: the term's sweep
// over running attempts and a reopened job stream share one fill. A
// fill that failed is run again by the next caller.
func (l *Leader) FillOnce(ctx context.Context, call Caller, job uint64, attempt uint32, logStart uint64) (uint64, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	f := l.fills[job]
	if f != nil && f.attempt == attempt {
		l.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if f.err == nil {
			return f.end, nil
		}
		return l.FillOnce(ctx, call, job, attempt, logStart)
	}
	f = &fill{attempt: attempt, done: make(chan struct{})}
	l.fills[job] = f
	l.mu.Unlock()
	f.end, f.err = l.Fill(ctx, call, job, attempt, logStart)
	if f.err != nil {
		l.mu.Lock()
		if l.fills[job] == f {
			delete(l.fills, job)
		}
		l.mu.Unlock()
	}
	close(f.done)
	return f.end, f.err
}
