package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"jobsuite/controller/store"
	"jobsuite/transport"
)

// Row 9d (issue 14): one job writes LogBytes to stdout through a real
// agent connected to the leader of a three-controller cluster, and a
// WebSocket client follows the log on a follower (which proxies it from
// the leader). Output rides the raft log (controller/doc.go, "Cluster
// mode"), so every byte is in every node's raft log and store. The row
// checks that every byte is stored and delivered, and that each node's
// stored log (read with ?stale=1 from each node's own store) has the
// same SHA-256 as the bytes the job wrote.
//
// limit is the raft layer alone's MB/s for 256 KiB Output entries with
// the real FSM, measured in the same run (row 9h-256k); zero when it
// failed.
//
// multiplier is the nodes' -raft-multiplier (row 9d at 1, the default;
// 9d-m2 at 2, whose leader lease is 1 s instead of 500 ms).
func (e *env) clusterLog(ctx context.Context, limit float64, multiplier int) {
	size := e.sz.LogBytes
	id9d := "9d"
	name := fmt.Sprintf("cluster of %d: one job writing %s to stdout (real agent at the leader), followed by a WebSocket on a follower", clusterSize, bytesName(size))
	if multiplier != 1 {
		id9d = fmt.Sprintf("9d-m%d", multiplier)
		name += fmt.Sprintf(", -raft-multiplier %d", multiplier)
	}
	if e.outputInRaft {
		id9d += "-raft"
		name += ", -output-channel=false (output in the raft rounds)"
	}
	c, err := e.startRaftClusterWith(ctx, "cluster-log-"+id9d, multiplier)
	if err != nil {
		e.fail(id9d, name, err)
		return
	}
	defer func() {
		c.close()
		for _, p := range c.nodes { // three copies of the output: the data goes, the logs stay
			_ = os.RemoveAll(p.cfg.Data)
		}
	}()
	base := filepath.Join(e.dir, "cluster-log-"+id9d)
	agentName := agentName(1)
	acfg := childConfig{Mode: "agent", PKI: e.pki.dir, Data: filepath.Join(base, agentName),
		Log: filepath.Join(base, agentName+".log"), LogLevel: e.cfg.LogLevel, Name: agentName,
		Controller: c.nodes[c.leader].info.Agent, Slots: 1, Transport: string(transport.ModeQUIC)}
	if e.cfg.ProfileDir != "" {
		acfg.Profile = filepath.Join(e.cfg.ProfileDir, "cluster-log-"+id9d+"-"+agentName+".pprof")
	}
	ag, err := startChild(ctx, acfg, time.Minute)
	if err != nil {
		e.fail(id9d, name, err)
		return
	}
	defer func() {
		_ = ag.stop()
		_ = os.RemoveAll(acfg.Data)
	}()
	leader := c.apis[c.leader]
	if err := leader.waitAgents(ctx, 1, time.Minute); err != nil {
		e.fail(id9d, name, err)
		return
	}
	fol := c.follower()

	written0 := make([]uint64, len(c.nodes))
	cpu0 := make([]time.Duration, len(c.nodes))
	for i, p := range c.nodes {
		written0[i], cpu0[i] = p.written(), p.cpu()
	}
	agentW0, agentC0, selfC0 := ag.written(), ag.cpu(), selfCPU()
	start := time.Now()
	id, err := leader.submit(ctx, []byte(fmt.Sprintf(`{"command":"head -c %d /dev/zero","name":"log"}`, size)))
	if err != nil {
		e.fail(id9d, name, err)
		return
	}
	// A leader change drops the follower's proxied WebSocket; the client
	// resumes by offset, as a real one does (the row counts them), until
	// it has every byte. It gives up after a minute without one.
	var got int64
	resumes := 0
	progress := time.Now()
	for {
		n, ferr := c.apis[fol].followFrom(ctx, id, got)
		got += n
		if n > 0 {
			progress = time.Now()
		}
		// A leader change may also close it normally before the end.
		if err = ferr; got >= size || ctx.Err() != nil || time.Since(progress) > time.Minute {
			break
		}
		resumes++
		time.Sleep(200 * time.Millisecond) // a pause before dialling again (503 while there is no leader)
	}
	took := time.Since(start)
	if err == nil && got != size {
		err = fmt.Errorf("the WebSocket on follower %s delivered %d bytes, want %d", c.ids[fol], got, size)
	}
	if err != nil {
		e.fail(id9d, name, err)
		return
	}
	cpu := make([]time.Duration, len(c.nodes))
	written := make([]uint64, len(c.nodes))
	for i, p := range c.nodes {
		cpu[i], written[i] = p.cpu()-cpu0[i], p.written()-written0[i]
	}
	agentW, agentC, selfC := ag.written()-agentW0, ag.cpu()-agentC0, selfCPU()-selfC0
	load := loadNote()
	terms := 0
	for _, p := range c.nodes {
		terms += strings.Count(readFile(p.cfg.Log), "controller: leading: term=")
	}

	var rec jobRecord
	if err := leader.getJSON(ctx, fmt.Sprintf("/jobs/%d", id), &rec); err != nil || rec.Status != store.Completed || rec.LogBytes != uint64(size) {
		e.fail(id9d, name, fmt.Errorf("job %d: %s with %d bytes stored (%v)", id, rec.Status, rec.LogBytes, err))
		return
	}
	// Raft commits with the faster follower; the other may trail far
	// behind (hashicorp/raft has no flow control), so each node gets
	// minutes to catch up, and the row says how long the last one took.
	want := zeroSHA(size)
	closed := time.Now()
	for i, a := range c.apis {
		var sum string
		var n int64
		err := poll(ctx, 5*time.Minute, func() (bool, error) {
			var err error
			sum, n, err = a.logSHA(ctx, id)
			return err == nil && n == size, nil
		})
		if err != nil {
			e.fail(id9d, name, fmt.Errorf("node %s holds %d bytes of job %d's log, want %d (the WebSocket had them all after %s): %w", c.ids[i], n, id, size, took.Round(time.Millisecond), err))
			return
		}
		if sum != want {
			e.fail(id9d, name, fmt.Errorf("node %s: the log's SHA-256 is %s, want %s", c.ids[i], sum, want))
			return
		}
	}

	caughtUp := time.Since(closed)
	rate := float64(size) / took.Seconds() / 1e6
	share := func(d time.Duration) float64 { return d.Seconds() / took.Seconds() }
	var cores, disk []string
	for i := range c.nodes {
		role := "follower"
		switch i {
		case c.leader:
			role = "leader"
		case fol:
			role = "follower (WebSocket)"
		}
		cores = append(cores, fmt.Sprintf("%s %.2f", role, share(cpu[i])))
		disk = append(disk, fmt.Sprintf("%s %.1f×", role, float64(written[i])/float64(size)))
	}
	r := Row{ID: id9d, Name: name, Value: rate, Unit: "MB/s",
		Detail: fmt.Sprintf("submit → WebSocket closed in %s; leader changes during the row: %d (the WebSocket dialled again, resuming by offset, %d times); all %d bytes stored and delivered, the log's SHA-256 equal on all %d nodes (read from each node's own store; the last had them all %s after the WebSocket closed); cores busy: %s, agent %.2f, WebSocket client %.2f (the job's head not counted); disk writes ÷ output: %s, agent spool %.1f×; %s",
			took.Round(time.Millisecond), terms-1, resumes, size, len(c.nodes), caughtUp.Round(time.Millisecond), strings.Join(cores, ", "), share(agentC), share(selfC), strings.Join(disk, ", "), float64(agentW)/float64(size), load),
		Target: "≥ 100 MB/s", Verdict: atLeast(rate, 100, "MB/s")}
	if limit > 0 {
		r.Limit, r.LimitUnit, r.LimitName = limit, "MB/s", "row 9h-256k: raft alone, TLS cluster port, raft-wal, cluster.FSM, 256 KiB Output entries (what 9d carries)"
	}
	e.add(r)
}

// readFile returns the file's contents, or "" when it cannot be read.
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// logSHA reads job id's whole log from this node's own store
// (?stale=1) and returns its SHA-256 in hex and its length.
func (a *api) logSHA(ctx context.Context, id uint64) (string, int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/jobs/%d/logs?stale=1", a.base, id), nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return "", 0, fmt.Errorf("GET logs: %d %s", resp.StatusCode, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// zeroSHA is the SHA-256 of n zero bytes, in hex.
func zeroSHA(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(zeroReader{}, n))
	return hex.EncodeToString(h.Sum(nil))
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
