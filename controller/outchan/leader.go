package outchan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// DefaultRingBytes is how much of the newest output a Leader keeps to
// resend to a follower that reconnects.
const DefaultRingBytes = 64 << 20

// redialWait is how long a sender waits before dialling a follower
// again after its stream broke.
const redialWait = 200 * time.Millisecond

// Peer is another voter of the cluster, as the output channel dials it.
type Peer struct {
	ID   string
	Addr string // cluster address
}

// LeaderOptions configure one term's Leader.
type LeaderOptions struct {
	Term uint64
	Self string // this node's ID
	// Store returns the node's store (it changes when a snapshot is
	// installed).
	Store func() *store.Store
	// Dial opens a stream to a peer's cluster address (cluster.ALPNOutput,
	// or ALPNOutputV1 for a node of an earlier release).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Legacy, if set, reports whether the follower at the far end of a
	// stream Dial opened speaks the stream's first version, which has no
	// ends frames (wire.go): it gets none.
	Legacy func(net.Conn) bool
	// Peers returns the other voters and the quorum size of the whole
	// cluster (2 of 3, 3 of 5); it is asked at the start and every
	// second.
	Peers func() ([]Peer, int)
	// Fence, if set, is this node's Follower.Fence: a gap fill first
	// stops this node acknowledging a deposed leader's chunks, as it
	// asks the peers to (EndRequest.Term).
	Fence func(term uint64)
	// Durable is told, in seq order, of each chunk once a quorum holds
	// it durably: its job, attempt and end (an offset in the job's
	// log). It returns whether the end counts (the attempt is still
	// current: the scheduler took it, so the attempt's LogBytes will be
	// at least end); the ends that count go to the followers (ends
	// frames, wire.go), whose readers serve output up to them. It runs
	// under the Leader's lock: it must not call the Leader.
	Durable func(job uint64, attempt uint32, end uint64) bool
	// Behind, if set, is told of a follower that fell out of the ring
	// (it no longer counts for the quorum this term).
	Behind func(peer string)
	// RingBytes is DefaultRingBytes when 0.
	RingBytes int
	Logger    hclog.Logger
}

// Leader is the output channel of one term on the leader: it stores
// each chunk an agent sends (Append), numbers it, streams it to every
// follower and learns which seq a quorum holds durably.
type Leader struct {
	o   LeaderOptions
	log hclog.Logger
	st  stream // its term and epoch (wire.go)

	mu      sync.Mutex
	closed  bool
	seq     uint64 // last seq given
	total   uint64 // bytes given this term (through seq)
	ring    []chunk
	ringLen int // bytes of data in ring
	// pending are the chunks not yet on a quorum, without their data.
	pending []chunk
	own     uint64 // own synced seq
	ownSum  uint64 // bytes of the term through own
	peers   map[string]*sender
	quorum  int
	durable uint64           // quorum-durable seq
	changed chan struct{}    // closed and replaced when durable moves or the Leader closes
	grew    chan struct{}    // closed and replaced when a chunk is appended or the Leader closes
	dirty   chan struct{}    // 1-buffered: the syncer has work
	fills   map[uint64]*fill // gap fills of this term, by job
	// ends are the jobs' final output ends counted this term (Durable
	// said so), until Forget; each sender sends those in its dirty set.
	ends   map[uint64]uint64
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// sender streams the term's chunks to one follower.
type sender struct {
	peer   Peer
	acked  uint64 // the follower's durable seq, as it last said
	behind bool   // fell out of the ring: no longer counted (repair)
	sent   uint64 // bytes sent in this term
	// ackedSum is the bytes of the term through acked; unacked holds
	// the seq and that sum of each chunk sent and not acknowledged yet,
	// in seq order, for the acks to come (Lag's bytes).
	ackedSum uint64
	unacked  []seqSum
	// dirty are the jobs whose end (Leader.ends) moved since this
	// follower's stream last sent it.
	dirty  map[uint64]struct{}
	cancel context.CancelFunc
}

// nextEpoch numbers the Leaders this process makes (wire.go, stream).
var nextEpoch atomic.Uint64

// seqSum is a chunk's seq and the bytes of the term through it.
type seqSum struct{ seq, sum uint64 }

// NewLeader returns the Leader of a term; Run starts it.
func NewLeader(o LeaderOptions) *Leader {
	if o.RingBytes <= 0 {
		o.RingBytes = DefaultRingBytes
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Durable == nil {
		o.Durable = func(uint64, uint32, uint64) bool { return true }
	}
	return &Leader{
		o: o, log: o.Logger, st: stream{o.Term, nextEpoch.Add(1)}, peers: map[string]*sender{}, quorum: 1,
		changed: make(chan struct{}), grew: make(chan struct{}), dirty: make(chan struct{}, 1),
		fills: map[uint64]*fill{}, ends: map[uint64]uint64{},
	}
}

// Run syncs the leader's own store and streams to the followers until
// ctx ends; then the Leader is closed: Append and the waits fail with
// ErrClosed.
func (l *Leader) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	l.mu.Lock()
	l.cancel = cancel
	l.mu.Unlock()
	l.refreshPeers(ctx)
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.syncLoop(ctx) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.close()
			l.wg.Wait()
			return
		case <-t.C:
			l.refreshPeers(ctx)
		}
	}
}

