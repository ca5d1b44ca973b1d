package outchan

import "slices"

// quorumSeq is the highest seq a quorum holds durably: the q-th highest
// of the leader's own synced seq and each voting follower's acked seq.
// A follower not heard from counts 0. With fewer values than q nothing
// is on a quorum (0).
func quorumSeq(own uint64, peers []uint64, q int) uint64 {
	if q <= 0 {
		return 0
	}
	vals := append([]uint64{own}, peers...)
	if len(vals) < q {
		return 0
	}
	slices.SortFunc(vals, func(a, b uint64) int {
		switch {
		case a > b:
			return -1
		case a < b:
			return 1
		}
		return 0
	})
	return vals[q-1]
}
