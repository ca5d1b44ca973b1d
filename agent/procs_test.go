package agent

import (
	"os"
	"runtime"
	"testing"
)

// TestSetProcs: -procs wins; without it the agent runs on DefaultProcs
// unless the GOMAXPROCS environment variable is set.
func TestSetProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	t.Setenv("GOMAXPROCS", "") // restored after the test
	os.Unsetenv("GOMAXPROCS")

	if got := SetProcs(3); got != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("SetProcs(3) = %d, GOMAXPROCS %d; want 3", got, runtime.GOMAXPROCS(0))
	}
	if got := SetProcs(0); got != DefaultProcs || runtime.GOMAXPROCS(0) != DefaultProcs {
		t.Errorf("SetProcs(0) without GOMAXPROCS = %d, GOMAXPROCS %d; want %d", got, runtime.GOMAXPROCS(0), DefaultProcs)
	}
	os.Setenv("GOMAXPROCS", "2")
	runtime.GOMAXPROCS(2) // what the runtime read from it at start
	if got := SetProcs(0); got != 2 || runtime.GOMAXPROCS(0) != 2 {
		t.Errorf("SetProcs(0) with GOMAXPROCS=2 = %d, GOMAXPROCS %d; want 2", got, runtime.GOMAXPROCS(0))
	}
	if got := SetProcs(4); got != 4 || runtime.GOMAXPROCS(0) != 4 {
		t.Errorf("SetProcs(4) with GOMAXPROCS=2 = %d, GOMAXPROCS %d; want 4 (the flag wins)", got, runtime.GOMAXPROCS(0))
	}
}