func (l *Leader) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.changed)
	close(l.grew)
	for _, s := range l.peers {
		s.cancel()
	}
}

// refreshPeers starts a sender for each new voter and stops those of
// voters gone.
func (l *Leader) refreshPeers(ctx context.Context) {
	peers, q := l.o.Peers()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.quorum = max(q, 1)
	seen := map[string]bool{}
	for _, p := range peers {
		if p.ID == l.o.Self {
			continue
		}
		seen[p.ID] = true
		if s := l.peers[p.ID]; s != nil && s.peer.Addr == p.Addr {
			continue
		} else if s != nil {
			s.cancel()
		}
		sctx, cancel := context.WithCancel(ctx)
		s := &sender{peer: p, cancel: cancel}
		l.peers[p.ID] = s
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.send(sctx, s) }()
	}
	for id, s := range l.peers {
		if !seen[id] {
			s.cancel()
			delete(l.peers, id)
		}
	}
	l.recompute()
}

// Append stores a chunk of attempt's output at offset (in the job's
// log) in the leader's own store and queues it to every follower. It
// returns the chunk's seq: the chunk is on a quorum once WaitDurable of
// it returns. A chunk of an attempt the store holds ended (the end was
// applied meanwhile) is refused with store.ErrStale; one the store does
// not hold yet with store.ErrNotYet. data is kept: the caller must not
// modify it.
func (l *Leader) Append(job uint64, attempt uint32, offset uint64, stream uint8, t time.Time, data []byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	c := chunk{job: job, attempt: attempt, offset: offset, stream: stream, time: t.UnixNano(), data: data}
	res, err := l.o.Store().Apply(&store.ReplicaOutput{Job: job, Attempt: attempt, Chunk: store.Chunk{Offset: offset, Stream: stream, Data: data, Time: t}})
	if err != nil {
		return 0, err
	}
	if err := res[0].Err; err != nil {
		return 0, err
	}
	l.seq++
	l.total += uint64(len(data))
	c.seq, c.sum = l.seq, l.total
	l.ring = append(l.ring, c)
	l.ringLen += len(data)
	for l.ringLen > l.o.RingBytes && len(l.ring) > 1 {
		l.ringLen -= len(l.ring[0].data)
		l.ring[0] = chunk{}
		l.ring = l.ring[1:]
	}
	l.pending = append(l.pending, chunk{seq: c.seq, job: job, attempt: attempt, offset: offset, data: data[:0:0]})
	l.pending[len(l.pending)-1].offset = c.end() // pending keeps the end
	close(l.grew)
	l.grew = make(chan struct{})
	select {
	case l.dirty <- struct{}{}:
	default:
	}
	return c.seq, nil
}

