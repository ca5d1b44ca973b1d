package sched

import (
	"errors"
	"testing"
)

// TestUndrain: an agent an operator drained takes jobs again with its
// free slots as credits; one that drains itself (it is stopping) cannot
// be undrained; an unknown one is not found.
func TestUndrain(t *testing.T) {
	s := newSchedFixture(t, Options{}).s
	newAgent(t, s, "busy", 4)
	leavingConn := newAgent(t, s, "leaving", 2)
	s.mu.Lock()
	busy, leaving := s.agents["busy"], s.agents["leaving"]
	busy.running[7] = 1
	s.mu.Unlock()
	// Drain the wake-ups registering made.
	select {
	case <-s.wake:
	default:
	}

	if !s.Drain("busy") {
		t.Fatal("drain of a connected agent: not found")
	}
	s.Stopping(leavingConn)
	s.mu.Lock()
	by := map[string]string{"busy": drainedBy(busy), "leaving": drainedBy(leaving)}
	s.mu.Unlock()
	if by["busy"] != "operator" || by["leaving"] != "agent" {
		t.Errorf("drained by %v; want busy by operator, leaving by agent", by)
	}

	found, err := s.Undrain("busy")
	s.mu.Lock()
	draining, credits, free := busy.draining, busy.credits, busy.free()
	s.mu.Unlock()
	if !found || err != nil || draining || credits != 3 || free != 3 {
		t.Errorf("undrain busy: found %v, %v; draining %v, credits %d, free %d; want 3 free slots", found, err, draining, credits, free)
	}
	select {
	case <-s.wake:
	default:
		t.Error("undrain did not wake the dispatcher")
	}

	if found, err := s.Undrain("leaving"); !found || !errors.Is(err, ErrStopping) {
		t.Errorf("undrain of a stopping agent: found %v, %v; want ErrStopping", found, err)
	}
	s.mu.Lock()
	stillDraining := leaving.draining
	s.mu.Unlock()
	if !stillDraining {
		t.Error("the stopping agent was undrained")
	}
	if found, err := s.Undrain("nobody"); found || err != nil {
		t.Errorf("undrain of an unknown agent: found %v, %v", found, err)
	}
}
