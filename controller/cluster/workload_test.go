package cluster

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// workload makes rounds of commands as a controller's committer would:
// each round submits new jobs (one of them repeating an earlier
// idempotency key of the round, which the store refuses with ErrExists
// and the key's owner), starts the
// previous round's jobs, writes their output and finishes the ones
// before; every few rounds it adds API tokens, a join token and its use,
// audit entries and a prune. Everything that varies is fixed by the
// round number, so two workloads make the same rounds.
type workload struct {
	round  int
	nextID uint64
	jobs   map[uint64]*store.Job
	// stages: jobs created in the last round, started in the one before.
	created, started []uint64
	// dupOwners lists, for each submission made to repeat a key, the
	// job that holds the key.
	dupOwners []uint64
}

func newWorkload() *workload { return &workload{jobs: map[uint64]*store.Job{}} }

var epoch = time.Date(2026, 12, 5, 5, 0, 0, 0, time.UTC)

func (w *workload) next() []store.Command {
	w.round++
	r := w.round
	at := epoch.Add(time.Duration(r) * time.Second)
	var cmds []store.Command
	// Finish what started a round ago, after its output.
	for _, id := range w.started {
		out := []byte(fmt.Sprintf("job %d output line\n", id))
		cmds = append(cmds, &store.Output{Job: id, Chunk: store.Chunk{Offset: 0, Stream: 1, Data: out, Time: at}})
		j := w.jobs[id].Clone()
		j.State = store.Completed
		j.FinishedAt = at
		zero := 0
		j.Attempts[0].Outcome, j.Attempts[0].ExitCode, j.Attempts[0].OutputBytes = store.OutcomeCompleted, &zero, uint64(len(out))
		cmds = append(cmds, store.NewTransition(j, store.Event{Time: at, Type: "finished"}))
		w.jobs[id] = j
	}
	// Start what was created a round ago.
	w.started = w.started[:0]
	for _, id := range w.created {
		j := w.jobs[id].Clone()
		j.State = store.Running
		j.Attempts = append(j.Attempts, store.Attempt{Number: 1, Agent: "agent-1", DispatchedAt: at, StartedAt: at, QueuedAt: j.QueuedAt})
		cmds = append(cmds, store.NewTransition(j, store.Event{Time: at, Type: "started", Attempt: 1, Agent: "agent-1"}))
		w.jobs[id] = j
		w.started = append(w.started, id)
	}
	// Submit new ones.
	w.created = w.created[:0]
	for k := range 4 {
		w.nextID++
		id := w.nextID
		j := &store.Job{ID: id, Name: fmt.Sprintf("job-%d", id), Command: "echo hi", Priority: k * 10,
			IdempotencyKey: fmt.Sprintf("key-%d", id), State: store.Queued, CreatedAt: at, QueuedAt: at,
			Labels: map[string]string{"round": fmt.Sprint(r)}}
		tr := store.NewTransition(j, store.Event{Time: at, Type: "submitted"})
		tr.Audit = &store.AuditEntry{ID: uint64(at.UnixNano()) + uint64(k), Time: at, Who: "alice", Action: "submit", Target: fmt.Sprintf("job %d", id)}
		cmds = append(cmds, tr)
		w.jobs[id] = j
		w.created = append(w.created, id)
	}
	// Repeat the key of the round's first job: refused, ErrExists.
	w.nextID++
	owner := w.created[0]
	dup := &store.Job{ID: w.nextID, Command: "dup", IdempotencyKey: w.jobs[owner].IdempotencyKey, State: store.Queued, CreatedAt: at, QueuedAt: at}
	cmds = append(cmds, store.NewTransition(dup, store.Event{Time: at, Type: "submitted"}))
	w.dupOwners = append(w.dupOwners, owner)
	switch r % 5 {
	case 0:
		h := sha256.Sum256([]byte(fmt.Sprint("token", r)))
		cmds = append(cmds, &store.PutToken{Token: store.Token{ID: fmt.Sprintf("tok%d", r), Hash: h[:], Role: "viewer", Name: "n", CreatedAt: at, ExpiresAt: at.Add(time.Hour)}})
	case 1:
		h := sha256.Sum256([]byte(fmt.Sprint("join", r)))
		cmds = append(cmds,
			&store.CreateJoinToken{Token: store.JoinToken{Hash: h[:], Uses: 1, UsesLeft: 1, CreatedAt: at, ExpiresAt: at.Add(time.Hour)}},
			&store.UseJoinToken{Hash: h[:], Now: at, Agent: fmt.Sprintf("agent-%d", r)},
			&store.UseJoinToken{Hash: h[:], Now: at, Agent: "too-late"}) // used up
	case 2:
		cmds = append(cmds, &store.AppendAudit{Entry: store.AuditEntry{ID: uint64(at.UnixNano()) + 100, Time: at, Who: "bob", Action: "drain"}})
	case 3:
		// Prune the jobs finished two rounds ago and more (they stay in
		// w.jobs; the store decides).
		var ids []uint64
		for id, j := range w.jobs {
			if j.State.Terminal() && j.FinishedAt.Before(at.Add(-2*time.Second)) {
				ids = append(ids, id)
				delete(w.jobs, id)
			}
		}
		slices.Sort(ids)
		cmds = append(cmds, &store.PruneJobs{IDs: ids})
	}
	return cmds
}

// encode encodes a round or fails the test.
func encode(t testing.TB, cmds []store.Command) []byte {
	t.Helper()
	b, err := store.EncodeRound(cmds)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dump returns every key and value of st, in order, as text.
func dump(t testing.TB, st *store.Store) string {
	t.Helper()
	var b bytes.Buffer
	if err := st.Dump(func(k, v []byte) error {
		fmt.Fprintf(&b, "%q=%q\n", k, v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// firstDiff describes where two dumps part.
func firstDiff(a, b string) string {
	al, bl := bytes.Split([]byte(a), []byte("\n")), bytes.Split([]byte(b), []byte("\n"))
	for i := range min(len(al), len(bl)) {
		if !bytes.Equal(al[i], bl[i]) {
			return fmt.Sprintf("line %d: %s\n  vs: %s", i, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d lines vs %d", len(al), len(bl))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t testing.TB, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: testWriter{t}})
}
