package agent

import (
	"os"
	"runtime"
)

// DefaultProcs is how many threads may run the agent's own Go code at
// once (GOMAXPROCS) when neither -procs nor the GOMAXPROCS environment
// variable says otherwise.
//
// Why one: an agent's work per job is short bursts — a Dispatch to read,
// a process to start, a report to send — separated by waits. With two or
// more Ps, every goroutine the runtime readies while one runs (the job's
// runner, the shipper, QUIC's loops) wakes a second thread to run it,
// and sysmon polls while any P is busy: on the machine of BENCHMARKS.md
// ("Issue 16: the agent on one P") that was 29–32 context switches per
// job, against 18–20 with one P, and 15–27% of the agent's CPU per job,
// with the same throughput. The jobs themselves are processes of their
// own and use every CPU; a thread blocked in a system call (a spawn, a
// disk write) does not hold the P either, except the spawn's vfork,
// which the standard library serialises anyway (syscall.ForkLock).
// An agent that ships a great deal of output at once may want more:
// -procs 2.
const DefaultProcs = 1

// SetProcs sets GOMAXPROCS for a process whose work is one agent (the
// agent command; not `jobsuite dev`, which shares its process with the
// controller): to n if n > 0; else to DefaultProcs, unless the
// GOMAXPROCS environment variable is set, whose value then stands. It
// returns the value in effect.
func SetProcs(n int) int {
	if n <= 0 {
		if os.Getenv("GOMAXPROCS") != "" {
			return runtime.GOMAXPROCS(0)
		}
		n = DefaultProcs
	}
	runtime.GOMAXPROCS(n)
	return n
}
