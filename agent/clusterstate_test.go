package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/protocol"
	"jobsuite/transport"
)

func TestClusterStateFile(t *testing.T) {
	for name, tt := range map[string]struct {
		file string // "": no file
		want clusterState
		err  string
	}{
		"no file: a fresh agent": {},
		"members and term":       {file: `{"members":["c:3","d:4"],"term":9}`, want: clusterState{Members: []string{"c:3", "d:4"}, Term: 9}},
		"empty object":           {file: `{}`},
		"torn or garbled":        {file: `{"members":["c:3"`, err: clusterFile},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				if err := os.WriteFile(filepath.Join(dir, clusterFile), []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := loadClusterState(dir)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("load: %+v, %v; want an error naming %s", got, err, tt.err)
				}
				return
			}
			if err != nil || got.Term != tt.want.Term || !slices.Equal(got.Members, tt.want.Members) {
				t.Fatalf("load: %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}

	// Saving replaces the file whole and leaves nothing else behind.
	dir := t.TempDir()
	for _, st := range []clusterState{{Members: []string{"a:1"}, Term: 3}, {Members: []string{"b:2", "c:3"}, Term: 4}, {}} {
		if err := saveClusterState(dir, st); err != nil {
			t.Fatal(err)
		}
		got, err := loadClusterState(dir)
		if err != nil || got.Term != st.Term || !slices.Equal(got.Members, st.Members) {
			t.Fatalf("saved %+v, read %+v, %v", st, got, err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 1 || entries[0].Name() != clusterFile {
			t.Fatalf("state directory after a save: %v, %v", entries, err)
		}
	}
}

// TestAgentKeepsClusterAcrossRestarts: an agent welcomed by a leader
// that lists a member it was not configured with, and a term, is
// stopped; a new agent on the same state directory dials that member
// too and fences from that term on, before any controller said a word
// to it. A garbled file is ignored: a fresh start.
func TestAgentKeepsClusterAcrossRestarts(t *testing.T) {
	pki := testPKI(t)
	state := t.TempDir()
	newAgent := func(addrs ...string) *Agent {
		t.Helper()
		a, err := New(Config{
			Controller: strings.Join(addrs, ","),
			TLS:        certs.Files{CA: certs.CAFile(pki), Cert: certs.CertFile(pki, "agent-1"), Key: certs.KeyFile(pki, "agent-1")},
			Slots:      1, Transport: transport.ModeTCP, StateDir: state, WorkDir: state,
			Logger: hclog.NewNullLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	events := make(chan ctlEvent, 16)
	const other = "127.0.0.1:1" // the member the agent was not configured with
	var bAddr string
	addrs := make(chan struct{})
	b := newFakeCtl(t, pki, "b", events, func(s *fakeSession) {
		<-addrs
		s.send(&protocol.Welcome{Version: protocol.Version, HeartbeatInterval: time.Hour, LeaseTTL: time.Hour, Term: 7, Members: []string{bAddr, other}})
		s.untilClosed()
	})
	bAddr = b.ln.Addr()
	close(addrs)

	first := newAgent(bAddr)
	if got := first.ctrls.list(); !slices.Equal(got, []string{bAddr}) || first.term.Load() != 0 {
		t.Fatalf("a fresh agent: controllers %v, term %d", got, first.term.Load())
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	nextEvent(t, events)
	waitUntil(t, "the welcome's members and term kept in the state directory", func() bool {
		st, err := loadClusterState(state)
		return err == nil && st.Term == 7 && slices.Equal(st.Members, []string{other})
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	again := newAgent(bAddr)
	if got, want := again.ctrls.list(), []string{bAddr, other}; !slices.Equal(got, want) {
		t.Errorf("restarted agent dials %v, want %v", got, want)
	}
	if again.term.Load() != 7 {
		t.Errorf("restarted agent's term %d, want 7", again.term.Load())
	}
	if err := again.fenced(hclog.NewNullLogger(), 6, "Dispatch", 1, 1); err == nil {
		t.Errorf("restarted agent took a Dispatch of term 6 after it had seen term 7")
	}

	if err := os.WriteFile(filepath.Join(state, clusterFile), []byte("{garbled"), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := newAgent(bAddr)
	if got := fresh.ctrls.list(); !slices.Equal(got, []string{bAddr}) || fresh.term.Load() != 0 {
		t.Errorf("with a garbled file: controllers %v, term %d; want a fresh start", got, fresh.term.Load())
	}
}
