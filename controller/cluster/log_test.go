package cluster

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"jobsuite/controller/store"
)

// TestMiddleCut: a round splits at the group start nearest its middle,
// never inside a group and never at 0.
func TestMiddleCut(t *testing.T) {
	for name, tc := range map[string]struct {
		starts []int
		n      int
		want   int
	}{
		"one group":          {[]int{0}, 10, 0},
		"no starts":          {nil, 10, 0},
		"two halves":         {[]int{0, 5}, 10, 5},
		"nearest the middle": {[]int{0, 2, 6, 9}, 10, 6},
		"first is not 0":     {[]int{3}, 10, 3},
	} {
		t.Run(name, func(t *testing.T) {
			if got := middleCut(tc.starts, tc.n); got != tc.want {
				t.Fatalf("middleCut(%v, %d) = %d, want %d", tc.starts, tc.n, got, tc.want)
			}
		})
	}
}

// TestLogSplitsBigRoundsAtGroups: a round of 40 audit entries of 8 KiB
// in groups of 4 becomes several raft entries, each under
// MaxEntryBytes plus one group and each holding whole groups; a round
// that is one big group travels as one entry; every command gets its
// result, in order, and every node applies them all.
func TestLogSplitsBigRoundsAtGroups(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := NewLog(c.leader().r)
	big := strings.Repeat("x", 8<<10)
	entry := func(i int) store.Command {
		at := epoch.Add(time.Duration(i) * time.Second)
		return &store.AppendAudit{Entry: store.AuditEntry{ID: uint64(at.UnixNano()), Time: at, Who: "t", Action: "test", Target: big}}
	}
	var cmds []store.Command
	var starts []int
	for i := range 40 {
		if i%4 == 0 {
			starts = append(starts, i)
		}
		cmds = append(cmds, entry(i))
	}
	p, err := l.Propose(cmds, starts)
	if err != nil {
		t.Fatal(err)
	}
	results, err := p.Wait()
	if err != nil || len(results) != len(cmds) {
		t.Fatalf("Wait: %d results, %v", len(results), err)
	}
	parts := p.(*proposal).parts
	if len(parts) < 4 {
		t.Fatalf("a round of %d KiB went in %d entries", 40*8, len(parts))
	}
	for _, pt := range parts {
		if pt.n%4 != 0 {
			t.Fatalf("an entry of %d commands splits a group of 4: %v", pt.n, parts)
		}
	}
	// One group of 40: one entry, however big.
	var one []store.Command
	for i := 40; i < 80; i++ {
		one = append(one, entry(i))
	}
	p, err = l.Propose(one, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(p.(*proposal).parts); n != 1 {
		t.Fatalf("one group went in %d entries", n)
	}
	// Output chunks, each a group (as the scheduler queues them): split
	// before encoding, still one entry per chunk that passes the cap, and
	// small chunks together.
	for name, tc := range map[string]struct {
		sizes   []int
		entries []int // commands per entry
	}{
		"big chunks":   {sizes: []int{256 << 10, 256 << 10, 256 << 10, 100 << 10, 256 << 10}, entries: []int{1, 1, 1, 1, 1}},
		"small chunks": {sizes: []int{8 << 10, 8 << 10, 8 << 10}, entries: []int{3}},
		"mixed":        {sizes: []int{256 << 10, 8 << 10, 8 << 10, 8 << 10, 8 << 10}, entries: []int{1, 1, 3}},
	} {
		var out []store.Command
		var starts []int
		var off uint64
		for i, n := range tc.sizes {
			starts = append(starts, i)
			out = append(out, &store.Output{Job: 7, Chunk: store.Chunk{Offset: off, Stream: 1, Data: bytes.Repeat([]byte{byte(i + 1)}, n), Time: epoch}})
			off += uint64(n)
		}
		p, err := l.Propose(out, starts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if results, err := p.Wait(); err != nil || len(results) != len(out) {
			t.Fatalf("%s: Wait: %d results, %v", name, len(results), err)
		}
		var got []int
		for _, pt := range p.(*proposal).parts {
			got = append(got, pt.n)
		}
		if !slices.Equal(got, tc.entries) {
			t.Errorf("%s: commands per entry %v, want %v", name, got, tc.entries)
		}
	}
	_, last := c.propose([][]store.Command{{entry(100)}})
	c.converge(last)
}
