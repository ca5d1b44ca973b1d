// Package cronspec parses the timing of a schedule — a standard 5-field
// cron expression, a descriptor such as @hourly, or @every 90s — in a
// named time zone, and answers when it next fires and which occurrence
// was the last one before a given time.
//
// Parsing is github.com/robfig/cron/v3's standard parser. This package
// adds what a durable, replicated schedule needs on top of it:
//   - The time zone is explicit and never the host's: a schedule fires
//     at the same instants on every controller whatever its TZ (the
//     parser's default, time.Local, would differ between nodes). The
//     zone database is embedded (time/tzdata), so minimal hosts work.
//   - Input the parser would panic on or silently misread is refused
//     with an error that says what is allowed: a "TZ=" prefix (use the
//     zone argument), six fields (seconds), @every below one second or
//     with a fraction of a second, and expressions that never fire
//     (such as 30 February).
//   - Last finds the most recent missed occurrence without walking every
//     occurrence of a long downtime, so catching up after a week down
//     costs a handful of steps.
//
// Daylight saving: an expression is read in its zone's wall clock; on
// the day a wall-clock time does not exist (02:30 when clocks jump from
// 02:00 to 03:00) it has no occurrence, as with Kubernetes CronJobs,
// which use the same parser.
//
// Times returned are in UTC; a Spec is immutable and safe for
// concurrent use.
package cronspec

import (
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // zones on hosts without /usr/share/zoneinfo

	"github.com/robfig/cron/v3"
)

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid schedule")

// MinEvery is the shortest @every interval.
const MinEvery = time.Second

// horizon bounds how far ahead an expression is checked for a first
// occurrence; the parser itself gives up after five years.
const horizon = 5 * 366 * 24 * time.Hour

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Spec is a parsed schedule timing.
type Spec struct {
	expr  string
	zone  string
	loc   *time.Location
	every time.Duration      // for @every; 0 otherwise
	sched *cron.SpecSchedule // otherwise
}

// Parse parses expr in the time zone named zone ("" or "UTC" for UTC, or
// an IANA name such as "Europe/Paris"). The error wraps ErrInvalid and
// says what is wrong.
func Parse(expr, zone string) (s *Spec, err error) {
	expr = strings.Join(strings.Fields(expr), " ")
	if expr == "" {
		return nil, fmt.Errorf("%w: empty cron expression; give 5 fields (minute hour day-of-month month day-of-week), a descriptor such as @hourly, or @every 90s", ErrInvalid)
	}
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, fmt.Errorf("%w: %q: give the time zone on its own (-tz, \"tz\"), not as a prefix of the expression", ErrInvalid, expr)
	}
	if zone == "" {
		zone = "UTC"
	}
	loc, err := time.LoadLocation(zone)
	if err != nil || zone == "Local" {
		return nil, fmt.Errorf("%w: unknown time zone %q; use an IANA name such as Europe/Paris or UTC", ErrInvalid, zone)
	}
	s = &Spec{expr: expr, zone: zone, loc: loc}
	if rest, ok := strings.CutPrefix(expr, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: %q: @every takes a duration such as 90s, 5m or 1h30m", ErrInvalid, expr)
		case d < MinEvery:
			return nil, fmt.Errorf("%w: %q: @every must be at least %s", ErrInvalid, expr, MinEvery)
		case d%time.Second != 0:
			return nil, fmt.Errorf("%w: %q: @every must be whole seconds", ErrInvalid, expr)
		}
		s.every = d
		return s, nil
	}
	if !strings.HasPrefix(expr, "@") && len(strings.Fields(expr)) != 5 {
		return nil, fmt.Errorf("%w: %q has %d fields; a cron expression has 5: minute hour day-of-month month day-of-week", ErrInvalid, expr, len(strings.Fields(expr)))
	}
	defer func() {
		// The parser is third-party code fed user input: a panic in it
		// is a refused expression, not a crashed controller.
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %q: %v", ErrInvalid, expr, r)
		}
	}()
	parsed, err := parser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrInvalid, expr, err)
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok { // the standard parser makes @every a ConstantDelaySchedule, handled above
		return nil, fmt.Errorf("%w: %q: unsupported form", ErrInvalid, expr)
	}
	spec.Location = loc
	s.sched = spec
	probe := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	if next := s.Next(probe); next.IsZero() || next.Sub(probe) > horizon {
		return nil, fmt.Errorf("%w: %q never fires (no such date)", ErrInvalid, expr)
	}
	return s, nil
}

