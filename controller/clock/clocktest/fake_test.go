package clocktest

import (
	"testing"
	"time"
)

func TestFakeClock(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFake(t0)
	a, b := c.NewTimer(time.Second), c.NewTimer(time.Minute)
	c.Advance(time.Second - 1)
	select {
	case <-a.C():
		t.Fatal("fired early")
	default:
	}
	c.Advance(1)
	if got := <-a.C(); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("fired at %v", got)
	}
	if !b.Stop() || b.Stop() {
		t.Error("Stop reports the timer armed once, then not")
	}
	c.Advance(time.Hour)
	select {
	case <-b.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	if b.Reset(0) {
		t.Error("Reset of a stopped timer says it was armed")
	}
	if got := <-b.C(); !got.Equal(t0.Add(time.Hour + time.Second)) {
		t.Fatalf("reset to 0 fired at %v", got)
	}
}
