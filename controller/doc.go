// Package controller is the jobsuite controller: the HTTPS API, the
// scheduler, agent sessions and the log hub. Server.Run serves it.
//
// # State and durability
//
// The store (package controller/store, the only Pebble user) holds every
// job record, the queue, delay and active indexes, each job's events and
// its output. The scheduler keeps the non-terminal jobs, the queue and
// the connected agents in memory behind one mutex and changes them only
// through scheduler.transition, which also queues the matching store
// update. The committer (commit.go) writes queued updates as one synced
// Pebble batch per round, so concurrent transitions share an fsync, and
// writes the next round while earlier ones sync, releasing them in order.
// Whatever makes a transition visible outside — the HTTP answer, the
// Dispatch to an agent, the FinishAck — waits for its batch, so nothing
// is acknowledged that a kill -9 could lose. Every transition is a
// command (prev → next, event) applied to the store: the shape a
// replicated log could later apply on several controllers.
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
// (expiry.go). After a restart, attempts found running get 1¼ leases for
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
// appends it to the store at the job's log offset and rings the hub.
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
