package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"jobsuite/controller/cluster"
	"jobsuite/controller/outchan"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
)

// The output channel (controller/outchan; the default unless
// Config.OutputInRaft): a term Server hands its agents' output to the
// term's outchan.Leader instead of the committer, and counts it only as
// far as a quorum holds it.

// outputChannel is a term Server's side of the output channel.
type outputChannel struct {
	leader *outchan.Leader
	call   outchan.Caller
	// hubMu orders a chunk's store write and its copy into the hub
	// (outputAppend) against a cut of the job's log (outputTruncated),
	// so the hub's tail never keeps a chunk the cut removed from the
	// store.
	hubMu sync.Mutex
	// inherited are the attempts running when the term began, by job:
	// their output passed through an earlier leader, so the term fills
	// its gap (outchan.Leader.FillOnce) before it counts or takes any of
	// it. Attempts dispatched in the term need none. Read-only after
	// newServer.
	inherited map[uint64]inheritedAttempt
}

type inheritedAttempt struct {
	number   uint32
	logStart uint64
}

// fillTimeout bounds one gap fill before a reopened job stream is
// refused (the agent reopens it).
const fillTimeout = 30 * time.Second

// newOutputChannel builds the channel of a term Server whose scheduler
// is loaded: s.sched reports each chunk's quorum-durable end to.
func (s *Server) newOutputChannel(o outchan.LeaderOptions, call outchan.Caller) error {
	o.Store = func() *store.Store { return s.st }
	o.Durable = func(job uint64, attempt uint32, end uint64) bool {
		// Readers are served up to the end the scheduler counts
		// (readLimit): ring them when it moves.
		_, ok := s.sched.OutputDurable(job, attempt, end)
		if ok {
			s.hub.Ring(job)
		}
		return ok
	}
	o.Logger = s.log.Named("output")
	jobs, err := s.st.Active()
	if err != nil {
		return err
	}
	oc := &outputChannel{leader: outchan.NewLeader(o), call: call, inherited: map[uint64]inheritedAttempt{}}
	for _, j := range jobs {
		if c := j.Current(); j.State.Active() && c != nil && c.Outcome == "" {
			oc.inherited[j.ID] = inheritedAttempt{c.Number, c.LogStart}
		}
	}
	s.out = oc
	s.metrics.reg.MustRegister(outputCollector{oc.leader, s.sched})
	return nil
}

// outputCollector reads the term's output channel at scrape time.
type outputCollector struct {
	l *outchan.Leader
	s *sched.Scheduler
}

var (
	descOutputDurable = prometheus.NewDesc("jobsuite_cluster_output_durable_seq", "On the leader (the output channel): the last chunk of this term's output that a quorum holds synced (LogAck and attempt ends follow it).", nil, nil)
	descOutputLast    = prometheus.NewDesc("jobsuite_cluster_output_last_seq", "On the leader (the output channel): the last chunk of this term's output it stored.", nil, nil)
	descOutputLag     = prometheus.NewDesc("jobsuite_cluster_output_lag_chunks", "On the leader (the output channel): chunks of this term's output each voter has not acknowledged as synced.", []string{"peer"}, nil)
	descOutputLagB    = prometheus.NewDesc("jobsuite_cluster_output_lag_bytes", "On the leader (the output channel): bytes of this term's output the leader holds synced that each voter has not acknowledged as synced.", []string{"peer"}, nil)
	descOutputWaiting = prometheus.NewDesc("jobsuite_cluster_output_fill_waiting", "On the leader (the output channel): attempts inherited from the previous leader whose lease ran out (or deadline passed) while their output's gap fill has not completed: their end is recorded once it has.", nil, nil)
	descOutputBehind  = prometheus.NewDesc("jobsuite_cluster_output_behind", "On the leader (the output channel): 1 if the voter fell out of the leader's 64 MiB resend buffer and no longer counts for the output quorum this term.", []string{"peer"}, nil)
)

func (c outputCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descOutputDurable
	ch <- descOutputLast
	ch <- descOutputLag
	ch <- descOutputLagB
	ch <- descOutputBehind
	ch <- descOutputWaiting
}

func (c outputCollector) Collect(ch chan<- prometheus.Metric) {
	d, last := c.l.Durable()
	ch <- prometheus.MustNewConstMetric(descOutputDurable, prometheus.GaugeValue, float64(d))
	ch <- prometheus.MustNewConstMetric(descOutputLast, prometheus.GaugeValue, float64(last))
	ch <- prometheus.MustNewConstMetric(descOutputWaiting, prometheus.GaugeValue, float64(c.s.FillWaiting()))
	for peer, lag := range c.l.Lag() {
		ch <- prometheus.MustNewConstMetric(descOutputLag, prometheus.GaugeValue, float64(lag.Seq), peer)
		ch <- prometheus.MustNewConstMetric(descOutputLagB, prometheus.GaugeValue, float64(lag.Bytes), peer)
		behind := 0.0
		if lag.Behind {
			behind = 1
		}
		ch <- prometheus.MustNewConstMetric(descOutputBehind, prometheus.GaugeValue, behind, peer)
	}
}

