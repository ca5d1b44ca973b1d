package store

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// jsonDecodeJob decodes a job record with encoding/json, the reference
// decoder decodeJobFast must agree with.
func jsonDecodeJob(v []byte, j *Job) error {
	if err := json.Unmarshal(v, j); err != nil {
		return fmt.Errorf("decode job: %w", err)
	}
	return nil
}

// decodeJobFast decodes a job record into j, which must be zero, the way
// encoding/json.Unmarshal would, without reflection. It takes the JSON
// that encoding/json.Marshal writes for a Job and reports false for
// anything else it might not decode exactly as encoding/json does — an
// unknown key or one spelled in another case, a repeated key, null, a
// number with a fraction or exponent or out of range, a \u escape of a
// UTF-16 surrogate, invalid UTF-8, a malformed document — leaving j in
// an unspecified state; the caller then decodes the record again with
// encoding/json (jsonDecodeJob), which also gives the error, if any. It
// only ever saves time: TestDecodeJobFast checks the two agree.
//
// in, if not nil, shares the memory of repeated short strings (names,
// commands, agent names) between the records decoded with it.
func decodeJobFast(data []byte, j *Job, in *interner) bool {
	d := jobDecoder{data: data, in: in}
	return d.job(j) && d.end()
}

type jobDecoder struct {
	data []byte
	i    int
	in   *interner
	tmp  []byte // unescaped string scratch
}

func (d *jobDecoder) ws() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// end reports whether only white space is left.
func (d *jobDecoder) end() bool {
	d.ws()
	return d.i == len(d.data)
}

// byte consumes c after optional white space.
func (d *jobDecoder) byte(c byte) bool {
	d.ws()
	if d.i < len(d.data) && d.data[d.i] == c {
		d.i++
		return true
	}
	return false
}

// object decodes {"key": value, ...}, calling field for each key with the
// decoder positioned at its value. Keys are taken as they stand (a key
// with an escape fails) unless unescape is set; an unescaped key is only
// valid until field decodes a string.
func (d *jobDecoder) object(unescape bool, field func(key []byte) bool) bool {
	if !d.byte('{') {
		return false
	}
	if d.byte('}') {
		return true
	}
	for {
		var key []byte
		var ok bool
		if unescape {
			key, ok = d.stringBytes()
		} else {
			key, ok = d.rawString()
		}
		if !ok || !d.byte(':') || !field(key) {
			return false
		}
		if d.byte('}') {
			return true
		}
		if !d.byte(',') {
			return false
		}
	}
}

// rawString returns the bytes of a string without escapes, as they
// stand in the data (keys of a Job or Attempt never need escapes).
func (d *jobDecoder) rawString() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.data) {
		switch c := d.data[d.i]; {
		case c == '"':
			s := d.data[start:d.i]
			d.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return nil, false
		}
		d.i++
	}
	return nil, false
}

// stringBytes returns a string's contents, unescaped; the slice is only
// valid until the next call.
func (d *jobDecoder) stringBytes() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	start := d.i
	ascii := true
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			s := d.data[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(s) {
				return nil, false // encoding/json would replace the bad bytes
			}
			return s, true
		case c == '\\':
			return d.escaped(start, ascii)
		case c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		d.i++
	}
	return nil, false
}

// escaped continues a string from its first backslash, unescaping into
// d.tmp.
func (d *jobDecoder) escaped(start int, ascii bool) ([]byte, bool) {
	d.tmp = append(d.tmp[:0], d.data[start:d.i]...)
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			if !ascii && !utf8.Valid(d.tmp) {
				return nil, false
			}
			return d.tmp, true
		case c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
			d.tmp = append(d.tmp, c)
			d.i++
		case c != '\\':
			d.tmp = append(d.tmp, c)
			d.i++
		default:
			if d.i+1 >= len(d.data) {
				return nil, false
			}
			e := d.data[d.i+1]
			d.i += 2
			switch e {
			case '"', '\\', '/':
				d.tmp = append(d.tmp, e)
			case 'b':
				d.tmp = append(d.tmp, '\b')
			case 'f':
				d.tmp = append(d.tmp, '\f')
			case 'n':
				d.tmp = append(d.tmp, '\n')
			case 'r':
				d.tmp = append(d.tmp, '\r')
			case 't':
				d.tmp = append(d.tmp, '\t')
			case 'u':
				if d.i+4 > len(d.data) {
					return nil, false
				}
				r, err := strconv.ParseUint(string(d.data[d.i:d.i+4]), 16, 16)
				if err != nil || (r >= 0xd800 && r < 0xe000) {
					return nil, false // surrogates: leave them to encoding/json
				}
				d.i += 4
				d.tmp = utf8.AppendRune(d.tmp, rune(r))
			default:
				return nil, false
			}
		}
	}
	return nil, false
}

