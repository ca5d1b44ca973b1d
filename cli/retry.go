package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"jobsuite/api"
	"jobsuite/internal/backoff"
)

// How a request finds a controller that answers (Client.roundTrip).
//
// The client holds one address or several (a cluster, or several doors
// to it). A request goes to the address that answered last, and moves
// on to the next when:
//
//   - the connection cannot be made (refused, unreachable, no such
//     host): nothing was sent, so this holds for every request;
//   - the controller answers 503 with Retry-After (a cluster without a
//     leader right now), or a proxy in front of it 502 or 504, or the
//     connection fails after the request went out: only for a request
//     that is safe to send twice (retryable).
//
// Once every address has failed in a round, the client waits —
// Retry-After if an answer said so, else a backoff from 250 ms doubling
// up to 5 s, each wait between half and all of it — and goes round
// again, until retryFor is spent; then the last failure is the error.
// A round in which every address refused the connection, and no
// controller has answered busy during the request, ends it at once:
// when nothing listens, waiting 30 s only delays the error.

// retryPolicy is the wait between two rounds.
var retryPolicy = backoff.Policy{Base: 250 * time.Millisecond, Max: 5 * time.Second, Down: 0.5}

// retryable reports whether a request may be sent twice: reads and
// deletes, and a submit (POST /jobs, POST /jobs/batch) whose every job
// carries an idempotency key, so that the controller returns the job a
// first try created instead of a second one.
func retryable(method, path string, body any) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodDelete:
		return true
	case http.MethodPost:
	default:
		return false
	}
	switch b := body.(type) {
	case api.SubmitRequest:
		return path == "/jobs" && b.IdempotencyKey != ""
	case *api.SubmitRequest:
		return path == "/jobs" && b != nil && b.IdempotencyKey != ""
	case []api.SubmitRequest:
		if path != "/jobs/batch" || len(b) == 0 {
			return false
		}
		for _, j := range b {
			if j.IdempotencyKey == "" {
				return false
			}
		}
		return true
	}
	return false
}

// busy reports whether an answer says "try again", and how long to wait
// for it (0: not said). A 503 counts only with Retry-After: the
// controller answers 503 without it when its store fails, which a retry
// does not fix.
func busy(resp *http.Response, now time.Time) (bool, time.Duration) {
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return true, retryAfter(resp.Header.Get("Retry-After"), now)
	case http.StatusServiceUnavailable:
		ra := resp.Header.Get("Retry-After")
		return ra != "", retryAfter(ra, now)
	}
	return false, 0
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		return max(time.Duration(secs)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// notSent reports whether err failed a request before anything of it
// was sent: the connection could not be made.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED)
}

// sleepCtx waits d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// first is the index of the address to try first.
func (c *Client) first() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

// answered makes address i the first to try from now on.
func (c *Client) answered(i int) {
	c.mu.Lock()
	c.at = i
	c.mu.Unlock()
}

// moveOn makes the address after the current first one the first to
// try: a log stream that broke reconnects elsewhere.
func (c *Client) moveOn() {
	c.mu.Lock()
	c.at = (c.at + 1) % len(c.addrs)
	c.mu.Unlock()
}

// roundTrip sends a request with body (JSON, or nil) to the controllers
// as the comment at the top of this file says, and returns the answer
// to read (the caller closes its body) with the address that gave it.
// Errors are the caller's to show: an *APIError for a busy answer it
// gave up on, or a connection error explained (connErrorAt).
func (c *Client) roundTrip(ctx context.Context, method, path string, body []byte, retry bool) (*http.Response, *url.URL, error) {
	deadline := c.now().Add(c.retryFor)
	start := c.first()
	n := len(c.addrs)
	failed := make([]bool, n) // in this round
	sawBusy := false          // some controller answered, busy, during this request
	refusedOnly := true       // every failure of this round was a connection not made
	var wait time.Duration    // the longest Retry-After of this round
	var lastErr error
	var lastAt *url.URL
	for i, round := start, 1; ; {
		base := c.addrs[i]
		req, err := http.NewRequestWithContext(ctx, method, urlAt(base, "https", path), bodyReader(body))
		if err != nil {
			return nil, base, err
		}
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		switch {
		case err == nil:
			b, ra := busy(resp, c.now())
			if !b || !retry {
				c.answered(i)
				return resp, base, nil
			}
			data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
			resp.Body.Close()
			lastErr, lastAt = apiError(resp.StatusCode, data), base
			sawBusy, refusedOnly = true, false
			wait = max(wait, ra)
		case ctx.Err() != nil:
			return nil, base, connErrorAt(base, err)
		case notSent(err):
			lastErr, lastAt = connErrorAt(base, err), base
		case retry:
			lastErr, lastAt = connErrorAt(base, err), base
			refusedOnly = false
		default:
			// It may have been sent and done: the user must look.
			return nil, base, connErrorAt(base, err)
		}
		failed[i] = true
		i = (i + 1) % n
		if !failed[i] {
			continue // the next address at once
		}
		// A round failed.
		if refusedOnly && !sawBusy {
			return nil, lastAt, c.unreachable(lastErr)
		}
		if wait == 0 {
			wait = retryPolicy.Delay(round, rand.Float64())
		}
		if left := deadline.Sub(c.now()); wait > left {
			return nil, lastAt, c.gaveUp(lastErr)
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, lastAt, err
		}
		clear(failed)
		wait, refusedOnly = 0, true
		round++
	}
}

func bodyReader(body []byte) io.Reader {
	if body == nil {
		return nil
	}
	return bytes.NewReader(body)
}

// unreachable is the error when no address took the connection.
func (c *Client) unreachable(last error) error {
	if len(c.addrs) == 1 {
		return last
	}
	list := make([]string, len(c.addrs))
	for i, u := range c.addrs {
		list[i] = u.String()
	}
	return fmt.Errorf("none of the controllers %s could be reached; the last said: %w", strings.Join(list, ", "), last)
}

// gaveUp is the error when the controllers stayed busy for retryFor.
func (c *Client) gaveUp(last error) error {
	var apiErr *APIError
	if c.retryFor > 0 && errors.As(last, &apiErr) {
		e := *apiErr
		e.Message = fmt.Sprintf("%s (still so after retrying for %s; -retry-timeout sets how long)", apiErr.Error(), c.retryFor)
		return &e
	}
	return last
}
