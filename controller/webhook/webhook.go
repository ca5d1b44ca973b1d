package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors, checked with errors.Is.
var (
	// ErrPolicy: the URL or the address it resolves to is not allowed.
	// Not worth retrying.
	ErrPolicy = errors.New("webhook target not allowed")
	// ErrSignature: Verify found no valid signature.
	ErrSignature = errors.New("webhook signature invalid")
)

// Header names.
const (
	HeaderDelivery  = "Jobsuite-Delivery"
	HeaderEvent     = "Jobsuite-Event"
	HeaderSignature = "Jobsuite-Signature"
)

// maxAnswer is how much of a receiver's answer is read (for the error
// message); the rest is discarded.
const maxAnswer = 64 << 10

// Sign returns the Jobsuite-Signature value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a Jobsuite-Signature header value against body: one of
// its v1 signatures must match, and its time stamp must be within
// tolerance of now (either way). It is what a Go receiver runs.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: want t=<seconds>,v1=<hex>", ErrSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: time stamp %ds away from now (tolerance %s)", ErrSignature, int64(d/time.Second), tolerance)
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no signature matches", ErrSignature)
}

// Policy says which targets may be called.
type Policy struct {
	// AllowHTTP permits http:// URLs (the body and signature then cross
	// the network in clear).
	AllowHTTP bool
	// Allow lists address ranges that may be called although they are
	// not public (an internal receiver: 10.1.2.0/24, 127.0.0.1/32).
	Allow []netip.Prefix
	// Hosts, if not empty, is the allowlist of the hosts a URL may
	// name: "hooks.example.com" matches that name, "*.example.com" any
	// name under example.com. An address literal is matched as written.
	Hosts []string
	// Timeout bounds one delivery, connection to answer; 0: 10 s.
	Timeout time.Duration
	// TLS is the client's TLS configuration (nil: the system roots);
	// tests set their own roots here.
	TLS *tls.Config
}

// CheckURL reports whether u may be called as far as can be told
// without resolving it: scheme, no user info, a host. The address is
// checked again when dialled.
func (p *Policy) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a URL", ErrPolicy, raw)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowHTTP:
	case u.Scheme == "http":
		return nil, fmt.Errorf("%w: %q: only https:// URLs (the controller's notify_allow_http permits http://)", ErrPolicy, raw)
	default:
		return nil, fmt.Errorf("%w: %q: the scheme must be https", ErrPolicy, raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %q has no host", ErrPolicy, raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %q: credentials in the URL are not allowed (they would be logged); use the signature", ErrPolicy, raw)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: %q: a fragment is not sent; remove it", ErrPolicy, raw)
	}
	if !p.hostListed(u.Hostname()) {
		return nil, fmt.Errorf("%w: %q: host %s is not in the controller's notify_hosts allowlist", ErrPolicy, raw, u.Hostname())
	}
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !p.allowed(ip) {
		return nil, fmt.Errorf("%w: %q: %s is not a public address (list it in notify_allow to permit it)", ErrPolicy, raw, ip)
	}
	return u, nil
}

// hostListed reports whether host is in the Hosts allowlist (or there
// is none).
func (p *Policy) hostListed(host string) bool {
	if len(p.Hosts) == 0 {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range p.Hosts {
		h = strings.ToLower(h)
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// allowed reports whether ip may be dialled.
func (p *Policy) allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, pre := range p.Allow {
		if pre.Contains(ip) {
			return true
		}
	}
	return ip.IsGlobalUnicast() && !ip.IsPrivate() && !isSpecial(ip)
}

// special lists ranges that are global unicast by the address family's
// rules but are not the public internet.
var special = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: may reach IPv4 inside
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2002::/16"),       // 6to4: may embed any IPv4
}

func isSpecial(ip netip.Addr) bool {
	for _, p := range special {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Client returns an HTTP client that enforces p on every connection.
func (p *Policy) Client() *http.Client {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &net.Dialer{
		Timeout: timeout,
		// Control runs on the address actually dialled, after name
		// resolution: the check cannot be raced by DNS.
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: cannot parse dialled address %q", ErrPolicy, address)
			}
			if !p.allowed(ap.Addr()) {
				return fmt.Errorf("%w: %s is not a public address (list it in notify_allow to permit it)", ErrPolicy, ap.Addr())
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would dial for us, past the check
		DialContext:           d.DialContext,
		TLSClientConfig:       p.TLS,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Delivery is one POST to make.
type Delivery struct {
	ID     string // the same on every retry of one notification
	Event  string // e.g. "job.finished"
	URL    string
	Body   []byte // JSON
	Secret []byte
}

// Error is a failed delivery.
type Error struct {
	Status int    // the answer's status; 0 if there was none
	Msg    string // what happened, for the job's events
	// Retry says whether trying again later may succeed.
	Retry bool
	Err   error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Send makes one delivery at now with client (from Policy.Client) and
// returns the answer's status (0 for none), with a nil error for a 2xx
// answer. Otherwise the *Error says whether to
// retry: a refused target (policy) or 410 Gone is final; network errors,
// timeouts, 408, 429 and 5xx are worth retrying, and so is any other
// answer (a receiver being deployed may answer 404 for a while).
func Send(ctx context.Context, client *http.Client, p *Policy, d Delivery, now time.Time) (int, error) {
	u, err := p.CheckURL(d.URL)
	if err != nil {
		return 0, &Error{Msg: err.Error(), Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(d.Body))
	if err != nil {
		return 0, &Error{Msg: err.Error(), Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "jobsuite-webhook/1")
	req.Header.Set(HeaderDelivery, d.ID)
	req.Header.Set(HeaderEvent, d.Event)
	req.Header.Set(HeaderSignature, Sign(d.Secret, now, d.Body))
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, ErrPolicy) {
			return 0, &Error{Msg: err.Error(), Err: err}
		}
		return 0, &Error{Msg: "POST " + redact(u) + ": " + rootCause(err), Retry: true, Err: err}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, nil
	}
	msg := fmt.Sprintf("POST %s: %s", redact(u), resp.Status)
	if s := strings.TrimSpace(string(answer)); s != "" {
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		msg += ": " + strings.ToValidUTF8(s, "?")
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		msg += " (redirects are not followed; configure the new URL)"
	}
	return resp.StatusCode, &Error{Status: resp.StatusCode, Msg: msg, Retry: resp.StatusCode != http.StatusGone}
}

// redact drops the query string, which may hold a receiver's token.
func redact(u *url.URL) string {
	c := *u
	if c.RawQuery != "" {
		c.RawQuery = "…"
	}
	return c.String()
}

// rootCause shortens a client error to its innermost message.
func rootCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}