func (d *jobDecoder) str(dst *string) bool {
	b, ok := d.stringBytes()
	if ok {
		*dst = string(b)
	}
	return ok
}

// shared is str for strings many records repeat.
func (d *jobDecoder) shared(dst *string) bool {
	b, ok := d.stringBytes()
	if ok {
		*dst = d.in.get(b)
	}
	return ok
}

func (d *jobDecoder) state(dst *State) bool {
	b, ok := d.stringBytes()
	if !ok {
		return false
	}
	for _, st := range [...]State{Queued, Waiting, Dispatched, Running, Completed, Failed, Timeout, Cancelled} {
		if string(b) == string(st) {
			*dst = st
			return true
		}
	}
	*dst = State(b)
	return true
}

// number parses an integer literal, -?(0|[1-9][0-9]*), into its sign
// and magnitude; it fails when the magnitude overflows a uint64. A
// fraction or exponent fails later, where a ',' or '}' is expected.
func (d *jobDecoder) number() (neg bool, v uint64, ok bool) {
	d.ws()
	if d.i < len(d.data) && d.data[d.i] == '-' {
		neg = true
		d.i++
	}
	start := d.i
	for d.i < len(d.data) {
		c := d.data[d.i] - '0'
		if c > 9 {
			break
		}
		if v > (math.MaxUint64-uint64(c))/10 {
			return false, 0, false
		}
		v = v*10 + uint64(c)
		d.i++
	}
	n := d.i - start
	if n == 0 || (n > 1 && d.data[start] == '0') {
		return false, 0, false
	}
	return neg, v, true
}

func (d *jobDecoder) int64(dst *int64) bool {
	neg, v, ok := d.number()
	switch {
	case !ok:
		return false
	case !neg && v <= math.MaxInt64:
		*dst = int64(v)
	case neg && v <= math.MaxInt64:
		*dst = -int64(v)
	case neg && v == math.MaxInt64+1:
		*dst = math.MinInt64
	default:
		return false
	}
	return true
}

func (d *jobDecoder) int(dst *int) bool {
	var v int64
	ok := d.int64(&v) && int64(int(v)) == v
	*dst = int(v)
	return ok
}

func (d *jobDecoder) duration(dst *time.Duration) bool {
	var v int64
	ok := d.int64(&v)
	*dst = time.Duration(v)
	return ok
}

func (d *jobDecoder) uint64(dst *uint64) bool {
	neg, v, ok := d.number()
	*dst = v
	return ok && !neg
}

func (d *jobDecoder) uint32(dst *uint32) bool {
	neg, v, ok := d.number()
	*dst = uint32(v)
	return ok && !neg && v <= math.MaxUint32
}

func (d *jobDecoder) bool(dst *bool) bool {
	d.ws()
	switch rest := d.data[d.i:]; {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		*dst = true
		d.i += 4
		return true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		*dst = false
		d.i += 5
		return true
	}
	return false
}

// time decodes a time string. The form Marshal writes for a UTC time,
// YYYY-MM-DDTHH:MM:SS[.fraction]Z, is decoded here; any other goes to
// time.Time's own UnmarshalJSON, as encoding/json does.
func (d *jobDecoder) time(dst *time.Time) bool {
	d.ws()
	start := d.i
	b, ok := d.rawString()
	if !ok {
		return false
	}
	if t, ok := parseUTC(b); ok {
		*dst = t
		return true
	}
	return dst.UnmarshalJSON(d.data[start:d.i]) == nil
}

// parseUTC parses YYYY-MM-DDTHH:MM:SSZ with an optional fraction of 1 to
// 9 digits, giving what time.Time.UnmarshalJSON gives for it. It reports
// false for anything else, valid or not.
func parseUTC(b []byte) (time.Time, bool) {
	n := len(b)
	if n < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[n-1] != 'Z' {
		return time.Time{}, false
	}
	ok := true
	num := func(i, j, lo, hi int) int {
		x := 0
		for _, c := range b[i:j] {
			if c < '0' || c > '9' {
				ok = false
				return lo
			}
			x = x*10 + int(c-'0')
		}
		if x < lo || x > hi {
			ok = false
		}
		return x
	}
	year, month := num(0, 4, 0, 9999), num(5, 7, 1, 12)
	if !ok {
		return time.Time{}, false
	}
	day := num(8, 10, 1, monthDays(month, year))
	hour, minute, sec := num(11, 13, 0, 23), num(14, 16, 0, 59), num(17, 19, 0, 59)
	nsec := 0
	if n > 20 {
		digits := n - 21
		if b[19] != '.' || digits < 1 || digits > 9 {
			return time.Time{}, false
		}
		nsec = num(20, n-1, 0, 999999999)
		for range 9 - digits {
			nsec *= 10
		}
	}
	if !ok {
		return time.Time{}, false
	}
	days := daysFromCivil(year, month, day)
	return time.Unix(days*86400+int64(hour*3600+minute*60+sec), int64(nsec)).UTC(), true
}

