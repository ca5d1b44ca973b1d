package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	secret = []byte("s3cret")
	t0     = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
)

func TestSignVerify(t *testing.T) {
	body := []byte(`{"event":"job.finished","job":{"id":7}}`)
	sig := Sign(secret, t0, body)
	if err := Verify(secret, sig, body, t0.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("Verify of a fresh signature: %v", err)
	}
	tests := map[string]struct {
		header string
		body   []byte
		now    time.Time
		want   string
	}{
		"tampered body":      {sig, []byte(`{"event":"job.finished","job":{"id":8}}`), t0, "no signature matches"},
		"other secret":       {Sign([]byte("other"), t0, body), body, t0, "no signature matches"},
		"too old":            {sig, body, t0.Add(6 * time.Minute), "away from now"},
		"from the future":    {sig, body, t0.Add(-6 * time.Minute), "away from now"},
		"no time stamp":      {strings.Split(sig, ",")[1], body, t0, "want t="},
		"no signature":       {strings.Split(sig, ",")[0], body, t0, "want t="},
		"garbage":            {"hello", body, t0, "want t="},
		"stamp moved":        {"t=" + "1764928800" + "," + strings.Split(sig, ",")[1], body, time.Unix(1764928800, 0), "no signature matches"},
		"non-hex signature":  {strings.Split(sig, ",")[0] + ",v1=zz", body, t0, "want t="},
		"second one matches": {strings.Split(sig, ",")[0] + ",v1=00ff," + strings.Split(sig, ",")[1], body, t0, ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := Verify(secret, tt.header, tt.body, tt.now, 5*time.Minute)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Verify = %v, want ErrSignature mentioning %q", err, tt.want)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	strict := &Policy{}
	lenient := &Policy{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	listed := &Policy{Hosts: []string{"hooks.example.com", "*.corp.example"}}
	tests := map[string]struct {
		p    *Policy
		url  string
		want string // "" = allowed
	}{
		"https name":          {strict, "https://hooks.example.com/x?token=1", ""},
		"http refused":        {strict, "http://hooks.example.com/x", "only https"},
		"http allowed":        {lenient, "http://hooks.example.com/x", ""},
		"ftp":                 {lenient, "ftp://hooks.example.com/x", "scheme must be https"},
		"no host":             {strict, "https:///x", "no host"},
		"user info":           {strict, "https://u:p@hooks.example.com/", "credentials"},
		"fragment":            {strict, "https://hooks.example.com/#x", "fragment"},
		"not a url":           {strict, "https://%zz", "not a URL"},
		"loopback v4":         {strict, "https://127.0.0.1/", "not a public address"},
		"loopback v6":         {strict, "https://[::1]:8443/", "not a public address"},
		"mapped loopback":     {strict, "https://[::ffff:127.0.0.1]/", "not a public address"},
		"metadata":            {strict, "https://169.254.169.254/latest/meta-data", "not a public address"},
		"private":             {strict, "https://10.1.2.3/", "not a public address"},
		"private allowed":     {lenient, "https://10.1.2.3/", ""},
		"private outside":     {lenient, "https://10.2.0.1/", "not a public address"},
		"cgnat":               {strict, "https://100.64.1.1/", "not a public address"},
		"unspecified":         {strict, "https://0.0.0.0/", "not a public address"},
		"6to4":                {strict, "https://[2002:7f00:1::1]/", "not a public address"},
		"public v4":           {strict, "https://8.8.8.8/", ""},
		"public v6":           {strict, "https://[2606:4700::1111]/", ""},
		"documentation range": {strict, "https://192.0.2.10/", "not a public address"},
		"listed host":         {listed, "https://HOOKS.example.com/x", ""},
		"listed suffix":       {listed, "https://ci.corp.example/x", ""},
		"suffix is not apex":  {listed, "https://corp.example/x", "not in the controller's notify_hosts"},
		"unlisted host":       {listed, "https://evil.example.net/x", "not in the controller's notify_hosts"},
		"lookalike suffix":    {listed, "https://xcorp.example/x", "not in the controller's notify_hosts"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := tt.p.CheckURL(tt.url)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want allowed", tt.url, err)
				}
				return
			}
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckURL(%q) = %v, want ErrPolicy mentioning %q", tt.url, err, tt.want)
			}
		})
	}
}

