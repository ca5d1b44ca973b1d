package controller_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/controller"
)

// staleAnswer is a stale read's answer with its staleness headers.
type staleAnswer struct {
	code        int
	body        []byte
	applied     uint64
	lastContact float64 // seconds; -1 when absent
	knownLeader string
	retryAfter  string
}

func staleGet(t *testing.T, cl *http.Client, url, token string) staleAnswer {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := staleAnswer{code: resp.StatusCode, body: b, lastContact: -1, knownLeader: resp.Header.Get("Jobsuite-Known-Leader"), retryAfter: resp.Header.Get("Retry-After")}
	if h := resp.Header.Get("Jobsuite-Applied-Index"); h != "" {
		if a.applied, err = strconv.ParseUint(h, 10, 64); err != nil {
			t.Fatalf("GET %s: Jobsuite-Applied-Index %q", url, h)
		}
	} else {
		t.Fatalf("GET %s: %d without Jobsuite-Applied-Index: %s", url, resp.StatusCode, b)
	}
	if h := resp.Header.Get("Jobsuite-Last-Contact"); h != "" {
		if a.lastContact, err = strconv.ParseFloat(h, 64); err != nil {
			t.Fatalf("GET %s: Jobsuite-Last-Contact %q", url, h)
		}
	}
	return a
}

// TestStaleReads: GET /jobs, /jobs/:id and /jobs/:id/logs with
// ?stale=1 are answered by a follower from its own store, with headers
// saying how stale; authenticated against the follower's copy of the
// tokens (a token revoked on the leader stops working there too); still
// answered while there is no leader (so not forwarded), until the
// follower has not heard from a leader for MaxStale: then 503.
func TestStaleReads(t *testing.T) {
	const maxStale = 5 * time.Second
	c := startNodesWith(t, 3, func(cfg *controller.Config) { cfg.MaxStale = maxStale })
	lead := c.leader()
	fol := c.other(lead)
	startClusterAgent(t, c, "agent-1", c.cfgs[lead].AgentAddr)
	code, body := doWith(t, c.client, "POST", c.url(lead, "/jobs"), `{"name":"stale","command":"echo stale-read"}`)
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var j job
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	waitNodeState(t, c, lead, j.JobID, "completed")
	var want api.JobView
	if code, b := doWith(t, c.client, "GET", c.url(lead, fmt.Sprintf("/jobs/%d", j.JobID)), ""); code != 200 || json.Unmarshal(b, &want) != nil {
		t.Fatalf("GET /jobs/%d on the leader: %d %s", j.JobID, code, b)
	}

	// The follower's own view catches up with the leader's.
	var got api.JobView
	var a staleAnswer
	(&cluster{t: t}).waitFor("the follower's stale view of the completed job", func() bool {
		a = staleGet(t, c.client, c.url(fol, fmt.Sprintf("/jobs/%d?stale=1", j.JobID)), "")
		return a.code == 200 && json.Unmarshal(a.body, &got) == nil && got.Status == "completed"
	})
	if got.JobID != want.JobID || got.Name != want.Name || len(got.Attempts) != len(want.Attempts) || got.LogBytes != want.LogBytes {
		t.Errorf("stale view on the follower %+v, the leader's %+v", got, want)
	}
	if a.applied == 0 || a.lastContact < 0 || a.lastContact > maxStale.Seconds() || a.knownLeader != "true" {
		t.Errorf("stale read headers: applied %d, last contact %v s, known leader %q", a.applied, a.lastContact, a.knownLeader)
	}
	if a := staleGet(t, c.client, c.url(fol, fmt.Sprintf("/jobs/%d/logs?stale=1", j.JobID)), ""); a.code != 200 || string(a.body) != "stale-read\n" {
		t.Errorf("stale logs on the follower: %d %q", a.code, a.body)
	}
	if a := staleGet(t, c.client, c.url(fol, fmt.Sprintf("/jobs/%d/logs/?stale=true&attempt=1", j.JobID)), ""); a.code != 200 || string(a.body) != "stale-read\n" {
		t.Errorf("stale logs of attempt 1 on the follower: %d %q", a.code, a.body)
	}
	var list []api.JobView
	if a := staleGet(t, c.client, c.url(fol, "/jobs?stale=1&status=completed"), ""); a.code != 200 || json.Unmarshal(a.body, &list) != nil || len(list) != 1 || list[0].JobID != j.JobID {
		t.Errorf("stale list on the follower: %d %s", a.code, a.body)
	}
	if a := staleGet(t, c.client, c.url(fol, "/jobs/999?stale=1"), ""); a.code != 404 {
		t.Errorf("stale read of a missing job: %d %s", a.code, a.body)
	}
	if a := staleGet(t, c.client, c.url(fol, "/jobs/x?stale=1"), ""); a.code != 400 {
		t.Errorf("stale read of a bad job ID: %d %s", a.code, a.body)
	}
	// The leader answers a stale read itself, with the headers.
	if a := staleGet(t, c.client, c.url(lead, fmt.Sprintf("/jobs/%d?stale=1", j.JobID)), ""); a.code != 200 || a.lastContact != 0 || a.knownLeader != "true" {
		t.Errorf("stale read on the leader: %d, last contact %v, known leader %q", a.code, a.lastContact, a.knownLeader)
	}

	// Who may read: as on the leader, from the follower's own records.
	anon := &http.Client{Timeout: waitLimit, Transport: &http.Transport{TLSClientConfig: c.client.Transport.(*http.Transport).TLSClientConfig.Clone()}}
	anon.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	if a := staleGet(t, anon, c.url(fol, "/jobs?stale=1"), ""); a.code != 401 {
		t.Errorf("stale read without credentials: %d %s", a.code, a.body)
	}
	code, b := doWith(t, c.client, "POST", c.url(lead, "/tokens"), `{"role":"viewer","name":"dash"}`)
	var tok api.TokenView
	if code != 201 || json.Unmarshal(b, &tok) != nil {
		t.Fatalf("POST /tokens: %d %s", code, b)
	}
	(&cluster{t: t}).waitFor("the token to work for a stale read on the follower", func() bool {
		return staleGet(t, anon, c.url(fol, "/jobs?stale=1"), tok.Token).code == 200
	})
	if code, b := doWith(t, c.client, "DELETE", c.url(lead, "/tokens/"+tok.ID), ""); code != 200 && code != 204 {
		t.Fatalf("DELETE /tokens/%s: %d %s", tok.ID, code, b)
	}
	(&cluster{t: t}).waitFor("the revoked token to be refused on the follower", func() bool {
		return staleGet(t, anon, c.url(fol, "/jobs?stale=1"), tok.Token).code == 401
	})

	// Without a leader: the follower alone still answers (nothing to
	// forward to) until it has not heard from one for maxStale.
	// The third node first, then the leader (which hands leadership to
	// fol on its way out: fol may lead for a lease, without a quorum).
	for _, i := range []int{3 - lead - fol, lead} {
		c.stop(i)
	}
	sawLeaderless := false
	var refused staleAnswer
	(&cluster{t: t}).waitFor("the lone follower to refuse stale reads", func() bool {
		a := staleGet(t, c.client, c.url(fol, fmt.Sprintf("/jobs/%d?stale=1", j.JobID)), "")
		switch a.code {
		case 200:
			if a.lastContact > maxStale.Seconds() {
				t.Fatalf("a stale read answered %v s after the last contact, over the bound %s", a.lastContact, maxStale)
			}
			if a.knownLeader == "false" {
				sawLeaderless = true
			}
			return false
		case 503:
			refused = a
			return true
		default:
			t.Fatalf("stale read on the lone follower: %d %s", a.code, a.body)
			return false
		}
	})
	if !sawLeaderless {
		t.Errorf("the lone follower never answered a stale read while it knew no leader")
	}
	if refused.retryAfter == "" || refused.lastContact < maxStale.Seconds() || !strings.Contains(string(refused.body), "-max-stale") {
		t.Errorf("refused stale read: Retry-After %q, last contact %v s, %s", refused.retryAfter, refused.lastContact, refused.body)
	}
}

