package cli

import (
	"bytes"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// appendStamp writes what time.Format(logTimeFormat) writes, for times
// within a second, across seconds, and across a zone change.
func TestAppendStampMatchesFormat(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+30*60), time.FixedZone("", -3600), time.Local}
	if ny, err := time.LoadLocation("America/New_York"); err == nil {
		zones = append(zones, ny)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, loc := range zones {
		c := new(stampWriter)
		// Around New York's daylight saving switch of 2025-03-09, then
		// random times, each followed by a few in the same second.
		t0 := time.Date(2025, 3, 9, 6, 59, 58, 0, time.UTC)
		for i := 0; i < 3000; i++ {
			var tm time.Time
			switch {
			case i < 1000:
				tm = t0.Add(time.Duration(i) * 7 * time.Millisecond)
			case i%4 == 0:
				tm = time.Unix(r.Int64N(1<<34)-1<<32, r.Int64N(1e9))
			default:
				tm = time.Unix(c.sec, r.Int64N(1e9))
			}
			tm = tm.In(loc)
			got := string(appendStamp([]byte("x"), tm, c))
			if want := "x" + tm.Format(logTimeFormat); got != want {
				t.Fatalf("%s: appendStamp(%v) = %q, want %q", loc, tm, got, want)
			}
		}
	}
}

// The text logger writes hclog's own line: the time in logTimeFormat, a
// space, then what hclog writes after its time.
func TestLoggerLine(t *testing.T) {
	var out, ref bytes.Buffer
	lf := logFlags{level: "info"}
	log, sink, err := lf.logger("controller", &out)
	if err != nil {
		t.Fatal(err)
	}
	ref.Reset()
	hlog := hclog.New(&hclog.LoggerOptions{Name: "controller", Output: &ref, TimeFormat: logTimeFormat})
	for _, l := range []hclog.Logger{log, hlog} {
		l.Named("sched").Info("job started", "job", uint64(7), "state", "running", "agent", "", "msg", "a b\nc")
		l.Debug("not written")
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d{4}) `)
	got, want := out.String(), ref.String()
	if !stamp.MatchString(got) || !stamp.MatchString(want) {
		t.Fatalf("no time at the start:\n%q\n%q", got, want)
	}
	got, want = stamp.ReplaceAllString(got, ""), stamp.ReplaceAllString(want, "")
	if got != want || !strings.HasPrefix(got, "[INFO]  controller.sched: job started:") {
		t.Errorf("line\n%q\nwant\n%q", got, want)
	}
}

func BenchmarkLoggerLine(b *testing.B) {
	for _, stamped := range []bool{false, true} {
		name := "hclog-time"
		if stamped {
			name = "stampWriter"
		}
		b.Run(name, func(b *testing.B) {
			opts := &hclog.LoggerOptions{Name: "controller", Output: discard{}, TimeFormat: logTimeFormat}
			if stamped {
				opts.DisableTime = true
				opts.Output = &stampWriter{w: discard{}}
			}
			log := hclog.New(opts)
			b.ReportAllocs()
			for b.Loop() {
				log.Info("job started", "job", uint64(12345), "state", "running", "attempt", uint32(1), "agent", "fake-1", "msg", "")
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
