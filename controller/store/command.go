package store

import (
	"fmt"
	"math"
	"time"
)

// Command is one durable change to the store, and the only way to make
// one: Apply (ApplyNoWait) writes a sequence of commands as one atomic
// batch, in order, and decides each command's Result from the state the
// batch has reached when it comes to it.
//
// A command is self-contained and deterministic. Everything that varies
// between nodes or runs — job IDs, times, backoff delays, audit IDs, the
// bytes of output — is chosen by whoever makes the command and carried
// in it; applying it reads only the store (what earlier commands of the
// same batch wrote included) and the command. So the same sequence of
// commands applied to two stores that hold the same data leaves them
// byte-identical, results included. Nothing is taken on trust from the
// caller's memory: a Transition does not say what the job's record was,
// apply reads it; a create whose idempotency key is already taken is
// refused in apply order, whatever the caller believed.
//
// The command types are the exported structs of this file; a command
// must not be modified once it is handed to Apply (the store may keep
// what it points to, as a Transition's Job).
type Command interface {
	// check validates the command by itself, before anything is written:
	// a malformed command refuses the whole batch (ErrInvalid).
	check() error
	// apply adds the command's writes to r and returns its result. An
	// error is a failure of the store itself (a read or an encoding
	// failed) and fails the whole batch.
	apply(r *round) (Result, error)
}

// Result is what applying one command decided. Err is nil when the
// command was applied; otherwise it says why it changed nothing, with one
// of the errors listed on each command type (wrapped, check with
// errors.Is). Results are as deterministic as the writes.
type Result struct {
	Err error
	// Owner is the job holding the idempotency key a create was refused
	// for (Err is ErrExists).
	Owner uint64
	// JoinToken is the token a UseJoinToken used (as it is after the
	// use) or found expired or used up, or the token a DeleteJoinToken
	// deleted (the first in key order when the ID named several); nil
	// for other commands.
	JoinToken *JoinToken
	// N is how many records a prune removed.
	N int
}

// Transition writes a new version of a job with one event of its
// history and, if Audit is set, an audit entry in the same batch (a
// submission's, so that the entry is exactly as durable as the job).
//
// The event's place in the history (Event.Seq) is the job's Events count
// before it: a transition whose Event.Seq is 0 creates the job, any
// other updates it. Make one with NewTransition, which numbers the
// event. Applying it reads the job's current record (apply keeps the
// current record of every unfinished job it wrote in memory, so this
// costs no read in the common case) and:
//   - refuses a create whose job exists (ErrConflict) or whose
//     Job.IdempotencyKey is taken (ErrExists, with Result.Owner), and an
//     update of a job that does not exist (ErrNotFound) or whose stored
//     record has not exactly Event.Seq events (ErrConflict);
//   - writes Job's record and the event (Event.State, if empty, is
//     Job.State), moves the job between the queue, delay, active, state
//     and finished indexes — deleting the keys the current record
//     occupies, writing those Job derives — and claims the idempotency
//     key of a create.
type Transition struct {
	Job   *Job
	Event Event
	Audit *AuditEntry // optional; its ID must be set
}

// NewTransition numbers ev as next's following event and returns the
// transition: ev.Seq becomes next.Events and next.Events grows by one.
// Call it once per version of a job, before next is shared.
func NewTransition(next *Job, ev Event) *Transition {
	ev.Seq = next.Events
	next.Events++
	return &Transition{Job: next, Event: ev}
}

// Output stores a chunk of a job's output at its offset (replacing a
// chunk stored at the same offset before, so a resend is harmless). It
// does not look at the job: the controller sends output only for
// attempts it holds current, and orders it before anything that ends
// them. Chunk.Time is stored with it.
type Output struct {
	Job   uint64
	Chunk Chunk
}

// PutToken stores an API token under its ID, replacing one stored there.
type PutToken struct{ Token Token }

// DeleteToken removes the API token with ID; ErrNotFound if there is none.
type DeleteToken struct{ ID string }

// PutRevocation stores a revocation under its ID (Revocation.ID),
// replacing one stored there.
type PutRevocation struct{ Revocation Revocation }

// DeleteRevocation removes the revocation with ID; ErrNotFound if there
// is none.
type DeleteRevocation struct{ ID string }

// CreateJoinToken stores a new join token; ErrExists if one with the same
// hash is stored.
type CreateJoinToken struct{ Token JoinToken }