// runOutputChannel runs the term's channel and fills the gap of every
// inherited attempt, trying again every fillRetry until each is filled
// or ended. An inherited attempt is not ended before its fill completed
// (the scheduler holds a lease that ran out until Filled:
// sched/inherited.go), so one whose agent never comes back is lost at
// the end a quorum acknowledged, however long the fill takes.
func (s *Server) runOutputChannel(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); s.out.leader.Run(ctx) }()
	left := maps.Clone(s.out.inherited)
	for len(left) > 0 && ctx.Err() == nil {
		for id, a := range left {
			if ctx.Err() != nil {
				break
			}
			_, err := s.outputOpen(ctx, id, a.number, a.logStart)
			if err == nil || errors.Is(err, errNotCurrent) {
				delete(left, id)
			} else if ctx.Err() == nil {
				s.log.Warn("output gap fill failed; trying again", "job", id, "attempt", a.number, "error", err)
			}
		}
		if len(left) > 0 {
			t := time.NewTimer(fillRetry)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	<-done
}

// fillRetry is how long the term's sweep waits before it tries the gap
// fills that failed again (no quorum answered, a peer failed a read).
const fillRetry = 2 * time.Second

// errNotCurrent: the attempt ended (or was not the job's) before its
// output was counted.
var errNotCurrent = errors.New("attempt no longer current")

// outputOpen returns how much of attempt's output (from logStart) a
// quorum holds, filling the gap first for an inherited attempt.
func (s *Server) outputOpen(ctx context.Context, id uint64, attempt uint32, logStart uint64) (uint64, error) {
	end := logStart
	durable := s.sched.OutputDurable
	if a, ok := s.out.inherited[id]; ok && a.number == attempt {
		ctx, cancel := context.WithTimeout(ctx, fillTimeout)
		defer cancel()
		var err error
		if end, err = s.out.leader.FillOnce(ctx, s.out.call, id, attempt, logStart); err != nil {
			return 0, err
		}
		// The ends of the attempt that waited for its fill (a lease run
		// out) are recorded now, at the full end (sched/inherited.go).
		durable = s.sched.Filled
	}
	d, ok := durable(id, attempt, end)
	if !ok {
		return 0, fmt.Errorf("job %d attempt %d: %w", id, attempt, errNotCurrent)
	}
	return d - logStart, nil
}

// outputAppend stores and replicates a chunk of attempt's output at off
// (in the attempt's output) if the attempt is still current on agent,
// and returns its seq. stale says the attempt is not current (any more,
// or not here yet), not that the channel failed.
func (s *Server) outputAppend(agent string, id uint64, attempt uint32, off uint64, stream uint8, data []byte) (seq uint64, stale bool, err error) {
	logStart, _, ok := s.sched.StreamStart(id, attempt, agent)
	if !ok {
		return 0, true, fmt.Errorf("job %d attempt %d is no longer current on agent %s", id, attempt, agent)
	}
	now := s.clock.Now()
	s.out.hubMu.Lock()
	seq, err = s.out.leader.Append(id, attempt, logStart+off, stream, now, data)
	if err != nil {
		s.out.hubMu.Unlock()
		return 0, errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrNotYet), err
	}
	s.hub.Appended(id, store.Chunk{Offset: logStart + off, Stream: stream, Data: data, Time: now}, data)
	s.out.hubMu.Unlock()
	// No ring: readers get the chunk once a quorum holds it (the
	// Durable callback rings them).
	return seq, false, nil
}

// outputTruncated cuts the hub's copy of job id's output at at, as the
// round that ended its attempt (store.TruncateLog) cut the store's: the
// hub must not serve bytes no quorum acknowledged once they are gone.
// The committer calls it once the round is applied, before anything of
// the next attempt can be stored (its Dispatch leaves after the round).
func (s *Server) outputTruncated(id, at uint64) {
	if s.out != nil {
		s.out.leader.Forget(id) // the followers apply the end too
		s.out.hubMu.Lock()
		defer s.out.hubMu.Unlock()
	}
	s.hub.Truncate(id, at)
	s.hub.Ring(id)
}

// outputPeers returns the other voters as the output channel dials them,
// and the quorum size of the configuration.
func (n *Node) outputPeers() ([]outchan.Peer, int) {
	r := n.raftNode()
	if r == nil {
		return nil, 1
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return nil, 1
	}
	var peers []outchan.Peer
	voters := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(srv.ID) != n.id {
			peers = append(peers, outchan.Peer{ID: string(srv.ID), Addr: string(srv.Address)})
		}
	}
	return peers, voters/2 + 1
}

