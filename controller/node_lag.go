package controller

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"jobsuite/controller/clock"
	"jobsuite/controller/cluster"
)

// The follower-lag bound's inputs (cluster/lag.go): while this node
// leads, it asks every other voter for its status (opStatus, the answer
// `operator members` shows) every cluster.LagPoll and hands the voter's
// applied and last index to the bound, which the term's Log consults
// before each round.
//
// The leader asks rather than the followers telling it: only the leader
// needs the figures, and only while it leads, so followers keep no loop
// that must track who leads; a voter the leader cannot reach simply
// stops reporting, which is what makes it not live for the bound; and
// the question exists already. The term keeps one connection to each
// voter for it (cluster.Conns): a fresh mutual-TLS handshake per
// question cost leader and follower together about 2.3 ms of CPU here,
// 46 ms a second for two followers; a kept connection about 65 µs
// (BenchmarkRPCCall).

// newLagBound is the node's bound from its settings.
func newLagBound(cfg Config) *cluster.LagBound {
	var entries, bytes uint64
	if cfg.MaxFollowerLag > 0 {
		entries = uint64(cfg.MaxFollowerLag)
	}
	if cfg.MaxFollowerLagBytes > 0 {
		bytes = uint64(cfg.MaxFollowerLagBytes)
	}
	return cluster.NewLagBound(entries, bytes, clock.Real{})
}

// watchLag asks each other voter for its status every LagPoll until ctx
// ends (the term's), at most one question per voter at a time, each
// bounded by LagLive.
func (n *Node) watchLag(ctx context.Context, r *raft.Raft) {
	if n.lag.Off() {
		return
	}
	var (
		mu   sync.Mutex
		busy = map[string]bool{}
		wg   sync.WaitGroup
	)
	defer wg.Wait()
	tick := time.NewTicker(cluster.LagPoll)
	defer tick.Stop()
	conns := n.ident.Kept()
	defer conns.Close() // a question still out closes its own connection after it
	known := map[string]bool{}
	warned := map[string]bool{} // voters whose output setting differs, told once a term
	for {
		if f := r.GetConfiguration(); f.Error() == nil {
			now := map[string]bool{}
			for _, srv := range f.Configuration().Servers {
				id, addr := string(srv.ID), string(srv.Address)
				if id == n.id || srv.Suffrage != raft.Voter {
					continue
				}
				now[id] = true
				mu.Lock()
				if busy[id] {
					mu.Unlock()
					continue
				}
				busy[id] = true
				mu.Unlock()
				wg.Go(func() {
					defer func() { mu.Lock(); delete(busy, id); mu.Unlock() }()
					cctx, cancel := context.WithTimeout(ctx, cluster.LagLive)
					defer cancel()
					var st memberStatus
					if err := conns.Call(cctx, addr, opStatus, nil, &st); err == nil && ctx.Err() == nil {
						n.lag.Report(id, st.AppliedIndex, st.LastIndex)
						if st.LastContact != nil {
							n.lag.ReportContact(id, time.Duration(*st.LastContact*float64(time.Second)))
						}
						if st.Output != n.outputMode() {
							mu.Lock()
							first := !warned[id]
							warned[id] = true
							mu.Unlock()
							if first {
								n.log.Warn("a voter would send output differently if it led: set -output-channel the same on every controller (once a leader sends output on the channel, every later leader does, whatever its setting)", "peer", id, "peer_output", st.Output, "output", n.outputMode())
							}
						}
					}
				})
			}
			for id := range known {
				if !now[id] {
					n.lag.Forget(id)
				}
			}
			known = now
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// hookedFSM is the FSM with Node.applyHook run before each batch.
type hookedFSM struct {
	*cluster.FSM
	hook func(entries int)
}

func (h hookedFSM) ApplyBatch(logs []*raft.Log) []any {
	h.hook(len(logs))
	return h.FSM.ApplyBatch(logs)
}
