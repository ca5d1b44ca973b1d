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
// # Profiles
//
// With -cpuprofile each controller child writes a CPU profile,
// <dir>/<group>.pprof, and each real agent <group>-agent-N.pprof. The
// real group cuts the controller's into one file per row
// (proc.profilePhase, SIGUSR2): real-3.pprof, real-4a.pprof and
// real-4d.pprof hold rows 3, 4a and 4d alone, the *-records files the
// benchmark's own reading of the jobs afterwards, real.pprof the start.
// Row 4d offers half of row 3's rate (at most 500 jobs/s), so it moves
// with the machine; -real-rate pins it, for before/after pairs.
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
// The cluster group (cluster.go, issue 14's rows 9a–9h, 9p) runs only when
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
// with TCP agents (rows 9e-tcp, 9f-tcp). The opt-in group
// cluster-failover runs these four rows alone.
//
// The cluster group ends with the rows of issue 14's output decision
// (also alone as the opt-in group cluster-output; cluster-log runs 9d
// alone, for before/after pairs, and cluster-log-raft runs 9d-raft, 9d
// with the nodes' -output-channel=false, output in the raft rounds): 9h and its variants (raftalone.go) are
// the raft layer alone with this repository's transport (cluster.Mux,
// mutual TLS 1.3), raft-wal and cluster.FSM applying rounds of one
// Output command (or a trivial FSM), LogBytes/4 in 64 or 256 KiB
// entries; 9p and 9p-256k are a bench-only PROTOTYPE of the design
// note's separate output channel (each node applies each chunk to its
// own Pebble store, the followers ack their synced chunk over an
// ALPNCluster connection, quorum = the second highest synced chunk),
// measured the same way. Their leader runs in the benchmark process and
// each follower in a child ("output-peer"), so CPU splits per node. 9d
// is one job writing LogBytes through a real agent at the leader of a
// three-node cluster, followed by a WebSocket on a follower, checked
// byte for byte (length and SHA-256 of each node's own stored copy,
// read with ?stale=1); its limit is 9h-256k of the same run, the size
// of entry 9d carries (the agent's 256 KiB LogChunks). The follower's
// WebSocket is proxied from the leader; when a leader change drops it,
// the client dials again from the offset it has, and the row counts the
// leader changes. 9d-m2 is the same with -raft-multiplier 2.
//
// The opt-in group cluster-logstore (logstore.go, rows 9l-wal and
// 9l-bolt) feeds issue 14's two candidate raft log stores, raft-wal
// (a node's) and raft-boltdb/v2, alone, one after the other, with
// fsynced StoreLogs batches of a round's mix of sizes for Probe; the
// limit is the disk's fdatasync rate. controller/cluster's
// BenchmarkLogStore* and TestLogStoreCrash hold the rest of that
// comparison.
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