func monthDays(month, year int) int {
	if month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		return 29
	}
	return int([...]uint8{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[month-1])
}

// daysFromCivil returns the days from 1970-01-01 to a date of the
// proleptic Gregorian calendar (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

func (d *jobDecoder) stringMap(dst *map[string]string) bool {
	m := make(map[string]string)
	*dst = m
	return d.object(true, func(key []byte) bool {
		ks := string(key)
		var v string
		if !d.str(&v) {
			return false
		}
		m[ks] = v
		return true
	})
}

// seenKeys detects a repeated key: encoding/json would let the last one win
// (or merge two maps), which the fast path does not copy.
type seenKeys uint64

func (s *seenKeys) first(bit uint) bool {
	if *s&(1<<bit) != 0 {
		return false
	}
	*s |= 1 << bit
	return true
}

func (d *jobDecoder) job(j *Job) bool {
	var set seenKeys
	return d.object(false, func(key []byte) bool {
		switch string(key) {
		case "id":
			return set.first(0) && d.uint64(&j.ID)
		case "name":
			return set.first(1) && d.shared(&j.Name)
		case "command":
			return set.first(2) && d.shared(&j.Command)
		case "params":
			return set.first(3) && d.str(&j.Params)
		case "priority":
			return set.first(4) && d.int(&j.Priority)
		case "timeout":
			return set.first(5) && d.duration(&j.Timeout)
		case "retries":
			return set.first(6) && d.int(&j.Retries)
		case "logs":
			return set.first(7) && d.bool(&j.Logs)
		case "cancellable":
			return set.first(8) && d.bool(&j.Cancellable)
		case "labels":
			return set.first(9) && d.stringMap(&j.Labels)
		case "env":
			return set.first(10) && d.stringMap(&j.Env)
		case "dir":
			return set.first(11) && d.str(&j.Dir)
		case "idempotency_key":
			return set.first(12) && d.str(&j.IdempotencyKey)
		case "backoff_base":
			return set.first(13) && d.duration(&j.BackoffBase)
		case "backoff_max":
			return set.first(14) && d.duration(&j.BackoffMax)
		case "state":
			return set.first(15) && d.state(&j.State)
		case "created_at":
			return set.first(16) && d.time(&j.CreatedAt)
		case "queued_at":
			return set.first(17) && d.time(&j.QueuedAt)
		case "not_before":
			return set.first(18) && d.time(&j.NotBefore)
		case "started_at":
			return set.first(19) && d.time(&j.StartedAt)
		case "finished_at":
			return set.first(20) && d.time(&j.FinishedAt)
		case "attempts":
			return set.first(21) && d.attempts(&j.Attempts)
		case "cancel_requested":
			return set.first(22) && d.bool(&j.CancelRequested)
		case "reason":
			return set.first(23) && d.str(&j.Reason)
		case "log_bytes":
			return set.first(24) && d.uint64(&j.LogBytes)
		case "events":
			return set.first(25) && d.uint32(&j.Events)
		case "output":
			return set.first(26) && d.shared(&j.Output)
		case "tty":
			if !set.first(27) {
				return false
			}
			var v bool
			if !d.bool(&v) {
				return false
			}
			j.TTY = &v
			return true
		case "parent":
			return set.first(28) && d.uint64(&j.Orch().Parent)
		case "agent":
			return set.first(29) && d.shared(&j.Orch().Agent)
		case "after_any":
			return set.first(30) && d.bool(&j.Orch().AfterAny)
		case "schedule":
			return set.first(31) && d.shared(&j.Orch().Schedule)
		case "after":
			return set.first(32) && d.uint64s(&j.Orch().After)
		case "notify":
			return set.first(33) && d.strings(&j.Orch().Notify)
		case "fanout":
			if !set.first(34) {
				return false
			}
			f := new(Fanout)
			j.Orch().Fanout = f
			return d.fanout(f)
		}
		return false // unknown, or another case: encoding/json's rules
	})
}

