// Package agent is the jobsuite agent: it dials the controller (QUIC,
// or TCP+TLS+yamux where UDP is blocked), says hello with its name,
// labels and slots, grants credits for free slots, and runs each
// dispatched attempt with /bin/sh -c in a process group of its own
// (process.go). Every attempt gets a stream of its own that carries
// JobOpen, Started, the output chunks with their byte offsets, and
// Finished; the controller acknowledges the result with FinishAck, after
// which the agent grants a new credit. Heartbeats list the running
// attempts and renew their leases.
//
// The agent trusts only the configured CA and only a peer whose
// certificate carries the controller role. It reconnects with
// exponential backoff and jitter when the connection drops.
//
// In this version a running attempt does not outlive its connection:
// when the session ends the agent kills the attempt's process group and
// the controller retries the job (if it has retries left) once the
// attempt's lease runs out. Keeping jobs running across reconnects needs
// the on-disk output spool and is tracked separately.
package agent