// outputOptions are the LeaderOptions of term t (the Server fills in the
// rest).
func (n *Node) outputOptions(t uint64) outchan.LeaderOptions {
	return outchan.LeaderOptions{
		Term:  t,
		Self:  n.id,
		Peers: n.outputPeers,
		Fence: n.follower.Fence,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return dialOutput(ctx, n.ident.Dial, addr)
		},
		Legacy: func(c net.Conn) bool {
			tc, ok := c.(*tls.Conn)
			return ok && tc.ConnectionState().NegotiatedProtocol == cluster.ALPNOutputV1
		},
	}
}

// dialOutput opens an output stream to addr with dial: the current
// version (cluster.ALPNOutput), or the first (ALPNOutputV1) if the peer
// refuses that — a node of an earlier release speaks only the first. A
// peer that is down fails both.
func dialOutput(ctx context.Context, dial func(ctx context.Context, addr, proto string) (net.Conn, error), addr string) (net.Conn, error) {
	c, err := dial(ctx, addr, cluster.ALPNOutput)
	if err != nil && ctx.Err() == nil {
		if c1, err1 := dial(ctx, addr, cluster.ALPNOutputV1); err1 == nil {
			return c1, nil
		}
	}
	return c, err
}

// outputCall sends a gap fill request to a peer.
func (n *Node) outputCall(ctx context.Context, addr, op string, body, out any) error {
	return n.ident.Call(ctx, addr, op, body, out)
}

// outputFollower is the node's side of the streams leaders open to it.
// Each chunk it stores, and each end the leader counted, rings the job's
// log followers on this node (node_logs.go).
func (n *Node) outputFollower() *outchan.Follower {
	return outchan.NewFollower(outchan.FollowerOptions{
		Replica: n.fsm,
		Term: func() uint64 {
			if r := n.raftNode(); r != nil {
				return r.CurrentTerm()
			}
			return 0
		},
		Logger: n.log.Named("output"),

		// A log follower on this node reads a running attempt's output
		// up to the end the leader counted (DurableEnd) and as far as
		// this copy holds it: either may move.
		Appended:  n.logHub.Ring,
		Committed: n.logHub.Ring,
	})
}

// outputRepairer is the node's repair of output it missed; a job
// repaired rings its log followers on this node.
func (n *Node) outputRepairer() *outchan.Repairer {
	return outchan.NewRepairer(outchan.RepairOptions{
		Self:   n.id,
		Store:  func() *store.Store { return n.fsm.Store() },
		Peers:  n.outputPeers,
		Call:   n.outputCall,
		Logger: n.log.Named("output"),

		Repaired: n.logHub.Ring,
	})
}

// outputApplied hears of every batch of rounds the FSM applied: a
// round that ends an attempt whose output came on the channel
// (store.TruncateLog) makes its output below the end final — the
// Follower drops the end the leader sent for the job — and the repair
// fetches whatever of it this node lacks. The FSM's apply of the
// round also queued the job in the store (the queue the repair reads
// at start and after a snapshot): this only spares it that read.
func (n *Node) outputApplied(cmds []store.Command) {
	for _, c := range cmds {
		if t, ok := c.(*store.TruncateLog); ok {
			// Its LogBytes now says how far the job's output is final.
			if n.follower != nil {
				n.follower.Ended(t.Job)
			}
			if n.repair != nil {
				n.repair.Note(t.Job, t.At)
			}
		}
	}
}

// outputRestored hears that a snapshot replaced the node's store: the
// repair reads the new store's queue (outchan.Repairer.Rescan), which
// holds the jobs the node the snapshot came from had not repaired.
func (n *Node) outputRestored() {
	if n.repair != nil {
		n.repair.Rescan()
	}
}

// runRepair runs the node's output repair until ctx ends (once the test
// hook repairGate, if set, is closed).
func (n *Node) runRepair(ctx context.Context) {
	if n.repairGate != nil {
		select {
		case <-n.repairGate:
		case <-ctx.Done():
			return
		}
	}
	n.repair.Run(ctx)
}

// repairCollector reads the node's output repair at scrape time.
type repairCollector struct{ r *outchan.Repairer }

var (
	descRepairPending = prometheus.NewDesc("jobsuite_cluster_output_repair_pending", "Cluster mode: jobs in this node's output repair queue — ended attempts' output it has not yet checked for holes, or is fetching from its peers.", nil, nil)
	descRepairedBytes = prometheus.NewDesc("jobsuite_cluster_output_repaired_bytes_total", "Cluster mode: bytes of output this node had missed and fetched from its peers since it started.", nil, nil)
)

func (c repairCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRepairPending
	ch <- descRepairedBytes
}

func (c repairCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descRepairPending, prometheus.GaugeValue, float64(c.r.Pending()))
	ch <- prometheus.MustNewConstMetric(descRepairedBytes, prometheus.CounterValue, float64(c.r.RepairedBytes()))
}

// registerRepairMetrics adds the repair's figures to reg (the node's
// own registry, and each term Server's), with the output channel.
func (n *Node) registerRepairMetrics(reg *prometheus.Registry) {
	if n.repair != nil {
		reg.MustRegister(repairCollector{n.repair})
	}
}
