package controller_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"jobsuite/controller"
)

// TestFollowerLagBound: one follower applies slowly (100 ms an entry,
// 10 entries a second, less than the leader commits even on a loaded
// machine under the race detector), so without
// the bound it falls further behind with every round. With a bound of
// 20 entries, the leader holds its rounds instead: the slow follower
// is never more than the bound (plus one round) behind, the cluster
// keeps committing, /metrics shows the lag and the holds, and when the
// leader stops, the survivors are within the bound of each other and
// the new leader commits.
func TestFollowerLagBound(t *testing.T) {
	const (
		bound   = 20
		slack   = 10  // one round's entries, and raft's own (no-op, configuration)
		advance = 140 // entries committed under load: 7 bounds
	)
	var slow atomic.Int32
	slow.Store(-1)
	c := startNodesHooked(t, 3, func(cfg *controller.Config) {
		cfg.MaxFollowerLag = bound
	}, func(i int, nd *controller.Node) {
		nd.SetApplyHook(func(entries int) {
			if slow.Load() == int32(i) {
				time.Sleep(time.Duration(entries) * 100 * time.Millisecond) // a slow disk
			}
		})
	})
	lead := c.leader()
	s := c.other(lead)
	slow.Store(int32(s))
	_, start := c.nodes[lead].RaftIndexes()

	// The slowest follower's lag, sampled: its applied index first, then
	// the leader's last index, so a sample never understates the lag.
	var maxLag atomic.Uint64
	sample := func() uint64 {
		applied, _ := c.nodes[s].RaftIndexes()
		_, last := c.nodes[lead].RaftIndexes()
		var lag uint64
		if last > applied {
			lag = last - applied
		}
		for {
			m := maxLag.Load()
			if lag <= m || maxLag.CompareAndSwap(m, lag) {
				return lag
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	// 8 clients submit through the leader until it has committed
	// `advance` more entries.
	var submitted atomic.Int64
	errs := make(chan error, 8)
	for k := range 8 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				body := fmt.Sprintf(`{"command":"true","idempotency_key":"lag-%d-%d"}`, k, n)
				req, _ := http.NewRequestWithContext(ctx, "POST", c.url(lead, "/jobs"), strings.NewReader(body))
				resp, err := c.client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 201 {
					errs <- fmt.Errorf("POST /jobs: %d", resp.StatusCode)
					return
				}
				submitted.Add(1)
			}
		})
	}
	began := time.Now()
	deadline := began.Add(2 * time.Minute)
	for {
		applied, _ := c.nodes[lead].RaftIndexes()
		if applied >= start+advance {
			break
		}
		select {
		case err := <-errs:
			cancel()
			wg.Wait()
			t.Fatal(err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			wg.Wait()
			t.Fatalf("the cluster committed %d entries in 2 minutes, want %d (the bound must slow it down, not stop it)", applied-start, advance)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := maxLag.Load(); m > bound+slack {
		t.Fatalf("the slow follower fell %d entries behind; the bound is %d (+%d)", m, bound, slack)
	}
	t.Logf("%d jobs submitted, %d entries committed in %s; the slow follower was at most %d entries behind", submitted.Load(), advance, time.Since(began).Round(time.Millisecond), maxLag.Load())

	// The leader's /metrics: each follower's lag, and the holds.
	m := scrape(t, c.nodes[lead].MetricsAddr())
	holds := m["jobsuite_cluster_admission_holds_total"]
	if holds == 0 || m["jobsuite_cluster_admission_held_seconds_total"] == 0 {
		t.Fatalf("the bound never held (holds %v): the follower was not slowed enough to test it", holds)
	}
	slowName := fmt.Sprintf(`jobsuite_cluster_follower_lag_entries{peer="ctl-%d"}`, s+1)
	if _, ok := m[slowName]; !ok {
		t.Fatalf("no %s in the leader's metrics", slowName)
	}
	if v := m[fmt.Sprintf(`jobsuite_cluster_follower_live{peer="ctl-%d"}`, s+1)]; v != 1 {
		t.Fatalf("the slow follower counted as not live (%v)", v)
	}
	if v, ok := m[fmt.Sprintf(`jobsuite_cluster_peer_last_contact_seconds{peer="ctl-%d"}`, s+1)]; !ok || v < 0 || v > 60 {
		t.Fatalf("the slow follower's last contact on the leader: %v (present %v)", v, ok)
	}

	// Failover: the leader stops with the slow follower within the bound,
	// so the new leader has no long backlog to ship or apply first.
	lag := sample()
	if lag > bound+slack {
		t.Fatalf("at the failover the slow follower is %d entries behind", lag)
	}
	c.stop(lead)
	nl := c.leader()
	code, body := doWith(t, c.client, "POST", c.url(nl, "/jobs"), `{"command":"true","idempotency_key":"after-failover"}`)
	if code != 201 {
		t.Fatalf("POST /jobs on the new leader: %d %s", code, body)
	}
	// Both survivors hold that job: the slow one got there too.
	applied, _ := c.nodes[nl].RaftIndexes()
	o := c.other(nl)
	(&cluster{t: t}).waitFor("the other survivor to apply the new leader's entries", func() bool {
		a, _ := c.nodes[o].RaftIndexes()
		return a >= applied
	})
}

// scrape reads the Prometheus text at addr's /metrics into a map of
// series (name with labels) to value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}
