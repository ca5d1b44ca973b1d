package outchan

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/controller/store"
)

// Replica is what a follower needs of its node's replicated state: the
// store (it changes when a snapshot is installed) and its applied raft
// index, to wait for the round that dispatched a chunk's attempt
// (cluster.FSM).
type Replica interface {
	Store() *store.Store
	// ApplyOutput applies output commands to the live store, never to
	// one a snapshot install is replacing after it carried its output
	// over (cluster.FSM.ApplyOutput).
	ApplyOutput(cmds ...store.Command) ([]store.Result, error)
	Applied() (index, term uint64)
	WaitApplied(ctx context.Context, index uint64) error
}

// FollowerOptions configure a node's Follower.
type FollowerOptions struct {
	Replica Replica
	// Term returns the node's current raft term: a stream of a lower
	// term is refused.
	Term func() uint64
	// Appended, if set, is told of each chunk stored.
	Appended func(job uint64)
	// Committed, if set, is told of each job whose final end
	// (DurableEnd) moved (the hub rings the job's log followers).
	Committed func(job uint64)
	Logger    hclog.Logger
}

// Follower takes the output streams leaders open to this node: it
// stores each chunk once its attempt is applied here, syncs in groups
// and acknowledges the highest seq it holds durably.
type Follower struct {
	o   FollowerOptions
	log hclog.Logger

	mu      sync.Mutex
	st      stream // the last stream served (term and epoch)
	durable uint64 // its highest durable seq
	// ends are the jobs' final output ends the leaders sent (ends
	// frames), until Ended: valid across streams and terms, as an end a
	// leader counted is never cut off.
	ends map[uint64]uint64
	// cur ends the stream being served; done is closed when it returned.
	cur  context.CancelFunc
	done chan struct{}

	// ackMu orders acknowledgements and Fence: a stream acknowledges
	// holding it for reading, after checking fence; Fence raises fence
	// holding it for writing.
	ackMu sync.RWMutex
	// fence is the highest term a leader's gap fill asked this node
	// about (Fence): chunks of streams of lower terms are no longer
	// acknowledged.
	fence uint64
}

// Fence stops this node acknowledging chunks of streams of terms below
// term, and ends such a stream: a new leader's gap fill (OpEnd, with its
// term) is answered after it, so no deposed leader can count, once the
// answer is given, a byte the answer left out — it would acknowledge to
// an agent output the new leader never fills in. A stream of a lower
// term is refused from then on too, whatever this node's raft term.
func (f *Follower) Fence(term uint64) {
	f.ackMu.Lock()
	f.fence = max(f.fence, term)
	f.ackMu.Unlock()
	f.mu.Lock()
	cur, done := f.cur, f.done
	stale := cur != nil && f.st.term < term
	f.mu.Unlock()
	if stale {
		cur()
		<-done
	}
}

// fenced reports whether a stream of term may no longer acknowledge.
// The caller holds f.ackMu.
func (f *Follower) fenced(term uint64) bool { return term < f.fence }

// NewFollower returns a node's Follower; Serve runs it.
func NewFollower(o FollowerOptions) *Follower {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &Follower{o: o, log: o.Logger, ends: map[uint64]uint64{}}
}

// DurableEnd returns how far job's output is final as the leaders said
// (ends frames, wire.go): a running attempt's output up to there is
// never cut off, so this node may serve it. ok is false when no leader
// said (since Ended).
func (f *Follower) DurableEnd(job uint64) (end uint64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end, ok = f.ends[job]
	return end, ok
}

// Ended drops job's end: an attempt of it ended on this node (its
// round's TruncateLog is applied), and its LogBytes says the rest.
func (f *Follower) Ended(job uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ends, job)
}

// setEnds takes an ends frame's entries.
func (f *Follower) setEnds(ends []jobEnd) {
	f.mu.Lock()
	moved := ends[:0]
	for _, e := range ends {
		if e.end > f.ends[e.job] {
			f.ends[e.job] = e.end
			moved = append(moved, e)
		}
	}
	f.mu.Unlock()
	if f.o.Committed != nil {
		for _, e := range moved {
			f.o.Committed(e.job)
		}
	}
}

// Serve takes streams from ln until it is closed.
func (f *Follower) Serve(ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			f.mu.Lock()
			if f.cur != nil {
				f.cur()
			}
			f.mu.Unlock()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.serve(c); err != nil && !errors.Is(err, context.Canceled) {
				f.log.Debug("output stream ended", "error", err)
			}
		}()
	}
}

