package controller_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller/store"
	"jobsuite/transport"
)

// apiClient calls the HTTP API and returns errors instead of failing the
// test, so goroutines other than the test's may use it.
type apiClient struct {
	cl   *http.Client
	base string
}

// newAPIClient is a client with the named certificate from the PKI in
// dir, keeping enough idle connections for a few concurrent callers.
func newAPIClient(t *testing.T, dir, name, base string) *apiClient {
	t.Helper()
	pool, cert, err := files(dir, name).Load()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		TLSClientConfig:     certs.ClientTLS(pool, cert, "127.0.0.1", "http/1.1"),
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     30 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &apiClient{cl: &http.Client{Timeout: 15 * time.Second, Transport: tr}, base: base}
}

func (a *apiClient) do(method, path, body string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.cl.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (a *apiClient) get(path string, out any) error {
	code, b, err := a.do("GET", path, "")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("GET %s: %v: %.200s", path, err, b)
	}
	return nil
}

// submit posts a job and returns it; anything but 201 is an error.
func (a *apiClient) submit(body string) (api.JobView, error) {
	var j api.JobView
	code, b, err := a.do("POST", "/jobs", body)
	if err != nil {
		return j, err
	}
	if code != http.StatusCreated {
		return j, fmt.Errorf("POST /jobs %s: %d %s", body, code, b)
	}
	if err := json.Unmarshal(b, &j); err != nil || j.JobID == 0 {
		return j, fmt.Errorf("POST /jobs: bad 201 body (%v): %s", err, b)
	}
	return j, nil
}

// list returns every job (status "" for all) by following the pages of
// GET /jobs, newest first.
func (a *apiClient) list(status string) ([]api.JobView, error) {
	var all []api.JobView
	var before uint64
	for {
		q := "/jobs?limit=1000"
		if status != "" {
			q += "&status=" + status
		}
		if before != 0 {
			q += fmt.Sprintf("&before=%d", before)
		}
		code, b, err := a.do("GET", q, "")
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %d %s", q, code, b)
		}
		var page []api.JobView
		if err := json.Unmarshal(b, &page); err != nil {
			// Accept a {"jobs": [...]} envelope too.
			var env struct {
				Jobs []api.JobView `json:"jobs"`
			}
			if err2 := json.Unmarshal(b, &env); err2 != nil {
				return nil, fmt.Errorf("GET %s: %v: %.200s", q, err, b)
			}
			page = env.Jobs
		}
		if len(page) == 0 {
			return all, nil
		}
		for _, j := range page {
			if before != 0 && j.JobID >= before {
				return nil, fmt.Errorf("GET %s: job %d is not below the cursor", q, j.JobID)
			}
		}
		all = append(all, page...)
		before = page[len(page)-1].JobID
	}
}

// checkEvents verifies a terminal job's history against the scheduler's
// transitions: seq numbers count from 0, the first event is "submitted",
// exactly one event carries a terminal state — the last one, of type
// "finished" (an attempt ended the job) or "cancelled" (cancelled while
// queued or waiting) with the job's final state — every attempt has one
// "dispatched" event numbered in order, and every attempt but the one
// that ended the job was followed by a "retry" and, unless the job was
// cancelled while waiting, a "requeued".
func checkEvents(j api.JobView, evs []store.Event) error {
	if len(evs) == 0 {
		return fmt.Errorf("no events")
	}
	types := make([]string, len(evs))
	for i, e := range evs {
		types[i] = e.Type
	}
	hist := strings.Join(types, " ")
	var terminal, dispatched, retries, requeued int
	for i, e := range evs {
		if e.Seq != uint32(i) {
			return fmt.Errorf("event %d has seq %d (%s)", i, e.Seq, hist)
		}
		if e.State.Terminal() {
			terminal++
		}
		switch e.Type {
		case "dispatched":
			dispatched++
			if e.Attempt != uint32(dispatched) {
				return fmt.Errorf("dispatch %d carries attempt %d (%s)", dispatched, e.Attempt, hist)
			}
		case "retry":
			retries++
		case "requeued":
			requeued++
		}
	}
	last := evs[len(evs)-1]
	switch {
	case evs[0].Type != "submitted":
		return fmt.Errorf("first event %q (%s)", evs[0].Type, hist)
	case terminal != 1:
		return fmt.Errorf("%d events with a terminal state, want 1 (%s)", terminal, hist)
	case !last.State.Terminal() || last.State != store.State(j.Status):
		return fmt.Errorf("last event state %q, job is %q (%s)", last.State, j.Status, hist)
	case last.Type != "finished" && last.Type != "cancelled":
		return fmt.Errorf("terminal event type %q (%s)", last.Type, hist)
	case dispatched != len(j.Attempts):
		return fmt.Errorf("%d dispatched events for %d attempts (%s)", dispatched, len(j.Attempts), hist)
	}
	if last.Type == "finished" {
		if len(j.Attempts) == 0 || retries != len(j.Attempts)-1 || requeued != retries {
			return fmt.Errorf("finished after %d attempts with %d retries, %d requeued (%s)", len(j.Attempts), retries, requeued, hist)
		}
	} else { // cancelled while queued (no retry pending) or while waiting
		waiting := len(evs) >= 2 && evs[len(evs)-2].State == store.Waiting
		if retries != len(j.Attempts) || (waiting && requeued != retries-1) || (!waiting && requeued != retries) {
			return fmt.Errorf("cancelled after %d attempts with %d retries, %d requeued (%s)", len(j.Attempts), retries, requeued, hist)
		}
	}
	return nil
}

