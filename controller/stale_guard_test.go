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
