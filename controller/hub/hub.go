package hub

import (
	"sort"
	"sync"

	"jobsuite/controller/store"
)

// tailMax bounds the output the hub keeps in memory per job that has
// followers, and hubTailMax all of it (see hub).
const (
	tailMax    = 8 << 20
	hubTailMax = 64 << 20
	// chunkOverhead is what a chunk costs in a tail besides its data
	// (its Chunk and allocation), counted so that many small chunks
	// respect the bounds too.
	chunkOverhead = 64
)

// Hub tells log followers that a job has news: more output stored, or a
// new state. Followers read output from their own offset, so a slow
// follower never holds up the job or the other followers, needs no buffer
// of its own and can never see a gap or a duplicate: it simply reads
// further when it gets to it.
//
// While a job has followers, the hub also keeps its newest output, the
// tail: up to tailMax bytes of the chunks stored last, so that a follower
// that keeps up reads them from memory instead of from the store (where
// they may already have been flushed to a table and compressed). The tail
// is an exact copy of the stored bytes it covers, contiguous, or empty;
// a follower whose offset it does not cover reads the store. Memory is
// bounded by tailMax per followed job and hubTailMax in all (a chunk
// that would pass the latter empties its job's tail instead), and freed
// when the last follower leaves.
type Hub struct {
	mu    sync.Mutex
	subs  map[uint64]*topic
	bytes int // in all tails
}

// topic is one followed job: its followers and its tail.
type topic struct {
	bells map[*bell]struct{}
	tail  []store.Chunk // contiguous; Data never modified once here
	size  int           // bytes in tail, chunkOverhead included
	high  uint64        // highest end of a chunk appended while followed
}

// bell is one follower's doorbell: a channel with room for one ring, so
// rings while the follower is busy collapse into one.
type bell struct{ c chan struct{} }

func New() *Hub { return &Hub{subs: map[uint64]*topic{}} }

// Subscribe returns a doorbell for job id — a channel that receives
// when the job has news, with room for one ring, so rings while the
// follower is busy collapse into one — and the function that stops
// ringing it. With max > 0 a follower may join only while the job has
// fewer than max; ok is false, and nothing is subscribed, otherwise.
func (h *Hub) Subscribe(id uint64, max int) (ring <-chan struct{}, unsubscribe func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.subs[id]
	if max > 0 && t != nil && len(t.bells) >= max {
		return nil, nil, false
	}
	b := &bell{c: make(chan struct{}, 1)}
	if t == nil {
		t = &topic{bells: map[*bell]struct{}{}}
		h.subs[id] = t
	}
	t.bells[b] = struct{}{}
	return b.c, func() {
		h.mu.Lock()
		if t := h.subs[id]; t != nil {
			delete(t.bells, b)
			if len(t.bells) == 0 {
				h.bytes -= t.size
				delete(h.subs, id)
			}
		}
		h.mu.Unlock()
	}, true
}

// Ring wakes every follower of job id.
func (h *Hub) Ring(id uint64) {
	h.mu.Lock()
	if t := h.subs[id]; t != nil {
		for b := range t.bells {
			select {
			case b.c <- struct{}{}:
			default:
			}
		}
	}
	h.mu.Unlock()
}

// Appended records chunk c of job id, just applied to the store. kept is
// a copy of c.Data that the hub may keep (nobody modifies it afterwards),
// or nil. The committer calls Appended for every chunk, in the order it
// applied them (Server.outputApplied), so the tail matches the store.
func (h *Hub) Appended(id uint64, c store.Chunk, kept []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.subs[id]
	if t == nil {
		return
	}
	end := c.Offset + uint64(len(c.Data))
	contiguous := len(t.tail) > 0 && c.Offset == chunkEnd(t.tail[len(t.tail)-1])
	// A chunk that overlaps bytes stored before (not the case for output
	// as serveJobStream stores it) may change what the store returns for
	// them; the tail then starts afresh only past everything seen.
	fresh := c.Offset >= t.high
	t.high = max(t.high, end)
	if !contiguous {
		h.drop(t)
		if !fresh {
			return
		}
	}
	if kept == nil || len(kept) != len(c.Data) || len(kept)+chunkOverhead > tailMax {
		h.drop(t)
		return
	}
	t.tail = append(t.tail, store.Chunk{Offset: c.Offset, Stream: c.Stream, Data: kept, Time: c.Time})
	t.size += len(kept) + chunkOverhead
	h.bytes += len(kept) + chunkOverhead
	for t.size > tailMax {
		n := len(t.tail[0].Data) + chunkOverhead
		t.size -= n
		h.bytes -= n
		t.tail[0] = store.Chunk{}
		t.tail = t.tail[1:]
	}
	if h.bytes > hubTailMax {
		h.drop(t)
	}
}

// Truncate records that job id's stored output was cut at offset at
// (store.TruncateLog: an attempt ended there, and bytes some node had
// stored past it are gone): the tail keeps only what lies below at, so
// it never returns bytes the store no longer holds, and the next
// attempt's output, which starts at at, continues it.
func (h *Hub) Truncate(id, at uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.subs[id]
	if t == nil {
		return
	}
	t.high = min(t.high, at)
	for len(t.tail) > 0 {
		last := &t.tail[len(t.tail)-1]
		if last.Offset >= at {
			n := len(last.Data) + chunkOverhead
			t.size -= n
			h.bytes -= n
			*last = store.Chunk{}
			t.tail = t.tail[:len(t.tail)-1]
			continue
		}
		if end := chunkEnd(*last); end > at {
			cut := int(end - at)
			last.Data = last.Data[:len(last.Data)-cut] // a shorter view: Data is never modified
			t.size -= cut
			h.bytes -= cut
		}
		break
	}
}

// drop empties t's tail.
func (h *Hub) drop(t *topic) {
	h.bytes -= t.size
	t.tail, t.size = nil, 0
}

// Read returns job id's output from offset from on, at most max bytes,
// from the tail. ok is false when the tail does not cover from: the
// caller reads the store instead. With ok true and no chunks, from is
// the end of what is stored (a later chunk rings the bell). The chunks'
// Data are shared: the caller must not modify them.
func (h *Hub) Read(id, from uint64, max int) (chunks []store.Chunk, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.subs[id]
	if t == nil || len(t.tail) == 0 || from < t.tail[0].Offset || from > chunkEnd(t.tail[len(t.tail)-1]) {
		return nil, false
	}
	// The first chunk that ends after from (the tail may hold many small
	// chunks).
	first := sort.Search(len(t.tail), func(i int) bool { return chunkEnd(t.tail[i]) > from })
	total := 0
	for _, c := range t.tail[first:] {
		if total >= max {
			break
		}
		if c.Offset < from {
			c.Data = c.Data[from-c.Offset:]
			c.Offset = from
		}
		if n := max - total; len(c.Data) > n {
			c.Data = c.Data[:n]
		}
		chunks = append(chunks, c)
		total += len(c.Data)
	}
	return chunks, true
}

func chunkEnd(c store.Chunk) uint64 { return c.Offset + uint64(len(c.Data)) }

// Followers returns how many followers all jobs have.
func (h *Hub) Followers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, t := range h.subs {
		n += len(t.bells)
	}
	return n
}
