package controller_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"jobsuite/controller"
	snapfmt "jobsuite/controller/snapshot"
	"jobsuite/controller/store"
)

// snapshotTmp is where the handler puts its checkpoint (snapshot.go).
func snapshotTmp(c *cluster) string { return filepath.Join(c.data, "snapshot.tmp") }

func auditEntries(c *cluster, action string) []store.AuditEntry {
	c.t.Helper()
	var entries, out []store.AuditEntry
	c.getJSON("/audit", &entries)
	for _, e := range entries {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// An operator gets a snapshot holding every job submitted before it;
// a viewer or an agent gets 403 and no snapshot is taken.
func TestSnapshotEndpoint(t *testing.T) {
	c := startCluster(t)
	var ids []uint64
	for range 3 {
		ids = append(ids, c.submit(`{"command":"true"}`).JobID)
	}
	cases := map[string]int{"operator": 200, "viewer": 403, "agent-1": 403}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			before := len(auditEntries(c, "snapshot"))
			resp, err := c.httpClient(name).Get(c.base + "/operator/snapshot")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			c.srv.WaitSnapshot()
			if resp.StatusCode != want {
				t.Fatalf("GET /operator/snapshot as %s: %d %s, want %d", name, resp.StatusCode, body, want)
			}
			if _, err := os.Stat(snapshotTmp(c)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the checkpoint is still there: %v", err)
			}
			after := auditEntries(c, "snapshot")
			if want != 200 {
				if len(after) != before {
					t.Errorf("a refused snapshot was audited: %+v", after)
				}
				return
			}
			h := resp.Header
			if h.Get("Content-Type") != "application/octet-stream" ||
				!strings.HasPrefix(h.Get("Content-Disposition"), `attachment; filename="jobsuite-`) ||
				h.Get("Content-Length") != strconv.Itoa(len(body)) {
				t.Errorf("headers %v for a body of %d bytes", h, len(body))
			}
			if len(after) != before+1 || after[0].Who != "operator" || after[0].Detail != strconv.Itoa(len(body))+" bytes" {
				t.Errorf("audit entries %+v, want a new one by operator of %d bytes", after, len(body))
			}
			dir := filepath.Join(t.TempDir(), "restored")
			if _, err := snapfmt.Read(bytes.NewReader(body), dir); err != nil {
				t.Fatal(err)
			}
			st, err := store.Open(dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			jobs, _, err := st.List(store.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, j := range jobs {
				got = append(got, j.ID)
			}
			slices.Sort(got)
			if !slices.Equal(got, ids) {
				t.Errorf("the snapshot holds jobs %v, want %v", got, ids)
			}
		})
	}
}

// A client that goes away mid-stream: the handler stops, removes its
// checkpoint and audits an incomplete snapshot; meanwhile a second
// request is turned away with 429.
func TestSnapshotClientGoesAway(t *testing.T) {
	// Three times what the socket buffers can hold: the server's send
	// buffer grows to net.ipv4.tcp_wmem's 4 MiB at most, and the
	// client's receive buffer is pinned to 64 KiB (no autotuning).
	const outputBytes = 12 << 20
	c := startClusterWith(t, func(cfg *controller.Config) { fillOutput(t, cfg.DataDir, outputBytes) })
	slow := c.httpClient("operator")
	tr := slow.Transport.(*http.Transport)
	tr.DialContext = (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
		return errors.Join(err, serr)
	}}).DialContext
	resp, err := slow.Get(c.base + "/operator/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /operator/snapshot: %d", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(resp.Header.Get("Content-Length")); n < outputBytes {
		t.Fatalf("Content-Length %d, want at least the %d bytes of output", n, outputBytes)
	}
	// The first is streaming (it sent bytes): a second must wait.
	second, err := c.client.Get(c.base + "/operator/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, second.Body)
	second.Body.Close()
	if second.StatusCode != http.StatusTooManyRequests || second.Header.Get("Retry-After") == "" {
		t.Errorf("a second snapshot meanwhile: %d, Retry-After %q; want 429 with one", second.StatusCode, second.Header.Get("Retry-After"))
	}
	resp.Body.Close() // mid-body: the connection closes
	c.srv.WaitSnapshot()
	if _, err := os.Stat(snapshotTmp(c)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the checkpoint is still there after the client went away: %v", err)
	}
	entries := auditEntries(c, "snapshot")
	if len(entries) != 1 || !strings.HasPrefix(entries[0].Detail, "incomplete") {
		t.Errorf("audit entries %+v, want one incomplete snapshot", entries)
	}
}

// fillOutput creates a store in dir holding one job with n bytes of
// incompressible output.
func fillOutput(t *testing.T, dir string, n int) {
	t.Helper()
	st, err := store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	j := &store.Job{ID: st.NextID(), Name: "big", Command: "cat /dev/urandom", State: store.Queued, CreatedAt: now, QueuedAt: now}
	if _, err := st.Apply(store.NewTransition(j, store.Event{Time: now, Type: "submitted"})); err != nil {
		t.Fatal(err)
	}
	const chunk = 1 << 20
	data := make([]byte, chunk) // the same random chunk: Pebble compresses blocks, not across keys
	rand.Read(data)
	for off := 0; off < n; off += chunk {
		if _, err := st.Apply(&store.Output{Job: j.ID, Chunk: store.Chunk{Offset: uint64(off), Stream: 1, Data: data, Time: now}}); err != nil {
			t.Fatal(err)
		}
	}
}

// Below the data directory's free-space floor a snapshot is refused
// with 507: its checkpoint would copy the store's log there.
func TestSnapshotBelowTheFloor(t *testing.T) {
	c := startClusterWith(t, func(cfg *controller.Config) { cfg.MinFreeBytes = 1 << 60 })
	c.waitFor("new jobs refused with 507", func() bool {
		code, _ := c.do("POST", "/jobs", `{"command":"true"}`)
		return code == 507
	})
	code, b := c.do("GET", "/operator/snapshot", "")
	if code != 507 || !strings.Contains(string(b), "-min-free-bytes") {
		t.Fatalf("GET /operator/snapshot below the floor: %d %s, want 507", code, b)
	}
	if _, err := os.Stat(snapshotTmp(c)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a checkpoint was taken: %v", err)
	}
}