// TestStaleReadDuringSnapshotInstall: a stale read on a follower that
// installs a snapshot while reading (its store swapped for the
// snapshot's and closed under the read) is tried again on the new store
// and answered, not refused.
func TestStaleReadDuringSnapshotInstall(t *testing.T) {
	var (
		armed atomic.Int32 // the node whose next stale read installs a snapshot
		tries atomic.Int32 // tries of stale reads on it since armed
		errs  = make(chan error, 1)
	)
	armed.Store(-1)
	c := startNodesHooked(t, 3, nil, func(i int, nd *controller.Node) {
		nd.SetStaleHook(func() {
			if armed.Load() != int32(i) {
				return
			}
			if tries.Add(1) == 1 {
				errs <- nd.InstallOwnSnapshot()
			}
		})
	})
	lead := c.leader()
	fol := c.other(lead)
	code, body := doWith(t, c.client, "POST", c.url(lead, "/jobs"), `{"name":"during-install","command":"true"}`)
	if code != 201 {
		t.Fatalf("POST /jobs: %d %s", code, body)
	}
	var j job
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	url := c.url(fol, fmt.Sprintf("/jobs/%d?stale=1", j.JobID))
	(&cluster{t: t}).waitFor("the follower's stale view of the job", func() bool {
		return staleGet(t, c.client, url, "").code == 200
	})

	armed.Store(int32(fol))
	a := staleGet(t, c.client, url, "")
	armed.Store(-1)
	if err := <-errs; err != nil {
		t.Fatalf("installing the snapshot: %v", err)
	}
	if n := tries.Load(); n != 2 {
		t.Fatalf("the read was tried %d times, want 2 (cut short by the install, then again)", n)
	}
	var got api.JobView
	if a.code != 200 || json.Unmarshal(a.body, &got) != nil || got.JobID != j.JobID || got.Name != "during-install" {
		t.Fatalf("stale read during the install: %d %s (Retry-After %q)", a.code, a.body, a.retryAfter)
	}
}