// TestSchedulerConcurrentSubmitCancel runs submitters and cancellers
// against two agents at once, under -race: every job ends completed or
// cancelled, a job whose cancel was answered "cancelled at once" never
// ran, a long job whose cancel was accepted does not run to its end, and
// the agents end with no job and every slot free.
func TestSchedulerConcurrentSubmitCancel(t *testing.T) {
	c := startCluster(t)
	const slots = 8
	c.startAgent("agent-1", slots, nil, transport.ModeTCP)
	c.startAgent("agent-2", slots, nil, transport.ModeQUIC)
	client := newAPIClient(t, c.dir, "operator", c.base)

	const submitters, perSubmitter, cancellers = 4, 200, 2
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	var (
		mu       sync.Mutex
		ids      []uint64
		long     = map[uint64]bool{}     // sleep 20: only cancel ends them in time
		answers  = map[uint64][]int{}    // every DELETE status per job
		conflict = map[uint64][]string{} // the bodies of 409 answers
		toCancel = make(chan uint64, submitters*perSubmitter)
	)
	var subWG, cancelWG sync.WaitGroup
	for g := range submitters {
		subWG.Add(1)
		go func() {
			defer subWG.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for i := range perSubmitter {
				cmd, isLong := "true", i%10 == 9
				if isLong {
					cmd = "sleep 20"
				}
				j, err := client.submit(fmt.Sprintf(`{"command":%q,"priority":%d}`, cmd, rng.IntN(101)))
				if err != nil {
					t.Errorf("submitter %d: %v", g, err)
					return
				}
				mu.Lock()
				ids = append(ids, j.JobID)
				if isLong {
					long[j.JobID] = true
				}
				mu.Unlock()
				toCancel <- j.JobID
			}
		}()
	}
	cancel := func(id uint64) {
		code, b, err := client.do("DELETE", fmt.Sprintf("/jobs/%d", id), "")
		if err != nil {
			t.Errorf("cancel %d: %v", id, err)
			return
		}
		switch code {
		case http.StatusOK:
			if !bytes.Contains(b, []byte(`"status": "cancelled"`)) {
				t.Errorf("cancel %d: 200 but %s", id, b)
			}
		case http.StatusAccepted, http.StatusConflict:
		default:
			t.Errorf("cancel %d: %d %s", id, code, b)
		}
		mu.Lock()
		answers[id] = append(answers[id], code)
		if code == http.StatusConflict {
			var compact bytes.Buffer
			_ = json.Compact(&compact, b)
			conflict[id] = append(conflict[id], compact.String())
		}
		mu.Unlock()
	}
	for g := range cancellers {
		cancelWG.Add(1)
		go func() {
			defer cancelWG.Done()
			rng := rand.New(rand.NewPCG(seed, 100+uint64(g)))
			var seen []uint64
			for id := range toCancel {
				seen = append(seen, id)
				mu.Lock()
				isLong := long[id]
				mu.Unlock()
				switch n := rng.IntN(3); {
				case isLong || n == 0: // just submitted: queued or about to be dispatched
					cancel(id)
				case n == 1: // an older one: running, finished or cancelled already
					cancel(seen[rng.IntN(len(seen))])
				}
			}
		}()
	}
	subWG.Wait()
	close(toCancel)
	cancelWG.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Every job ends; long jobs end only through their cancel.
	var jobs []api.JobView
	poll(t, "every job to finish", 40*time.Second, func() (bool, string) {
		var err error
		if jobs, err = client.list(""); err != nil {
			t.Fatal(err)
		}
		return unfinished(jobs)
	})
	byID := map[uint64]api.JobView{}
	for _, j := range jobs {
		if _, dup := byID[j.JobID]; dup {
			t.Errorf("job %d listed twice", j.JobID)
		}
		byID[j.JobID] = j
	}
	if len(byID) != submitters*perSubmitter || len(ids) != len(byID) {
		t.Fatalf("%d jobs listed, %d submitted, want %d", len(byID), len(ids), submitters*perSubmitter)
	}
	var cancelledQueued, cancelledRunning, completed int
	for _, id := range ids {
		j, ok := byID[id]
		if !ok {
			t.Errorf("job %d missing from the list", id)
			continue
		}
		codes := answers[id]
		has := func(code int) bool {
			for _, c := range codes {
				if c == code {
					return true
				}
			}
			return false
		}
		switch store.State(j.Status) {
		case store.Completed:
			completed++
			if len(j.Attempts) != 1 || j.Attempts[0].Outcome != "completed" {
				t.Errorf("completed job %d: attempts %+v", id, j.Attempts)
			}
			if has(http.StatusOK) {
				t.Errorf("job %d completed although a cancel answered 200 (cancelled): answers %v", id, codes)
			}
			if long[id] {
				t.Errorf("long job %d ran to completion although cancel answered %v: the cancel was lost", id, codes)
			}
		case store.Cancelled:
			switch {
			case len(codes) == 0:
				t.Errorf("job %d cancelled but nobody cancelled it", id)
			case has(http.StatusConflict):
				t.Errorf("job %d ended cancelled but a cancel answered 409 (already finished): answers %v, 409 bodies %q", id, codes, conflict[id])
			case has(http.StatusAccepted):
				cancelledRunning++
				if len(j.Attempts) != 1 || !j.CancelRequested {
					t.Errorf("job %d cancelled while running: attempts %+v, cancel_requested %v", id, j.Attempts, j.CancelRequested)
				}
			default: // every answer 200: cancelled while queued, it never ran
				cancelledQueued++
				if len(j.Attempts) != 0 || j.StartedAt != nil {
					t.Errorf("job %d cancelled at once (answers %v) but ran: attempts %+v", id, codes, j.Attempts)
				}
			}
		default:
			t.Errorf("job %d ended %s (%s), want completed or cancelled", id, j.Status, j.Reason)
		}
	}
	t.Logf("%d completed, %d cancelled while queued, %d cancelled while dispatched or running", completed, cancelledQueued, cancelledRunning)

	// Histories: exactly one terminal event each.
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var evs []store.Event
			if err := client.get(fmt.Sprintf("/jobs/%d/events", id), &evs); err != nil {
				t.Error(err)
				return
			}
			if err := checkEvents(byID[id], evs); err != nil {
				t.Errorf("job %d: %v", id, err)
			}
		}()
	}
	wg.Wait()

	// The agents hold no job and get every slot back.
	poll(t, "agents idle with all slots free", 10*time.Second, func() (bool, string) {
		var agents []api.AgentInfo
		if err := client.get("/agents", &agents); err != nil {
			t.Fatal(err)
		}
		idle := len(agents) == 2
		var state []string
		for _, a := range agents {
			idle = idle && a.Running == 0 && len(a.Jobs) == 0 && a.Credits == slots
			state = append(state, fmt.Sprintf("%s: running %v, free %d of %d", a.Name, a.Jobs, a.Credits, a.Slots))
		}
		return idle, strings.Join(state, "; ")
	})
}

// unfinished reports whether every job is terminal and describes a few
// that are not.
func unfinished(jobs []api.JobView) (bool, string) {
	var open []string
	for _, j := range jobs {
		if !store.State(j.Status).Terminal() {
			open = append(open, fmt.Sprintf("%d %s (%s; attempts %d, cancel requested %v)", j.JobID, j.Status, j.Reason, len(j.Attempts), j.CancelRequested))
		}
	}
	if len(open) > 5 {
		open = append(open[:5], fmt.Sprintf("and %d more", len(open)-5))
	}
	return len(open) == 0, fmt.Sprintf("%d not finished: %s", len(open), strings.Join(open, "; "))
}

// poll calls cond until it reports true or timeout passes; on timeout
// the test fails with cond's last description of what it saw. The
// interval grows from 20ms to 500ms so that polling a big list does not
// load the controller it waits for.
func poll(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 20 * time.Millisecond
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, seen)
		}
		time.Sleep(interval)
		interval = min(interval*3/2, 500*time.Millisecond)
	}
}
