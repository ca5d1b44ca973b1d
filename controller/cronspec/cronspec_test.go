package cronspec

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, expr, zone string) *Spec {
	t.Helper()
	s, err := Parse(expr, zone)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, zone, err)
	}
	return s
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParseRefuses(t *testing.T) {
	tests := map[string]struct{ expr, zone, want string }{
		"empty":             {"  ", "", "empty cron expression"},
		"tz prefix":         {"TZ=UTC", "", "time zone on its own"},
		"cron_tz prefix":    {"CRON_TZ=Europe/Paris 0 * * * *", "", "time zone on its own"},
		"six fields":        {"0 0 * * * *", "", "has 6 fields"},
		"four fields":       {"0 * * *", "", "has 4 fields"},
		"out of range":      {"61 * * * *", "", "61"},
		"bad word":          {"* * * * funday", "", "funday"},
		"unknown zone":      {"@hourly", "Mars/Olympus", "unknown time zone"},
		"local zone":        {"@hourly", "Local", "unknown time zone"},
		"unknown macro":     {"@fortnightly", "", "unrecognized descriptor"},
		"every garbage":     {"@every soon", "", "takes a duration"},
		"every too short":   {"@every 500ms", "", "at least 1s"},
		"every fraction":    {"@every 1.5s", "", "whole seconds"},
		"every negative":    {"@every -5m", "", "at least 1s"},
		"never fires":       {"0 0 30 2 *", "", "never fires"},
		"step zero":         {"*/0 * * * *", "", "*/0"},
		"range backwards":   {"0 5-3 * * *", "", "5-3"},
		"empty descriptor":  {"@", "", "unrecognized descriptor"},
		"trailing garbage":  {"@hourly x", "", "unrecognized descriptor"},
		"every without arg": {"@every", "", "unrecognized descriptor"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := Parse(tt.expr, tt.zone)
			if err == nil {
				t.Fatalf("Parse(%q, %q) = %v, want an error", tt.expr, tt.zone, s)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q, %q) = %v, want ErrInvalid mentioning %q", tt.expr, tt.zone, err, tt.want)
			}
		})
	}
}

func TestNext(t *testing.T) {
	tests := map[string]struct {
		expr, zone, from, want string
	}{
		"every five minutes":    {"*/5 * * * *", "", "2026-03-01T10:02:30Z", "2026-03-01T10:05:00Z"},
		"strictly after":        {"*/5 * * * *", "", "2026-03-01T10:05:00Z", "2026-03-01T10:10:00Z"},
		"hourly":                {"@hourly", "", "2026-03-01T10:59:59Z", "2026-03-01T11:00:00Z"},
		"daily in paris":        {"@daily", "Europe/Paris", "2026-06-01T12:00:00Z", "2026-06-01T22:00:00Z"},
		"weekday 9:30 new york": {"30 9 * * 1-5", "America/New_York", "2026-01-02T15:00:00Z", "2026-01-05T14:30:00Z"},
		"names":                 {"0 0 1 jan *", "", "2026-05-05T00:00:00Z", "2027-01-01T00:00:00Z"},
		"every 90s":             {"@every 90s", "", "2026-03-01T10:00:00.7Z", "2026-03-01T10:01:30Z"},
		"extra spaces":          {"  0   12 * * *  ", "", "2026-03-01T12:00:00Z", "2026-03-02T12:00:00Z"},
		// 02:30 does not exist in Paris on 29 March 2026: that day has no
		// occurrence (as with Kubernetes CronJobs, same parser).
		"spring forward skipped": {"30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00Z", "2026-03-30T00:30:00Z"},
		"leap day":               {"0 0 29 2 *", "", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := mustParse(t, tt.expr, tt.zone).Next(at(tt.from))
			if !got.Equal(at(tt.want)) || got.Location() != time.UTC {
				t.Errorf("Next(%s) = %v, want %s in UTC", tt.from, got, tt.want)
			}
		})
	}
}

// TestNextIgnoresHostZone: the same instant gives the same occurrence
// whatever zone the caller's time is in.
func TestNextIgnoresHostZone(t *testing.T) {
	s := mustParse(t, "0 9 * * *", "Asia/Tokyo")
	from := at("2026-07-01T00:30:00Z")
	want := s.Next(from)
	for _, z := range []string{"America/Los_Angeles", "Europe/Berlin", "Australia/Sydney"} {
		loc, err := time.LoadLocation(z)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Next(from.In(loc)); !got.Equal(want) {
			t.Errorf("from a time in %s: %v, want %v", z, got, want)
		}
	}
	if !want.Equal(at("2026-07-01T00:00:00Z").Add(24 * time.Hour)) {
		t.Errorf("09:00 Tokyo after 09:30 Tokyo = %v, want the next day 00:00 UTC", want)
	}
}

// lastByWalking is Last the slow way: every occurrence in turn.
func lastByWalking(s *Spec, after, upTo time.Time) (time.Time, bool) {
	var last time.Time
	for t := s.Next(after); !t.IsZero() && !t.After(upTo); t = s.Next(t) {
		last = t
	}
	return last, !last.IsZero()
}

