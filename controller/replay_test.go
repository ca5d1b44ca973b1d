package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/certs"
	"jobsuite/controller"
	"jobsuite/controller/store"
	"jobsuite/transport"
)

func encodeRound(t *testing.T, cmds []store.Command) []byte {
	b, err := store.EncodeRound(cmds)
	if err != nil {
		t.Error(err)
	}
	return b
}

func decodeRound(t *testing.T, b []byte) []store.Command {
	t.Helper()
	cmds, err := store.DecodeRound(b)
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

// resultText is a Result as text, to compare.
func resultText(r store.Result) string {
	tok, _ := json.Marshal(r.JoinToken)
	return fmt.Sprintf("err=%v owner=%d n=%d token=%s", r.Err, r.Owner, r.N, tok)
}

// dump returns every key and value of the store in dir, in key order.
func dump(t *testing.T, dir string) [][2]string {
	t.Helper()
	st, err := store.Open(dir, store.Options{Logger: testLogger(t, "store")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out [][2]string
	if err := st.Dump(func(k, v []byte) error {
		out = append(out, [2]string{string(k), string(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCommandsReplayByteIdentical records every round of commands a
// real controller writes while real agents run jobs and operators use
// the API — submits with idempotency keys (repeated, and in a batch),
// dispatch, output, a retry after a failure, cancels of a queued and a
// running job, an API token made and revoked, a revocation made and
// lifted, a join token made, used by an enrollment and revoked, audit
// entries, a drain and a retention pass — carries each round through
// the round codec a replicated log uses (store.EncodeRound and
// DecodeRound), and applies the rounds to two fresh stores: both must
// equal the controller's own store key for key, byte for byte, and
// decide every
// command as the controller's store did. A write that bypassed the
// commands would show up as a difference.
func TestCommandsReplayByteIdentical(t *testing.T) {
	var (
		mu      sync.Mutex
		rounds  [][]byte
		results [][]string
		seen    = map[string]bool{}
	)
	record := func(cmds []store.Command, res []store.Result) {
		mu.Lock()
		defer mu.Unlock()
		rounds = append(rounds, encodeRound(t, cmds))
		var rs []string
		for i, c := range cmds {
			seen[fmt.Sprintf("%T", c)] = true
			rs = append(rs, resultText(res[i]))
		}
		results = append(results, rs)
	}

	c := &cluster{t: t, dir: newPKI(t), data: filepath.Join(t.TempDir(), "data"), agents: map[string]context.CancelFunc{}}
	c.cfg = controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: c.data,
		TLS: files(c.dir, "controller"), LeaseTTL: 3 * time.Second, KillGrace: 500 * time.Millisecond,
		BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		CAKey: certs.KeyFile(c.dir, "ca"), RetainJobs: 3,
	}
	c.beforeRun = func(s *controller.Server) { s.RecordRounds(record) }
	c.startController()
	c.client = c.httpClient("operator")
	c.startAgent("agent-1", 2, nil, transport.ModeQUIC)
	t.Cleanup(c.close)

	expect := func(method, path, body string, want int) []byte {
		t.Helper()
		code, b := c.do(method, path, body)
		if code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
		}
		return b
	}

	// Jobs: keyed, repeated, in a batch, with output, failing and retried.
	keyed := c.submit(`{"command":"echo one; echo two >&2","idempotency_key":"k1"}`)
	expect("POST", "/jobs", `{"command":"echo one; echo two >&2","idempotency_key":"k1"}`, http.StatusOK)
	var items []api.BatchItem
	if err := json.Unmarshal(expect("POST", "/jobs/batch",
		`[{"command":"echo b1","idempotency_key":"k1"},{"command":"echo b2","idempotency_key":"kb"},{"command":"true"}]`, http.StatusCreated), &items); err != nil {
		t.Fatal(err)
	}
	if items[0].JobID != keyed.JobID || items[0].Created {
		t.Fatalf("batch item 0: %+v, want job %d not created", items[0], keyed.JobID)
	}
	retried := c.submit(`{"command":"exit 3","retries":1,"backoff":{"base":0.05}}`)
	for _, id := range []uint64{keyed.JobID, items[1].JobID, items[2].JobID} {
		c.waitState(id, "completed")
	}
	if j := c.waitState(retried.JobID, "failed"); len(j.Attempts) != 2 {
		t.Fatalf("the failing job made %d attempts, want 2", len(j.Attempts))
	}

	// Cancels: queued (no agent matches it) and running.
	queued := c.submit(`{"command":"true","labels":{"pool":"none"}}`)
	expect("DELETE", fmt.Sprintf("/jobs/%d", queued.JobID), "", http.StatusOK)
	running := c.submit(`{"command":"sleep 30"}`)
	c.waitState(running.JobID, "running")
	expect("DELETE", fmt.Sprintf("/jobs/%d", running.JobID), "", http.StatusAccepted)
	c.waitState(running.JobID, "cancelled")

	// Security records.
	tok := c.createToken(`{"role":"viewer","name":"grafana"}`)
	expect("DELETE", "/tokens/"+tok.ID, "", http.StatusOK)
	expect("POST", "/certs/revoke", `{"role":"operator","name":"mallory","reason":"left"}`, http.StatusOK)
	expect("DELETE", "/revocations/name:operator:mallory", "", http.StatusOK)
	jt := c.createJoinToken(`{"uses":2,"ttl":600}`)
	if _, _, err := c.enroll(jt.Token, jt.CAPin, ""); err != nil {
		t.Fatal(err)
	}
	expect("DELETE", "/agent-tokens/"+jt.ID, "", http.StatusOK)
	expect("POST", "/agents/agent-1/drain", "", http.StatusOK)

	// Retention: keep the newest 3 finished jobs.
	c.srv.PruneNow(t.Context())
	c.stopController()

	mu.Lock()
	for _, want := range []string{"*store.Transition", "*store.Output", "*store.PutToken", "*store.DeleteToken",
		"*store.PutRevocation", "*store.DeleteRevocation", "*store.CreateJoinToken", "*store.UseJoinToken",
		"*store.DeleteJoinToken", "*store.PruneJoinTokens", "*store.AppendAudit", "*store.PruneAudit", "*store.PruneJobs"} {
		if !seen[want] {
			t.Errorf("the run wrote no %s", want)
		}
	}
	recorded, liveResults := slices.Clone(rounds), slices.Clone(results)
	mu.Unlock()

	live := dump(t, c.data)
	for r := range 2 {
		dir := t.TempDir()
		st, err := store.Open(dir, store.Options{Logger: testLogger(t, "replay")})
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range recorded {
			res, err := st.Apply(decodeRound(t, b)...)
			if err != nil {
				t.Fatalf("replay %d, round %d: %v", r, i, err)
			}
			for k, rr := range res {
				if got := resultText(rr); got != liveResults[i][k] {
					t.Errorf("replay %d, round %d, command %d: %s; the controller's store decided %s", r, i, k, got, liveResults[i][k])
				}
			}
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		got := dump(t, dir)
		if len(got) != len(live) {
			t.Errorf("replay %d: %d keys, the controller's store %d", r, len(got), len(live))
		}
		for i := range min(len(got), len(live)) {
			if got[i] != live[i] {
				t.Fatalf("replay %d: key %d is %x = %q; the controller's store has %x = %q",
					r, i, got[i][0], got[i][1], live[i][0], live[i][1])
			}
		}
	}
	if !t.Failed() {
		t.Logf("%d rounds, %d keys, identical", len(recorded), len(live))
	}

	c.beforeRun = nil
	c.startController() // for the cleanup, which stops it
}