// receiver is a local HTTPS server that answers with the statuses it is
// given in turn (then 200) and records what it got.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []*http.Request
	bodies   [][]byte
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, req)
		r.bodies = append(r.bodies, b)
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		r.mu.Unlock()
		if status >= 300 && status < 400 {
			w.Header().Set("Location", "https://169.254.169.254/")
		}
		w.WriteHeader(status)
		io.WriteString(w, "answer "+http.StatusText(status))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// policy allows the receiver's loopback address and trusts its cert.
func (r *receiver) policy(allow bool) *Policy {
	pool := x509.NewCertPool()
	pool.AddCert(r.srv.Certificate())
	p := &Policy{TLS: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second}
	if allow {
		p.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	return p
}

func TestSend(t *testing.T) {
	body := []byte(`{"event":"job.finished"}`)
	d := Delivery{ID: "d-1", Event: "job.finished", Body: body, Secret: secret}
	tests := map[string]struct {
		status    int
		wantErr   bool
		retry     bool
		errSubstr string
	}{
		"ok":          {http.StatusOK, false, false, ""},
		"accepted":    {http.StatusAccepted, false, false, ""},
		"server down": {http.StatusServiceUnavailable, true, true, "503"},
		"not found":   {http.StatusNotFound, true, true, "404"},
		"too many":    {http.StatusTooManyRequests, true, true, "429"},
		"gone":        {http.StatusGone, true, false, "410"},
		"redirect":    {http.StatusFound, true, true, "redirects are not followed"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := newReceiver(t, tt.status)
			p := r.policy(true)
			d := d
			d.URL = r.srv.URL + "/hook?token=abc"
			status, err := Send(context.Background(), p.Client(), p, d, time.Now())
			if status != tt.status {
				t.Errorf("Send's status %d, want %d", status, tt.status)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Send = %v", err)
				}
			} else {
				var e *Error
				if !errors.As(err, &e) || e.Retry != tt.retry || e.Status != tt.status || !strings.Contains(e.Msg, tt.errSubstr) {
					t.Fatalf("Send = %#v, want status %d retry %v mentioning %q", err, tt.status, tt.retry, tt.errSubstr)
				}
				if strings.Contains(e.Msg, "token=abc") {
					t.Errorf("the error shows the query string: %s", e.Msg)
				}
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.got) != 1 {
				t.Fatalf("the receiver got %d requests, want 1 (no redirect followed)", len(r.got))
			}
			req := r.got[0]
			if req.Method != http.MethodPost || req.Header.Get(HeaderDelivery) != "d-1" || req.Header.Get(HeaderEvent) != "job.finished" || req.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request %s with headers %v", req.Method, req.Header)
			}
			if err := Verify(secret, req.Header.Get(HeaderSignature), r.bodies[0], time.Now(), time.Minute); err != nil {
				t.Errorf("the receiver cannot verify the delivery: %v", err)
			}
		})
	}
}

// TestSendRefusesLocalTargets: without an Allow entry, a name that
// resolves to loopback is refused at the dial, and nothing is sent.
func TestSendRefusesLocalTargets(t *testing.T) {
	r := newReceiver(t)
	p := r.policy(false)
	for _, u := range []string{r.srv.URL, strings.Replace(r.srv.URL, "127.0.0.1", "localhost", 1)} {
		_, err := Send(context.Background(), p.Client(), p, Delivery{ID: "x", URL: u, Body: []byte("{}"), Secret: secret}, time.Now())
		var e *Error
		if !errors.As(err, &e) || e.Retry || !errors.Is(err, ErrPolicy) {
			t.Errorf("Send to %s = %v, want a final policy refusal", u, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != 0 {
		t.Errorf("the receiver got %d requests, want none", len(r.got))
	}
}

// TestSendUnreachable: a network error is worth a retry.
func TestSendUnreachable(t *testing.T) {
	r := newReceiver(t)
	p := r.policy(true)
	url := r.srv.URL
	r.srv.Close()
	_, err := Send(context.Background(), p.Client(), p, Delivery{ID: "x", URL: url, Body: []byte("{}"), Secret: secret}, time.Now())
	var e *Error
	if !errors.As(err, &e) || !e.Retry || e.Status != 0 {
		t.Errorf("Send to a closed server = %#v, want a retryable error without status", err)
	}
}