// WaitDurable waits until a quorum holds every chunk up to seq durably.
func (l *Leader) WaitDurable(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		if l.durable >= seq {
			l.mu.Unlock()
			return nil
		}
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Durable returns the quorum-durable seq and the last seq given.
func (l *Leader) Durable() (durable, last uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durable, l.seq
}

// Forget drops job's counted end: its attempt ended (the round that
// cut its log at LogBytes is applied), and the followers learn of the
// end from that round.
func (l *Leader) Forget(job uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.ends[job]; !ok {
		return
	}
	delete(l.ends, job)
	for _, s := range l.peers {
		delete(s.dirty, job)
	}
}

// Lag returns, for each follower, how far behind the term's output it
// acknowledged: the chunks given that it has not acknowledged as
// durable, the bytes the leader holds durably (synced) that it has not,
// and whether it fell out of the ring.
func (l *Leader) Lag() map[string]PeerLag {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]PeerLag, len(l.peers))
	for id, s := range l.peers {
		out[id] = PeerLag{Seq: l.seq - min(s.acked, l.seq), Bytes: l.ownSum - min(s.ackedSum, l.ownSum), Behind: s.behind}
	}
	return out
}

// PeerLag is one follower's lag behind the term's output.
type PeerLag struct {
	Seq    uint64 // chunks given but not acknowledged durable
	Bytes  uint64 // bytes the leader synced that it has not acknowledged
	Behind bool   // fell out of the ring: not counted for the quorum
}

// recompute moves the quorum-durable seq. The caller holds l.mu.
func (l *Leader) recompute() {
	acks := make([]uint64, 0, len(l.peers))
	for _, s := range l.peers {
		if !s.behind {
			acks = append(acks, s.acked)
		}
	}
	q := min(quorumSeq(l.own, acks, l.quorum), l.seq)
	if q <= l.durable || l.closed {
		return
	}
	l.durable = q
	n := 0
	for n < len(l.pending) && l.pending[n].seq <= q {
		p := &l.pending[n]
		if l.o.Durable(p.job, p.attempt, p.offset) && p.offset > l.ends[p.job] {
			l.ends[p.job] = p.offset
			for _, s := range l.peers {
				if s.dirty != nil {
					s.dirty[p.job] = struct{}{}
				}
			}
		}
		n++
	}
	l.pending = append(l.pending[:0:0], l.pending[n:]...)
	close(l.changed)
	l.changed = make(chan struct{})
}

// syncLoop fsyncs the leader's own store whenever chunks were appended
// since the last sync, and counts them as its own durable seq. Syncs run
// back to back while output arrives: each covers every chunk appended
// before it began.
func (l *Leader) syncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.dirty:
		}
		l.mu.Lock()
		seq, sum := l.seq, l.total
		l.mu.Unlock()
		if err := l.o.Store().SyncOutput(); err != nil {
			l.log.Error("output channel: syncing the store failed; output is not acknowledged", "error", err)
			return
		}
		l.mu.Lock()
		l.own = max(l.own, seq)
		l.ownSum = max(l.ownSum, sum)
		l.recompute()
		l.mu.Unlock()
	}
}