// serve runs one stream. A newer stream replaces it: one leader streams
// to a node at a time, and seqs are acknowledged in order.
func (f *Follower) serve(c net.Conn) error {
	defer c.Close()
	peer := ""
	if tc, ok := c.(*tls.Conn); ok {
		if _, name, err := certs.PeerIdentity(tc.ConnectionState()); err == nil {
			peer = name
		}
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fr := &frameReader{r: c}
	body, err := fr.expect(frameHello, "first frame")
	if err != nil {
		return err
	}
	st, leader, err := parseHello(body)
	if err != nil {
		return err
	}
	term := st.term
	if peer != "" && leader != peer {
		return fmt.Errorf("%w: hello names leader %q, the certificate %q", ErrProtocol, leader, peer)
	}
	if cur := f.o.Term(); term < cur {
		return fmt.Errorf("%w: %d from %s, this node is at %d", ErrLowerTerm, term, leader, cur)
	}
	f.ackMu.RLock()
	fenced := f.fenced(term)
	f.ackMu.RUnlock()
	if fenced {
		return fmt.Errorf("%w: %d from %s, a leader of a later term filled its gaps from this node", ErrLowerTerm, term, leader)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	defer func() {
		f.mu.Lock()
		if f.done == done {
			f.cur = nil // no stream now (Streaming)
		}
		f.mu.Unlock()
	}()
	f.mu.Lock()
	if f.cur != nil {
		f.cur()
		prev := f.done
		f.mu.Unlock()
		<-prev
		f.mu.Lock()
	}
	if st.before(f.st) {
		f.mu.Unlock()
		return fmt.Errorf("%w: %d (epoch %d) from %s after a stream of term %d (epoch %d)", ErrLowerTerm, term, st.epoch, leader, f.st.term, f.st.epoch)
	}
	if st != f.st {
		f.st, f.durable = st, 0
	}
	from := f.durable
	f.cur, f.done = cancel, done
	f.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()

	var wmu sync.Mutex
	ack := func(seq uint64) error {
		f.ackMu.RLock()
		defer f.ackMu.RUnlock()
		if f.fenced(term) {
			return fmt.Errorf("%w: a leader of a later term filled its gaps from this node; no more acknowledgements for term %d", ErrLowerTerm, term)
		}
		wmu.Lock()
		defer wmu.Unlock()
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write(appendAck(nil, st, seq))
		return err
	}
	if err := ack(from); err != nil {
		return err
	}
	_ = c.SetDeadline(time.Time{})

	// The syncer: fsync whenever chunks were stored since the last one,
	// then acknowledge the last seq stored before it began.
	var (
		smu     sync.Mutex
		stored  = from
		dirty   = make(chan struct{}, 1)
		syncErr = make(chan error, 1)
	)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-dirty:
			}
			smu.Lock()
			seq := stored
			smu.Unlock()
			err := f.o.Replica.Store().SyncOutput()
			if err == nil {
				f.mu.Lock()
				if f.st == st {
					f.durable = max(f.durable, seq)
				}
				f.mu.Unlock()
				err = ack(seq)
			}
			if err != nil {
				syncErr <- err
				cancel()
				return
			}
		}
	}()

	next := from + 1
	var ends []jobEnd
	for {
		typ, body, err := fr.read()
		if err != nil {
			select {
			case e := <-syncErr:
				return e
			default:
			}
			return err
		}
		if typ == frameEnds {
			if ends, err = parseEnds(body, ends); err != nil {
				return err
			}
			// Not from a deposed leader once this node knows a newer
			// term: the new one's gap fill may not have seen the bytes
			// it counted since.
			if term >= f.o.Term() {
				f.setEnds(ends)
			}
			continue
		}
		if typ != frameChunk {
			return fmt.Errorf("%w: frame type %d from the leader", ErrProtocol, typ)
		}
		ch, err := parseChunk(body)
		if err != nil {
			return err
		}
		if ch.seq != next {
			return fmt.Errorf("%w: chunk seq %d, expected %d", ErrProtocol, ch.seq, next)
		}
		if err := f.store(ctx, &ch); err != nil {
			return err
		}
		next++
		smu.Lock()
		stored = ch.seq
		smu.Unlock()
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
}

// Streaming reports whether a leader's stream is being served now: this
// node's copy of running attempts' output grows as the leader's does.
// Not while no leader streams to it (an election, this node leads) or
// after the leader dropped it for falling out of its ring.
func (f *Follower) Streaming() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur != nil
}

// store writes a chunk once the round that dispatched its attempt is
// applied here (store.ErrNotYet: wait for the next applied index). A
// chunk of an attempt that ended here is cut at its end or dropped
// (store.ErrStale): the round that ended it decided its bytes.
func (f *Follower) store(ctx context.Context, c *chunk) error {
	cmd := &store.ReplicaOutput{Job: c.job, Attempt: c.attempt, Chunk: store.Chunk{Offset: c.offset, Stream: c.stream, Data: c.data, Time: time.Unix(0, c.time).UTC()}}
	for {
		idx, _ := f.o.Replica.Applied()
		res, err := f.o.Replica.ApplyOutput(cmd)
		if err != nil {
			return err
		}
		switch err := res[0].Err; {
		case err == nil:
			if f.o.Appended != nil {
				f.o.Appended(c.job)
			}
			return nil
		case errors.Is(err, store.ErrStale):
			return nil
		case errors.Is(err, store.ErrNotYet):
			if err := f.o.Replica.WaitApplied(ctx, idx+1); err != nil {
				return err
			}
		default:
			return err
		}
	}
}