// TestLast compares Last with walking every occurrence, over random
// windows from seconds to a year, for several kinds of expression.
func TestLast(t *testing.T) {
	exprs := []string{"*/5 * * * *", "0 3 * * *", "15 10 1 * *", "0 0 29 2 *", "@weekly", "0 9-17 * * 1-5", "@every 7m", "@every 1h"}
	r := rand.New(rand.NewPCG(1, 2))
	base := at("2026-01-01T00:00:00Z")
	for _, expr := range exprs {
		s := mustParse(t, expr, "Europe/Paris")
		for range 60 {
			after := base.Add(time.Duration(r.Int64N(int64(400 * 24 * time.Hour))))
			span := time.Duration(r.Int64N(int64([]time.Duration{time.Minute, time.Hour, 24 * time.Hour, 60 * 24 * time.Hour}[r.IntN(4)])))
			upTo := after.Add(span)
			got, ok := s.Last(after, upTo)
			want, wantOK := lastByWalking(s, after, upTo)
			if ok != wantOK || !got.Equal(want) {
				t.Fatalf("%s: Last(%v, %v) = %v, %v; walking gives %v, %v", expr, after, upTo, got, ok, want, wantOK)
			}
		}
	}
	s := mustParse(t, "0 0 * * *", "")
	if _, ok := s.Last(base, base); ok {
		t.Error("Last over an empty window found an occurrence")
	}
	if got, ok := s.Last(base.Add(-time.Nanosecond), base); !ok || !got.Equal(base) {
		t.Errorf("Last up to an occurrence itself = %v, %v; want it", got, ok)
	}
}

// TestLastAfterLongDowntime: ten years of a minute schedule are not
// walked one by one (the answer comes from the first window).
func TestLastAfterLongDowntime(t *testing.T) {
	s := mustParse(t, "* * * * *", "")
	after, upTo := at("2016-01-01T00:00:00Z"), at("2026-01-01T00:00:30Z")
	got, ok := s.Last(after, upTo)
	if !ok || !got.Equal(at("2026-01-01T00:00:00Z")) {
		t.Errorf("Last = %v, %v; want 2026-01-01T00:00:00Z", got, ok)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "@hourly", "@every 90s", "0 0 30 2 *", "TZ=", "1-2/3,4 5 6 7 1", "@every 1h", "* * * * * *"} {
		f.Add(s, "UTC")
	}
	f.Fuzz(func(t *testing.T, expr, zone string) {
		s, err := Parse(expr, zone)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		from := at("2026-01-01T00:00:00Z")
		if n := s.Next(from); !n.After(from) {
			t.Fatalf("%q: Next(%v) = %v, not after it", expr, from, n)
		}
	})
}

func TestDue(t *testing.T) {
	every5 := mustParse(t, "*/5 * * * *", "")
	next := at("2026-03-01T10:05:00Z")
	tests := map[string]struct {
		now       string
		catchUp   bool
		run       string // "" = none
		skipped   int
		wantAfter string
	}{
		"not yet":               {"2026-03-01T10:04:59Z", true, "", 0, "2026-03-01T10:05:00Z"},
		"on time":               {"2026-03-01T10:05:00Z", false, "2026-03-01T10:05:00Z", 0, "2026-03-01T10:10:00Z"},
		"a little late":         {"2026-03-01T10:05:40Z", false, "2026-03-01T10:05:00Z", 0, "2026-03-01T10:10:00Z"},
		"missed, catch up":      {"2026-03-01T10:07:00Z", true, "2026-03-01T10:05:00Z", 0, "2026-03-01T10:10:00Z"},
		"missed, no catch-up":   {"2026-03-01T10:07:00Z", false, "", 1, "2026-03-01T10:10:00Z"},
		"down an hour, one run": {"2026-03-01T11:07:00Z", true, "2026-03-01T11:05:00Z", 12, "2026-03-01T11:10:00Z"},
		"down an hour, none":    {"2026-03-01T11:07:00Z", false, "", 13, "2026-03-01T11:10:00Z"},
		"back just in time":     {"2026-03-01T11:05:30Z", false, "2026-03-01T11:05:00Z", 12, "2026-03-01T11:10:00Z"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			run, skipped, after := every5.Due(next, at(tt.now), tt.catchUp)
			wantRun := time.Time{}
			if tt.run != "" {
				wantRun = at(tt.run)
			}
			if !run.Equal(wantRun) || skipped != tt.skipped || !after.Equal(at(tt.wantAfter)) {
				t.Errorf("Due(%s) = run %v, skipped %d, after %v; want %v, %d, %s", tt.now, run, skipped, after, wantRun, tt.skipped, tt.wantAfter)
			}
		})
	}
	// @every counts its occurrences arithmetically.
	e := mustParse(t, "@every 90s", "")
	run, skipped, after := e.Due(at("2026-03-01T10:00:00Z"), at("2026-03-01T10:30:00Z"), true)
	if !run.Equal(at("2026-03-01T10:30:00Z")) || skipped != 20 || !after.Equal(at("2026-03-01T10:31:30Z")) {
		t.Errorf("@every 90s after 30 min: run %v, skipped %d, after %v", run, skipped, after)
	}
}
