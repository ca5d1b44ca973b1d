package controller

import (
	"errors"

	"jobsuite/controller/sched"
)

// Errors returned by the controller. Check them with errors.Is.
var (
	// ErrConfig: the configuration is incomplete or inconsistent.
	ErrConfig = errors.New("invalid controller configuration")
	// ErrDiskLow: growth (a new job, new output) is refused because the
	// data directory's file system is below its floor of free space
	// (Config.MinFreeBytes); it lifts by itself when space is freed.
	ErrDiskLow = errors.New("the controller's disk is nearly full")
)

// The scheduler's and the committer's errors (package sched), which the
// controller returns as they are.
var (
	// ErrStaleAttempt: a report quotes an attempt that is not the job's
	// current one on that agent (fencing).
	ErrStaleAttempt = sched.ErrStaleAttempt
	// ErrNoDependency: a submitted job runs after a job that does not
	// exist.
	ErrNoDependency = sched.ErrNoDependency
	// ErrNoAgents: a fan-out selects no agent.
	ErrNoAgents = sched.ErrNoAgents
	// ErrNoSchedule: no schedule of that name.
	ErrNoSchedule = sched.ErrNoSchedule
	// ErrScheduleExists: a schedule of that name exists already.
	ErrScheduleExists = sched.ErrScheduleExists
	// ErrFinished: the job already reached a final state.
	ErrFinished = sched.ErrFinished
	// ErrNotCancellable: the job was submitted with cancellable=false
	// and is running.
	ErrNotCancellable = sched.ErrNotCancellable
	// ErrShuttingDown: the controller is stopping and takes no more
	// changes.
	ErrShuttingDown = sched.ErrShuttingDown
	// ErrDiskFull: the controller stopped while a write waited for disk
	// space; the changes it held were not stored.
	ErrDiskFull = sched.ErrDiskFull
	// ErrDiverged: the store refused a job transition or an output chunk
	// the scheduler had already counted as done, so its memory and the
	// store disagree; the controller stops, and a restart loads the
	// store's truth. It means a bug (or a second writer), never load.
	ErrDiverged = sched.ErrDiverged
)
