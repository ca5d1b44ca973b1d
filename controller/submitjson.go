package controller

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"jobsuite/api"
)

// A submission in the form clients send it — one flat object whose
// members are the common fields, spelled as api.SubmitRequest's JSON
// tags, with plain strings (no escapes) — is read by hand: encoding/json's
// Decoder (its reflection, its scanner's state stack, DisallowUnknownFields)
// was the largest part of POST /jobs's decoding. Anything else takes the
// encoding/json path as before, which also writes every error: the
// fast path never refuses a body, it only declines it, so a refused
// body gets the message and status it always got.
//
// What the fast path accepts it must decode exactly as encoding/json
// does (FuzzDecodeSubmitFast compares the two on arbitrary bodies;
// TestDecodeSubmitFast lists the shapes it must take and decline).

// Fields the fast path reads, one bit each: a key seen twice declines
// (encoding/json would keep the last string but merge two maps).
const (
	fName = 1 << iota
	fCommand
	fPriority
	fTimeout
	fRetries
	fLogs
	fCancellable
	fLabels
	fEnv
	fDir
	fKey
	fOutput
	fTTY
	fAfterAny
)

// decodeSubmitFast parses body into req (a zero SubmitRequest) when it
// is a submission of the plain form above; ok is false, and req left
// partly filled, when it is not (the caller then starts again with
// encoding/json on a zero request).
func decodeSubmitFast(body []byte, req *api.SubmitRequest) (ok bool) {
	p := fastParser{b: body}
	p.ws()
	if !p.byte('{') {
		return false
	}
	p.ws()
	if p.byte('}') {
		return p.end()
	}
	var seen uint32
	for {
		key, ok := p.key()
		if !ok {
			return false
		}
		var bit uint32
		switch string(key) { // no allocation: a switch on string(b)
		case "name":
			bit, ok = fName, p.strField(&req.Name)
		case "command":
			bit, ok = fCommand, p.strField(&req.Command)
		case "dir":
			bit, ok = fDir, p.strField(&req.Dir)
		case "idempotency_key":
			bit, ok = fKey, p.strField(&req.IdempotencyKey)
		case "output":
			bit, ok = fOutput, p.strField(&req.Output)
		case "priority":
			bit = fPriority
			start := p.i
			if _, strOK := p.str(); !strOK {
				p.i = start
				if _, numOK := p.number(); !numOK {
					return false
				}
			}
			// The value as it stands, quotes included, as json.RawMessage keeps it.
			req.Priority = append(json.RawMessage(nil), p.b[start:p.i]...)
		case "timeout":
			bit = fTimeout
			num, numOK := p.number()
			if !numOK {
				return false
			}
			f, err := strconv.ParseFloat(string(num), 64)
			if err != nil {
				return false
			}
			req.Timeout = &f
		case "retries":
			bit = fRetries
			num, numOK := p.number()
			if !numOK {
				return false
			}
			n, err := strconv.ParseInt(string(num), 10, 0)
			if err != nil { // a fraction, an exponent or out of range: encoding/json says which
				return false
			}
			r := int(n)
			req.Retries = &r
		case "logs":
			bit, ok = fLogs, p.boolPtr(&req.Logs)
		case "cancellable":
			bit, ok = fCancellable, p.boolPtr(&req.Cancellable)
		case "tty":
			bit, ok = fTTY, p.boolPtr(&req.TTY)
		case "after_any":
			bit = fAfterAny
			req.AfterAny, ok = p.bool()
		case "labels":
			bit, ok = fLabels, p.strMap(&req.Labels)
		case "env":
			bit, ok = fEnv, p.strMap(&req.Env)
		default: // another field, another spelling, or none: encoding/json's to judge
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		p.ws()
		if p.byte('}') {
			return p.end()
		}
		if !p.byte(',') {
			return false
		}
	}
}

// fastParser reads b from i on; every method that fails may leave i
// anywhere (the parse is abandoned).
type fastParser struct {
	b []byte
	i int
}

// ws skips JSON white space.
func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c if it is next.
func (p *fastParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end: nothing but white space is left.
func (p *fastParser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// key reads an object's key and its colon, with the white space
// around them.
func (p *fastParser) key() (k []byte, ok bool) {
	p.ws()
	if k, ok = p.str(); !ok {
		return nil, false
	}
	p.ws()
	if !p.byte(':') {
		return nil, false
	}
	p.ws()
	return k, true
}

// str reads a plain string: quoted, with no escape, no control
// character and valid UTF-8 (what encoding/json hands back unchanged);
// s is its contents, within b.
func (p *fastParser) str() (s []byte, ok bool) {
	if !p.byte('"') {
		return nil, false
	}
	start, ascii := p.i, true
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s = p.b[start:p.i]
			p.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// strField reads a plain string into *dst.
func (p *fastParser) strField(dst *string) bool {
	s, ok := p.str()
	if ok {
		*dst = string(s)
	}
	return ok
}

// bool reads true or false.
func (p *fastParser) bool() (v, ok bool) {
	rest := p.b[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		p.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// boolPtr reads true or false into a new *bool (null declines).
func (p *fastParser) boolPtr(dst **bool) bool {
	v, ok := p.bool()
	if ok {
		*dst = &v
	}
	return ok
}

// number reads a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *fastParser) number() (num []byte, ok bool) {
	start := p.i
	p.byte('-')
	switch {
	case p.byte('0'):
	case p.digits() > 0: // a leading 0 was taken above: "01" ends after the 0
	default:
		return nil, false
	}
	if p.byte('.') && p.digits() == 0 {
		return nil, false
	}
	if p.byte('e') || p.byte('E') {
		if !p.byte('+') {
			p.byte('-')
		}
		if p.digits() == 0 {
			return nil, false
		}
	}
	return p.b[start:p.i], true
}

// digits consumes ASCII digits and says how many.
func (p *fastParser) digits() int {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

// strMap reads an object of plain strings into a new map (an empty
// object too, as encoding/json makes one; null declines). A key given
// twice keeps its last value, as in encoding/json.
func (p *fastParser) strMap(dst *map[string]string) bool {
	if !p.byte('{') {
		return false
	}
	m := make(map[string]string, 1)
	p.ws()
	if p.byte('}') {
		*dst = m
		return true
	}
	for {
		k, ok := p.key()
		if !ok {
			return false
		}
		v, ok := p.str()
		if !ok {
			return false
		}
		m[string(k)] = string(v)
		p.ws()
		if p.byte('}') {
			*dst = m
			return true
		}
		if !p.byte(',') {
			return false
		}
	}
}
