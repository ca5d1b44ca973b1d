package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"jobsuite/certs"
	"jobsuite/controller/store"
)

// pki is the benchmark's throwaway CA: the controller and operator
// certificates and the real agents' certificates are files (children
// load them); fake agents get theirs in memory.
type pki struct {
	dir  string
	ca   *certs.CA
	pool *x509.CertPool
	op   tls.Certificate
}

func newPKI(dir string, realAgents int) (*pki, error) {
	if err := certs.CreateCA(dir); err != nil {
		return nil, err
	}
	reqs := []certs.Request{
		{Role: certs.RoleController, Name: "controller", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}},
		{Role: certs.RoleOperator, Name: "bench"},
	}
	for i := 1; i <= realAgents; i++ {
		reqs = append(reqs, certs.Request{Role: certs.RoleAgent, Name: agentName(i)})
	}
	for _, r := range reqs {
		if _, _, err := certs.IssueFiles(dir, r); err != nil {
			return nil, err
		}
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		return nil, err
	}
	pool, op, err := certs.Files{CA: certs.CAFile(dir), Cert: certs.CertFile(dir, "bench"), Key: certs.KeyFile(dir, "bench")}.Load()
	if err != nil {
		return nil, err
	}
	return &pki{dir: dir, ca: ca, pool: pool, op: op}, nil
}

func agentName(i int) string { return fmt.Sprintf("agent-%d", i) }

