package controller

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"jobsuite/api"
)

// TestSwapGuard: a stale read's 500 becomes a 503 with Retry-After when
// the store was swapped under it (a snapshot installed), and stays a 500
// otherwise; other answers pass through untouched.
func TestSwapGuard(t *testing.T) {
	for name, tc := range map[string]struct {
		code     int
		swapped  bool
		want     int
		retry    bool
		bodyWant string
	}{
		"500 after a swap":     {code: 500, swapped: true, want: 503, retry: true, bodyWant: "installed a snapshot"},
		"500 without a swap":   {code: 500, swapped: false, want: 500, bodyWant: "reading job 7 failed"},
		"404 after a swap":     {code: 404, swapped: true, want: 404, bodyWant: "no job"},
		"200 after a swap too": {code: 200, swapped: true, want: 200, bodyWant: "ok"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			g := &swapGuard{ResponseWriter: rec, swapped: func() bool { return tc.swapped }}
			switch tc.code {
			case 500:
				writeError(g, http.StatusInternalServerError, "reading job %d failed", 7)
			case 404:
				writeError(g, http.StatusNotFound, "no job with id 7")
			default:
				g.WriteHeader(200)
				_, _ = g.Write([]byte(`{"ok":true}`))
			}
			g.finish("ctl-2")
			if rec.Code != tc.want || (rec.Header().Get("Retry-After") != "") != tc.retry {
				t.Fatalf("answer %d, Retry-After %q; want %d, retry %v", rec.Code, rec.Header().Get("Retry-After"), tc.want, tc.retry)
			}
			if !strings.Contains(rec.Body.String(), tc.bodyWant) {
				t.Fatalf("body %q; want it to say %q", rec.Body.String(), tc.bodyWant)
			}
			if tc.code != 200 {
				var e api.Error
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
					t.Fatalf("body %q is not one JSON error: %v", rec.Body.String(), err)
				}
			}
		})
	}
}

// TestRetryStale: a stale read whose store was swapped under it before
// it wrote anything is tried again once the install finished, and the
// retry's answer is the client's; a second swap, or an install that
// does not finish within the wait, gives 503 with Retry-After; other
// answers are not retried.
func TestRetryStale(t *testing.T) {
	ok := func(g *swapGuard) { writeJSON(g, http.StatusOK, map[string]string{"job": "7"}) }
	swapped500 := func(g *swapGuard) { writeError(g, http.StatusInternalServerError, "reading job 7 failed: closed") }
	for name, tc := range map[string]struct {
		tries    []func(g *swapGuard)
		swapped  []bool // per try
		finished bool   // the install finishes within the wait
		want     int
		retry    bool
		reads    int
		bodyWant string
	}{
		"a swap, then the retry answers": {tries: []func(*swapGuard){swapped500, ok}, swapped: []bool{true, false}, finished: true,
			want: 200, reads: 2, bodyWant: `"job": "7"`},
		"a swap twice": {tries: []func(*swapGuard){swapped500, swapped500}, swapped: []bool{true, true}, finished: true,
			want: 503, retry: true, reads: 2, bodyWant: "installed a snapshot"},
		"the install does not finish in time": {tries: []func(*swapGuard){swapped500, ok}, swapped: []bool{true, false}, finished: false,
			want: 503, retry: true, reads: 1, bodyWant: "installed a snapshot"},
		"a 500 without a swap": {tries: []func(*swapGuard){swapped500, ok}, swapped: []bool{false, false}, finished: true,
			want: 500, reads: 1, bodyWant: "reading job 7 failed"},
		"answered at once": {tries: []func(*swapGuard){ok, ok}, swapped: []bool{true, true}, finished: true,
			want: 200, reads: 1, bodyWant: `"job": "7"`},
		"a 500 after a streamed answer began": {tries: []func(*swapGuard){func(g *swapGuard) {
			_, _ = g.Write([]byte("first line\n"))
			g.WriteHeader(http.StatusInternalServerError)
		}, ok}, swapped: []bool{true, true}, finished: true, want: 200, reads: 1, bodyWant: "first line"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			reads := 0
			retryStale(rec, "ctl-2", func(g *swapGuard) {
				i := reads
				reads++
				g.swapped = func() bool { return tc.swapped[i] }
				g.wait = func() bool { return tc.finished }
				tc.tries[i](g)
			})
			if rec.Code != tc.want || (rec.Header().Get("Retry-After") != "") != tc.retry || reads != tc.reads {
				t.Fatalf("answer %d, Retry-After %q after %d reads; want %d, retry %v after %d", rec.Code, rec.Header().Get("Retry-After"), reads, tc.want, tc.retry, tc.reads)
			}
			if !strings.Contains(rec.Body.String(), tc.bodyWant) || (tc.want != 500 && strings.Contains(rec.Body.String(), "failed")) {
				t.Fatalf("body %q; want it to say %q (and no held-back 500)", rec.Body.String(), tc.bodyWant)
			}
		})
	}
}
