package controller

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// nopFSM is a raft FSM that keeps nothing.
type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("no snapshots") }
func (nopFSM) Restore(io.ReadCloser) error         { return nil }

// TestSendGateClosesForADeposedLeader: a leader cut off from its peers
// while another is elected gets no from its send gate, although nothing
// told it yet that it lost (it cannot have: it hears nobody).
func TestSendGateClosesForADeposedLeader(t *testing.T) {
	var (
		rafts  []*raft.Raft
		trans  []*raft.InmemTransport
		config raft.Configuration
	)
	for i := range 3 {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprint("n", i)))
		trans = append(trans, tr)
		config.Servers = append(config.Servers, raft.Server{ID: raft.ServerID(addr), Address: addr})
	}
	for i, tr := range trans {
		for j, other := range trans {
			if i != j {
				tr.Connect(other.LocalAddr(), other)
			}
		}
	}
	for i, tr := range trans {
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(tr.LocalAddr())
		conf.Logger = hclog.NewNullLogger()
		conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
		store := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, store, store, snaps, tr, config); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(conf, nopFSM{}, store, store, snaps, tr)
		if err != nil {
			t.Fatal(err)
		}
		rafts = append(rafts, r)
		t.Cleanup(func() { _ = rafts[i].Shutdown().Error() })
	}
	leader := func(skip int) int {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			for i, r := range rafts {
				if i != skip && r.State() == raft.Leader {
					return i
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no leader")
		return -1
	}
	old := leader(-1)
	g := &sendGate{r: rafts[old], t: rafts[old].CurrentTerm(), window: 500 * time.Millisecond}
	if !g.ok() {
		t.Fatal("the gate is closed for a leader its peers follow")
	}
	// Cut the leader off; the others elect one of themselves.
	trans[old].DisconnectAll()
	for i, tr := range trans {
		if i != old {
			tr.Disconnect(trans[old].LocalAddr())
		}
	}
	leader(old)
	if g.ok() {
		t.Fatal("the gate let a deposed leader send")
	}
}
