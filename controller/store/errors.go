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
	// ErrExists means an idempotency key is already taken by another job,
	// or a create for it is being committed concurrently. Look the key up
	// again with IdempotencyKey.
	ErrExists = errors.New("idempotency key already used")
	// ErrInvalid means the caller passed an argument the store refuses,
	// such as an Update without Next or an empty log chunk.
	ErrInvalid = errors.New("invalid argument")
	// ErrLocked means another process has the data directory open.
	ErrLocked = errors.New("the data directory is in use")
)
