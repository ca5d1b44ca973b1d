package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"jobsuite/controller/snapshot"
	"jobsuite/controller/store"
)

// GET /operator/snapshot: a single controller's backup. The handler
// takes a Pebble checkpoint of the live store (store.Checkpoint: the WAL
// synced first, SSTables hard-linked, so it costs little and writes go
// on meanwhile; every write acknowledged before the request is in it)
// into snapshotTmpDir inside the data directory, streams it in the
// snapshot format (package snapshot) with a fixed buffer, and removes
// the checkpoint when the stream ends, however it ends.
//
// One at a time: a second request while one streams gets 429 with
// Retry-After. Each checkpoint pins the SSTables it links for as long as
// it streams, and two copies of the same store at once buy nothing. A
// checkpoint left by a crash is removed by the next request (one runs at
// a time, and the store's lock keeps other processes out of the data
// directory, so whatever is there is a leftover).
//
// Below the data directory's free-space floor (disk.go) it answers 507:
// the checkpoint copies the store's log, up to a memtable's worth.
//
// A client that stops reading is dropped: every write must make
// progress within snapshotWriteTimeout. The audit log records each
// snapshot, complete or not, with its size.

const (
	snapshotTmpDir       = "snapshot.tmp"
	snapshotWriteTimeout = 30 * time.Second
	snapshotRetryAfter   = 10 // seconds, for the 429
	auditSnapshot        = "snapshot"
)

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if !s.snapshotMu.TryLock() {
		w.Header().Set("Retry-After", strconv.Itoa(snapshotRetryAfter))
		writeError(w, http.StatusTooManyRequests, "a snapshot is being streamed already; one is taken at a time, try again when it is done")
		return
	}
	defer s.snapshotMu.Unlock()
	if !s.disk.Accepting() {
		// The checkpoint copies the store's log (up to a memtable) into
		// the data directory: not below the floor Pebble is kept above.
		writeError(w, http.StatusInsufficientStorage, "the data directory is below its free-space floor (-min-free-bytes); a snapshot copies the store's log there: free space first")
		return
	}
	dir := filepath.Join(s.cfg.DataDir, snapshotTmpDir)
	if err := os.RemoveAll(dir); err != nil {
		s.log.Error("snapshot: removing a leftover checkpoint", "dir", dir, "error", err)
		writeError(w, http.StatusInternalServerError, "removing a leftover checkpoint: %v", err)
		return
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			s.log.Error("snapshot: removing the checkpoint", "dir", dir, "error", err)
		}
	}()
	if err := s.st.Checkpoint(dir); err != nil {
		if errors.Is(err, store.ErrClosed) {
			writeError(w, http.StatusServiceUnavailable, "the controller is shutting down")
			return
		}
		s.log.Error("snapshot: checkpoint", "error", err)
		writeError(w, http.StatusInternalServerError, "taking a checkpoint of the store: %v", err)
		return
	}
	size, err := snapshot.Size(dir)
	if err != nil {
		s.log.Error("snapshot: sizing the checkpoint", "error", err)
		writeError(w, http.StatusInternalServerError, "reading the checkpoint: %v", err)
		return
	}
	name := "jobsuite-" + s.clock.Now().UTC().Format("20060102T150405Z") + ".snap"
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w), ctx: r.Context()}
	err = snapshot.Write(dw, dir)
	if err == nil {
		s.log.Info("snapshot streamed", "bytes", dw.n, "to", r.RemoteAddr)
		s.auditDetail(r, auditSnapshot, "store", fmt.Sprintf("%d bytes", dw.n))
		return
	}
	// The status is sent: the client sees a short body, which the
	// snapshot's checksum (and Content-Length) tells it.
	s.log.Warn("snapshot stream ended early", "bytes", dw.n, "of", size, "to", r.RemoteAddr, "error", err)
	s.auditDetail(r, auditSnapshot, "store", fmt.Sprintf("incomplete: %d of %d bytes (%v)", dw.n, size, err))
}

// deadlineWriter gives every write snapshotWriteTimeout to go out and
// stops at once when the request's context ends (the client went away).
type deadlineWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	ctx context.Context
	n   int64
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if err := d.ctx.Err(); err != nil {
		return 0, err
	}
	_ = d.rc.SetWriteDeadline(time.Now().Add(snapshotWriteTimeout))
	n, err := d.w.Write(p)
	d.n += int64(n)
	return n, err
}
