// Package outchan is the output channel of a controller cluster (issue
// 14, design note section 8): agents' output is replicated from the
// leader to the followers beside raft, not in its log, because it is
// more than 99% of the bytes (BENCHMARKS.md, "Issue 14: output in the
// raft log vs a channel of its own"). A single controller does not use
// it; a cluster does unless Config.OutputInRaft (-output-channel=false,
// kept for measurements) is set on its nodes: then output rides the raft
// rounds as store.Output commands.
//
// # The stream
//
// Each term's Leader (leader.go) stores every chunk the job streams hand
// it (Append) in the leader's own store with store.ReplicaOutput — not
// synced: a syncer fsyncs back to back while output arrives
// (store.SyncOutput), each sync covering every chunk stored before it
// began — and numbers it with the term's next seq. It keeps the newest
// RingBytes (64 MiB) of chunks in a ring, and one sender per voter
// streams them on a connection of their own (ALPN cluster.ALPNOutput,
// "jobsuite-output/2", the framing in wire.go; a node of an earlier
// release speaks "jobsuite-output/1", the same without ends frames, and
// the leader falls back to it: LeaderOptions.Legacy). A long-lived stream
// needs its own protocol name rather than an op of the cluster port's
// request/answer RPC: those carry one JSON request per connection under
// a 10 s deadline, and the Mux routes by ALPN at the handshake, so the
// stream costs no routing byte and no deadline games.
//
// The Follower (follower.go) refuses a stream of a term lower than its
// raft term, and answers the leader's hello with the highest seq of
// that term it holds durably, so a reconnecting leader resumes there
// from its ring; a follower further behind than the ring falls out of
// the quorum count for the rest of the term (see "Repair"). It
// stores each chunk with store.ReplicaOutput, which writes it only once
// the round that dispatched its attempt is applied on this node
// (store.ErrNotYet: the follower waits for the next applied index) —
// the design note's "applied index ≥ the dispatch's index", checked on
// the record itself: an attempt recorded means every earlier attempt's
// end (and its truncation) is applied too, since an attempt ends before
// the next is dispatched — and never past the end of an attempt that
// ended on this node (store.ErrStale). It syncs like the leader and acks
// the highest seq synced.
//
// The Leader's Lag tells, per follower, the chunks given that it has not
// acknowledged and the bytes the leader holds synced that it has not
// (each sender keeps the running byte sum of the chunks it sent until
// they are acknowledged).
//
// # What a LogAck means
//
// The quorum-durable seq Q is the q-th highest of the leader's own
// synced seq and each follower's acked seq (q = the quorum of the
// voters: 2 of 3, 3 of 5; quorumSeq). As Q passes each chunk the Leader
// tells LeaderOptions.Durable its job, attempt and end, in seq order;
// the controller hands that to the scheduler (sched.OutputDurable),
// which counts an attempt's output only that far. So the LogAck a job
// stream sends, the LogBytes a lost attempt records, the end a Finished
// is proposed with (the job stream waits for Q to cover its last chunk
// first) and the next attempt's LogStart are all quorum-durable ends.
// Every round that ends an attempt carries store.TruncateLog at its
// LogBytes, so bytes some node stored past it (a deposed leader's
// unacknowledged tail) are removed on every node before the next
// attempt writes there.
//
// # Gap fill
//
// A new leader does not know how far a running attempt's output was
// acknowledged: it may have missed the last chunks. Before it takes the
// attempt's reopened job stream — and in a sweep over the running
// attempts when the term starts, so that an attempt whose agent never
// returns is lost at the right end — Leader.FillOnce asks the peers
// (OpEnd, on the cluster port's RPC) for their synced end of the
// attempt's output until, with itself, a quorum answered. The largest
// end covers every acknowledged byte (any two quorums intersect); it
// fetches what it lacks from the peer that has it (OpRead), appends the
// range from the smallest end heard to the largest through the channel,
// and waits until a quorum holds it. That end is the attempt's durable
// end; the agent resends the rest from its spool.
//
// The largest end is only an upper bound of what was acknowledged if
// no deposed leader can still get acknowledgements after the answers:
// a leader that has not noticed its deposition (paused, cut off from
// some peers) keeps streaming, and a follower whose raft term has not
// moved yet would store, sync and acknowledge its chunks — bytes the
// old leader then counts for a quorum and acknowledges to the agent,
// past an end already given to the new leader. So OpEnd carries the
// asking leader's term (EndRequest.Term) and the answering node first
// fences its Follower at it (Follower.Fence; the new leader fences its
// own too): no acknowledgement of a stream of a lower term is sent
// after that, that stream is ended, and a stream of a lower term is
// refused from then on (TestFenceStopsDeposedAcks).
//
// Nothing records an inherited attempt's end before its fill completed
// in the term: the scheduler holds a lease that runs out, the
// controller's deadline of a job with a timeout and a revoked agent's
// loss until the fill reports the end (sched.Scheduler.Filled;
// sched/inherited.go), then records them there — the lease checked
// again, as a heartbeat may have renewed it meanwhile. So a lost
// attempt's LogBytes covers every byte a quorum acknowledged, however
// long the fill takes: while it fails (the sweep tries again every 2 s)
// no quorum answers, and then nothing can be committed anyway. The
// leader's jobsuite_cluster_output_fill_waiting counts the attempts
// whose end waits so.
//
// # Repair
//
// A node that was down, or fell out of a leader's ring, lacks some
// output — holes, not only a short tail: chunks of the next term arrive
// past the ones it missed. Every round that ends an attempt carries a
// store.TruncateLog, which says the job's output below its At is final;
// the node's Repairer (repair.go) finds the holes below At
// (store.LogHole) and fetches them from a peer (OpRead), storing each
// byte under the attempt it belongs to with store.ReplicaOutput (so a
// job pruned meanwhile is not brought back). Gap fill and OpEnd count
// only what a node holds without a hole.
//
// The repair queue is durable, in the store: the FSM's apply of a
// TruncateLog also writes the job's "y" key (its At), in the same
// Pebble batch as the round, on every node alike; the Repairer takes
// the key out (store.RepairDone, node-local, a batch per pass) only
// once the node holds every byte below At, or the job is gone (a
// PruneJobs takes it out too). A key raised meanwhile by a later end
// stays. So:
//
//   - a node that stops (kill -9 included) after it applied an end and
//     before it repaired finds the job again when it starts: Run reads
//     the store's queue first (store.PendingRepairs). A crash that lost
//     the unsynced batch with the key lost the applied index with it,
//     and raft applies the round again; the repaired bytes are written
//     before the key's removal, and the WAL keeps a prefix, so the key
//     never outlives them wrongly;
//   - a node that catches up by installing a snapshot applies no rounds
//     for what the snapshot covers, but the checkpoint holds the queue
//     of the node it was taken on: the jobs that node had not repaired,
//     whose holes the installed copy shares. cluster.Options.Restored
//     makes the Repairer drop what it was told and read the new store's
//     queue (Rescan); it repairs those holes from the peers that hold
//     the bytes (any peer: the one the snapshot came from may lack them
//     too). A job the leader had repaired has no hole below its At in
//     the checkpoint, since a hole below At can only come from a
//     TruncateLog that queues it again.
//
// Note (cluster.Options.Applied, from the same apply) only spares the
// Repairer a read of the store per end. On the leader the check finds
// no hole, as a rule, and costs one LogHole and a share of a batch per
// ended attempt. The queue is node-local: store.Dump leaves it out, so
// stores still compare equal across nodes. Metrics:
// jobsuite_cluster_output_repair_pending (the jobs queued on this
// node) and jobsuite_cluster_output_repaired_bytes_total.
//
// What the queue does not cover: output of an attempt still running.
// A node that installs a snapshot takes the leader's copy of it as of
// the checkpoint; the chunks the stream stored in the replaced store
// since then, which this node may have acknowledged, are carried over
// into the new store before the old one goes (cluster's carryOutput,
// under the lock the Follower's writes take: FSM.ApplyOutput), so an
// install never takes acknowledged bytes away. What neither store had
// (a hole from before) waits for the attempt's end: its TruncateLog
// queues the job and the repair fills it. Stores written before the
// queue existed hold no keys: their unrepaired holes are not found at
// start.
// The output channel was off by default then, and a scan of every ended
// job's log at start would read all stored output, so there is none.
//
// # Serving logs from every node
//
// Every node's store holds the output, so every node serves logs
// (controller/node_logs.go). The Follower tells FollowerOptions.Appended
// of each chunk it stored and the Repairer RepairOptions.Repaired of each
// job it repaired: the node rings its log followers. Follower.Streaming
// says whether a leader streams to this node now, the condition for
// serving a running attempt's output from this copy; an ended attempt's
// is served only without a hole (store.LogHole), else the read goes to
// the leader.
//
// Of a running attempt, every node serves only output that is final:
// below an end the scheduler counted (LeaderOptions.Durable returned
// true), which the attempt's LogBytes will be at least, whether it
// finishes, is lost or its leader fails over (a new leader's gap fill
// finds every quorum-durable byte). Bytes past it a quorum may not hold:
// were the attempt lost, its end's TruncateLog would cut them and the
// next attempt write there, and a client that had read them and resumed
// past them would get the next attempt's bytes at those offsets. The
// leader's readers stop at sched.Scheduler.DurableEnd and are rung as it
// moves (the Durable callback). Followers learn the counted ends on the
// stream: after chunks, the Leader sends an ends frame (wire.go) with
// each job whose end it counted since the last one (every job's on a
// new stream), and the Follower keeps the largest per job (DurableEnd,
// rung through FollowerOptions.Committed) until the attempt's end is
// applied on the node (Ended, from its TruncateLog; its LogBytes then
// says the rest). It takes them only from a stream whose term is not
// below its own raft term: a deposed leader may still count bytes that
// the new leader's gap fill did not see. A follower of an earlier
// release (jobsuite-output/1) gets none. A node serves a running job up to the larger of that
// and its LogBytes and running attempt's LogStart. Why not raft's way,
// the quorum-durable seq Q in the frames and "the chunks up to Q" on the
// follower: a chunk can reach the quorum after its attempt was lost
// (the scheduler no longer counts it, the round that cuts it is not yet
// applied on the follower), and a follower that counted it would serve
// bytes the cut removes. The counted ends are what the scheduler
// records, so they are never taken back; they cost one small frame per
// quorum acknowledgement (a few hundred a second while output flows),
// and readers trail the leader's copy by one acknowledgement round.
// Single controllers and ended attempts are served as before.
package outchan
