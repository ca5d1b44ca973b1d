package cluster

import (
	"errors"

	"jobsuite/controller/snapshot"
)

// Errors of the cluster package; check them with errors.Is.
var (
	// ErrSnapshot means a snapshot stream is not one Persist wrote, or
	// does not hold a store this build opens: bad header, checksum,
	// truncated or trailing bytes, a file name that is not a plain name.
	// Restore refuses it and leaves the live store as it was. It is
	// snapshot.ErrSnapshot: the format is package snapshot's.
	ErrSnapshot = snapshot.ErrSnapshot
	// ErrStopped means the FSM stopped applying after a fatal error
	// (Options.Fatal): it applies nothing more until it is reopened.
	ErrStopped = errors.New("the FSM stopped applying after a fatal error")
	// ErrClosed means the FSM was used after Close.
	ErrClosed = errors.New("the FSM is closed")
)
