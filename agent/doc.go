// Package agent is the jobsuite agent: it dials the controller (QUIC,
// or TCP+TLS+yamux where UDP is blocked), says hello with its name,
// labels and slots, grants credits for free slots, and runs each
// dispatched attempt with /bin/sh -c in a process group of its own
// (process.go). Every attempt gets a stream of its own that carries
// JobOpen, Started, the output chunks with their byte offsets, and
// Finished; the controller acknowledges the output it stored (LogAck)
// and the result (FinishAck), after which the agent forgets the attempt
// and grants a new credit. Heartbeats list the attempts the agent holds
// and renew their leases. protocol/PROTOCOL.md specifies the exchange.
//
// The agent trusts only the configured CA and only a peer whose
// certificate carries the controller role.
//
// # Jobs outlive the connection
//
// A lost connection does not stop a job. The agent reconnects with
// exponential backoff and jitter (ReconnectMin doubling up to
// ReconnectMax, back to the start after a session that lasted), and its
// Hello lists every attempt it holds — running, or ended with a result
// not yet acknowledged. The controller reattaches those whose lease has
// not run out (no retry, no duplicate) and cancels the others; the
// agent then reopens each attempt's stream and resumes its output from
// the last acknowledged offset. An attempt the controller refuses (its
// lease ran out and the job was retried elsewhere) is killed and
// dropped.
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
// never dropped silently. The one exception is the per-attempt cap,
// Config.MaxLogBytes (-max-log-bytes, none by default): output past it
// is dropped and a marker line on stderr ("[jobsuite: output truncated:
// the job wrote more than N bytes]") ends the stored log; the job runs
// on. Spool writes are not synced one by one: they survive a crash of
// the agent, not a power loss of the worker.
//
// # The state directory
//
// Each attempt has a directory DIR/JOBID-ATTEMPT holding the spool, the
// offset acknowledged so far and meta.json (the dispatch, the process ID
// and start time, and the result once the process ended). A result is
// kept there until the controller acknowledges it, so an agent that
// restarts reports it at its first connection. An attempt that was still
// running when the agent died cannot be resumed: at start the agent kills
// its process group (if that process still exists — the start time tells
// a reused PID apart) and reports the attempt failed, with the output it
// had spooled.
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
