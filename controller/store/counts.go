package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// stateCounts counts the stored jobs in each state, for StateCounts.
//
// Nothing is counted until the first StateCounts call: a controller
// that never shows counts never pays for the scan. That call takes a
// snapshot and counts the state index in it; from then on Apply and
// Prune add their changes. mu makes the two exact together: a batch
// commits and adds its changes under mu held for reading, and the
// snapshot is taken with mu held for writing, so each batch is either in
// the snapshot (committed before it, not added) or added (committed
// after it, not in it).
type stateCounts struct {
	mu    sync.RWMutex
	on    bool        // changes are being added; set with the snapshot
	round *countRound // the count of the snapshot taken when on was set
	n     [256]atomic.Int64
}

// countRound is one count of the state index.
type countRound struct {
	done chan struct{} // closed once the count is in n, or failed
	err  error         // set before done closes
}

// StateCounts returns how many stored jobs are in each state (every
// state is present, possibly 0). The first call counts the state index,
// a key-only scan of every job (about a second per few million jobs);
// later calls read counts that Apply and Prune keep up to date.
func (s *Store) StateCounts() (map[State]int, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: state counts: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	c := &s.counts
	c.mu.Lock()
	first := !c.on
	var snap *pebble.Snapshot
	if first {
		c.on = true
		c.round = &countRound{done: make(chan struct{})}
		snap = s.db.NewSnapshot()
	}
	round := c.round
	c.mu.Unlock()
	if first {
		err := countStates(snap, &c.n)
		if cerr := snap.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			// Start over at the next call.
			c.mu.Lock()
			c.on = false
			for i := range c.n {
				c.n[i].Store(0)
			}
			c.mu.Unlock()
		}
		round.err = err
		close(round.done)
	}
	<-round.done
	if round.err != nil {
		return nil, fmt.Errorf("store: state counts: %w", round.err)
	}
	out := make(map[State]int, len(stateCodes))
	for st, code := range stateCodes {
		out[st] = int(max(c.n[code].Load(), 0))
	}
	return out, nil
}

// countStates adds the state index entries of snap to n, by state code.
func countStates(snap *pebble.Snapshot, n *[256]atomic.Int64) error {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixState}, UpperBound: []byte{prefixState + 1}})
	if err != nil {
		return err
	}
	var local [256]int64
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); len(k) == 10 {
			local[k[1]]++
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	for code, v := range local {
		if v != 0 {
			n[code].Add(v)
		}
	}
	return nil
}

// begin is called before a batch that changes job states commits, and
// end after it committed (or failed); in between, add counts a change
// when begin said counting is on. Methods, not closures: a round would
// otherwise allocate two.
func (c *stateCounts) begin() (on bool) {
	c.mu.RLock()
	return c.on
}

func (c *stateCounts) end() { c.mu.RUnlock() }

func (c *stateCounts) add(from, to State) {
	if from == to {
		return
	}
	if code, ok := stateCodes[from]; ok && from != "" {
		c.n[code].Add(-1)
	}
	if code, ok := stateCodes[to]; ok && to != "" {
		c.n[code].Add(1)
	}
}
