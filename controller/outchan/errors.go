package outchan

import "errors"

// Errors of the output channel; check them with errors.Is.
var (
	// ErrClosed means the term's Leader stopped (its term ended): no
	// chunk is taken and no wait ends well any more.
	ErrClosed = errors.New("output channel closed: the term ended")
	// ErrProtocol means a peer sent bytes that are not the channel's
	// framing, or a frame out of turn.
	ErrProtocol = errors.New("output channel protocol error")
	// ErrLowerTerm means a leader opened a stream for a term lower than
	// the follower's raft term: a deposed leader.
	ErrLowerTerm = errors.New("output stream of a lower term")
	// ErrNoQuorum means gap fill heard from fewer peers than, with this
	// node, make a quorum.
	ErrNoQuorum = errors.New("too few peers answered to make a quorum")
)
