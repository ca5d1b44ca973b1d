package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"jobsuite/controller/sched"
	"jobsuite/controller/store"
)

// MaxEntryBytes is the size a round's raft entry aims to stay under.
// A round that encodes larger is split into several entries at the
// boundaries of the groups of commands queued together (a group bigger
// than this travels alone): raft sends
// up to 64 entries in one AppendEntries and keeps the newest entries of
// its log cache in memory, and NetworkTransport scales its timeouts per
// 256 KiB, so entries stay small (design note 3.1). The split keeps
// every group whole (a schedule's firing with its job, a dependency's
// decision: Committer.AddAll); nothing else relies on two commands
// sharing a round (a round is whatever was queued when it closed).
const MaxEntryBytes = 64 << 10

// Log is the committer's replicated log (sched.Log) on the leader: each
// round it is given becomes one raft entry (or a few, see
// MaxEntryBytes), and its Proposal's Wait returns once raft committed it
// on a quorum and the FSM applied it here, with the FSM's results.
// Raft completes futures in log order, so proposals finish in the order
// they were made. With a LagBound (Bounded), Propose first waits while
// a live voter is too far behind (lag.go).
type Log struct {
	r     *raft.Raft
	bound *LagBound
	ctx   context.Context // ends the bound's holds
}

// NewLog returns a Log proposing to r.
func NewLog(r *raft.Raft) *Log { return &Log{r: r} }

// Bounded makes l hold each round while b says a live voter is past the
// follower-lag bound, until ctx ends (the term's). It returns l.
func (l *Log) Bounded(ctx context.Context, b *LagBound) *Log {
	l.ctx, l.bound = ctx, b
	return l
}

var _ sched.Log = (*Log)(nil)

// Propose encodes cmds and hands the entries to raft without waiting.
// A round that encodes larger than MaxEntryBytes is split, but only at
// the starts of the groups queued together (sched.Log), so a group is
// applied whole.
func (l *Log) Propose(cmds []store.Command, starts []int) (sched.Proposal, error) {
	if l.bound != nil {
		// Commands queued meanwhile gather into the next round.
		l.bound.Wait(l.ctx, l.r.LastIndex)
	}
	p := proposal{bound: l.bound}
	if err := l.propose(cmds, starts, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// propose proposes cmds, whose groups begin at starts (offsets into
// cmds; the first is 0 or absent).
//
// A round whose output bytes alone pass MaxEntryBytes is split before it
// is encoded: its encoding would be larger still, so the entries are the
// same, and a round of many output chunks (a job writing fast) is then
// encoded once instead of once per level of halving.
func (l *Log) propose(cmds []store.Command, starts []int, p *proposal) error {
	cut := middleCut(starts, len(cmds))
	var data []byte
	if cut == 0 || outputBytes(cmds) <= MaxEntryBytes {
		var err error
		if data, err = store.EncodeRound(cmds); err != nil {
			return fmt.Errorf("cluster: encoding a round: %w", err)
		}
	}
	if cut > 0 && (data == nil || len(data) > MaxEntryBytes) {
		var left, right []int
		for _, s := range starts {
			if s < cut {
				left = append(left, s)
			} else {
				right = append(right, s-cut)
			}
		}
		if err := l.propose(cmds[:cut], left, p); err != nil {
			return err
		}
		return l.propose(cmds[cut:], right, p)
	}
	pt := part{n: len(cmds)}
	if l.bound != nil {
		pt.cum = l.bound.Proposed(len(data))
	}
	pt.f = l.r.Apply(data, 0)
	p.parts = append(p.parts, pt)
	return nil
}

// outputBytes is the size of the output data cmds carry: a lower bound
// of their encoded size.
func outputBytes(cmds []store.Command) int {
	n := 0
	for _, c := range cmds {
		if o, ok := c.(*store.Output); ok {
			n += len(o.Chunk.Data)
		}
	}
	return n
}

// middleCut returns the group start nearest the middle of n commands,
// other than 0; 0 when there is none (one group: it travels whole).
func middleCut(starts []int, n int) int {
	best := 0
	for _, s := range starts {
		if s <= 0 || s >= n {
			continue
		}
		if best == 0 || abs(s-n/2) < abs(best-n/2) {
			best = s
		}
	}
	return best
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// proposal is one round's entries in flight.
type proposal struct {
	parts []part
	bound *LagBound // told of each entry's commit; nil: none
}

type part struct {
	f   raft.ApplyFuture
	n   int    // commands in the entry
	cum uint64 // LagBound.Proposed's count for it
}

// Wait waits for every entry of the round and returns their results in
// command order. raft.ErrNotLeader and raft.ErrLeadershipLost mean the
// round's outcome is unknown: it may still commit under the next leader.
func (p *proposal) Wait() ([]store.Result, error) {
	var results []store.Result
	for i, pt := range p.parts {
		if err := pt.f.Error(); err != nil {
			if p.bound != nil {
				for range p.parts[i:] {
					p.bound.Abandoned()
				}
			}
			return nil, fmt.Errorf("cluster: round not committed: %w", err)
		}
		if p.bound != nil {
			p.bound.Committed(pt.f.Index(), pt.cum)
		}
		resp, ok := pt.f.Response().(*Response)
		switch {
		case !ok:
			return nil, fmt.Errorf("cluster: round applied without a response (%T)", pt.f.Response())
		case resp.Err != nil:
			return nil, fmt.Errorf("cluster: round not applied: %w", resp.Err)
		case resp.Skipped:
			return nil, errors.New("cluster: round skipped as already applied: the store is ahead of the log")
		case len(resp.Results) != pt.n:
			return nil, fmt.Errorf("cluster: round of %d commands has %d results", pt.n, len(resp.Results))
		}
		results = append(results, resp.Results...)
	}
	return results, nil
}