// String returns the expression as parsed (spaces normalized).
func (s *Spec) String() string { return s.expr }

// Zone returns the time zone's name ("UTC" when none was given).
func (s *Spec) Zone() string { return s.zone }

// Every returns the interval of an @every schedule, or 0.
func (s *Spec) Every() time.Duration { return s.every }

// Next returns the first occurrence strictly after t, in UTC; the zero
// time if there is none within the parser's five-year search. An @every
// schedule's occurrences are t plus the interval, at whole seconds.
func (s *Spec) Next(t time.Time) time.Time {
	if s.every > 0 {
		return t.Truncate(time.Second).Add(s.every).UTC()
	}
	n := s.sched.Next(t.In(s.loc))
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// Last returns the most recent occurrence in (after, upTo], and false
// if there is none: the occurrence a schedule missed while its
// controller was down, when it catches up with one run. An @every
// schedule's occurrences are after plus whole intervals.
func (s *Spec) Last(after, upTo time.Time) (time.Time, bool) {
	if !upTo.After(after) {
		return time.Time{}, false
	}
	if s.every > 0 {
		n := upTo.Sub(after.Truncate(time.Second)) / s.every
		if n == 0 {
			return time.Time{}, false
		}
		return after.Truncate(time.Second).Add(n * s.every).UTC(), true
	}
	// Look back over growing windows: the first window holding an
	// occurrence holds the last one, and walking it takes at most as
	// many steps as it has occurrences (a minute schedule: ≤ 60).
	for _, w := range []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour, horizon} {
		from := upTo.Add(-w)
		if from.Before(after) {
			from = after
		}
		t := s.Next(from)
		if t.IsZero() || t.After(upTo) {
			if from.Equal(after) {
				return time.Time{}, false
			}
			continue
		}
		for {
			n := s.Next(t)
			if n.IsZero() || n.After(upTo) {
				return t, true
			}
			t = n
		}
	}
	return time.Time{}, false
}

// Late is how late an occurrence may run and still count as on time:
// a timer that fires a little late runs it; an occurrence found later
// than this (the controller was down) is a missed one.
const Late = time.Minute

// maxCount bounds the occurrences Due counts as skipped.
const maxCount = 1 << 20

// Due says what a schedule waiting for occurrence next does at now:
// run is the occurrence to run (zero: none), skipped how many
// occurrences it passes over without a run, and after the occurrence
// to wait for next (strictly after now). Before next nothing is due.
//
// An occurrence found at most Late after its time runs. Older ones were
// missed (no controller ran): with catchUp the most recent missed one
// runs — once, never a burst — and with catchUp false none does.
func (s *Spec) Due(next, now time.Time, catchUp bool) (run time.Time, skipped int, after time.Time) {
	if now.Before(next) {
		return time.Time{}, 0, next
	}
	var last time.Time // the newest occurrence in [next, now]
	var count int      // occurrences in [next, last]
	if s.every > 0 {
		// Keep the cadence: the occurrences are next plus whole intervals.
		k := now.Sub(next) / s.every
		last, count = next.Add(k*s.every), int(min(k+1, maxCount))
		after = last.Add(s.every)
	} else {
		after = s.Next(now)
		var ok bool
		if last, ok = s.Last(next.Add(-time.Nanosecond), now); !ok {
			last = next
		}
		count = s.count(next, last)
	}
	switch {
	case now.Sub(last) <= Late:
		return last, count - 1, after
	case catchUp:
		return last, count - 1, after
	}
	return time.Time{}, count, after
}

// count returns how many occurrences of an expression lie in [from, to]
// (from being one), up to maxCount.
func (s *Spec) count(from, to time.Time) int {
	if to.Before(from) {
		return 0
	}
	n := 1
	for t := s.Next(from); !t.IsZero() && !t.After(to) && n < maxCount; t = s.Next(t) {
		n++
	}
	return n
}