// agentTLS issues an agent certificate named name in memory and returns
// the agent side of mutual TLS.
func (p *pki) agentTLS(name string) (*tls.Config, error) {
	certPEM, keyPEM, err := p.ca.Issue(certs.Request{Role: certs.RoleAgent, Name: name})
	if err != nil {
		return nil, err
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return certs.ClientTLS(p.pool, kp, "127.0.0.1"), nil
}

// api is an operator client of the controller's HTTPS API with up to
// conns keep-alive connections.
type api struct {
	base string
	host string
	c    *http.Client
	pki  *pki
}

func newAPI(p *pki, addr string, conns int) *api {
	tr := &http.Transport{
		TLSClientConfig:     certs.ClientTLS(p.pool, p.op, "127.0.0.1", "http/1.1"),
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
	}
	return &api{base: "https://" + addr, host: addr, c: &http.Client{Transport: tr, Timeout: 2 * time.Minute}, pki: p}
}

// newAPIH2 is newAPI asking for HTTP/2 (and HTTP/1.1 after it) by ALPN,
// as the CLI does: its clients' requests share one connection while
// fewer than the server's 250 concurrent streams are open.
func newAPIH2(p *pki, addr string, conns int) *api {
	a := newAPI(p, addr, conns)
	tr := a.c.Transport.(*http.Transport)
	tr.TLSClientConfig = certs.ClientTLS(p.pool, p.op, "127.0.0.1", "h2", "http/1.1")
	tr.ForceAttemptHTTP2 = true
	return a
}

func (a *api) close() { a.c.CloseIdleConnections() }

// do sends a request and returns the status and body; the body is read
// to the end so the connection is reused.
func (a *api) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// submit posts one job and returns its ID.
func (a *api) submit(ctx context.Context, body []byte) (uint64, error) {
	code, b, err := a.do(ctx, "POST", "/jobs", body)
	if err != nil {
		return 0, err
	}
	// 200: a job with this idempotency key exists already — a retry
	// whose first try was stored although its answer was lost.
	if code != http.StatusCreated && code != http.StatusOK {
		return 0, fmt.Errorf("POST /jobs: %d %.200s", code, b)
	}
	var v struct {
		JobID uint64 `json:"job_id"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, err
	}
	return v.JobID, nil
}

// batch posts a JSON array of jobs to /jobs/batch and returns their IDs.
func (a *api) batch(ctx context.Context, body []byte) ([]uint64, error) {
	code, b, err := a.do(ctx, "POST", "/jobs/batch", body)
	if err != nil {
		return nil, err
	}
	if code != http.StatusCreated {
		return nil, fmt.Errorf("POST /jobs/batch: %d %.200s", code, b)
	}
	var items []struct {
		JobID uint64 `json:"job_id"`
	}
	if err := json.Unmarshal(b, &items); err != nil {
		return nil, err
	}
	ids := make([]uint64, len(items))
	for i, it := range items {
		ids[i] = it.JobID
	}
	return ids, nil
}

// batchBody is a JSON array of n copies of job.
func batchBody(job string, n int) []byte {
	var b bytes.Buffer
	b.Grow(n * (len(job) + 1))
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(job)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// submitMany queues n copies of job through /jobs/batch, per jobs per
// request, and returns the IDs in order.
func (a *api) submitMany(ctx context.Context, job string, n, per int) ([]uint64, error) {
	ids := make([]uint64, 0, n)
	for len(ids) < n {
		got, err := a.batch(ctx, batchBody(job, min(per, n-len(ids))))
		if err != nil {
			return ids, err
		}
		ids = append(ids, got...)
	}
	return ids, nil
}

func (a *api) getJSON(ctx context.Context, path string, out any) error {
	code, b, err := a.do(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %.200s", path, code, b)
	}
	return json.Unmarshal(b, out)
}

// waitHealthy polls /health until it answers.
func (a *api) waitHealthy(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		code, _, err := a.do(ctx, "GET", "/health", nil)
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("controller not healthy: %v (%d)", err, code)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// warm opens up to n keep-alive connections (TLS handshakes included)
// with n simultaneous GET /health, so that a paced run that follows
// does not pay for them — and does not charge them to the controller —
// while it is measured: a pacer's workers otherwise dial a new
// connection each time the requests in flight outnumber the idle ones,
// which they do exactly when the controller stalls.
func (a *api) warm(ctx context.Context, n int) error {
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			code, _, err := a.do(ctx, "GET", "/health", nil)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("GET /health: %d", code)
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// agentCount returns how many agents the controller lists.
func (a *api) agentCount(ctx context.Context) (int, error) {
	var agents []json.RawMessage
	err := a.getJSON(ctx, "/agents", &agents)
	return len(agents), err
}

// waitAgents waits until n agents are connected.
func (a *api) waitAgents(ctx context.Context, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		got, err := a.agentCount(ctx)
		if err == nil && got == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents connected after %s (%v)", got, n, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEnded waits until job id has ended (any terminal state). It reads
// the one job, so polling it while a group runs costs the controller
// little: waitIdle's listings, run every 20 ms through row 3, were ≈ 5%
// of the controller's CPU charged to row 3c.
func (a *api) waitEnded(ctx context.Context, id uint64, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var j jobRecord
		if err := a.getJSON(ctx, fmt.Sprintf("/jobs/%d", id), &j); err != nil {
			return err
		}
		if j.Status.Terminal() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %d still %s after %s", id, j.Status, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitIdle waits until no job is queued, waiting, dispatched or running.
func (a *api) waitIdle(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		busy := ""
		for _, st := range []string{"queued", "waiting", "dispatched", "running"} {
			var jobs []json.RawMessage
			if err := a.getJSON(ctx, "/jobs?limit=1&status="+st, &jobs); err != nil {
				return err
			}
			if len(jobs) > 0 {
				busy = st
				break
			}
		}
		if busy == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jobs still %s after %s", busy, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// jobRecord is the part of a job view the benchmark reads.
type jobRecord struct {
	JobID      uint64          `json:"job_id"`
	Status     store.State     `json:"status"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	RetryAt    *time.Time      `json:"retry_at"`
	LogBytes   uint64          `json:"log_bytes"`
	Attempts   []attemptRecord `json:"attempts"`
}

// attemptRecord is the part of an attempt's view the benchmark reads.
type attemptRecord struct {
	Number       int        `json:"number"`
	DispatchedAt time.Time  `json:"dispatched_at"`
	StartedAt    *time.Time `json:"started_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	Outcome      string     `json:"outcome"`
}

// records fetches the jobs in ids (any order) by walking GET /jobs
// newest first, 1000 at a time, until all are found.
func (a *api) records(ctx context.Context, ids []uint64) (map[uint64]*jobRecord, error) {
	want := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	out := make(map[uint64]*jobRecord, len(ids))
	cursor := ""
	for len(out) < len(want) {
		path := "/jobs?limit=1000"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		req, err := http.NewRequestWithContext(ctx, "GET", a.base+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := a.c.Do(req)
		if err != nil {
			return nil, err
		}
		var page []*jobRecord
		err = json.NewDecoder(resp.Body).Decode(&page)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", path, err)
		}
		for _, j := range page {
			if want[j.JobID] {
				out[j.JobID] = j
			}
		}
		cursor = resp.Header.Get("X-Next-Cursor")
		if cursor == "" {
			break
		}
	}
	if len(out) < len(want) {
		return out, fmt.Errorf("found %d of %d jobs", len(out), len(want))
	}
	return out, nil
}

// follow opens the log WebSocket of job id and counts the bytes of its
// messages until the controller closes it at the job's end.
func (a *api) follow(ctx context.Context, id uint64) (int64, error) {
	return a.followFrom(ctx, id, 0)
}

// followFrom is follow from byte offset on.
func (a *api) followFrom(ctx context.Context, id uint64, offset int64) (int64, error) {
	d := websocket.Dialer{
		TLSClientConfig:  certs.ClientTLS(a.pki.pool, a.pki.op, "127.0.0.1", "http/1.1"),
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   256 << 10,
	}
	conn, _, err := d.DialContext(ctx, fmt.Sprintf("wss://%s/ws/jobs/%d/logs?offset=%d", a.host, id, offset), nil)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var n int64
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				return n, nil
			}
			return n, err
		}
		m, err := io.Copy(io.Discard, r)
		n += m
		if err != nil {
			return n, err
		}
	}
}

// events returns the history of job id.
func (a *api) events(ctx context.Context, id uint64) ([]store.Event, error) {
	var evs []store.Event
	err := a.getJSON(ctx, fmt.Sprintf("/jobs/%d/events", id), &evs)
	return evs, err
}

// eventTime returns the time of the first event of type typ.
func eventTime(evs []store.Event, typ string) (time.Time, bool) {
	for _, e := range evs {
		if strings.EqualFold(e.Type, typ) {
			return e.Time, true
		}
	}
	return time.Time{}, false
}
