package controller

import "sync"

// hub tells log followers that a job has news: more output stored, or a
// new state. It carries no data. Followers always read output from the
// store, from their own offset, so a slow follower never holds up the job
// or the other followers, needs no buffer of its own and can never see a
// gap or a duplicate: it simply reads further when it gets to it. The
// newest output is still in Pebble's memtable, so these reads are cheap.
type hub struct {
	mu   sync.Mutex
	subs map[uint64]map[*bell]struct{}
}

// bell is one follower's doorbell: a channel with room for one ring, so
// rings while the follower is busy collapse into one.
type bell struct{ c chan struct{} }

func newHub() *hub { return &hub{subs: map[uint64]map[*bell]struct{}{}} }

// subscribe returns a doorbell for job id and the function that stops
// ringing it. With max > 0 a follower may join only while the job has
// fewer than max; ok is false, and nothing is subscribed, otherwise.
func (h *hub) subscribe(id uint64, max int) (b *bell, unsubscribe func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if max > 0 && len(h.subs[id]) >= max {
		return nil, nil, false
	}
	b = &bell{c: make(chan struct{}, 1)}
	m := h.subs[id]
	if m == nil {
		m = map[*bell]struct{}{}
		h.subs[id] = m
	}
	m[b] = struct{}{}
	return b, func() {
		h.mu.Lock()
		delete(h.subs[id], b)
		if len(h.subs[id]) == 0 {
			delete(h.subs, id)
		}
		h.mu.Unlock()
	}, true
}

// ring wakes every follower of job id.
func (h *hub) ring(id uint64) {
	h.mu.Lock()
	for b := range h.subs[id] {
		select {
		case b.c <- struct{}{}:
		default:
		}
	}
	h.mu.Unlock()
}

// followers returns how many followers all jobs have.
func (h *hub) followers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, subs := range h.subs {
		n += len(subs)
	}
	return n
}
