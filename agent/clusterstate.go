package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// What the agent learns of a cluster outlives its own restarts: the
// members the leader listed (Welcome.Members) or a controller pointed
// it to (Redirect), and the highest leadership term it has seen, are
// kept in clusterFile in the state directory. A restarted agent dials
// the learnt members after its configured addresses at once (a cluster
// that moved to new hosts since the agent was configured is still
// found), and keeps fencing a deposed leader's messages from its first
// session on. The file is written when either changes, atomically:
// a temporary file, synced, renamed over the old one, the directory
// synced. A file that cannot be read or parsed is logged and ignored:
// the agent then starts as a fresh one would (its configured addresses,
// no term), which is always safe. When the agent forgets the term
// (a whole round without a welcome), the file forgets it too.
const clusterFile = "cluster.json"

// clusterState is clusterFile's content.
type clusterState struct {
	Members []string `json:"members,omitempty"` // learnt addresses, not the configured ones
	Term    uint64   `json:"term,omitempty"`
}

// loadClusterState reads dir's clusterFile; a missing file is the zero
// state.
func loadClusterState(dir string) (clusterState, error) {
	var st clusterState
	b, err := os.ReadFile(filepath.Join(dir, clusterFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return clusterState{}, fmt.Errorf("%s: %v", clusterFile, err)
	}
	return st, nil
}

// saveClusterState replaces dir's clusterFile with st, atomically.
func saveClusterState(dir string, st clusterState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, clusterFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// resumeCluster takes up what an earlier run of the agent learnt.
func (a *Agent) resumeCluster() {
	st, err := loadClusterState(a.cfg.StateDir)
	if err != nil {
		a.log.Warn("ignoring the cluster state kept by an earlier run; starting from the configured controllers", "error", err)
		return
	}
	if len(st.Members) > 0 {
		a.ctrls.learn(st.Members, true)
	}
	a.term.Store(st.Term)
	a.savedCluster = clusterState{Members: a.ctrls.learnedList(), Term: st.Term}
	if len(st.Members) > 0 || st.Term > 0 {
		a.log.Info("resuming what an earlier run learnt of the cluster", "members", st.Members, "term", st.Term)
	}
}

// saveCluster writes the learnt members and the term seen if they
// changed since the last write. A failed write is logged: the agent
// works on (it only forgets more on a restart).
func (a *Agent) saveCluster() {
	a.clusterMu.Lock()
	defer a.clusterMu.Unlock()
	st := clusterState{Members: a.ctrls.learnedList(), Term: a.term.Load()}
	if st.Term == a.savedCluster.Term && slices.Equal(st.Members, a.savedCluster.Members) {
		return
	}
	if err := saveClusterState(a.cfg.StateDir, st); err != nil {
		a.log.Warn("could not keep the cluster's members and term in the state directory", "error", err)
		return
	}
	a.savedCluster = st
}
