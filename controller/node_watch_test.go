package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"jobsuite/api"
	"jobsuite/protocol"
)

// watchVia opens a watch session as agent-3 with the controller at addr
// for the leader of term at leader, and returns a function that reads
// the controller's answer.
func watchVia(t *testing.T, c *nodeCluster, addr string, term uint64, leader string) func() (protocol.Message, error) {
	t.Helper()
	sess := dialAgent3(t, c, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := sess.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.NewWriter(st).Write(&protocol.WatchLeader{Version: protocol.Version, Name: "agent-3", Term: term, Leader: leader}); err != nil {
		t.Fatal(err)
	}
	r := protocol.NewReader(st, 0)
	return func() (protocol.Message, error) {
		_ = st.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
		return r.Read()
	}
}

// leaderOf is the leader's member record as node i sees it.
func leaderOf(t *testing.T, c *nodeCluster, i int) api.Member {
	t.Helper()
	for _, m := range nodeMembers(t, c, i) {
		if m.Role == "leader" {
			return m
		}
	}
	t.Fatalf("node %d knows no leader", i)
	return api.Member{}
}

// TestLeaderWatch (PROTOCOL.md §2.4, watch sessions): a follower keeps
// a watch session open without a word while the watched leader leads,
// and answers with a Redirect naming the new leader as soon as
// leadership moves; a watch of an earlier term is answered at once, by
// a follower and by the new leader itself; a watch that reached the
// very leader it watches is refused, so the agent watches another.
func TestLeaderWatch(t *testing.T) {
	c := startNodes(t, 3)
	lead := c.leader()
	fol := c.other(lead)
	old := leaderOf(t, c, lead)
	leaderAgent := c.cfgs[lead].AgentAddr

	// The leader itself, watched under its own term: refused.
	m, err := watchVia(t, c, leaderAgent, old.Term, "elsewhere:1")()
	if e, ok := m.(*protocol.Error); err != nil || !ok || e.Code != protocol.CodeProtocol {
		t.Fatalf("a watch of the leader's own term at the leader: %#v, %v; want Error{CodeProtocol}", m, err)
	}

	// A follower: no answer until the leadership moves.
	answer := watchVia(t, c, c.cfgs[fol].AgentAddr, old.Term, leaderAgent)
	got := make(chan protocol.Message, 1)
	go func() {
		m, err := answer()
		if err != nil {
			t.Errorf("the watch ended without an answer: %v", err)
		}
		got <- m
	}()
	(&cluster{t: t}).waitFor("the follower to count the watch", func() bool {
		return scrape(t, c.nodes[fol].MetricsAddr())["jobsuite_cluster_watch_sessions"] == 1
	})
	code, b := doWith(t, c.client, "POST", c.url(lead, "/operator/transfer-leadership"), "")
	var moved struct{ From, To string }
	if err := json.Unmarshal(b, &moved); code != 200 || err != nil || moved.To == moved.From {
		t.Fatalf("transfer-leadership: %d %s", code, b)
	}
	now := c.leader()
	rd, ok := (<-got).(*protocol.Redirect)
	if !ok || rd.Leader != c.cfgs[now].AgentAddr || len(rd.Members) != 3 {
		t.Fatalf("the watch's answer: %#v; want a Redirect naming the new leader %s (node %d) and 3 members", rd, c.cfgs[now].AgentAddr, now)
	}

	// Watches of the old term, opened after the move: answered at once,
	// by any follower and by the new leader.
	for i := range c.nodes {
		m, err := watchVia(t, c, c.cfgs[i].AgentAddr, old.Term, leaderAgent)()
		if rd, ok := m.(*protocol.Redirect); err != nil || !ok || rd.Leader != c.cfgs[now].AgentAddr {
			t.Errorf("node %d, watched for term %d after the move: %#v, %v; want a Redirect to %s", i, old.Term, m, err, c.cfgs[now].AgentAddr)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("term %d → %s leads term %d", old.Term, fmt.Sprint(moved.To), leaderOf(t, c, now).Term)
}
