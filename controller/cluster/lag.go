package cluster

import (
	"context"
	"sort"
	"sync"
	"time"

	"jobsuite/controller/clock"
)

// The follower-lag bound (design note 3.2). hashicorp/raft has no flow
// control: the leader commits with its fastest follower, and a slower
// one falls behind without bound. Nothing is lost, but a failover pays
// for the backlog: the new leader must apply it, or bring its only live
// follower up to date, before anything commits in its term (measured:
// a follower 12,764 entries behind delayed the first commit by 8 s). So
// the leader's Log holds new rounds while the slowest live voter is
// further behind its last index than the bound, and admission slows to
// what the cluster sustains instead of building a backlog.
//
// The leader learns how far each voter got from the voter itself
// (Report: its applied and last index; the controller's Node asks each
// voter over the cluster port every LagPoll). A voter counts only while
// it is live: heard from in the last LagLive, and — while it is behind
// — having applied something in the last LagLive. So a dead voter, one
// cut off, and one stuck (its store failed, or it is installing a
// snapshot, during which its applied index stands still) never stop the
// cluster; they are caught up by raft as before.
//
// How far behind a voter is: the leader's last index (plus the entries
// handed to raft but not yet known committed) minus the voter's applied
// index, and the bytes of the entries this leader proposed past that
// index. Both are overestimates — a report is up to LagPoll old, and
// the voter has applied more since — so the bound errs towards holding,
// and the actual lag stays within the bound plus the rounds in flight.
// Entries of earlier terms (a new leader's backlog) count in entries,
// not in bytes: this leader saw only its own proposals' sizes.

// Defaults of the bound's settings (Config.MaxFollowerLag…).
const (
	DefaultMaxLagEntries = 2000
	DefaultMaxLagBytes   = 64 << 20
	// LagLive is how recently a voter must have been heard from (and,
	// while behind, have applied something) to be waited for.
	LagLive = 2 * time.Second
	// LagPoll is how often the leader asks each voter how far it got.
	LagPoll = 100 * time.Millisecond
)

// maxMarks bounds the size marks kept (one per committed entry of this
// term that a voter may still be behind): past it the oldest half goes,
// and a voter behind them counts from the oldest kept.
const maxMarks = 1 << 16

// LagBound is the admission rule of the follower-lag bound. Its zero
// value is not usable: NewLagBound. Its methods are safe for concurrent
// use; Wait is meant for one caller at a time (the committer's applier).
type LagBound struct {
	maxEntries uint64 // 0: no bound in entries
	maxBytes   uint64 // 0: no bound in bytes
	clock      clock.Clock

	mu      sync.Mutex
	peers   map[string]*peerLag
	wake    chan struct{} // closed and replaced when a hold may have ended
	total   uint64        // bytes proposed since Reset
	pending uint64        // entries proposed, not known committed yet
	marks   []mark        // committed entries' cumulative bytes, by index
	held    time.Duration // time Wait held rounds, over the bound's life
	since   time.Time     // when the hold in progress began; zero: none
	holds   uint64        // holds begun
}

// peerLag is what the leader last heard from one voter.
type peerLag struct {
	applied, last uint64
	heard         time.Time // last report
	progressed    time.Time // last report whose applied index moved
	// contact is how long before heard the voter had last heard from
	// the leader, as it said (ReportContact); -1 before it said.
	contact time.Duration
}

// mark says that the entries up to index came to cum bytes of this
// term's proposals.
type mark struct{ index, cum uint64 }

// NewLagBound returns a bound of maxEntries entries and maxBytes bytes
// (0: that one is off) on clock c.
func NewLagBound(maxEntries, maxBytes uint64, c clock.Clock) *LagBound {
	return &LagBound{maxEntries: maxEntries, maxBytes: maxBytes, clock: c, peers: map[string]*peerLag{}, wake: make(chan struct{})}
}

// Off reports whether neither bound is set.
func (b *LagBound) Off() bool { return b == nil || (b.maxEntries == 0 && b.maxBytes == 0) }

// Reset forgets the voters and the sizes of proposals: a new term of
// leadership starts from nothing known (so nobody is waited for until
// it reports). The time held is kept.
func (b *LagBound) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.peers)
	b.total, b.pending, b.marks = 0, 0, nil
	b.notify()
}

// Report records that voter peer has applied up to applied and holds
// its log up to last.
func (b *LagBound) Report(peer string, applied, last uint64) {
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[peer]
	if p == nil {
		p = &peerLag{progressed: now, contact: -1}
		b.peers[peer] = p
	}
	if applied > p.applied {
		p.progressed = now
	}
	p.applied, p.last, p.heard = applied, last, now
	b.trim()
	b.notify()
}

// Forget drops a voter that left the configuration.
func (b *LagBound) Forget(peer string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.peers, peer)
	b.notify()
}

// Proposed records an entry of size bytes handed to raft; Committed is
// to be called with its index and the returned count once it committed.
func (b *LagBound) Proposed(size int) (cum uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += uint64(size)
	b.pending++
	return b.total
}

// Committed records that the entry Proposed returned cum for is at
// index and committed. Calls come in index order (raft completes its
// futures in log order).
func (b *LagBound) Committed(index, cum uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending > 0 {
		b.pending--
	}
	b.notify()
	if n := len(b.marks); n > 0 && b.marks[n-1].index >= index {
		return // a Reset came between: not this term's
	}
	if len(b.marks) >= maxMarks {
		b.marks = append(b.marks[:0], b.marks[len(b.marks)/2:]...)
	}
	b.marks = append(b.marks, mark{index, cum})
}

