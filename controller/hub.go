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

// subscribe returns a doorbell for job id; call the returned function to
// stop ringing it.
func (h *hub) subscribe(id uint64) (*bell, func()) {
	b := &bell{c: make(chan struct{}, 1)}
	h.mu.Lock()
	m := h.subs[id]
	if m == nil {
		m = map[*bell]struct{}{}
		h.subs[id] = m
	}
	m[b] = struct{}{}
	h.mu.Unlock()
	return b, func() {
		h.mu.Lock()
		delete(h.subs[id], b)
		if len(h.subs[id]) == 0 {
			delete(h.subs, id)
		}
		h.mu.Unlock()
	}
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

// followers returns how many followers job id has.
func (h *hub) followers(id uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[id])
}
