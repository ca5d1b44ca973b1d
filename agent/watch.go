package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"jobsuite/internal/backoff"
	"jobsuite/protocol"
)

// Watching for a new leader (PROTOCOL.md §2.4, FeatureLeaderWatch).
//
// A leader killed outright closes nothing, and over QUIC the agent
// would learn it only when its session times out (idleTimeouts: a
// quarter of the lease), well after the rest of the cluster elected a
// new leader. So while a session with a leader that agreed to the
// feature lasts, the agent keeps a watch session with another
// controller of the cluster: it opens with WatchLeader{Term, Leader}
// and the controller answers, when it knows the leader of a later term,
// with a Redirect naming it. The agent then ends its session with the
// old leader and dials the new one, as after any Redirect, with its
// attempts (Hello.Running).
//
// The agent watches one controller at a time, taking the addresses it
// knows in turn (the leader's Welcome lists the members), skipping the
// one it is attached to and any that answers that it is that leader
// under another address. A watch that fails (a controller down, one
// from before the feature, which closes the session after its
// handshake timeout) is tried again on the next address after a
// backoff from watchRetryMin up to watchRetryMax.

const (
	watchRetryMin = 500 * time.Millisecond
	watchRetryMax = 30 * time.Second
)

// errWatchedLeader: the watched controller is the leader the agent is
// attached to (reached under another address).
var errWatchedLeader = errors.New("the watched controller is the leader itself")

// watchLeader watches for a leader after term, the one the agent
// reached at attached, until ctx ends (the session's); moved is called
// once, with the Redirect of a controller that knows a new leader.
func (a *Agent) watchLeader(ctx context.Context, attached string, term uint64, moved func(*protocol.Redirect)) {
	skip := map[string]bool{attached: true}
	retry := backoff.Policy{Base: watchRetryMin, Max: watchRetryMax, Down: 0.5}
	fails := 0
	for i := rand.IntN(1 << 16); ; i++ {
		var cands []string
		for _, addr := range a.ctrls.list() {
			if !skip[addr] {
				cands = append(cands, addr)
			}
		}
		if len(cands) == 0 {
			return // a cluster of one, as far as the agent knows
		}
		addr := cands[i%len(cands)]
		rd, err := a.watchOnce(ctx, addr, attached, term)
		if ctx.Err() != nil {
			return
		}
		switch {
		case rd != nil && rd.Leader != "" && rd.Leader != attached:
			moved(rd)
			return
		case rd != nil:
			// The leader it is attached to, in a later term: the old
			// term's sessions end on their own.
			return
		case errors.Is(err, errWatchedLeader):
			skip[addr] = true
			continue
		}
		fails++
		a.log.Debug("watch session ended; watching another controller", "controller", addr, "error", err)
		if !a.sleep(ctx, retry.Delay(fails, rand.Float64())) {
			return
		}
	}
}

// watchOnce holds one watch session with the controller at addr until
// it answers: a Redirect, or an error (the session failed, the
// controller refused the watch).
func (a *Agent) watchOnce(ctx context.Context, addr, attached string, term uint64) (*protocol.Redirect, error) {
	t, err := a.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer t.Close("watch ended")
	stop := context.AfterFunc(ctx, func() { t.Close("session with the leader ended") })
	defer stop()
	st, err := t.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening the watch stream: %w", err)
	}
	w := protocol.NewWriter(st)
	if err := w.Write(&protocol.WatchLeader{Version: protocol.Version, Name: a.name, Term: term, Leader: attached}); err != nil {
		return nil, fmt.Errorf("sending the watch: %w", err)
	}
	r := protocol.NewReader(st, 0)
	m, err := r.Read()
	if err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *protocol.Redirect:
		return m, nil
	case *protocol.Error:
		if m.Code == protocol.CodeProtocol {
			return nil, fmt.Errorf("%w: %s", errWatchedLeader, m.Message)
		}
		return nil, fmt.Errorf("the controller refused the watch: %s", m.Message)
	default:
		return nil, fmt.Errorf("unexpected %s on a watch session", m.Type())
	}
}
