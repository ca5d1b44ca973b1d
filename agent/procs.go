package agent

import "runtime"

// SetProcs sets GOMAXPROCS, how many threads may run the agent's own Go
// code at once, for a process whose work is one agent (the agent
// command's -procs; not `jobsuite dev`, which shares its process with
// the controller): to n if n > 0; 0 leaves the runtime's choice (the
// GOMAXPROCS environment variable, else the number of CPUs). It returns
// the value in effect.
//
// One P costs the least CPU per job: an agent's work per job is a few
// short bursts, and with more Ps each goroutine readied while another
// runs wakes a second thread, and sysmon polls while any P is busy. On
// the machine of BENCHMARKS.md ("Issue 16: the agent on one P") one P
// took 15–27% less of the agent's CPU per job and 38–48% fewer context
// switches at the same throughput. It is not the default because of its
// tails on a busy host: a spawn holds its P until the child reaches
// exec (the standard library's vfork), which on a loaded machine can
// take tens of milliseconds, and with one P nothing else of the agent
// runs meanwhile — the dispatch-to-start p99 grew from 3–6 ms to
// 13–21 ms, its maximum to 85–122 ms, in the same runs.
func SetProcs(n int) int {
	if n > 0 {
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}