// UseJoinToken takes one use of the join token whose secret hashes to
// Hash for the agent Agent: it leaves one use fewer and Agent added to
// Enrolled, and Result.JoinToken is the token after the use. A token that
// is unknown (ErrNotFound), expired at Now (ErrTokenExpired) or used up
// (ErrTokenUsedUp) is left as it is. Uses are taken in apply order, so
// two enrollments can never take more uses than a token has.
type UseJoinToken struct {
	Hash  []byte
	Now   time.Time
	Agent string
}

// DeleteJoinToken removes the join tokens whose ID (JoinToken.ID) is ID
// (two tokens sharing 64 bits of hash both go); ErrNotFound if there is
// none.
type DeleteJoinToken struct{ ID string }

// PruneJoinTokens removes the join tokens that expired before Before;
// Result.N counts them.
type PruneJoinTokens struct{ Before time.Time }

// AppendAudit stores an audit entry under its ID, which the caller makes
// strictly increasing (LastAuditID gives the start).
type AppendAudit struct{ Entry AuditEntry }

// PruneAudit removes the audit entries with an ID below Before in Unix
// nanoseconds: the entries older than Before (IDs are at least their
// time).
type PruneAudit struct{ Before time.Time }

// PruneJobs removes the finished jobs among IDs — a job's record, index
// entries, events, output and, if the job holds it, its idempotency key,
// so the key may be used again. A job that is not stored or not in a
// terminal state is left alone (an ID is not an order: the job is read
// when the command applies). Result.N counts the jobs removed. Prune
// chooses the IDs.
type PruneJobs struct{ IDs []uint64 }

func (t *Transition) check() error {
	switch {
	case t.Job == nil:
		return fmt.Errorf("%w: transition without a job", ErrInvalid)
	case t.Job.ID == 0:
		return fmt.Errorf("%w: job ID 0", ErrInvalid)
	case t.Job.Events != t.Event.Seq+1:
		return fmt.Errorf("%w: job %d: event %d of a record counting %d (make transitions with NewTransition)", ErrInvalid, t.Job.ID, t.Event.Seq, t.Job.Events)
	case t.Audit != nil && t.Audit.ID == 0:
		return fmt.Errorf("%w: job %d: audit entry ID 0", ErrInvalid, t.Job.ID)
	}
	return nil
}

func (o *Output) check() error {
	switch {
	case len(o.Chunk.Data) == 0:
		return fmt.Errorf("%w: job %d: empty chunk", ErrInvalid, o.Job)
	case o.Chunk.Offset > math.MaxUint64-uint64(len(o.Chunk.Data)):
		return fmt.Errorf("%w: job %d: offset %d overflows", ErrInvalid, o.Job, o.Chunk.Offset)
	}
	return nil
}

func (c *PutToken) check() error {
	if c.Token.ID == "" || len(c.Token.Hash) == 0 {
		return fmt.Errorf("%w: token ID and hash are required", ErrInvalid)
	}
	return nil
}

func (c *DeleteToken) check() error { return nil }

func (c *PutRevocation) check() error {
	if c.Revocation.Serial == "" && (c.Revocation.Role == "" || c.Revocation.Name == "") {
		return fmt.Errorf("%w: a revocation needs a serial, or a role and a name", ErrInvalid)
	}
	return nil
}

func (c *DeleteRevocation) check() error { return nil }

func (c *CreateJoinToken) check() error {
	t := &c.Token
	if len(t.Hash) < JoinTokenIDBytes || t.Uses <= 0 || t.UsesLeft < 0 || t.UsesLeft > t.Uses {
		return fmt.Errorf("%w: a join token needs a hash and 0 <= uses left <= uses > 0", ErrInvalid)
	}
	return nil
}

func (c *UseJoinToken) check() error    { return nil }
func (c *DeleteJoinToken) check() error { return nil }
func (c *PruneJoinTokens) check() error { return nil }
func (c *PruneAudit) check() error      { return nil }
func (c *PruneJobs) check() error       { return nil }
func (c *AppendAudit) check() error     { return auditCheck(&c.Entry) }
func auditCheck(e *AuditEntry) error {
	if e.ID == 0 {
		return fmt.Errorf("%w: audit entry ID 0", ErrInvalid)
	}
	return nil
}
