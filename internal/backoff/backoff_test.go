package backoff

import (
	"math"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	sched := Policy{Base: time.Second, Max: time.Minute, Down: 0.2, Up: 0.2}
	half := Policy{Base: 100 * time.Millisecond, Max: 2 * time.Second, Down: 0.5}
	plain := Policy{Base: 5 * time.Millisecond, Max: time.Second}
	tests := map[string]struct {
		p      Policy
		n      int
		jitter float64
		want   time.Duration
	}{
		"first":                  {sched, 1, 0.5, time.Second},
		"third":                  {sched, 3, 0.5, 4 * time.Second},
		"capped":                 {sched, 20, 0.5, time.Minute},
		"zeroth counts as first": {sched, 0, 0.5, time.Second},
		"negative as first":      {sched, -3, 0.5, time.Second},
		"±20% low end":           {sched, 2, 0, 1600 * time.Millisecond},
		"±20% high end":          {sched, 2, 1, 2400 * time.Millisecond},
		"+10%":                   {sched, 1, 0.75, 1100 * time.Millisecond},
		"cap below base":         {Policy{Base: 5 * time.Second, Max: 2 * time.Second}, 1, 0.5, 2 * time.Second},
		"half low end":           {half, 1, 0, 50 * time.Millisecond},
		"half high end":          {half, 1, 1, 100 * time.Millisecond},
		"half capped, middle":    {half, 10, 0.5, 1500 * time.Millisecond},
		"no jitter ignores it":   {plain, 2, 0, 10 * time.Millisecond},
		"no jitter, capped":      {plain, 30, 1, time.Second},
		"no cap":                 {Policy{Base: time.Second}, 11, 0, 1024 * time.Second},
		"no cap, no overflow":    {Policy{Base: time.Second}, 200, 0, math.MaxInt64},
		"jitter up at the edge":  {Policy{Base: math.MaxInt64 / 2, Up: 1}, 1, 1, math.MaxInt64},
		"zero policy":            {Policy{}, 5, 0.3, 0},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tt.p.Delay(tt.n, tt.jitter); got != tt.want {
				t.Errorf("%+v.Delay(%d, %v) = %v, want %v", tt.p, tt.n, tt.jitter, got, tt.want)
			}
		})
	}
}

// Every jitter in [0, 1] lands in [d·(1−Down), d·(1+Up)], and the delay
// grows with the jitter.
func TestJitterBounds(t *testing.T) {
	p := Policy{Down: 0.5, Up: 0.25}
	d := 8 * time.Second
	prev := time.Duration(0)
	for i := 0; i <= 100; i++ {
		got := p.Jitter(d, float64(i)/100)
		if got < 4*time.Second || got > 10*time.Second {
			t.Fatalf("Jitter(%v, %v) = %v, outside [4s, 10s]", d, float64(i)/100, got)
		}
		if got < prev {
			t.Fatalf("Jitter(%v, %v) = %v, below %v for a smaller jitter", d, float64(i)/100, got, prev)
		}
		prev = got
	}
}
