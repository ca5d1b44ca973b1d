package cluster

import (
	"errors"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	waltypes "github.com/hashicorp/raft-wal/types"
)

// SealedWAL wraps raft-wal's log store to name a failure of raft-wal
// v0.4.2 that the log-store crash test found (BENCHMARKS.md, "Issue 14:
// raft-wal vs raft-boltdb"): a kill -9, or a shutdown, in the moment
// after the write that fills a segment and before raft-wal records the
// next one leaves a store that refuses every later write with "segment
// is sealed", after every restart. Nothing acknowledged is lost, but
// the node can store no new entry: raft only logs the error. The first
// such refusal is logged once, as an error that says what to do.
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
