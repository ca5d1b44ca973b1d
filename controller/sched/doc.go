// Package sched is the controller's scheduler and its single writer:
// the jobs not yet finished, the queue, the delay heap of jobs waiting
// to retry, the attempt leases and deadlines, the book of each connected
// agent (credits, attempts, drain, last heartbeat), and the Committer
// that turns every change into store commands written in group-committed
// rounds.
//
// # Why a package
//
// The scheduler owns its state: one mutex guards all of it, every change
// of a job goes through one function (transition) that also queues the
// matching store command, and no store I/O happens under the lock.
// Inside package controller that rule was kept by convention and checked
// by grep; here the mutex, the maps and the agent books are unexported
// fields of Scheduler, so no code outside this package can take the lock
// or touch the state — the compiler enforces what the grep used to
// check. Everyone else calls Scheduler's exported methods, and what they
// get back is theirs: copies (Snapshot, Agents, Capacity) or records
// that are never modified once queued.
//
// The package holds what must share that lock or its ordering, and
// nothing else:
//
//   - scheduler.go: submit (the one submit path, idempotency keys),
//     transitions, dispatch rounds, started, finished, output, cancel,
//     retries with their backoff, the delay loop.
//   - deps.go: dependencies between jobs (Job.After): blocked jobs,
//     decided in the round that ends the last job they wait for.
//   - fanout.go: fan-out (issue 17): a parent and one child per chosen
//     agent, created in one round; children pinned to their agent
//     (the queue matches the agent's name under a key no label can
//     spell); the rollout (batch, max failures) and the parent's
//     summary and final state written in the round that ends a child;
//     cancel of a parent; a pinned job failing when its agent stays
//     away (Options.OfflineTimeout); the durable record of agents seen.
//   - schedules.go: cron schedules (issue 17), fired from the delay
//     loop's clock, each firing one round (the job and the schedule's
//     advance), with the overlap and catch-up policies.
//   - queue.go: queued jobs by priority and FIFO (with optional aging),
//     grouped by label selector: the scheduler's data, with no lock of
//     its own.
//   - expiry.go: lease and deadline expiry, one timer for the earliest.
//   - registry.go: the book of each connected agent.
//   - commit.go: the Committer. It is here, not in a package of its own,
//     because fencing rests on one ordering: the scheduler queues a
//     command under its lock, and the committer applies commands in the
//     order they were queued (below). The committer is also the only
//     writer for everyone else — security records, join tokens, audit,
//     retention's prunes (Committer.Do, Committer.Add) — which needs
//     nothing from the scheduler.
//
// A round is what must be durable together: change (every transition
// goes through it) gathers a job's new version and, when the job ends,
// the decisions of the jobs blocked on it and, for a fan-out child, its
// parent's next version (written by commit, with the rollout's next
// step, before the round is queued), and commit queues them with
// Committer.AddAll as one batch — a crash keeps all or none of them.
// With Options.Notify set, the same round holds the webhook outbox
// entries (store.PutDelivery) of a job that starts running or ends:
// the Notifier chooses the targets and writes the bodies, under the
// lock, and is handed the entries back once the round is durable, so a
// notification exists exactly when its event does (the delivery worker
// is the controller's: controller/webhook.Outbox).
//
// The clock the scheduler runs on is package controller/clock: the
// controller's retention loop runs on it too, and the tests of both
// share one fake (clock/clocktest).
//
// # What it needs from the controller
//
// Declared here, where they are used (needs.go): a Reader of the store
// (*store.Store), agent Sessions (the controller's agentConn) that it
// sends Dispatch and Cancel to and closes, Metrics that hear of every
// transition (the controller's Prometheus metrics), and the Disk guard
// that refuses growth and pauses dispatch when free space is low. The
// scheduler never sees the HTTP API, TLS or the transport: the API turns
// an Agent into its wire type, a Submission into a batch item.
//
// # Fencing without I/O under the lock
//
// Once an attempt is lost and retried, the next attempt owns the job's
// log from the lost one's end on, so no chunk of the lost attempt may be
// stored after its loss. The job stream calls Scheduler.Output, which
// checks that the attempt is current and queues the chunk's Output
// command under the mutex; every transition that ends an attempt is
// queued under the same mutex; and the Committer applies commands in the
// order they were queued. So a chunk is stored before the record of its
// attempt's loss (whose LogBytes counts it) or not at all, and the next
// attempt's LogStart is past it — with no write under the lock. Output
// returns the Batch holding the chunk; the stream acknowledges the chunk
// (LogAck) once that batch is durable.
//
// With a cluster's output channel (Options.OutputChannel) the channel
// stores output and the scheduler counts an attempt's output only as far
// as OutputDurable says a quorum holds it. An attempt running when it
// loads was inherited from an earlier leader: its durable end is known
// only once the term's gap fill has asked a quorum, so no end of it is
// recorded before Filled (a lease that ran out, a passed deadline, a
// revoked agent wait for it; inherited.go). DurableEnd tells the log
// readers how far a running attempt's output may be served.
//
// # Durability
//
// Whatever makes a change visible outside waits for the Batch holding
// it: Submit and Cancel before they return, the dispatcher before it
// sends a round's Dispatches, the job stream before its FinishAck or
// LogAck. Batches become durable in order, so a waiter may rely on every
// earlier batch being durable too.
//
// A job's start is the one transition nothing waits for: nothing is
// acted on once it is durable, so Started queues it as Committer.AddLazy
// does (AddAllWithin lazyWait, through commitWithin like every round, so
// a webhook's "started" entry is handed on once durable), which starts
// no round (and no fsync) of its own —
// it rides the next round something else starts (a short job's result,
// usually, which the agent sends in the same write), or one started
// lazyWait (50 ms) after it. A crash before then loses nothing: the store
// still holds the attempt as dispatched, and the agent sends Started
// again first thing on the job stream it opens to the next controller
// (after a restart or a failover), which records it then; a result ends
// a dispatched attempt as it ends a running one. Store readers (GET
// /jobs/:id, lists by state) may see a running job as dispatched for up
// to lazyWait.
//
// A submit waits for its dispatch when a slot is free: the job's round
// does not start at once but when the dispatch loop, which the submit
// wakes, has added the job's dispatch to it (or found it cannot be
// dispatched), at most submitWait (2 ms) later. The 201 and the Dispatch
// then wait for one fsync instead of one each; both still go out only
// once their transitions are durable.
//
// A result waits a little too, when its agent announced that it frees
// the slot as the process ends (protocol.FeatureEarlyRelease): such an
// agent runs its next job without waiting for the FinishAck, so the
// result's round may wait up to resultWait (10 ms) for another to ride
// (Committer.AddAllWithin) and the results of several agents share one
// fsync. An older agent's result starts its round at once. A job
// transition or output chunk the store refuses means memory and store
// disagree (ErrDiverged): the Committer fails, and with it the
// controller.
//
// # Slots and credits
//
// An agent's book counts what it may be sent (registry.go): the credits
// it granted, capped by its slots less the attempts it holds here, and
// resynchronised by each heartbeat (slots less what the heartbeat says
// it holds, and less what it was sent but has not seen). A credit comes
// as a Credit on the control stream — ordered with the heartbeats, so a
// heartbeat's Ended list says exactly which slots were granted before
// it — or, from an agent whose session agreed to
// protocol.FeatureCreditWithResult, with the attempt's result
// (SlotReturned, called by the job stream once Finished accepted it).
// The result's stream is not ordered with the heartbeats, so such an
// agent lists the attempt as running until the FinishAck, and the book
// remembers the attempts whose result returned their slot on the
// session (agentState.returned) while heartbeats still list them: a
// heartbeat counts those free and the others held, so a result that
// comes after it adds its credit and one that came before is counted
// in it, exactly once either way. A refused result returns nothing (the
// agent sends a Credit instead), nor does one on a replaced session
// (the new session's first Credit counted the slot) or while the agent
// drains.
package sched
