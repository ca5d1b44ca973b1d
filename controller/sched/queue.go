package sched

import (
	"container/heap"
	"sort"
	"strconv"
	"strings"
	"time"

	"jobsuite/controller/store"
)

// queue is the in-memory mirror of the store's queue index: the jobs in
// state Queued, ordered by priority (high first) and then FIFO.
//
// Jobs are grouped in classes by their label selector; each class is a
// heap. An agent looking for work compares the heads of the classes its
// labels satisfy, so picking costs O(classes) rather than a scan over the
// whole queue, and a job that no agent can run never blocks the ones
// behind it. Most jobs carry no selector and share one class.
type queue struct {
	classes map[string]*class
	items   map[uint64]*item
	// aging, when positive, lets a waiting job gain one priority point per
	// aging of waiting. Comparing prio + (now-queuedAt)/aging between two
	// jobs does not depend on now, so the heaps stay valid as time passes:
	// the order key is prio·aging − queuedAt.
	aging int64
}

type class struct {
	selector map[string]string
	h        itemHeap
}

type item struct {
	id       uint64
	priority int
	queuedAt int64 // unix nanoseconds
	class    *class
	index    int
	aging    int64 // the queue's aging interval, 0 for strict priority
}

func newQueue(aging time.Duration) *queue {
	return &queue{classes: map[string]*class{}, items: map[uint64]*item{}, aging: int64(aging)}
}

// selectorKey is a canonical string for a label selector.
func selectorKey(sel map[string]string) string {
	if len(sel) == 0 {
		return ""
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Length-prefixed, so no key or value can forge another selector's key.
	var b strings.Builder
	for _, k := range keys {
		v := sel[k]
		b.WriteString(strconv.Itoa(len(k)))
		b.WriteByte(':')
		b.WriteString(k)
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}

// matches reports whether labels satisfy every key=value of selector.
func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func (q *queue) len() int { return len(q.items) }

func (q *queue) contains(id uint64) bool { _, ok := q.items[id]; return ok }

// push adds a job; a job already queued is left as is.
func (q *queue) push(id uint64, priority int, queuedAt int64, selector map[string]string) {
	if _, ok := q.items[id]; ok {
		return
	}
	key := selectorKey(selector)
	c := q.classes[key]
	if c == nil {
		c = &class{selector: selector}
		q.classes[key] = c
	}
	it := &item{id: id, priority: priority, queuedAt: queuedAt, class: c, aging: q.aging}
	heap.Push(&c.h, it)
	q.items[id] = it
}

// itemBlock is how many items pushAll allocates at once: one allocation
// instead of many, while a block that still holds one queued job keeps
// at most this many items' memory alive.
const itemBlock = 256

// pushAll adds queued jobs in bulk, as the scheduler's load does at
// start: the items map is sized once, items are allocated in blocks and
// each class's heap is built in one pass (heap.Init) rather than one
// push at a time. Jobs already queued are left as they are.
func (q *queue) pushAll(jobs []*store.Job) {
	if len(jobs) == 0 {
		return
	}
	if len(q.items) == 0 {
		q.items = make(map[uint64]*item, len(jobs))
	}
	touched := map[*class]struct{}{}
	var block []item
	for i, j := range jobs {
		if _, ok := q.items[j.ID]; ok {
			continue
		}
		sel := selectorOf(j)
		key := selectorKey(sel)
		c := q.classes[key]
		if c == nil {
			c = &class{selector: sel}
			q.classes[key] = c
		}
		if len(block) == 0 {
			block = make([]item, min(itemBlock, len(jobs)-i))
		}
		it := &block[0]
		block = block[1:]
		*it = item{id: j.ID, priority: j.Priority, queuedAt: j.QueuedAt.UnixNano(), class: c, index: len(c.h), aging: q.aging}
		c.h = append(c.h, it)
		q.items[j.ID] = it
		touched[c] = struct{}{}
	}
	for c := range touched {
		heap.Init(&c.h)
	}
}

// remove takes a job out of the queue; it reports whether it was there.
func (q *queue) remove(id uint64) bool {
	it, ok := q.items[id]
	if !ok {
		return false
	}
	heap.Remove(&it.class.h, it.index)
	delete(q.items, id)
	if it.class.h.Len() == 0 {
		delete(q.classes, selectorKey(it.class.selector))
	}
	return true
}

// best returns the job an agent with these labels should run next, or
// 0 when none of the queued jobs fits it.
func (q *queue) best(labels map[string]string) uint64 {
	var top *item
	for _, c := range q.classes {
		if c.h.Len() == 0 || !matches(c.selector, labels) {
			continue
		}
		if head := c.h[0]; top == nil || before(head, top) {
			top = head
		}
	}
	if top == nil {
		return 0
	}
	return top.id
}

// before orders items: higher priority first, then earlier queue entry,
// then lower ID. With aging, priority grows with the time waited.
func before(a, b *item) bool {
	if a.aging > 0 {
		ka := int64(a.priority)*a.aging - a.queuedAt
		kb := int64(b.priority)*b.aging - b.queuedAt
		if ka != kb {
			return ka > kb
		}
		return a.id < b.id
	}
	if a.priority != b.priority {
		return a.priority > b.priority
	}
	if a.queuedAt != b.queuedAt {
		return a.queuedAt < b.queuedAt
	}
	return a.id < b.id
}

type itemHeap []*item

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return before(h[i], h[j]) }
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *itemHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *itemHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return it
}
