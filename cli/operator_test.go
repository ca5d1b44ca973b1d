package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/certs"
	"jobsuite/controller"
)

// snapController runs a controller on dataDir with the PKI p until stop
// is called (or the test ends), and points the JOBSUITE_* variables at
// it as the operator alice.
func snapController(t *testing.T, p *testPKI, dataDir string) (stop func()) {
	t.Helper()
	srv, err := controller.New(controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: dataDir,
		TLS:    certs.Files{CA: p.ca(), Cert: p.ctlCert, Key: p.ctlKey},
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testLog{t}}), NoSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}
	t.Cleanup(stop)
	clearClientEnv(t)
	t.Setenv(envToken, "")
	t.Setenv(envAddr, srv.HTTPAddr())
	t.Setenv(envCACert, p.ca())
	t.Setenv(envClientCert, p.opCert)
	t.Setenv(envClientKey, p.opKey)
	return stop
}

// listedJobs is the IDs and states 'jobsuite list -json' shows.
func listedJobs(t *testing.T) map[uint64]string {
	t.Helper()
	code, out, errOut := runCLI(t, "list", "-json")
	if code != 0 {
		t.Fatalf("list: %d %s", code, errOut)
	}
	var jobs []struct {
		JobID  uint64 `json:"job_id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &jobs); err != nil {
		t.Fatalf("list -json: %v: %s", err, out)
	}
	got := map[uint64]string{}
	for _, j := range jobs {
		got[j.JobID] = j.Status
	}
	return got
}

func submitJobs(t *testing.T, n int) {
	t.Helper()
	for range n {
		if code, _, errOut := runCLI(t, "submit", "true"); code != 0 {
			t.Fatalf("submit: %d %s", code, errOut)
		}
	}
}

// Save from a running controller, submit more, stop, restore, start:
// exactly the saved jobs are there, queued again. A restore while the
// controller runs is refused and changes nothing.
func TestSnapshotSaveAndRestore(t *testing.T) {
	p := newTestPKI(t)
	parent := t.TempDir()
	data := filepath.Join(parent, "data")
	stop := snapController(t, p, data)
	submitJobs(t, 3)
	saved := listedJobs(t)
	file := filepath.Join(t.TempDir(), "backup.snap")
	// What a killed save left: replaced, and the mode is 0600 all the same.
	if err := os.WriteFile(file+".tmp", []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "operator", "snapshot", "save", file)
	if code != 0 || !strings.Contains(out, "(checked)") {
		t.Fatalf("save: %d %q %q", code, out, errOut)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the saved file: %v, %v; want mode 0600", fi, err)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp after a save: %v", file, err)
	}
	code, out, errOut = runCLI(t, "operator", "snapshot", "inspect", file)
	if code != 0 || !strings.Contains(out, "Jobs:        3 (queued 3)") || !strings.Contains(out, "Raft index:  none") {
		t.Fatalf("inspect: %d %q %q", code, out, errOut)
	}
	submitJobs(t, 2)
	if got := listedJobs(t); len(got) != 5 {
		t.Fatalf("before the restore: %v, want 5 jobs", got)
	}

	code, _, errOut = runCLI(t, "operator", "snapshot", "restore", "-data-dir", data, file)
	if code != ExitError || !strings.Contains(errOut, "stop it first") {
		t.Fatalf("restore while the controller runs: %d %q, want refused", code, errOut)
	}
	if got := listedJobs(t); len(got) != 5 {
		t.Fatalf("after a refused restore: %v, want the 5 jobs still", got)
	}

	stop()
	code, out, errOut = runCLI(t, "operator", "snapshot", "restore", "-data-dir", data, file)
	if code != 0 || !strings.Contains(out, "jobs: 3 (queued 3)") || !strings.Contains(out, "kept as "+data+".before-restore-") {
		t.Fatalf("restore: %d %q %q", code, out, errOut)
	}
	snapController(t, p, data)
	if got := listedJobs(t); !mapsEqual(got, saved) {
		t.Fatalf("after the restore the controller has %v, want the saved %v", got, saved)
	}
	for id, state := range saved {
		if state != "queued" {
			t.Errorf("job %d is %s, want queued again", id, state)
		}
	}
	// New jobs take the IDs after the snapshot's.
	submitJobs(t, 1)
	if got := listedJobs(t); len(got) != 4 {
		t.Errorf("after one more submit: %v", got)
	}
}

func mapsEqual(a, b map[uint64]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// validSnapshot saves a snapshot of a controller with two jobs.
func validSnapshot(t *testing.T) []byte {
	t.Helper()
	p := newTestPKI(t)
	stop := snapController(t, p, filepath.Join(t.TempDir(), "data"))
	defer stop()
	submitJobs(t, 2)
	file := filepath.Join(t.TempDir(), "good.snap")
	if code, _, errOut := runCLI(t, "operator", "snapshot", "save", file); code != 0 {
		t.Fatalf("save: %d %s", code, errOut)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A truncated or corrupt file: inspect and restore refuse it, and the
// data directory is untouched; a controller that sends one: save leaves
// no file (and an older one as it was).
func TestSnapshotBadFiles(t *testing.T) {
	good := validSnapshot(t)
	corrupt := slices.Clone(good)
	corrupt[len(corrupt)/2] ^= 0x40
	cases := map[string][]byte{
		"truncated":      good[:len(good)*2/3],
		"truncated tail": good[:len(good)-1],
		"corrupt":        corrupt,
		"empty":          {},
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "bad.snap")
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if code, out, errOut := runCLI(t, "operator", "snapshot", "inspect", file); code != ExitError || !strings.Contains(errOut, "not a usable snapshot") {
				t.Errorf("inspect: %d %q %q, want refused", code, out, errOut)
			}
			dataDir := filepath.Join(dir, "data")
			if err := os.MkdirAll(filepath.Join(dataDir, "node"), 0o700); err != nil {
				t.Fatal(err)
			}
			before := dirNames(t, dir)
			if code, out, errOut := runCLI(t, "operator", "snapshot", "restore", "-data-dir", dataDir, file); code != ExitError || !strings.Contains(errOut, "nothing was changed") {
				t.Errorf("restore: %d %q %q, want refused", code, out, errOut)
			}
			if after := dirNames(t, dir); !slices.Equal(after, before) {
				t.Errorf("after a refused restore: %v, want %v", after, before)
			}

			// A controller that sends these bytes with a 200.
			p := newTestPKI(t)
			pool, err := certs.LoadPool(p.ca())
			if err != nil {
				t.Fatal(err)
			}
			cert, err := certs.LoadKeyPair(p.ctlCert, p.ctlKey)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Write(data)
			}))
			srv.TLS = certs.ServerTLS(pool, cert, "http/1.1")
			srv.StartTLS()
			defer srv.Close()
			clearClientEnv(t)
			t.Setenv(envToken, "")
			t.Setenv(envAddr, srv.Listener.Addr().String())
			t.Setenv(envCACert, p.ca())
			t.Setenv(envClientCert, p.opCert)
			t.Setenv(envClientKey, p.opKey)
			saved := filepath.Join(dir, "saved.snap")
			if err := os.WriteFile(saved, good, 0o600); err != nil {
				t.Fatal(err)
			}
			if code, out, errOut := runCLI(t, "operator", "snapshot", "save", saved); code != ExitError || !strings.Contains(errOut, "unchanged") {
				t.Errorf("save: %d %q %q, want refused", code, out, errOut)
			}
			if got, err := os.ReadFile(saved); err != nil || !bytes.Equal(got, good) {
				t.Errorf("the older file after a bad download: %d bytes, %v; want it as it was", len(got), err)
			}
			if _, err := os.Stat(saved + ".tmp"); !os.IsNotExist(err) {
				t.Errorf("%s.tmp left: %v", saved, err)
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Every operator command explains itself with -h.
func TestOperatorHelp(t *testing.T) {
	for _, name := range []string{"operator", "operator snapshot", "operator snapshot save", "operator snapshot inspect", "operator snapshot restore"} {
		code, out, errOut := runCLI(t, append(strings.Fields(name), "-h")...)
		if code != 0 || !strings.Contains(out, "Usage: jobsuite "+name) {
			t.Errorf("%s -h: %d %q %q", name, code, out, errOut)
		}
	}
}

// snapNode runs a one-node cluster (-bootstrap-expect 1) on dataDir with
// the PKI p until the test ends, and points the JOBSUITE_* variables at
// it as the operator alice.
func snapNode(t *testing.T, p *testPKI, dataDir string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clusterAddr := ln.Addr().String()
	ln.Close()
	nd, err := controller.NewNode(controller.Config{
		HTTPAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", DataDir: dataDir,
		TLS:         certs.Files{CA: p.ca(), Cert: p.ctlCert, Key: p.ctlKey},
		ClusterAddr: clusterAddr, BootstrapExpect: 1,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testLog{t}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	for deadline := time.Now().Add(waitLimit); !nd.Leading(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the one-node cluster did not elect itself")
		}
	}
	t.Setenv(envAddr, nd.HTTPAddr())
}

// TestSnapshotIntoACluster (issue 14): a single controller's jobs move
// into a cluster — saved from the single controller, restored into the
// running cluster with -force — and the cluster goes on from them. The
// online restore needs -force; a single controller refuses it naming
// its offline restore; -data-dir on a cluster node's data directory is
// refused naming the online one.
func TestSnapshotIntoACluster(t *testing.T) {
	p := newTestPKI(t)
	stop := snapController(t, p, filepath.Join(t.TempDir(), "single"))
	submitJobs(t, 3)
	saved := listedJobs(t)
	file := filepath.Join(t.TempDir(), "backup.snap")
	if code, out, errOut := runCLI(t, "operator", "snapshot", "save", file); code != 0 {
		t.Fatalf("save: %d %q %q", code, out, errOut)
	}
	code, _, errOut := runCLI(t, "operator", "snapshot", "restore", "-force", file)
	if code != ExitError || !strings.Contains(errOut, "-data-dir DIR FILE") {
		t.Fatalf("online restore into a single controller: %d %q; want refused naming the offline restore", code, errOut)
	}
	stop()

	node := filepath.Join(t.TempDir(), "node")
	snapNode(t, p, node)
	submitJobs(t, 1) // the cluster's own, gone after the restore
	if code, _, errOut := runCLI(t, "operator", "snapshot", "restore", file); code != ExitUsage || !strings.Contains(errOut, "-force") {
		t.Fatalf("restore without -force or -data-dir: %d %q; want a usage error asking for -force", code, errOut)
	}
	if code, _, errOut := runCLI(t, "operator", "snapshot", "restore", "-data-dir", node, file); code != ExitError || !strings.Contains(errOut, "cluster node's data directory") {
		t.Fatalf("offline restore into a cluster node's data directory: %d %q; want refused", code, errOut)
	}
	code, out, errOut := runCLI(t, "operator", "snapshot", "restore", "-force", file)
	if code != 0 || !strings.Contains(out, "Restored into the cluster (leader ctl) at raft index") || !strings.Contains(out, "jobs: 3 (queued 3)") {
		t.Fatalf("restore into the cluster: %d %q %q", code, out, errOut)
	}
	if got := listedJobs(t); !mapsEqual(got, saved) {
		t.Fatalf("after the restore the cluster has %v, want the single controller's %v", got, saved)
	}
	submitJobs(t, 1)
	if got := listedJobs(t); len(got) != 4 || got[4] != "queued" {
		t.Errorf("after one more submit: %v; want job 4 queued beside the 3", got)
	}
}

// TestRestoreOutcomeWords: the online restore says "nothing was
// restored" only when the cluster refused it (4xx). A 5xx, or no answer
// within -timeout, leaves the outcome open — the leader finishes a
// restore it has begun — and the message says how to tell.
func TestRestoreOutcomeWords(t *testing.T) {
	snap := validSnapshot(t)
	for name, tc := range map[string]struct {
		answer  func(w http.ResponseWriter, r *http.Request)
		args    []string
		want    []string
		notWant string
	}{
		"refused": {
			answer: func(w http.ResponseWriter, _ *http.Request) { fakeError(w, 400, "not a usable snapshot") },
			want:   []string{"not a usable snapshot", "nothing was restored"}, notWant: "may still have happened",
		},
		"failed on the leader": {
			answer: func(w http.ResponseWriter, _ *http.Request) {
				fakeError(w, 503, "restoring the snapshot: raft restore: timed out")
			},
			want: []string{"raft restore", "may still have happened", "snapshot-restore"}, notWant: "nothing was restored",
		},
		"no answer in time": {
			answer: func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			args:   []string{"-timeout", "2s"},
			want:   []string{"-timeout 2s", "may still have happened"}, notWant: "nothing was restored",
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := newTestPKI(t)
			received := make(chan []byte, 1) // the handler may outlive the command (no answer in time)
			srv := p.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != "POST" || r.URL.Path != "/operator/snapshot/restore" {
					http.NotFound(w, r)
					return
				}
				b, _ := io.ReadAll(r.Body)
				received <- b
				tc.answer(w, r)
			}))
			clearClientEnv(t)
			t.Setenv(envAddr, srv.URL)
			t.Setenv(envCACert, p.ca())
			t.Setenv(envClientCert, p.opCert)
			t.Setenv(envClientKey, p.opKey)
			file := filepath.Join(t.TempDir(), "s.snap")
			if err := os.WriteFile(file, snap, 0o600); err != nil {
				t.Fatal(err)
			}
			args := append(append([]string{"operator", "snapshot", "restore", "-force"}, tc.args...), file)
			code, _, errOut := runCLI(t, args...)
			if code != ExitError {
				t.Fatalf("exit %d, want %d: %q", code, ExitError, errOut)
			}
			select {
			case got := <-received:
				if !bytes.Equal(got, snap) {
					t.Errorf("the controller received %d bytes, want the file's %d", len(got), len(snap))
				}
			default:
				t.Error("the command ended before the controller had the whole snapshot")
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error %q does not say %q", errOut, w)
				}
			}
			if strings.Contains(errOut, tc.notWant) {
				t.Errorf("error %q says %q", errOut, tc.notWant)
			}
		})
	}
}
