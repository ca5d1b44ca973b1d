package backoff

import (
	"math"
	"time"
)

// Policy is an exponential backoff with jitter. The zero Policy waits
// nothing.
type Policy struct {
	Base time.Duration // the delay before retry 1
	Max  time.Duration // the delay doubles up to Max; 0: no cap
	// Down and Up are how far the jitter moves a delay d, as fractions
	// of it: the delay ends up in [d·(1−Down), d·(1+Up)], at the low end
	// for a jitter of 0 and the high end for 1. Both 0: no jitter.
	Down, Up float64
}

// Delay is the wait before retry n (1-based; n < 1 counts as 1) for a
// jitter in [0, 1], which the caller draws (rand.Float64) or fixes.
// It never overflows: a delay past what a Duration holds is the longest
// Duration.
func (p Policy) Delay(n int, jitter float64) time.Duration {
	return p.Jitter(p.Exp(n), jitter)
}

// Exp is the delay before retry n without jitter: Base·2^(n-1), at most
// Max.
func (p Policy) Exp(n int) time.Duration {
	d := p.Base
	for i := 1; i < n && (p.Max <= 0 || d < p.Max); i++ {
		if d > math.MaxInt64/2 {
			d = math.MaxInt64
			break
		}
		d *= 2
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	return d
}

// Jitter moves d by the policy's Down and Up for a jitter in [0, 1]:
// to d·(1−Down) at 0 and d·(1+Up) at 1. Callers that wait on something
// other than the exponential schedule (the agent's lease-bound retry)
// spread that wait the same way.
func (p Policy) Jitter(d time.Duration, jitter float64) time.Duration {
	if p.Down == 0 && p.Up == 0 {
		return d
	}
	j := float64(d) * (jitter*(p.Down+p.Up) - p.Down)
	if float64(d)+j >= math.MaxInt64 {
		return math.MaxInt64
	}
	return d + time.Duration(j)
}
