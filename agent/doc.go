// Package agent is the jobsuite agent: it dials the controller (QUIC,
// or TCP+TLS+yamux where UDP is blocked), says hello with its name,
// labels and slots, grants credits for free slots, and runs each
// dispatched attempt with /bin/sh -c in a process group of its own
// (process.go). Every attempt is reported on a job stream that carries
// JobOpen, Started, the output chunks with their byte offsets, and
// Finished; the controller acknowledges the output it stored (LogAck)
// and the result (FinishAck), after which the agent forgets the attempt.
// With a controller that agreed to FeatureStreamReuse, a stream whose
// attempt got its FinishAck waits for the next attempt to report (at
// most one per slot wait): QUIC then spends no packets per job on
// opening and closing streams (their stream credit, reset or close,
// and the acknowledgements of each).
// Frames that are ready together go out in one write, and Started waits
// up to 5 ms after the start for the first output or the end, so a
// short job costs one packet (JobOpen, Started, output, Finished)
// rather than one per frame.
// The slot is granted again as soon as the process ends, while the
// result still waits for its FinishAck: the next job's dispatch overlaps
// the controller's commit of the last one's result. With a controller
// that agreed to FeatureCreditWithResult (Welcome.Features) the grant
// rides the result (Finished.Credit) — one frame less per job — and a
// Credit on the control stream is sent only when no result will carry
// it (the controller refused the attempt); otherwise it is a Credit.
// Heartbeats list the attempts the agent holds, and which of them have
// ended with their slot granted by a Credit before the heartbeat, and
// renew their leases. protocol/PROTOCOL.md specifies the exchange.
//
// The agent trusts only the configured CA and only a peer whose
// certificate carries the controller role.
//
// Config's defaults are DefaultConfig's; New applies them, and the
// agent command's flags, config-file keys and help show them.
//
// # Output
//
// By default a job's stdout and stderr share one pipe, so its output is
// stored in the order it wrote it (as one stream, stdout). A dispatch can
// ask for two pipes instead (Output split: stdout and stderr apart, the
// order between them approximate) or for a pseudo-terminal (TTY, tty.go:
// one stream, 80x24, TERM set, echo and output processing off, the job a
// session leader whose process group is killed as any other); Config.TTY
// (-tty) puts every job on a terminal that does not ask otherwise. See
// Spec and PROTOCOL.md (Dispatch).
//
// # Jobs outlive the connection
//
// A lost connection does not stop a job. The agent reconnects with
// exponential backoff and jitter (internal/backoff: ReconnectMin
// doubling up to ReconnectMax, each wait between half and all of its
// delay, back to the start after a session the controller welcomed),
// and its Hello lists every attempt it holds — running, or
// ended with a result not yet acknowledged. Leases keep running on the
// controller meanwhile, so while it holds attempts the agent tries at
// least every quarter of the lease the controller announced
// (Welcome.LeaseTTL), and bounds each dial to that, however far its
// backoff has grown (connectLoop). A session that hears nothing from the
// controller for a quarter of the lease (at least 2 s; keep-alives go
// every third of that) is over (idleTimeouts): a controller that died
// without a word is noticed then, not at QUIC's default 15 s. The controller reattaches those whose lease has
// not run out (no retry, no duplicate) and cancels the others; the
// agent then reopens each attempt's stream and resumes its output from
// the last acknowledged offset. An attempt the controller refuses (its
// lease ran out and the job was retried elsewhere) is killed and
// dropped.
//
// # Several controllers (controllers.go)
//
// Config.Controller may name the controllers of a cluster, comma-
// separated. The agent dials them in turn: a dial that fails, a
// controller that refuses the session or knows no leader, and the agent
// moves on to the next address at once (after 100-500 ms when no leader
// is known: an election is under way); only a whole round in which
// every address failed grows the backoff. A controller that is not the
// leader answers with a Redirect naming the leader, which the agent
// dials at once, without counting a failure — up to three redirects in
// a row, then it backs off as after a failed round. A session the
// controller welcomed starts the backoff over when it ends, and the
// agent moves on to the next address (a leader that loses its
// leadership sends a Redirect first). The leader's Welcome lists the
// cluster's controllers, and a Redirect the ones its sender knows: the
// agent dials those too, after the configured ones, which it always
// keeps. Held attempts move with the agent: its Hello lists them to
// whichever controller welcomes it, as after any reconnect, and the
// quarter-lease bound on waits holds throughout. The agent announces
// that it follows redirects (Hello.Features), so a controller never
// sends a Redirect to an older agent.
//
// Watching (watch.go): while attached to a leader that agreed to it
// (Welcome.Features), the agent keeps a watch session with another
// controller of the cluster, which answers with a Redirect as soon as
// it knows a leader of a later term; the agent then leaves the old
// leader at once instead of waiting for its session to time out (a
// killed leader, over QUIC, closes nothing).
//
// Fencing: the agent remembers the highest leadership term that a
// Welcome, Dispatch or Cancel carried. It leaves a controller that
// welcomes it with a lower term (a deposed leader that does not know it
// yet) as it would a failed dial, and it drops a Dispatch or Cancel of
// a lower term — nothing runs, nothing is killed — logs it, counts it
// (jobsuite_agent_fenced_messages_total) and ends the session. Term 0
// (a single controller) is never fenced. After a whole round in which
// no controller welcomed it, the agent forgets the term, so that a
// cluster rebuilt from scratch, whose terms start over, can serve it.
// The learnt members and the term outlive the agent's restarts, in
// cluster.json in the state directory (clusterstate.go).
//
// # The spool (spool.go)
//
// Output goes to a spool file per attempt in the state directory
// (Config.StateDir, -state-dir) before it is sent, and stays there until
// the controller acknowledges it as durably stored; acknowledged space
// is released (hole punching). The spool is bounded by Config.SpoolMax
// (-spool-max, 64 MiB by default) of unacknowledged output per attempt:
// when it is full the agent stops reading the job's pipes, so the job
// blocks in its own write() until acknowledgements make room. Output is
// never dropped silently. The one exception is the per-attempt cap, the
// lower of Config.MaxLogBytes (-max-log-bytes, none by default) and the
// controller's (Dispatch.MaxOutput): output past it is dropped and a
// marker line on stderr ("[jobsuite: output truncated: the job wrote
// more than N bytes (WHOSE CAP)]") ends the stored log; the job runs on.
// Spool writes are not synced one by one: they survive a crash of the
// agent, not a power loss of the worker.
//
// A write the disk refuses (full, failing) is tried again, the same
// record at the same place, every half second and whenever an
// acknowledgement frees space; meanwhile the job's output, and so the
// job, waits. Only when the disk has refused for Config.DiskFullTimeout
// (-disk-full-timeout, 1 minute) does the agent give up: it stops the
// job, and the attempt fails with "agent disk full: output incomplete"
// and the output written before, whole — never "completed" with a hole.
// Releasing acknowledged space needs no new space: the offset
// acknowledged is kept in a .ack file of two fixed slots rewritten in
// place (spool.go), so a spool on a full disk still drains.
//
// # The state directory
//
// An attempt's meta — the dispatch, the process ID and start time, and
// the result once the process ended — is a JSON record in a file rec-N
// of the state directory (state.go). Record files are reused: when an
// attempt is forgotten its record is marked free and the next attempt
// writes over it, so a job costs two writes to an open file and no file
// created or deleted, which on a busy file system is what costs most
// (each is a journal transaction). The record is written once the
// process has started (nothing before: an agent that dies earlier ran
// nothing, and the lease recovers the attempt) and again with the
// result. Output goes to JOBID-ATTEMPT.out, with the offset acknowledged
// so far in JOBID-ATTEMPT.out.ack (two 32-byte slots, written in turn;
// earlier agents wrote 16 bytes, still read), both created at the first
// output: a job that writes nothing has no spool file. (Earlier agents kept all of an
// attempt's files in a directory JOBID-ATTEMPT; an agent still reads
// and reports those at start.) cluster.json holds what the agent
// learnt of a cluster (clusterstate.go), replaced atomically whenever
// it changes; the scan of attempts ignores it.
//
// A result is kept until the controller acknowledges it, so an agent
// that restarts reports it at its first connection. An attempt that was
// still running when the agent died cannot be resumed: at start the
// agent kills its process group (if that process still exists — the
// start time tells a reused PID apart) and reports the attempt failed,
// with the output it had spooled.
//
// # When the result is durable
//
// The result is written to its record before anything is reported, and
// synced 50 ms later unless the FinishAck has come first; Finished does
// not wait for the sync. Nothing is lost by that order:
//
//   - A crash of the agent (the process, not the machine) keeps every
//     write in the page cache: the restarted agent finds the result and
//     reports it again. If the controller had stored it, it answers the
//     reopened stream with FinishAck and keeps what it stored; if not,
//     it stores it now. A sync would add nothing.
//   - A crash of the machine before the sync loses the unsynced result,
//     and the restarted agent reports the attempt failed ("the agent
//     stopped while the job ran") or, if the record itself was lost, the
//     lease runs out and the attempt counts as lost. Either way the job
//     is retried if it has retries left, exactly as if the machine had
//     gone down while the job ran — and a Finished the controller did
//     store before the crash stands: it answers the report of the
//     restarted agent with FinishAck. The window is the time from the
//     process's end to the FinishAck, at most 50 ms plus one sync.
//     Syncing before Finished would shorten it to one sync, not close
//     it: the result of a job that ends just before a power loss is
//     lost in any order, and the unacknowledged output in the spool is
//     not synced either.
//   - Once the FinishAck arrives the result is durable on the controller:
//     the sync is moot and skipped, which it usually is (a commit takes
//     a few milliseconds).
//
// # Drain
//
// When Run's context is done (main cancels it on the first SIGTERM or
// SIGINT) the agent drains: it sends Drain so the controller dispatches
// nothing more, keeps heartbeating while running jobs finish, for up to
// Config.DrainTimeout (-drain-timeout, 10m by default), then cancels
// what is left (process groups killed, reported cancelled) and returns
// once the results are delivered, or after a short grace, leaving
// undelivered ones in the state directory for the next start. Stop
// (main calls it on a second signal) cancels the running jobs at once.
//
// # Live status
//
// The controller may ask about an attempt (StatusRequest, for GET
// /jobs/:id?live=1 and jobsuite status -live); the agent answers from
// /proc: PID, elapsed time, user and system CPU and RSS summed over the
// processes now in the attempt's process group, their number, the output
// bytes so far and the last complete output line.
//
// Agents can enroll with a join token instead of copied files
// (enroll.go), renew their certificate while connected, and restrict
// what they run with a policy (policy.go).
package agent
