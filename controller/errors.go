package controller

import "errors"

// Errors returned by the controller. Check them with errors.Is.
var (
	// ErrStaleAttempt: a report quotes an attempt that is not the job's
	// current one on that agent (fencing).
	ErrStaleAttempt = errors.New("stale attempt")
	// ErrFinished: the job already reached a final state.
	ErrFinished = errors.New("job already finished")
	// ErrNotCancellable: the job was submitted with cancellable=false
	// and is running.
	ErrNotCancellable = errors.New("job is running and was submitted with cancellable=false")
	// ErrShuttingDown: the controller is stopping and takes no more
	// changes.
	ErrShuttingDown = errors.New("controller is shutting down")
	// ErrConfig: the configuration is incomplete or inconsistent.
	ErrConfig = errors.New("invalid controller configuration")
)
