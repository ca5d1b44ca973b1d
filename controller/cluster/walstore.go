package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	waltypes "github.com/hashicorp/raft-wal/types"
)

// SealedWAL wraps raft-wal's log store to name a failure of raft-wal
// v0.4.2 that the log-store crash test found (BENCHMARKS.md, "Issue 14:
// raft-wal vs raft-boltdb"): a kill -9, or a shutdown, in the moment
// after the write that fills a segment and before raft-wal records the
// next one leaves a store that refuses every later write with "segment
// is sealed", after every restart. Nothing acknowledged is lost, but
// the node can store no new entry: raft only logs the error. OpenWAL
// repairs that state at start-up; SealedWAL is for what it cannot
// repair (a sealed segment whose index does not match its entries): the
// first refusal is logged once, as an error that says what to do.
type SealedWAL struct {
	*wal.WAL
	Log  hclog.Logger
	told atomic.Bool
}

var _ raft.LogStore = (*SealedWAL)(nil)

// StoreLog stores one entry (raft.LogStore).
func (w *SealedWAL) StoreLog(l *raft.Log) error {
	return w.check(w.WAL.StoreLog(l))
}

// StoreLogs stores entries (raft.LogStore).
func (w *SealedWAL) StoreLogs(ls []*raft.Log) error {
	return w.check(w.WAL.StoreLogs(ls))
}

func (w *SealedWAL) check(err error) error {
	if errors.Is(err, waltypes.ErrSealed) && w.told.CompareAndSwap(false, true) {
		w.Log.Error("the raft log refuses every write: raft-wal's last segment was sealed when this controller stopped, before it began the next one (a known failure of raft-wal v0.4.2); this controller cannot take part until repaired: on another controller run 'jobsuite operator remove-peer' with its ID, then start it with an empty data directory and -join, and it catches up from a snapshot")
	}
	return err
}

// OpenWAL opens the raft-wal log store in dir (segmentBytes 0: raft-wal's
// 64 MiB default), after finishing a segment rotation that a stop cut
// short (RepairSealedTail). A node opens its raft log with it; logger
// says what a repair did.
func OpenWAL(dir string, segmentBytes int, logger hclog.Logger) (*wal.WAL, error) {
	if segmentBytes <= 0 {
		segmentBytes = wal.DefaultSegmentSize
	}
	repaired, err := RepairSealedTail(dir, segmentBytes)
	switch {
	case err != nil:
		// Not repaired, nothing changed: raft-wal opens it as before
		// and SealedWAL names the remedy if it refuses to append.
		logger.Warn("the raft log's last segment was sealed when this controller stopped and could not be rotated here", "dir", dir, "error", err)
	case repaired.ID != 0:
		logger.Warn("the raft log's last segment was sealed when this controller stopped, before raft-wal began the next one; the rotation is finished now (nothing is lost)",
			"dir", dir, "last_index", repaired.BaseIndex-1, "new_segment", repaired.ID)
	}
	return wal.Open(dir, wal.WithSegmentSize(segmentBytes))
}

// RepairSealedTail finishes, before raft-wal opens dir, the segment
// rotation a stop cut short, and returns the segment it began (ID 0:
// nothing to do).
//
// raft-wal v0.4.2 seals a full segment inside the append that fills it
// (the index frame rides the same commit and fsync) and rotates to the
// next segment afterwards, in the background: one metadata commit that
// records the old tail as sealed and names a new tail. A kill -9 — or
// a Close that races the rotation, which then gives up — between the
// two leaves metadata that calls the sealed file the open tail; Open
// recovers it as the tail, never rotates, and every later append fails
// with "segment is sealed" (BENCHMARKS.md, "Issue 14: raft-wal vs
// raft-boltdb").
//
// The repair commits the metadata that rotation would have committed
// (rotateSegmentLocked in raft-wal): the tail sealed at its file's own
// index with its recovered last index as MaxIndex, and a new empty tail
// after it, whose file raft-wal creates when it opens (as it does after
// a crash between a rotation's commit and the new file). One bbolt
// transaction, so a crash during the repair leaves the old state or the
// new one; no entry is moved or rewritten. Before committing, every
// entry is read back through the sealed file's index and compared with
// what recovery found by scanning the file: an index that a torn write
// left inconsistent is never trusted (the error says so, nothing
// changes).
func RepairSealedTail(dir string, segmentBytes int) (waltypes.SegmentInfo, error) {
	var none waltypes.SegmentInfo
	if _, err := os.Stat(filepath.Join(dir, metadb.FileName)); err != nil {
		return none, nil // a new log (or one raft-wal will report on)
	}
	var meta metadb.BoltMetaDB
	defer meta.Close() // also after a failed Load: raft-wal must find it unlocked
	state, err := meta.Load(dir)
	if err != nil {
		return none, nil // unreadable metadata: raft-wal's Open reports it
	}
	if len(state.Segments) == 0 {
		return none, nil
	}
	tail := state.Segments[len(state.Segments)-1]
	if !tail.SealTime.IsZero() || tail.Codec != wal.CodecBinaryV1 {
		return none, nil // a rotated log, or one raft-wal will refuse itself
	}
	filer := segment.NewFiler(dir, walfs.New())
	w, err := filer.RecoverTail(tail)
	if err != nil {
		return none, nil // a missing or unreadable tail: raft-wal's to handle
	}
	defer w.Close()
	sealed, indexStart, err := w.Sealed()
	if err != nil || !sealed {
		return none, err
	}
	last := w.LastIndex()
	if last < tail.MinIndex {
		return none, fmt.Errorf("segment %d is sealed but recovery found no entry in it", tail.ID)
	}
	sealedInfo := tail
	sealedInfo.SealTime = time.Now()
	sealedInfo.MaxIndex = last
	sealedInfo.IndexStart = indexStart
	if err := sameEntries(filer, sealedInfo, w); err != nil {
		return none, fmt.Errorf("segment %d: its index does not match its entries (%w); not rotated", tail.ID, err)
	}
	next := waltypes.SegmentInfo{
		ID:         state.NextSegmentID,
		BaseIndex:  last + 1,
		MinIndex:   last + 1,
		SizeLimit:  uint32(segmentBytes),
		Codec:      wal.CodecBinaryV1,
		CreateTime: sealedInfo.SealTime,
	}
	state.Segments[len(state.Segments)-1] = sealedInfo
	state.Segments = append(state.Segments, next)
	state.NextSegmentID++
	if err := meta.CommitState(state); err != nil {
		return none, err
	}
	return next, nil
}

// sameEntries reads every entry of the sealed segment info through its
// index and checks it against the recovered writer's (found by a scan).
func sameEntries(filer *segment.Filer, info waltypes.SegmentInfo, w waltypes.SegmentWriter) error {
	r, err := filer.Open(info)
	if err != nil {
		return err
	}
	defer r.Close()
	for i := info.MinIndex; i <= info.MaxIndex; i++ {
		want, err := w.GetLog(i)
		if err != nil {
			return fmt.Errorf("entry %d by scan: %w", i, err)
		}
		got, err := r.GetLog(i)
		if err != nil {
			want.Close()
			return fmt.Errorf("entry %d by index: %w", i, err)
		}
		same := bytes.Equal(got.Bs, want.Bs)
		got.Close()
		want.Close()
		if !same {
			return fmt.Errorf("entry %d differs", i)
		}
	}
	return nil
}