// send streams the term's chunks to one follower, dialling it again
// whenever the stream breaks, until ctx ends or the follower falls out
// of the ring.
func (l *Leader) send(ctx context.Context, s *sender) {
	for ctx.Err() == nil {
		err := l.stream(ctx, s)
		if errors.Is(err, errBehind) {
			l.log.Warn("output channel: follower fell behind the ring; it no longer counts for the quorum this term", "peer", s.peer.ID)
			if l.o.Behind != nil {
				l.o.Behind(s.peer.ID)
			}
			return
		}
		if ctx.Err() == nil {
			l.log.Debug("output stream to follower broke", "peer", s.peer.ID, "error", err)
		}
		t := time.NewTimer(redialWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

var errBehind = errors.New("follower behind the ring")

// stream runs one connection to a follower.
func (l *Leader) stream(ctx context.Context, s *sender) error {
	defer func() {
		// Between streams nothing is kept for it: the next sends every
		// end.
		l.mu.Lock()
		s.dirty = nil
		l.mu.Unlock()
	}()
	conn, err := l.o.Dial(ctx, s.peer.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(appendHello(nil, l.st, l.o.Self)); err != nil {
		return err
	}
	fr := &frameReader{r: conn}
	body, err := fr.expect(frameAck, "answer to hello")
	if err != nil {
		return err
	}
	st, from, err := parseAck(body)
	if err != nil {
		return err
	}
	if st != l.st {
		return fmt.Errorf("%w: follower answered for term %d epoch %d, not %d/%d", ErrLowerTerm, st.term, st.epoch, l.st.term, l.st.epoch)
	}
	_ = conn.SetDeadline(time.Time{})
	l.ackFrom(s, from)
	l.mu.Lock()
	s.dirty = nil
	if l.o.Legacy == nil || !l.o.Legacy(conn) {
		s.dirty = make(map[uint64]struct{}, len(l.ends)) // a new stream: every end
		for job := range l.ends {
			s.dirty[job] = struct{}{}
		}
	}
	l.mu.Unlock()

	readErr := make(chan error, 1)
	go func() {
		for {
			typ, body, err := fr.read()
			if err == nil && typ != frameAck {
				err = fmt.Errorf("%w: frame type %d from a follower", ErrProtocol, typ)
			}
			var st stream
			var d uint64
			if err == nil {
				st, d, err = parseAck(body)
			}
			if err == nil && st != l.st {
				err = fmt.Errorf("%w: ack for term %d epoch %d", ErrLowerTerm, st.term, st.epoch)
			}
			if err != nil {
				readErr <- err
				_ = conn.Close()
				return
			}
			l.ackFrom(s, d)
		}
	}()

	next := from + 1
	var buf []byte
	var ends []jobEnd
	for {
		l.mu.Lock()
		for next > l.seq && len(s.dirty) == 0 && !l.closed {
			grew, changed := l.grew, l.changed
			l.mu.Unlock()
			select {
			case <-grew:
			case <-changed:
			case err := <-readErr:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
			l.mu.Lock()
		}
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		buf = buf[:0]
		// The ends counted since the last frame. One may pass the chunks
		// sent to this follower (a quorum acknowledged them without it):
		// its readers stop where its copy does.
		for len(s.dirty) > 0 {
			ends = ends[:0]
			for job := range s.dirty {
				delete(s.dirty, job)
				if end, ok := l.ends[job]; ok {
					ends = append(ends, jobEnd{job, end})
				}
				if len(ends) == maxEnds {
					break
				}
			}
			if len(ends) > 0 {
				buf = appendEnds(buf, ends)
			}
		}
		if next > l.seq {
			l.mu.Unlock()
			if _, err := conn.Write(buf); err != nil {
				return err
			}
			continue
		}
		if len(l.ring) == 0 || next < l.ring[0].seq {
			s.behind = true
			l.recompute()
			l.mu.Unlock()
			return errBehind
		}
		i := int(next - l.ring[0].seq)
		n := 0
		for ; i < len(l.ring) && len(buf) < 1<<20; i++ {
			c := &l.ring[i]
			buf = appendChunk(buf, c)
			n++
			s.sent += uint64(len(c.data))
			// A chunk sent again after a reconnect is queued once.
			if c.seq > s.acked && (len(s.unacked) == 0 || c.seq > s.unacked[len(s.unacked)-1].seq) {
				s.unacked = append(s.unacked, seqSum{c.seq, c.sum})
			}
		}
		l.mu.Unlock()
		if _, err := conn.Write(buf); err != nil {
			return err
		}
		next += uint64(n)
	}
}

// ackFrom records a follower's durable seq.
func (l *Leader) ackFrom(s *sender, durable uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if durable > s.acked {
		s.acked = min(durable, l.seq)
		n := 0
		for n < len(s.unacked) && s.unacked[n].seq <= s.acked {
			s.ackedSum = s.unacked[n].sum
			n++
		}
		s.unacked = s.unacked[:copy(s.unacked, s.unacked[n:])]
		l.recompute()
	}
}
