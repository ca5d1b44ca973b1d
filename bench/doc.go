// Package bench measures jobsuite against the machine it runs on and
// prints a table: each figure next to the machine limit it is bounded
// by, measured in the same run, and the target of the benchmark issue.
// `make bench` runs it through cmd/jobsuite-bench; BENCHMARKS.md holds
// a run and explains the method.
//
// # Processes
//
// Every controller runs in a child process of its own (the benchmark
// binary started again with JOBSUITE_BENCH_CHILD set, see Child), so its
// CPU time, resident memory and disk writes are read from /proc without
// the load generators mixed in. Real agents are child processes too.
// The benchmark process itself holds the HTTPS clients, the WebSocket
// follower and the fake agents. Everything talks over loopback with
// mutual TLS, as in production; every controller keeps durability on
// (each state transition is a synced Pebble batch). Controllers and
// agents log at info level, their default, to files in the scratch
// directory.
//
// # Fake agents
//
// A fake agent (fake.go) dials the controller's agent port over QUIC or
// TCP with its own agent certificate, sends Hello and Credit, and on
// each Dispatch opens the attempt's job stream and reports JobOpen,
// Started and Finished at once (one write: protocol.Writer.WriteAll),
// without spawning anything; it grants
// the slot again when the controller's FinishAck says the result is
// durable. Fake agents measure the controller; real agents measure the
// whole path, process spawning included.
//
// # Groups
//
// The benchmarks are grouped by the items: submit (durable
// submit: POST /jobs with 1, 16, 64 clients, POST /jobs/batch), capacity
// (burn-down by fake agents), real (`true` jobs through real agents, and
// their dispatch latency), latency (dispatch latency with fake agents,
// retry timer lateness), log (1 GiB of output stored and followed),
// scale (idle agents: memory and heartbeat CPU) and deep (a deep queue:
// dispatch cost, restart time, memory). Each group starts fresh
// controllers with empty data directories.
//
// The cluster group (cluster.go, issue 14's rows 9a–9g) runs only when
// named (-groups cluster): three controllers in cluster mode on this
// machine. Rows 9a (64 clients to the leader), 9g (the same through a
// follower), 9b (batches) and 9c (burn-down by fake agents connected
// to the leader) run the nodes as children (controller.NewNode), so
// -cpuprofile profiles each node. Rows 9e and 9f run the jobsuite
// binary (built with `go build` unless Config.Jobsuite names one) with
// real agents that know all three, under a light submit load, and kill
// the leader with SIGKILL FaultKills times: 9e is the time from the kill
// to the dispatch of the first job the cluster accepted after it (the
// attempt's dispatched_at, on the controllers' clock, this machine's),
// 9f until every agent is listed by the new leader; both with QUIC and
// with TCP agents (rows 9e-tcp, 9f-tcp).
//
// The machine limits are measured directly: fdatasync of the data disk,
// synced store.Apply at the same concurrency and batch size (Pebble's
// group commit, without the controller), /bin/sh -c true spawned with
// os/exec, head | cat through a pipe, sequential disk writes, bare Go
// timers.
//
// A smoke test (TestSmoke) runs everything with SmokeSizes so the
// harness cannot rot; it checks that every row has a number, never how
// fast it is.
package bench
