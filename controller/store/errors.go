package store

import "errors"

// Errors returned by the store. Every exported operation wraps them once
// with a "store: <operation>: " prefix; check them with errors.Is.
var (
	// ErrNotFound means the job (or its history) is not in the store.
	ErrNotFound = errors.New("not found")
	// ErrSchema means the data directory was written with a schema version
	// this build cannot read (or holds data without a schema version).
	ErrSchema = errors.New("unsupported schema version")
	// ErrClosed means the Store was used after Close.
	ErrClosed = errors.New("store is closed")
	// ErrExists means a create found its record taken: an idempotency
	// key another job holds (Result.Owner names it), a join token with
	// the same hash.
	ErrExists = errors.New("already exists")
	// ErrConflict means a Transition does not follow the job's stored
	// record: a create of a job that exists, or an update whose event
	// does not come next in the stored history. The command's maker
	// had a wrong idea of the store.
	ErrConflict = errors.New("conflicts with the stored record")
	// ErrSameRound (with ErrConflict) means an AppendEvent met a job
	// that an earlier command of its round changed: the round cannot
	// read that record yet. The same command in a later round applies
	// (two deliveries of one job's notifications landing together).
	ErrSameRound = errors.New("changed in the same round")
	// ErrInvalid means the caller passed an argument the store refuses,
	// such as a Transition without a job or an empty log chunk.
	ErrInvalid = errors.New("invalid argument")
	// ErrLocked means another process has the data directory open.
	ErrLocked = errors.New("the data directory is in use")
	// ErrBadRound means bytes given to DecodeRound are not a round
	// EncodeRound made: wrong header, checksum, lengths, or a command
	// that does not decode or is malformed.
	ErrBadRound = errors.New("malformed round")
	// ErrUnknownCommand means a round holds a command type this build
	// does not know and may not skip: it was written by a newer release.
	ErrUnknownCommand = errors.New("unknown command type")
)
