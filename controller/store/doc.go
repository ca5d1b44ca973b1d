// Package store is the controller's durable state: jobs, their queue,
// delay, state and finished indexes, event history, captured output and
// idempotency keys, and the security records (certificate revocations,
// API tokens, the audit log), in one Pebble database. It is the only
// package that imports Pebble; callers declare the small interface they
// need.
//
// Every change is a Command, and ApplyNoWait (Apply waits as well) is
// the one function that writes: it applies a sequence of commands, in
// order, as one atomic Pebble batch. The command types (command.go) are
// a job Transition (a new version of the job with one event, and
// optionally an audit entry), an Output chunk, API tokens, revocations,
// join tokens (create, use, delete, prune), audit entries (append,
// prune), PruneJobs, and SetApplied and SetConfiguration (applied.go: a
// replicated log's applied index and membership, see "Rounds on the
// wire"). For a cluster's output channel (replica.go): TruncateLog (a
// round that ends an attempt cuts the job's log at its LogBytes, and
// queues the job for an output repair on this node), ReplicaOutput
// (node-local, never in a round: a chunk that came on the channel,
// written only once its attempt is in the store and never past an
// ended attempt's end) and RepairDone (node-local: the job's repair is
// done, PendingRepairs lists those that are not), with SyncOutput, an
// fsync even in a NoSync store. A command carries
// everything that varies — IDs, times, backoff delays, the output's
// bytes — and applying it reads only the store and the command, so the
// same commands applied to two stores holding the same data leave them
// byte-identical, results included: this is the seam a replicated log
// can sit behind (controller/doc.go).
//
// Applying a command decides its Result from the state the batch has
// reached: a Transition reads the job's current record (never a copy
// its maker carried along), derives the index keys that record occupies
// and replaces them with those of the new version, so the queue, delay,
// active, state and finished indexes can never disagree with the
// records; a create whose idempotency key is taken, a use of a used-up
// join token, a delete of a missing token change nothing and say so in
// their Result. Batches are applied one at a time, and a command sees
// what every earlier one wrote, in its own batch or an earlier one. A
// malformed command (ErrInvalid) refuses its whole batch before
// anything is written.
//
// Reading a job's current record would cost a point read per
// transition; instead apply keeps, for every unfinished job it wrote
// since Open, the few fields its index keys and event count derive from
// (head), which is exactly what the store holds for it, and reads the
// record only for a job it has not seen since Open (after a restart) or
// a finished one. A create's ID above every ID stored needs no read
// either.
//
// ApplyNoWait returns once the batch is in the WAL and the memtable,
// without waiting for its fsync; Pending.Wait waits for it. Batches
// enter the WAL in call order, so one writer (the controller's
// committer) can keep several syncing at once, and a batch whose Wait
// returned nil implies every earlier one is durable. A batch of no
// commands still writes a WAL record: its Wait is a barrier.
//
// Readers see a batch once it is in the memtable, before its fsync ends
// (Pebble publishes it to readers then): a crash can lose a state a
// reader saw but that no writer was told is durable. Whoever reports
// durability to the outside world waits for its own Apply or Wait (or
// a later one's) instead of inferring it from a read.
//
// Pebble compacts L0 at 8 sublevels instead of its default 4 (Open):
// transitions rewrite job records across the whole "j" range, so each
// L0 compaction rewrites most of the base level, and fewer, larger ones
// cost less CPU, for a deeper L0 on reads.
//
// Job and Event records are JSON; codec.go encodes them by hand, byte for
// byte as encoding/json would. Job records are decoded by a hand-written
// decoder for the JSON encoding/json writes (jobdecode.go) where many are
// read at once (Active) and where apply reads one; anything it does not
// take it hands to encoding/json, so the result is always what
// encoding/json gives. Get, List and Events decode with encoding/json.
// The security records are encoding/json both ways.
//
// # Key layout
//
// Keys start with one prefix byte. Integers are fixed-width big-endian so
// that byte order equals numeric order; times are Unix nanoseconds as
// uint64 (the zero time and times before 1970 encode as 0).
//
//	key                                          value
//	"v"                                          schema version, uint32
//	"j" id(8)                                    Job as JSON
//	"q" (255-priority)(1) queuedAt(8) id(8)      empty: queue index, Queued jobs in
//	                                             dispatch order (priority desc, FIFO, ID)
//	"d" notBefore(8) id(8)                       empty: delay index, Waiting jobs
//	"a" id(8)                                    empty: Dispatched and Running jobs
//	"s" state(1) id(8)                           empty: state index, every job under the
//	                                             code of its state (queued 1, waiting 2,
//	                                             dispatched 3, running 4, completed 5,
//	                                             failed 6, timeout 7, cancelled 8,
//	                                             blocked 9)
//	"f" finishedAt(8) id(8)                      empty: finished index, jobs in a terminal
//	                                             state in finish order
//	"e" id(8) seq(4)                             Event as JSON; seq counts from 0
//	"l" id(8) offset(8) 1                        stream(1) + time(8) + output bytes starting
//	                                             at offset; time: Unix nanoseconds the
//	                                             controller received the chunk (0: unknown)
//	"l" id(8) offset(8)                          stream(1) + output bytes: a chunk stored by
//	                                             schema 2, read as it is (no time)
//	"k" idempotency key (raw bytes)              job id(8)
//	"r" revocation ID                            Revocation as JSON; the ID is
//	                                             "serial:HEX" or "name:ROLE:NAME"
//	"t" token ID                                 Token as JSON (SHA-256 of the
//	                                             secret, never the secret)
//	"u" id(8)                                    AuditEntry as JSON; id increases and
//	                                             is at least the entry's Unix nanoseconds
//	"n" SHA-256 of the secret(32)                JoinToken as JSON (uses left, expiry,
//	                                             labels, name prefix; never the secret);
//	                                             its ID is the hex of the first 8 bytes
//	"p" name                                     Schedule as JSON (issue 17): timing,
//	                                             policies, job template, next occurrence
//	"o" delivery ID                              Delivery as JSON: a webhook notification
//	                                             waiting in the outbox (tries, next try)
//	"g" agent name                               Agent as JSON: an agent seen, for
//	                                             fan-out to agents not connected
//	"w"                                          the webhook signing secret (raw bytes);
//	                                             the first SetNotifySecret wins
//	"zi"                                         index(8) term(8): the last entry of a
//	                                             replicated log applied (SetApplied);
//	                                             absent in a single controller's store
//	"y" id(8)                                    At(8): the job's output below At is final
//	                                             and this node has not yet checked it for
//	                                             holes (output repair queue, node-local;
//	                                             TruncateLog, RepairDone, PruneJobs)
//	"zc"                                         index(8) configuration: the replicated
//	                                             log's membership as the log encodes it,
//	                                             and the index of the entry that set it
//	                                             (SetConfiguration); absent in a single
//	                                             controller's store
//	"zo"                                         1: the cluster sends output on the output
//	                                             channel, for good (UseOutputChannel)
//
// The "c" prefix is retired: schema 3 kept the controller's secrets
// there, and Open moves them out (below). No other prefix may reuse it.
//
// Node-local state is not in Pebble, with one exception: the keys
// above are what commands change and what a replica of the store would
// hold, while the controller's own secrets (Secret: the QUIC
// stateless-reset key) belong to one node. The exception is the output
// repair queue, "y": TruncateLog writes it in the round's batch, the
// same on every node, and each node's repair removes it on its own
// (RepairDone), so replicas differ there; Dump leaves it out. It is in
// Pebble so that it is written atomically with the round and travels in
// a checkpoint: a node that installs a snapshot repairs what the node it
// came from had not. The secrets are files under node/ in the data
// directory (mode 0600; Pebble ignores files it did not name), written
// once through a synced temporary file and a rename.
//
// Priority is clamped to 0..255 in the queue key. A job's index keys are
// derived from its record (State, Priority, QueuedAt, NotBefore,
// FinishedAt, ID), which is why a Transition reads the current record:
// it deletes the keys that record occupies. A job is in exactly one of
// "q", "d", "a" unless it finished,
// always in "s", and in "f" once it finished. State codes are only added,
// never reused. ReadLog finds the chunk containing an offset with SeekLT
// on "l" id (offset+1): a chunk key with the format byte sorts right
// after the key of the same offset without one, so both forms of "l"
// order by offset and mix freely in one log (a job that was running
// across the upgrade). The length of the key tells the forms apart,
// never the value's bytes; a key of any other length or format byte is
// malformed, an error rather than a misread.
//
// A job's log is the concatenation of its attempts' output; where each
// attempt begins is its Attempt.LogStart in the job record (and it ends
// where the next begins, or at LogStart+OutputBytes), so attempt
// boundaries need no keys of their own.
//
// # Rounds on the wire
//
// A replicated log carries each round of commands as one entry, in
// bytes: EncodeRound makes them, DecodeRound reads them (round.go).
//
//	round := 'J' | format 1 | count uvarint | CRC-32C of body (4, big-endian) | body
//	body  := count × ( type (1) | len uvarint | command bytes )
//	type  := command type number (bits 0-6) | bit 7 "ignorable if unknown"
//
// Type numbers: 1 Transition, 2 Output, 3 PutToken, 4 DeleteToken,
// 5 PutRevocation, 6 DeleteRevocation, 7 CreateJoinToken,
// 8 UseJoinToken, 9 DeleteJoinToken, 10 PruneJoinTokens, 11 AppendAudit,
// 12 PruneAudit, 13 PruneJobs, 14 PutSchedule, 15 DeleteSchedule,
// 16 PutDelivery, 17 DeleteDelivery, 18 PutAgent, 19 DeleteAgent,
// 20 SetNotifySecret, 21 AppendEvent, 22 TruncateLog, 23 UseOutputChannel;
// 0 is none. Numbers are only added, never
// reused or renumbered, whatever happens to a command later. Command
// bytes: a Transition is the job record's JSON and the event's JSON, each
// after its length (uvarint), then 0, or 1 and the audit entry's JSON to
// the end; an Output is job, offset (uvarints), stream (1), time (Unix
// nanoseconds as the store keeps them, uvarint, 0 for none) and the data
// to the end; PruneJobs is a count and the IDs (uvarints); the others
// are encoding/json of the command struct. The encoding is canonical:
// what decodes re-encodes to a fixed point (FuzzDecodeRound).
//
// DecodeRound refuses (ErrBadRound) anything EncodeRound would not have
// written — header, checksum, lengths, trailing bytes, a command that does
// not decode or that Apply would refuse as malformed — and never panics.
// A type it does not know is skipped when bit 7 is set (an optional
// command of a newer release, for rolling upgrades) and otherwise fails
// with ErrUnknownCommand: a node must stop rather than apply a round
// partly. SetApplied (and SetConfiguration, ReplicaOutput and RepairDone) has no number: only the applier of an entry knows
// its index, and writes it with the entry's commands in one batch (the
// "zi" key), so the index never disagrees with what the store holds.
// Checkpoint copies the store (a Pebble checkpoint, WAL synced first)
// for snapshots of the replicated state and a single controller's
// backups (package snapshot). Lock takes the data directory's lock, the
// one Open holds, without opening the store: a restore holds it while
// it replaces the directory.
//
// With Options.NoSync, Apply does not fsync: a crash may lose the
// newest batches, "zi" with them. That is what a replicated store wants
// (its log is the write-ahead log: the lost entries apply again), and
// nothing else may use it outside tests and benchmarks.
//
// # Listing and retention
//
// List walks "j" backwards (newest first), or "s" state backwards when a
// state is asked for, so filtering by state reads only that state's jobs.
// Label filters and a Match function are applied to the records read; one
// call examines at most DefaultListScan records and returns a cursor to
// continue from.
//
// Prune walks "f" from the oldest finish on and hands the jobs it
// chooses, up to DefaultPruneBatch at a time, to a PruneJobs command (the
// caller's writer applies it: the controller's committer). A fan-out's
// children go with their parent, never before it: Prune reads each
// candidate's record, passes over a child whose parent is still stored,
// and names a parent's children in the parent's command. PruneJobs
// removes each job that is stored and finished when it applies: its
// record, index keys and idempotency key with point deletes and its "e"
// and "l" ranges with one range deletion each. A finished job without
// FinishedAt sorts first. Open counts "f" once (a key-only scan, in the
// background: see Startup) so Prune knows how many finished jobs exist
// without scanning; apply keeps that count.
//
// StateCounts (counts.go) says how many jobs are in each state. Nothing
// is counted until its first call, which counts "s" in a snapshot (keys
// only); from then on Apply and Prune add their changes, under a lock
// that puts every batch either in that snapshot or among the changes
// added, never both.
//
// # Startup
//
// Open replays Pebble's WAL and reads the highest "j" key (Last, one
// seek) for NextID. Counting "f" for FinishedJobs is a key-only scan of
// every finished job, so Open starts it in the background on a snapshot
// taken before any write, and apply's changes add to it; FinishedJobs
// and Prune wait for the count, Close waits for it to end.
//
// Active, which the controller calls once at start to rebuild its queue,
// does not look each job up from its index entry: it scans "q", "d" and
// "a" for keys only, collecting the IDs in the order it returns them,
// sorts the IDs and reads the records with one forward iterator over "j"
// (stepping with Next over short gaps, seeking over longer ones: a queue
// filled by submissions is mostly one contiguous run of "j"), and decodes
// them on GOMAXPROCS goroutines into their places. Records are decoded by
// a hand-written decoder for the JSON that encoding/json writes
// (jobdecode.go), which hands anything else — an unknown field from a
// newer release, a key in another case, null, a surrogate escape — to
// encoding/json, so the result is always what encoding/json gives; short
// strings repeated across records (names, commands, agents) share
// memory. Everything is read from one snapshot; an index entry whose
// record is in another state is skipped with a warning, and one without a
// record fails Active.
//
// The scheduler keeps every job Active returns in memory, so Job's size
// is most of the controller's memory per queued job: Job is kept in Go's
// 384-byte size class, its rarely set orchestration fields (fan-out,
// dependencies, schedule, webhooks) behind one pointer, *Orchestration,
// nil on an ordinary job (the layout note on Job; TestJobSize).
//
// # Security records
//
// Revocations and tokens are few; the controller loads them all at start
// (Revocations, Tokens) and checks them in memory. They, audit entries
// and join tokens are written by their commands like everything else; a
// submission's audit entry rides in the Transition that creates the job,
// so the entry is exactly as durable as the job. PruneAudit drops the
// old entries with one range deletion.
//
// Join tokens (enroll.go) are read by hash, one point read per
// enrollment. A UseJoinToken takes a use in apply order, so concurrent
// enrollments never take more uses than a token has, and a refused use
// (unknown, expired, used up) writes nothing.
//
// # Schema version
//
// Besides ApplyNoWait, only Open writes: the schema version and the move
// of retired keys, both about this node's directory rather than changes
// a replica would apply.
//
// Open writes SchemaVersion under "v" in an empty database and refuses,
// with ErrSchema, a database holding another version or data without a
// version. Bump SchemaVersion when existing data would be misread: a
// prefix changes meaning, a key or value encoding changes, an index is
// added that old data lacks (unless Open backfills it), or a JSON field
// changes type or meaning. Adding optional JSON fields to Job or Event, or
// a new prefix that old data simply does not have yet, does not need a
// bump. Neither does leaving out a field whose absence decodes to the
// value it held: Job's and Attempt's optional times are tagged omitzero,
// so a zero time is not written, and an absent time and an old record's
// "0001-01-01T00:00:00Z" both decode to the zero time, in this release
// and in earlier ones.
//
// History:
//
//	1  first layout
//	2  added the "s" state index and the "f" finished index; a version 1
//	   directory is refused (no release wrote one, so there is no
//	   migration)
//	3  "l" chunks keep the time the controller received them, in a key
//	   with a format byte (1) and the time before the output. A version 2
//	   directory is upgraded in place by Open, which rewrites "v" alone:
//	   its chunks keep their form and read as before, without a time,
//	   and new chunks are written in the new one. The bump is for the
//	   other direction: a version 2 release would read a new chunk's
//	   time as output, so it must refuse the directory. Job records also
//	   gained "output" and "tty" (optional fields, no bump of their own).
//
// Still version 3: the "c" keys (the controller's secrets) moved to files
// under node/. Open moves any it finds, the bytes unchanged, and deletes
// them. No bump: nothing is misread either way — a release that still
// keeps secrets under "c" finds none and makes a new one (its QUIC
// resets then do not match the previous run's sessions, nothing more),
// and this one moves that key out again (a file already there wins).
package store