// Abandoned records that an entry Proposed will never be Committed (its
// future failed).
func (b *LagBound) Abandoned() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending > 0 {
		b.pending--
	}
	b.notify()
}

// trim drops the marks no live voter is behind any more, keeping the
// last one at or below the slowest's applied index. The caller holds
// b.mu.
func (b *LagBound) trim() {
	if len(b.marks) < 2 || len(b.peers) == 0 {
		return
	}
	low := ^uint64(0)
	for _, p := range b.peers {
		low = min(low, p.applied)
	}
	i := sort.Search(len(b.marks), func(i int) bool { return b.marks[i].index > low }) - 1
	if i > 0 {
		b.marks = append(b.marks[:0], b.marks[i:]...)
	}
}

// bytesAfter is the bytes of this term's proposals past index: all of
// them when index is before the oldest mark. The caller holds b.mu.
func (b *LagBound) bytesAfter(index uint64) uint64 {
	i := sort.Search(len(b.marks), func(i int) bool { return b.marks[i].index > index }) - 1
	if i < 0 {
		return b.total
	}
	return b.total - b.marks[i].cum
}

// notify wakes a Wait. The caller holds b.mu.
func (b *LagBound) notify() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// Lag is one voter's lag as the leader sees it.
type Lag struct {
	Peer    string
	Entries uint64 // the leader's last index minus the voter's applied index
	Bytes   uint64 // of this term's proposals past the voter's applied index
	Live    bool   // it counts for the bound (heard from, and progressing)
	// LastContact is how long ago, at most, the voter last heard from
	// the leader: what it said in its last report plus that report's
	// age, so it grows while the voter does not answer. -1: it never
	// said.
	LastContact time.Duration
}

// ReportContact records, with a Report of the same peer, how long ago
// the voter said it last heard from the leader (raft's last contact on
// the voter's side, as Consul's autopilot reads it).
func (b *LagBound) ReportContact(peer string, ago time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.peers[peer]; p != nil {
		p.contact = max(ago, 0)
	}
}

// Lags returns each reported voter's lag behind last (the leader's last
// index), sorted by peer.
func (b *LagBound) Lags(last uint64) []Lag {
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Lag, 0, len(b.peers))
	for id, p := range b.peers {
		l := Lag{Peer: id, Bytes: b.bytesAfter(p.applied), Live: b.live(p, now), LastContact: -1}
		if p.contact >= 0 {
			l.LastContact = p.contact + now.Sub(p.heard)
		}
		if last > p.applied {
			l.Entries = last - p.applied
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// Held returns the time Wait held rounds, and how many holds began.
func (b *LagBound) Held() (time.Duration, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.held
	if !b.since.IsZero() {
		d += b.clock.Now().Sub(b.since)
	}
	return d, b.holds
}

// live reports whether p is heard from and, if behind, progressing
// at now. The caller holds b.mu.
func (b *LagBound) live(p *peerLag, now time.Time) bool {
	return now.Sub(p.heard) <= LagLive && now.Sub(p.progressed) <= LagLive
}

// over decides the rule at now for a leader whose last index is last:
// hold is true while a live voter is past the bound; then until is the
// earliest time one of the voters holding it stops being live (a later
// report may release it sooner). The caller holds b.mu.
func (b *LagBound) over(now time.Time, last uint64) (hold bool, until time.Time) {
	last += b.pending
	for _, p := range b.peers {
		if !b.live(p, now) {
			continue
		}
		var entries uint64
		if last > p.applied {
			entries = last - p.applied
		}
		if (b.maxEntries == 0 || entries <= b.maxEntries) && (b.maxBytes == 0 || b.bytesAfter(p.applied) <= b.maxBytes) {
			continue
		}
		end := p.heard
		if p.progressed.Before(end) {
			end = p.progressed
		}
		end = end.Add(LagLive + time.Nanosecond)
		if !hold || end.Before(until) {
			until = end
		}
		hold = true
	}
	return hold, until
}

// Wait returns once no live voter is past the bound, with last giving
// the leader's last log index. It returns at once when the bound is
// off, and when ctx ends (the term is over: raft takes or refuses what
// comes next). The time it held is counted (Held).
func (b *LagBound) Wait(ctx context.Context, last func() uint64) {
	if b.Off() {
		return
	}
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := b.clock.Now()
		b.mu.Lock()
		hold, until := b.over(now, last())
		wake := b.wake
		switch {
		case !hold && !b.since.IsZero():
			b.held += now.Sub(b.since)
			b.since = time.Time{}
		case hold && b.since.IsZero():
			b.since = now
			b.holds++
		}
		b.mu.Unlock()
		if !hold {
			return
		}
		if timer == nil {
			timer = b.clock.NewTimer(until.Sub(now))
		} else {
			timer.Reset(until.Sub(now))
		}
		select {
		case <-ctx.Done():
			b.mu.Lock()
			if !b.since.IsZero() {
				b.held += b.clock.Now().Sub(b.since)
				b.since = time.Time{}
			}
			b.mu.Unlock()
			return
		case <-wake:
		case <-timer.C():
		}
	}
}
