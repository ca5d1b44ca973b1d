package sched

import "errors"

// Errors returned by the scheduler and the committer. Check them with
// errors.Is; package controller re-exports the ones its callers see.
var (
	// ErrStaleAttempt: a report quotes an attempt that is not the job's
	// current one on that agent (fencing).
	ErrStaleAttempt = errors.New("stale attempt")
	// ErrFinished: the job already reached a final state.
	ErrFinished = errors.New("job already finished")
	// ErrNoDependency: a job names a job to run after that does not
	// exist (the error says which).
	ErrNoDependency = errors.New("no such job to run after")
	// ErrNoAgents: a fan-out selects no agent (the error says whom it
	// looked for).
	ErrNoAgents = errors.New("no agent to fan out to")
	// ErrNoSchedule: no schedule of that name.
	ErrNoSchedule = errors.New("no such schedule")
	// ErrScheduleExists: a schedule of that name exists already.
	ErrScheduleExists = errors.New("a schedule of that name exists")
	// ErrNotCancellable: the job was submitted with cancellable=false
	// and is running.
	ErrNotCancellable = errors.New("job is running and was submitted with cancellable=false")
	// ErrStopping: the agent drains itself because it is shutting down;
	// an operator cannot undrain it.
	ErrStopping = errors.New("the agent is shutting down (it drains itself): it cannot be undrained; start it again instead")
	// ErrShuttingDown: the committer is stopping and takes no more
	// changes.
	ErrShuttingDown = errors.New("controller is shutting down")
	// ErrDiskFull: the committer stopped while a write waited for disk
	// space; the changes it held were not stored.
	ErrDiskFull = errors.New("stopped while waiting for disk space: changes not stored")
	// ErrDiverged: the store refused a job transition or an output chunk
	// the scheduler had already counted as done, so its memory and the
	// store disagree; the controller stops, and a restart loads the
	// store's truth. It means a bug (or a second writer), never load.
	ErrDiverged = errors.New("the store refused a change the scheduler had made; memory and store disagree")
)
