package controller_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"jobsuite/agent"
	"jobsuite/controller"
	"jobsuite/transport"
)

// mountTmpfs mounts a tmpfs of size (mount's syntax: "64m") on a new
// directory and unmounts it when the test ends. It needs root; without
// it, or where mounting is not allowed, the test is skipped.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("disk-full test: needs root to mount a small tmpfs as a full disk; run it as root, e.g. sudo go test -run DiskFull ./controller/")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("disk-full test: cannot mount a tmpfs (%v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// ballast fills dir's file system until free bytes are left, and
// returns a function that removes it.
func ballast(t *testing.T, dir string, free uint64) func() {
	t.Helper()
	have := freeBytes(t, dir)
	if have <= free {
		t.Fatalf("only %d bytes free, want to leave %d", have, free)
	}
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(have-free)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var once sync.Once
	remove := func() {
		once.Do(func() {
			if err := os.Remove(path); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(remove) // also when the test fails before it frees the space
	return remove
}

// metric returns the value of an unlabelled metric from GET /metrics.
func (c *cluster) metric(name string) float64 {
	c.t.Helper()
	code, b := c.do("GET", "/metrics", "")
	if code != 200 {
		c.t.Fatalf("GET /metrics: %d %s", code, b)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		c.t.Fatalf("no metric %s in /metrics", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestControllerDiskFull runs the controller on a 64 MiB tmpfs. One job
// writing 100 MB is capped (the default cap is a quarter of such a disk)
// with a marker line that says why, while the controller stays up and
// serves reads; a disk filled by something else below the floor gets
// 507 for new jobs and keeps serving reads; output that arrives while
// the disk is low waits on the agent and is stored byte for byte once
// space is freed; nothing needs a restart.
func TestControllerDiskFull(t *testing.T) {
	tmp := mountTmpfs(t, "64m")
	c := startClusterWith(t, func(cfg *controller.Config) { cfg.DataDir = filepath.Join(tmp, "data") })
	c.startAgent("agent-1", 2, nil, transport.ModeQUIC)
	const mib = 1 << 20
	const floor, capped = 16 * mib, 16 * mib // the defaults for a 64 MiB disk

	// Reads are served all along.
	var reads, failed atomic.Int64
	stopReads := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stopReads:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if code, b := c.do("GET", "/jobs?limit=5", ""); code != 200 {
				failed.Add(1)
				t.Errorf("GET /jobs while the disk fills: %d %s", code, b)
			}
			reads.Add(1)
		}
	})
	defer func() {
		close(stopReads)
		readers.Wait()
		if reads.Load() == 0 {
			t.Error("no read was made")
		}
	}()

	t.Run("one job cannot fill the disk", func(t *testing.T) {
		j := c.submit(`{"command":"head -c 100000000 /dev/zero | tr '\\000' x"}`)
		done := c.waitState(j.JobID, "completed", "failed")
		if done.Status != "completed" {
			t.Fatalf("a job capped by max_output_bytes: %s (%s)", done.Status, done.Reason)
		}
		log := c.logs(j.JobID)
		if len(log) < capped || strings.Count(log[:capped], "x") != capped {
			t.Fatalf("stored log: %d bytes; want the first %d bytes of the output", len(log), capped)
		}
		marker := log[capped:]
		if !strings.Contains(marker, "output truncated") || !strings.Contains(marker, "max_output_bytes") || len(marker) > 4096 {
			t.Fatalf("after the cap: %q; want one marker line naming max_output_bytes", marker)
		}
	})

	t.Run("below the floor", func(t *testing.T) {
		free := ballast(t, tmp, floor-4*mib) // below the floor, above half of it
		// The controller reads the free space at most every 100ms (and
		// when its own writes bring it near the floor): a job may still
		// be accepted until it notices, none after.
		c.waitFor("new jobs refused with 507", func() bool {
			code, b := c.do("POST", "/jobs", `{"command":"true"}`)
			if code != 201 && code != 507 {
				t.Fatalf("POST /jobs below the floor: %d %s", code, b)
			}
			return code == 507 && strings.Contains(string(b), "nearly full") && strings.Contains(string(b), "-min-free-bytes")
		})
		for range 3 {
			if code, b := c.do("POST", "/jobs", `{"command":"true"}`); code != 507 {
				t.Fatalf("POST /jobs once refused below the floor: %d %s", code, b)
			}
		}
		if c.metric("jobsuite_disk_low") != 1 || c.metric("jobsuite_disk_refusals_total") == 0 {
			t.Error("the metrics do not say writes are refused")
		}
		var jobs []job
		c.getJSON("/jobs", &jobs) // reads still work
		free()
		var j job
		c.waitFor("new jobs accepted once space is freed", func() bool {
			code, b := c.do("POST", "/jobs", `{"command":"echo back"}`)
			if code == 201 {
				if err := json.Unmarshal(b, &j); err != nil {
					t.Fatal(err)
				}
			}
			return code == 201
		})
		if done := c.waitState(j.JobID, "completed", "failed"); done.Status != "completed" || c.logs(j.JobID) != "back\n" {
			t.Fatalf("a job after the disk recovered: %s, log %q", done.Status, c.logs(j.JobID))
		}
		if c.metric("jobsuite_disk_low") != 0 {
			t.Error("jobsuite_disk_low is still 1")
		}
	})

	t.Run("output waits on the agent", func(t *testing.T) {
		const lines = 1_500_000 // about 10.9 MB: under the cap, over the room left
		want := seqOutput(lines)
		free := ballast(t, tmp, floor+4*mib)
		refused := c.metric("jobsuite_disk_refusals_total")
		j := c.submit(fmt.Sprintf(`{"command":"seq 1 %d"}`, lines))
		c.waitFor("output refused", func() bool { return c.metric("jobsuite_disk_refusals_total") > refused })
		if st := c.job(j.JobID).Status; st != "running" && st != "dispatched" {
			t.Fatalf("with its output refused the job is %s", st)
		}
		free()
		done := c.waitState(j.JobID, "completed", "failed")
		got := c.logs(j.JobID)
		if done.Status != "completed" || sha256.Sum256([]byte(got)) != sha256.Sum256(want) {
			t.Fatalf("after space was freed: %s, %d bytes stored of %d (equal: %v)", done.Status, len(got), len(want), got == string(want))
		}
	})
	if failed.Load() > 0 {
		t.Errorf("%d reads failed", failed.Load())
	}
}

// TestAgentDiskFull runs agents whose state directory is a tiny tmpfs:
// a job's output may wait for space, and when the disk keeps refusing,
// the attempt fails with its output incomplete — never "completed" with
// a hole in its log.
func TestAgentDiskFull(t *testing.T) {
	const lines = 1_000_000 // 6,888,896 bytes, the job
	want := seqOutput(lines)

	t.Run("acknowledgements make room", func(t *testing.T) {
		state := mountTmpfs(t, "512k")
		c := startCluster(t)
		c.startAgentWith("agent-1", 1, nil, transport.ModeQUIC, func(cfg *agent.Config) {
			cfg.StateDir, cfg.DiskFullTimeout = state, 30*time.Second
		})
		j := c.submit(fmt.Sprintf(`{"command":"seq 1 %d"}`, lines))
		done := c.waitState(j.JobID, "completed", "failed")
		got := c.logs(j.JobID)
		switch {
		case done.Status == "completed" && got == string(want):
		case done.Status == "failed" && strings.Contains(done.Reason, "agent disk full: output incomplete") && strings.HasPrefix(string(want), got):
			t.Logf("the disk refused for 30s: failed with %d of %d bytes", len(got), len(want))
		default:
			t.Fatalf("%s (%s) with %d of %d bytes stored (a prefix: %v)", done.Status, done.Reason, len(got), len(want), strings.HasPrefix(string(want), got))
		}
	})

	t.Run("a disk that stays full fails the attempt", func(t *testing.T) {
		state := mountTmpfs(t, "512k")
		c := startCluster(t)
		c.startAgentWith("agent-1", 1, nil, transport.ModeTCP, func(cfg *agent.Config) {
			cfg.StateDir, cfg.DiskFullTimeout = state, time.Second
		})
		dir := t.TempDir()
		gate, pidFile := filepath.Join(dir, "gate"), filepath.Join(dir, "pid")
		j := c.submit(fmt.Sprintf(`{"command":"echo $$ > %s; while [ ! -e %s ]; do sleep 0.05; done; seq 1 %d"}`, pidFile, gate, lines))
		c.waitFor("the job to start", func() bool { b, _ := os.ReadFile(pidFile); return len(b) > 0 })
		pb, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(pb)))
		// Without the controller nothing is acknowledged: the spool can
		// only grow, and the tmpfs fills.
		c.stopController()
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		c.waitFor("the agent to give up and stop the job", func() bool { return processGone(pid) })
		c.startController()
		done := c.waitState(j.JobID, "completed", "failed")
		got := c.logs(j.JobID)
		if done.Status != "failed" || !strings.Contains(done.Reason, "agent disk full: output incomplete") {
			t.Fatalf("the job is %s (%s); want failed: agent disk full", done.Status, done.Reason)
		}
		if len(got) == 0 || len(got) >= len(want) || !strings.HasPrefix(string(want), got) {
			t.Fatalf("stored log: %d of %d bytes, a prefix of the output: %v; want the part written before the disk filled", len(got), len(want), strings.HasPrefix(string(want), got))
		}
	})
}