// array decodes a JSON array, calling elem for each element.
func (d *jobDecoder) array(elem func() bool) bool {
	if !d.byte('[') {
		return false
	}
	if d.byte(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if d.byte(']') {
			return true
		}
		if !d.byte(',') {
			return false
		}
	}
}

func (d *jobDecoder) uint64s(dst *[]uint64) bool {
	out := []uint64{} // "[]" decodes to an empty slice, not nil
	ok := d.array(func() bool {
		var v uint64
		if !d.uint64(&v) {
			return false
		}
		out = append(out, v)
		return true
	})
	*dst = out
	return ok
}

func (d *jobDecoder) strings(dst *[]string) bool {
	out := []string{}
	ok := d.array(func() bool {
		var v string
		if !d.str(&v) {
			return false
		}
		out = append(out, v)
		return true
	})
	*dst = out
	return ok
}

func (d *jobDecoder) fanout(f *Fanout) bool {
	var set seenKeys
	return d.object(false, func(key []byte) bool {
		switch string(key) {
		case "selector":
			return set.first(0) && d.stringMap(&f.Selector)
		case "include_offline":
			return set.first(1) && d.bool(&f.IncludeOffline)
		case "first_child":
			return set.first(2) && d.uint64(&f.FirstChild)
		case "children":
			return set.first(3) && d.int(&f.Children)
		case "batch":
			return set.first(4) && d.int(&f.Batch)
		case "max_failures":
			if !set.first(5) {
				return false
			}
			var v int
			if !d.int(&v) {
				return false
			}
			f.MaxFailures = &v
			return true
		case "completed":
			return set.first(6) && d.int(&f.Completed)
		case "failed":
			return set.first(7) && d.int(&f.Failed)
		case "timeout":
			return set.first(8) && d.int(&f.Timeout)
		case "cancelled":
			return set.first(9) && d.int(&f.Cancelled)
		case "stopped":
			return set.first(10) && d.bool(&f.Stopped)
		}
		return false
	})
}

func (d *jobDecoder) attempts(dst *[]Attempt) bool {
	if !d.byte('[') {
		return false
	}
	as := []Attempt{} // "[]" decodes to an empty slice, not nil
	if !d.byte(']') {
		for {
			as = append(as, Attempt{})
			if !d.attempt(&as[len(as)-1]) {
				return false
			}
			if d.byte(']') {
				break
			}
			if !d.byte(',') {
				return false
			}
		}
	}
	*dst = as
	return true
}

func (d *jobDecoder) attempt(a *Attempt) bool {
	var set seenKeys
	return d.object(false, func(key []byte) bool {
		switch string(key) {
		case "number":
			return set.first(0) && d.uint32(&a.Number)
		case "agent":
			return set.first(1) && d.shared(&a.Agent)
		case "dispatched_at":
			return set.first(2) && d.time(&a.DispatchedAt)
		case "started_at":
			return set.first(3) && d.time(&a.StartedAt)
		case "finished_at":
			return set.first(4) && d.time(&a.FinishedAt)
		case "pid":
			return set.first(5) && d.uint32(&a.PID)
		case "outcome":
			return set.first(6) && d.shared((*string)(&a.Outcome))
		case "exit_code":
			if !set.first(7) {
				return false
			}
			var v int
			if !d.int(&v) {
				return false
			}
			a.ExitCode = &v
			return true
		case "signal":
			return set.first(8) && d.shared(&a.Signal)
		case "error":
			return set.first(9) && d.str(&a.Error)
		case "duration":
			return set.first(10) && d.duration(&a.Duration)
		case "user_cpu":
			return set.first(11) && d.duration(&a.UserCPU)
		case "system_cpu":
			return set.first(12) && d.duration(&a.SystemCPU)
		case "max_rss":
			return set.first(13) && d.uint64(&a.MaxRSS)
		case "log_start":
			return set.first(14) && d.uint64(&a.LogStart)
		case "queued_at":
			return set.first(15) && d.time(&a.QueuedAt)
		case "output_bytes":
			return set.first(16) && d.uint64(&a.OutputBytes)
		}
		return false
	})
}

// interner hands out one copy of each short string it has seenKeys, up to a
// bounded number of them, so a million queued jobs with the same name
// and command hold those strings once. Not safe for concurrent use.
type interner struct {
	m map[string]string
}

const (
	internMaxLen     = 64   // longer strings are rarely repeated
	internMaxEntries = 4096 // bounds the table when every name differs
)

func newInterner() *interner { return &interner{m: make(map[string]string)} }

// get returns b as a string, shared with earlier equal ones when it can.
func (in *interner) get(b []byte) string {
	if in == nil || len(b) > internMaxLen {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.m) < internMaxEntries {
		in.m[s] = s
	}
	return s
}
