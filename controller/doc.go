// Package controller is the jobsuite controller: the HTTPS API, agent
// sessions and security, around the scheduler (package sched) and the
// log hub (package hub). Server.Run serves it.
//
// # Layout
//
// The controller is split where a package boundary makes an ownership
// or dependency rule visible, and nowhere else:
//
//   - controller/sched: the scheduler (queue, delay heap, leases, the
//     agents' books) and the committer, the one writer. Its mutex and
//     state are unexported, so the rule "only the scheduler touches its
//     state" is the compiler's (see Ownership). What it needs from here
//     — agent sessions, metrics, the disk guard — it declares as small
//     interfaces, so it depends on nothing of this package.
//   - controller/hub: the log hub. It owns one thing (who follows which
//     job, and the newest output of followed jobs) and needs nothing of
//     the controller; the committer's apply order feeds it.
//   - controller/clock (and clock/clocktest): the time the scheduler and
//     the retention loop are given; two packages run on it and their
//     tests share one fake.
//   - controller/store: the only Pebble user.
//   - controller/snapshot: the store's snapshot stream (a checkpoint's
//     files and a SHA-256), shared by a cluster's raft snapshots and a
//     single controller's backup (GET /operator/snapshot, snapshot.go)
//     and offline restore (the CLI's 'operator snapshot restore
//     -data-dir'), and a cluster's online restore
//     (POST /operator/snapshot/restore, node_restore.go).
//
// What stays here, this round, and why:
//
//   - Agent sessions (agents.go, live.go). A session is a connection
//     and a control-stream writer; the rule that mattered — a session
//     holds no scheduler state — is now enforced by the compiler, since
//     the scheduler sees a session only as a sched.Session and keeps its
//     book itself. Serving a session needs the scheduler, the committer,
//     the hub, the disk guard, the revocation check and the config: a
//     package of its own would take a dozen interfaces to say what the
//     Server already is, with no rule made clearer.
//   - Security (auth.go, audit.go, enroll.go): revocations, API tokens,
//     the audit log and join tokens. Its state already sits behind its
//     own type (security, with its own lock) and it writes only through
//     the committer. Most of its code is HTTP handlers and middleware
//     on the Server, and cutting off a revoked agent drives the
//     scheduler and sessions. The next step is a security package
//     holding that type (identities, revocations, tokens, audit), with
//     its handlers left here.
//   - The HTTP API (api.go, handlers.go, batch.go, ws.go,
//     schedules.go, ...). The handlers are the Server's methods and
//     call the scheduler's exported API (dependencies between jobs and
//     cron schedules included: the scheduler holds and fires them); the wire types they serve are the top-level package
//     api's, shared with the CLI. Handlers in their own
//     package would have to reach into every component above; the
//     boundary worth having is the wire types', not the handlers'.
//   - Webhook notifications (notify.go): the scheduler's Notifier
//     (sched.Options.Notify), which chooses the targets of a job's
//     start and end — its own notify URLs, the configured webhooks
//     that ask for the event — and writes the bodies, so the outbox
//     entries are committed in the round of the transition; and the
//     delivery worker (controller/webhook's Outbox, with its signing
//     and SSRF policy), run by Server.Run beside the scheduler's loops
//     — so on the leader, a Server per term, in cluster mode — which
//     records each outcome as committed commands (DeleteDelivery or a
//     retry's PutDelivery, and AppendEvent on the job). It loads the
//     outbox the store holds when it starts: a delivery interrupted by
//     a crash or a change of leader is sent again.
//
// The bodies its API reads and writes are the types of package api
// (jobsuite/api), which the CLI decodes too; the handlers convert store
// records into them. Config's defaults are DefaultConfig's, which the
// CLI's flags, config-file keys and help show. Retry delays come from
// internal/backoff.
//
// # State and durability
//
// The store (package controller/store, the only Pebble user) holds every
// job record, the queue, delay and active indexes, each job's events and
// its output, and the security records (tokens, revocations, join
// tokens, the audit log). Every durable change is a store.Command, and
// the committer (sched.Committer) is the one writer: it hands what was queued
// since its last round to store.ApplyNoWait as one synced Pebble batch,
// so concurrent changes share an fsync, and writes the next round while
// earlier ones sync, releasing them in order. Whatever makes a change
// visible outside — the HTTP answer, the Dispatch to an agent, the
// FinishAck, the LogAck — waits for its round, so nothing is
// acknowledged that a kill -9 could lose. A job's start waits for
// nothing and starts no round of its own: it rides the next one (the
// agent repeats it after a crash; package sched, Durability).
//
// The scheduler (package sched) keeps the non-terminal jobs, the queue
// and its book of the connected agents in memory behind one mutex, and
// changes a job only through its transition function, which also queues
// the matching command. The mutex is its own (see Ownership below), and
// no store I/O happens under it: commands are queued, the store is read
// outside it.
//
// # The write seam
//
// What crosses from the controller to the store is a sequence of
// rounds, each a []store.Command applied as one atomic batch, in order.
// This is the seam a replicated log sits behind: a single controller's
// committer calls store.ApplyNoWait directly; a cluster node's committer
// proposes each round to raft (sched.Log, cluster.Log: one entry per
// round, split at 64 KiB), and every node's FSM applies the committed
// entries with store.ApplyNoWait (see Cluster mode).
//
// The commands (controller/store/command.go): Transition (a job's new
// version with its event, and for a submission its audit entry; an
// event with Seq 0 creates the job), Output (a chunk of a job's log at
// its offset), PutToken and DeleteToken (API tokens), PutRevocation and
// DeleteRevocation, CreateJoinToken, UseJoinToken, DeleteJoinToken and
// PruneJoinTokens, AppendAudit and PruneAudit, TruncateLog (with the
// output channel: an ended attempt's log cut at its LogBytes), and PruneJobs (explicit
// job IDs, chosen by the retention loop from the finished index: the
// policy — its clock, its limits, the finished count — stays with the
// leader, and the command stays bounded, one read per job, whatever the
// store holds).
//
// Their rules, which make a round deterministic:
//   - Everything that varies is chosen before a command is made and is
//     carried in it: job IDs (store.NextID, taken by the scheduler), times
//     (event, attempt and chunk times from the scheduler's clock; token,
//     revocation and audit times from the handlers), retry delays with
//     their jitter (Job.NotBefore), audit IDs (security.stamp), the
//     random parts of tokens, the bytes of output and their offsets.
//   - Applying reads only the store and the command. A Transition reads
//     the job's current record itself; it never trusts a copy carried
//     along. Idempotency keys, join-token uses and deletes are decided in
//     apply order, and a later command sees an earlier one's effect, in
//     the same round or an earlier one. Each command's store.Result (a
//     create refused for its key, a token used up, a delete of a missing
//     record) is a function of the store and the command, so the same
//     rounds applied to two stores holding the same data leave them
//     byte-identical and decide the same results.
//   - Commands are plain data (exported fields, which encoding/json
//     carries: TestCommandsReplayByteIdentical sends a real run's rounds
//     through JSON into two fresh stores and compares them with the
//     controller's own, key by key) and are never modified once queued.
//
// What a replica must do with them: apply every round, in log order,
// each as one batch through store.ApplyNoWait. The other writes to a
// replica's store are Open's schema version, the output the output
// channel brings (store.ReplicaOutput, in a cluster by default) and the
// node's own repair bookkeeping (store.RepairDone); see Cluster mode.
// Node-local
// state stays node-local: the QUIC stateless-reset key is a file under
// node/ in the data directory, not a key, and the store's memory of
// unfinished jobs (store.head) and its finished count are rebuilt from
// the store by each node. Output is >99% of the bytes: a single
// controller's output commands ride the rounds like the others, and a
// cluster sends output beside them on the output channel (Cluster
// mode says why, and what each costs).
//
// The leader's side: a job transition or output chunk is counted done by
// the scheduler when it is queued, so the store refusing one means memory
// and store disagree, and the committer stops the controller
// (ErrDiverged); the next start loads the store's truth. Other commands'
// results go back to whoever queued them (Committer.Do).
//
// # Cluster mode
//
// With -cluster-addr the controller is a Node (node.go) of a raft
// cluster of 3 or 5 (hashicorp/raft v1.7.2, raft-wal v0.4.2 as its log;
// the building blocks are controller/cluster's: FSM, snapshots kept as
// Pebble checkpoint directories in DATA/raft/snapshots (CheckpointStore),
// the mutually authenticated cluster port, formation). Every node applies
// every committed round to its own store; only the leader schedules.
//
// The leader's work is a whole Server per term of leadership, built
// after a raft barrier from the store exactly as a restarted single
// controller builds itself — queue, timers, leases with the restart
// grace, security records — with a committer that proposes to raft
// instead of writing the store. Losing leadership (or the term's
// committer failing: a round's outcome became unknown) stops that
// Server and drops it whole, so nothing of a term outlives it; the next
// term rebuilds from the store. The node keeps what outlives terms:
// listeners, PKI, raft and the store.
//
// Fencing: nothing that acts on a job leaves before its round commits
// on a quorum (the rule of a single controller), and a session's writer
// asks the term's send gate before each Dispatch or Cancel — still
// leader of that term, confirmed by a quorum within the leader lease —
// so a leader paused after a commit sends nothing once another may lead.
//
// The API is served by every node: a follower forwards each request to
// the leader (node_http.go), which decides who the caller is from the
// forwarded, re-verified certificate or token as if it came directly;
// with no leader a request waits up to 5 s, then gets 503 and
// Retry-After. A stale read (?stale=1 on GET /jobs, /jobs/:id and
// /jobs/:id/logs, node_stale.go) is the exception: any node answers it
// from its own store, saying in headers how far behind it may be, and
// refuses it (503) once it has not heard from a leader for MaxStale.
// With the output channel, logs are the other (see below, node_logs.go).
// Jobsuite-Served-By names the node that answered.
// Agents are served by the leader; a follower turns an agent away
// naming the leader's agent address. A leader that loses its
// leadership first stops serving the API and taking agents, then sends
// each agent that follows redirects a Redirect — the new leader once it
// is known (waiting up to a second for it), else the members — and
// gives them a second to leave before its term's Server stops
// (Server.sayFarewell). A leader that dies says nothing, so each agent
// attached to the leader also keeps a watch session with a follower
// (node_watch.go), which sends it a Redirect as soon as it knows the
// leader of a later term. Node.TransferLeadership hands leadership on, as
// a clean stop does.
//
// An operator's restore (POST /operator/snapshot/restore,
// node_restore.go) replaces the whole cluster's store while it runs:
// the leader checks the whole stream first (a cluster's snapshot or a
// single controller's backup: the same format), stops its term's
// Server, and hands the stream to raft.Restore, which numbers it past
// the log's end and has every node install it; raft keeps the node
// leader in the same term, so the stopped term is what makes the
// lifecycle build a new Server from the restored store. Its agents are
// told to come straight back (a Redirect naming the leader itself), and
// an agent that reaches the leader between two of its terms (a restore,
// a new leader's barrier) is held up to 5 s for the next term's Server
// rather than turned away into its backoff. This is also
// how a single controller's jobs move into a cluster: a node refuses a
// single controller's data directory and its error names the steps. A
// single controller restores offline (snapshot.Restore), stopped.
//
// Output does not ride the raft log. The first version sent it there
// like every other command, and that is still what
// Config.OutputInRaft (-output-channel=false) does: an agent's LogAck
// then means "committed on a quorum" by construction and every node's
// store holds every log. The cost is raft bandwidth: every output byte
// is sent to each follower inside AppendEntries, one entry per agent
// LogChunk (256 KiB: a chunk larger than MaxEntryBytes travels alone),
// and written twice on every node (raft-wal, then the store). Measured
// (BENCHMARKS.md, "Issue 14: output in the raft log vs a channel of its
// own" and row 9d-oc), a channel of its own beside raft carried
// 1.4–1.8× the bytes per second at 0.56–0.75× the CPU per GiB, so the
// channel is the default. The setting is meant to be the same on every
// node, and it holds only while the cluster never used the channel: a
// leader that sends output in the rounds cannot fill the gap of an
// attempt whose output an earlier leader sent on the channel, so the
// first leader that uses the channel commits a mark
// (store.UseOutputChannel) before it takes any output, and every later
// leader uses the channel whatever its setting (Node.termOutput, with a
// warning). Nodes report how they would send (operator members, OUTPUT)
// and a leader logs a voter that differs; every node serves the
// channel's follower side and its repair whatever its own setting.
//
// The output channel is controller/outchan (output_channel.go here). A
// term Server hands each LogChunk its job stream accepts (attempt current,
// checked under the scheduler's lock as before) to the term's
// outchan.Leader, which writes it to the leader's store
// (store.ReplicaOutput, unsynced, a group syncer behind it), numbers it
// and streams it to every voter on the cluster port (ALPN
// jobsuite-output/2); followers store a chunk only once its attempt is
// applied in their store, sync in groups and acknowledge. The
// scheduler (sched.Options.OutputChannel) counts an attempt's output
// only as far as a quorum holds it synced (sched.OutputDurable, told
// by the Leader in order), so LogAck, a Finished (the stream waits for
// the quorum to hold its last chunk before proposing it), a lost
// attempt's LogBytes and the next attempt's LogStart are all
// quorum-durable ends; each round that ends an attempt carries a
// store.TruncateLog at its LogBytes, which removes on every node the
// bytes no quorum acknowledged. A new leader fills the gap of every
// attempt running when its term began (at the term's start, and before
// it takes the attempt's reopened stream): it asks the peers for their
// synced end until a quorum answered, fetches what it lacks from the one
// with the largest, and makes the range a quorum may lack durable
// through the channel before it acknowledges that end; no end of such
// an attempt (a lease run out, the controller's deadline, a revoked
// agent) is recorded before its fill completed (sched/inherited.go), so
// a lost attempt's LogBytes covers every byte a quorum acknowledged.
// In-raft Output
// commands still apply (old logs, snapshots), and a single controller
// is unchanged. A node that missed output (it was down, or fell behind
// the leader's 64 MiB resend buffer) repairs the holes of each attempt
// whose end it applies, from its peers (outchan.Repairer). Its queue is
// in the store: the apply of each TruncateLog queues the job in the
// round's batch, and the repair takes it out once the node holds every
// byte below the end, so a node that stops before it repaired finds the
// job at start, and one that installs a snapshot repairs what the node
// it came from had not (the checkpoint carries that node's queue;
// cluster.Options.Restored makes the repair read it). The leader's hub
// cuts its in-memory copy of a job's newest output with each
// TruncateLog the committer hands over. A follower serves GET
// /jobs/:id/logs and /ws/jobs/:id/logs from its own copy (node_logs.go;
// with Config.OutputInRaft it forwards them as before): it first waits
// until its store applied the leader's applied index, asked at the
// request's start, so the job's state, attempts and LogBytes are the
// committed ones; it serves an ended attempt's output only if its copy
// has no hole below the end, and a running one only while a leader
// streams to it, else it forwards; its reads stop at a hole; its
// WebSocket follow ends only once the job ended in its store and it
// holds every byte to LogBytes; of a running job, it and the leader
// serve output only up to the end the leader's scheduler counted
// (sched.DurableEnd; the leader sends followers those ends on the
// output stream), so no reader sees bytes a lost attempt's TruncateLog
// takes back; and the node's Follower and Repairer
// ring its own log hub (Node.logHub, rings only, no tail: a truncation
// cannot leave it stale). A follower that installs a
// snapshot while a stream runs carries the output of running attempts
// it stored after the snapshot's checkpoint into the new store
// (cluster.FSM.Restore), so an install takes no acknowledged byte away.
//
// The follower-lag bound (design note 3.2; cluster/lag.go, node_lag.go):
// hashicorp/raft commits with the fastest follower and lets a slower
// one fall behind without limit, which a failover then pays for. So the
// leader asks every other voter for its applied and last index every
// 100 ms, and the term's Log holds each new round (the committer keeps
// gathering commands meanwhile) while a live voter — heard from in the
// last 2 s and, while behind, applying — is more than MaxFollowerLag
// entries (2000) or MaxFollowerLagBytes (64 MiB of this term's entries)
// behind the leader's last index. A dead, cut-off or stuck voter is not
// waited for. /metrics shows each voter's lag and the time held.
//
// # Ownership
//
// The scheduler owns its state: its mutex, its maps and its book of each
// agent (agentState) are unexported fields of sched.Scheduler, so no
// file outside controller/sched can take the lock or touch the state —
// the compiler enforces it. Everyone else calls its exported methods.
// agentConn is the session only: the scheduler sees it as a
// sched.Session and keeps the agent's credits, attempts, drain and last
// heartbeat in its own book. What the compiler leaves to check, these
// show (each prints nothing):
//
//	grep -rl '^package sched$' controller | grep -v '^controller/sched/'
//	go doc -all ./controller/sched | grep -n 'sync\.'
//	grep -rnE 'agentState|\.(credits|draining|lastSeen)\b|\.running\[' --include='*.go' controller | grep -vE '^controller/(sched/|doc\.go:)'
//
// The first: only the scheduler's own files are in its package (so only
// they can name the lock). The second: no exported field, type or
// signature of the package hands out a sync primitive. The third: no
// file outside it keeps a copy of the agents' books. The scheduler's own
// tests (controller/sched/*_test.go) look inside it; the controller's
// tests use its exported API.
//
// Fencing without I/O under the lock (sched's doc.go says it in full):
// the job stream calls Scheduler.Output, which checks under the
// scheduler's mutex that the attempt is current and queues the chunk's
// Output command; every transition that ends an attempt is queued under
// the same mutex; and the committer applies commands in the order they
// were queued. So a chunk is stored before the record of its attempt's
// loss or not at all — with no write under the lock.
//
// The scheduler takes its time from a clock it is given (package clock;
// clock.Real in production), so its tests move a fake clock
// (clocktest.Fake) through leases, retries and timeouts in microseconds.
//
// Each transition logs one info line (job, state, attempt, agent), except
// the jobs of a batch submit: they log at debug and the batch logs one
// "jobs submitted" line with the count and the first and last job ID.
//
// # Dispatch
//
// Agents grant credits (free slots), one as soon as an attempt's process
// ends — possibly before its Finished report arrives, which is what
// frees the slot on this side. Whenever a job is queued, a credit
// arrives or a report frees a slot, the dispatcher hands out the best
// queued job each agent's labels satisfy: higher priority first, FIFO
// within a priority, round-robin across agents. It assigns the next
// round while the last one's batch is being written; a sender sends
// each round's Dispatches, in order, once its batch is durable. Each
// dispatch is a new attempt whose number is a fencing token; the agent
// quotes it on the attempt's job stream and in heartbeats, and reports
// for any other attempt are refused. An attempt's lease is renewed by
// heartbeats that list it; one that runs out makes the attempt lost, and
// the job is retried (after an exponential backoff with jitter) or
// fails. Leases end on time: every running attempt has an entry in an
// expiry heap at its deadline, and one timer waits for the earliest
// (sched/expiry.go). After a restart, attempts found running get 1¼ leases for
// their agents to reclaim them — the agents retry at least every quarter
// of a lease while they hold attempts.
//
// # Disk space
//
// Pebble must never meet a full disk (a failed log write panics it), so
// the controller keeps a floor of free space on its data directory
// (disk.go): below it new jobs get 507, output chunks are refused with
// CodeStorageFull (the agent keeps them spooled) and dispatch pauses;
// below half of it the committer holds every write until space returns.
// Both lift by themselves. Each attempt's stored output is capped
// (Config.MaxOutputBytes, sent to the agent in Dispatch.MaxOutput), so
// one job cannot fill the disk.
//
// # Logs
//
// An agent streams output on the attempt's own stream; the controller
// queues each chunk to the committer at the job's log offset, and the
// hub hears of it (and rings the job's followers) once the committer has
// applied it (with the output channel: once the leader stored it, see
// Cluster mode). The stream acknowledges output (LogAck) about every 50 ms,
// once the round holding the last chunk it counts is durable: chunks
// ride the committer's rounds, so a stream costs no fsync of its own.
// Followers (WebSocket, CLI) read from their own offset whenever the hub
// rings, so a slow follower holds up nothing and no follower ever sees a
// gap or a duplicate. While a job has followers the hub keeps a copy of
// its newest output (at most 8 MiB per job, 64 MiB in all) for those
// that keep up; older output comes from the store.
//
// Each chunk is stored with the time it arrived. A job's log is its
// attempts' output one after the other, and each attempt's record says
// where its output begins (LogStart): a follower that asks for attempt
// markers reads the job's attempts after the output it is about to send
// (from the scheduler while it holds the job), which is enough, because
// an attempt is recorded before its agent is sent the Dispatch and so
// before it can write a byte; the follower then cuts the output where
// an attempt begins and sends the attempt's marker first. ?attempt=N
// clips the same way, at the next attempt's LogStart (or N's end once
// it ended).
package controller
