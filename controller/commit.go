package controller

import (
	"sync"

	"jobsuite/controller/store"
)

// committer turns state transitions into synced store batches.
//
// The scheduler changes its in-memory state first, under its lock, and
// queues the matching store.Update here in the same order. One goroutine
// applies everything queued so far as a single synced Pebble batch, so
// concurrent transitions share an fsync (group commit) and the scheduler
// never holds its lock across a disk write. Whatever must only happen
// once a transition is durable — answering the client, sending a
// Dispatch to an agent, acknowledging a result — waits on the batch.
// Batches are applied strictly in order, so waiting on a later batch
// implies every earlier one is durable too.
//
// A failed batch is fatal: memory is then ahead of disk, so the
// controller stops (Run returns the error) rather than serve a state it
// cannot persist. On restart the store is the truth.
type committer struct {
	st *store.Store

	mu      sync.Mutex
	open    *batch
	failed  error
	kick    chan struct{}
	stopped bool
}

// batch is a group of updates that become durable together.
type batch struct {
	updates []store.Update
	done    chan struct{}
	err     error
}

// wait blocks until the batch is durable and returns the commit error.
func (b *batch) wait() error {
	<-b.done
	return b.err
}

func newCommitter(st *store.Store) *committer {
	return &committer{st: st, kick: make(chan struct{}, 1)}
}

// add queues one update and returns the batch it will be written in.
func (c *committer) add(u store.Update) *batch {
	c.mu.Lock()
	if c.failed != nil || c.stopped {
		c.mu.Unlock()
		b := &batch{done: make(chan struct{}), err: c.err()}
		close(b.done)
		return b
	}
	if c.open == nil {
		c.open = &batch{done: make(chan struct{})}
	}
	b := c.open
	b.updates = append(b.updates, u)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return b
}

func (c *committer) err() error {
	if c.failed != nil {
		return c.failed
	}
	return ErrShuttingDown
}

// run applies batches until stop is closed, then flushes what is queued
// and returns. It returns the first store error.
func (c *committer) run(stop <-chan struct{}) error {
	for {
		select {
		case <-c.kick:
			if err := c.flush(false); err != nil {
				return err
			}
		case <-stop:
			return c.flush(true)
		}
	}
}

// flush applies the open batch. With final set, later adds fail at once
// instead of waiting for a flush that will never come.
func (c *committer) flush(final bool) error {
	c.mu.Lock()
	b := c.open
	c.open = nil
	if final {
		c.stopped = true
	}
	c.mu.Unlock()
	if b == nil {
		return nil
	}
	b.err = c.st.Apply(b.updates...)
	close(b.done)
	if b.err != nil {
		c.mu.Lock()
		c.failed = b.err
		c.mu.Unlock()
		return b.err
	}
	return nil
}
