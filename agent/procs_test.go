package agent

import (
	"runtime"
	"testing"
)

// TestSetProcs: -procs sets GOMAXPROCS; 0 leaves the runtime's value.
func TestSetProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	if got := SetProcs(3); got != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("SetProcs(3) = %d, GOMAXPROCS %d; want 3", got, runtime.GOMAXPROCS(0))
	}
	if got := SetProcs(0); got != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Errorf("SetProcs(0) = %d, GOMAXPROCS %d; want 3 (unchanged)", got, runtime.GOMAXPROCS(0))
	}
	if got := SetProcs(1); got != 1 || runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("SetProcs(1) = %d, GOMAXPROCS %d; want 1", got, runtime.GOMAXPROCS(0))
	}
}
