package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The harness runs controllers and agents as children of this
	// binary.
	if code, ok := Child(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestSmoke runs every benchmark with tiny sizes so the harness cannot
// rot. It checks that every row produced a number, never how fast.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts controller and agent processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Config{Dir: t.TempDir(), Sizes: SmokeSizes(), LogLevel: "debug", Progress: &progress})
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range rep.Rows {
		ids[r.ID] = true
		if r.Err != nil {
			t.Errorf("%s %s: %v", r.ID, r.Name, r.Err)
			continue
		}
		if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
			t.Errorf("%s %s: no number (%v)", r.ID, r.Name, r.Value)
		}
	}
	for _, id := range []string{"1a", "1b", "1c", "1h", "2a", "2b", "3", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "4f", "5a", "5b", "5c", "6a", "6b", "6c", "6d", "7a", "7b", "7c"} {
		if !ids[id] {
			t.Errorf("no row %s", id)
		}
	}
	var md bytes.Buffer
	rep.Markdown(&md)
	if !strings.Contains(md.String(), "| 1a |") || len(rep.Limits) == 0 {
		t.Errorf("report:\n%s", md.String())
	}
	t.Log("\n" + md.String())
}

// TestSmokeCluster runs the opt-in cluster group with tiny sizes: three
// cluster nodes, fake agents, the built binary killed once per agent
// transport, the raft-alone and output-channel prototype rows and the
// log stream through a cluster. It checks that every row has a number,
// never how fast.
func TestSmokeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three cluster nodes twice and builds the jobsuite binary")
	}
	// The binary is built before the clock starts: under a loaded
	// machine's race-enabled test runs the build alone took 3.5 minutes.
	bin := filepath.Join(t.TempDir(), "jobsuite")
	if out, err := exec.Command("go", "build", "-o", bin, "jobsuite").CombinedOutput(); err != nil {
		t.Fatalf("go build jobsuite: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Config{Dir: t.TempDir(), Sizes: SmokeSizes(), Groups: []string{"cluster"}, Progress: &progress, Jobsuite: bin})
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"9a": false, "9g": false, "9b": false, "9c": false, "9e": false, "9f": false, "9e-tcp": false, "9f-tcp": false, "9d": false, "9d-m2": false}
	for _, v := range outputVariants() {
		want[v.id] = false
	}
	for _, r := range rep.Rows {
		if _, ok := want[r.ID]; !ok {
			t.Errorf("row %s: not a cluster row", r.ID)
			continue
		}
		want[r.ID] = true
		if r.Err != nil {
			t.Errorf("%s %s: %v", r.ID, r.Name, r.Err)
		} else if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || r.Value <= 0 {
			t.Errorf("%s %s: no number (%v)", r.ID, r.Name, r.Value)
		}
	}
	for id, seen := range want {
		if !seen {
			t.Errorf("no row %s", id)
		}
	}
}

// TestSmokeLogStore runs the opt-in group cluster-logstore with tiny
// sizes: both raft log stores fed for a moment. It checks that both
// rows have a number and a limit, never how fast.
func TestSmokeLogStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Config{Dir: t.TempDir(), Sizes: SmokeSizes(), Groups: []string{"cluster-logstore"}, Progress: &progress})
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"9l-wal": false, "9l-bolt": false}
	for _, r := range rep.Rows {
		if _, ok := want[r.ID]; !ok {
			t.Errorf("row %s: not a cluster-logstore row", r.ID)
			continue
		}
		want[r.ID] = true
		if r.Err != nil {
			t.Errorf("%s %s: %v", r.ID, r.Name, r.Err)
		} else if math.IsNaN(r.Ratio()) || r.Value <= 0 {
			t.Errorf("%s %s: no number or no limit (%v of %v)", r.ID, r.Name, r.Value, r.Limit)
		}
	}
	for id, seen := range want {
		if !seen {
			t.Errorf("no row %s", id)
		}
	}
}
