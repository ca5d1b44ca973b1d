package protocol

import "time"

// Version is the wire protocol version spoken by this build. It is
// negotiated twice: in the TLS ALPN string (ALPN) and in Hello/Welcome.
//
// History:
//
//	1 — first version: hello/welcome, credits, dispatch, cancel,
//	    heartbeat, per-job streams (job open, started, log chunk,
//	    log ack, finished, finish ack), error, drain, status
//	    request/reply. Later, still 1, as optional last fields
//	    (PROTOCOL.md §7): Heartbeat.Ended; Dispatch.Output and
//	    Dispatch.TTY. Then, for several controllers, still 1:
//	    Hello.Features, Welcome.Members and Welcome.Term,
//	    Dispatch.Term, Cancel.Term (optional last fields), and the
//	    Redirect message, which a controller sends only to an agent
//	    whose Hello announced FeatureRedirect. Then, still 1:
//	    Welcome.Features and Finished.Credit (optional last fields),
//	    for FeatureCreditWithResult. Then, still 1: FeatureLeaderWatch
//	    with WatchLeader, and FeatureStreamReuse (a job stream carries
//	    one attempt after another).
const Version = 1

// ALPN is the TLS application protocol name for this protocol version.
// A peer that offers only other versions fails the TLS handshake.
const ALPN = "jobsuite/1"

// Type identifies a message on the wire. Numbers are only ever added,
// never reused. Types at or above OptionalBase are optional: a receiver
// that does not know one skips it. An unknown type below OptionalBase
// is an error (ErrUnknownType).
type Type uint8

// OptionalBase is the first optional message type number.
const OptionalBase Type = 128

const (
	TypeHello         Type = 1  // agent → controller, first frame on the control stream
	TypeWelcome       Type = 2  // controller → agent, answer to Hello
	TypeCredit        Type = 3  // agent → controller, grants more free slots
	TypeDispatch      Type = 4  // controller → agent, run one attempt of a job
	TypeCancel        Type = 5  // controller → agent, stop one attempt
	TypeHeartbeat     Type = 6  // agent → controller, renews leases
	TypeJobOpen       Type = 7  // agent → controller, first frame on a job stream
	TypeStarted       Type = 8  // agent → controller, the process is running
	TypeLogChunk      Type = 9  // agent → controller, output bytes at an offset
	TypeLogAck        Type = 10 // controller → agent, output stored below an offset
	TypeFinished      Type = 11 // agent → controller, the attempt ended
	TypeFinishAck     Type = 12 // controller → agent, the result is stored
	TypeError         Type = 13 // either way, fatal; the sender closes after it
	TypeDrain         Type = 14 // agent → controller, send me no more jobs
	TypeStatusRequest Type = 15 // controller → agent, how is this attempt doing?
	TypeStatusReply   Type = 16 // agent → controller, answer to StatusRequest
	TypeRedirect      Type = 17 // controller → agent, I am not the leader: dial this one (only after FeatureRedirect)

	// lastType is the highest required type this build knows.
	lastType = TypeRedirect

	// Optional types: a receiver that does not know one skips it.
	TypeWatchLeader Type = 128 // agent → controller, first frame of a watch session: tell me when the leader changes

	// lastOptional is the highest optional type this build knows.
	lastOptional = TypeWatchLeader
)

// Message is implemented by every message type.
type Message interface {
	Type() Type
}

// AttemptRef names one attempt of one job.
type AttemptRef struct {
	JobID   uint64
	Attempt uint32
}

// Hello opens the control stream. Running lists the attempts the agent
// is still running (non-empty after a reconnect). Features says which
// additions to version 1 the agent understands; appended after the
// first agents, absent (0) from older ones.
type Hello struct {
	Version      uint32
	Name         string
	Labels       map[string]string
	Slots        uint32
	AgentVersion string
	Running      []AttemptRef
	Features     Features
}

// Features is a set of bits an agent announces in Hello: additions to
// the protocol that a controller may use with this agent only. Bits are
// only ever added, never reused; a controller ignores bits it does not
// know.
type Features uint64

const (
	// FeatureRedirect: the agent follows a Redirect (it dials the
	// leader it names, or another controller). A controller sends
	// Redirect only to an agent that announced it; an older agent gets
	// Error{CodeShutdown} instead and retries its one address.
	FeatureRedirect Features = 1 << 0
	// FeatureEarlyRelease: the agent grants an attempt's slot (Credit)
	// when its process ends, before the result's FinishAck, and lists
	// such attempts in Heartbeat.Ended. Every agent since Heartbeat.Ended
	// does; the bit says so. A controller may then take a little longer
	// to acknowledge a result (to share a sync with others), since the
	// agent waits for no FinishAck to run its next job.
	FeatureEarlyRelease Features = 1 << 1
	// FeatureCreditWithResult: an attempt's slot returns with its
	// result (Finished.Credit) instead of a Credit on the control
	// stream, when its process ends during the session. It needs the
	// controller's consent: the agent uses it only on a session whose
	// Welcome.Features has the bit (PROTOCOL.md §2.1).
	FeatureCreditWithResult Features = 1 << 2
	// FeatureLeaderWatch: the agent keeps a watch session (WatchLeader)
	// with another controller of its cluster while it is attached to the
	// leader, and leaves the leader as soon as that controller says
	// another leader took over — instead of waiting for its session to a
	// dead leader to time out (QUIC learns nothing from a killed
	// process). A leader answers the bit in Welcome.Features when it is
	// one of a cluster whose controllers serve watch sessions; the agent
	// watches only then (PROTOCOL.md §2.4).
	FeatureLeaderWatch Features = 1 << 3
	// FeatureStreamReuse: a job stream whose attempt ended with a
	// FinishAck stays open and may carry the agent's next attempt, which
	// starts with its own JobOpen (PROTOCOL.md §2.2). Without it every
	// attempt opens a stream and both sides close it after the
	// FinishAck, which costs QUIC a stream's credit update, a reset or
	// close, and their acknowledgements: four packets per job more on a
	// lightly loaded link. It needs the controller's consent
	// (Welcome.Features), like FeatureCreditWithResult.
	FeatureStreamReuse Features = 1 << 4
)

// Has reports whether every bit of g is in f.
func (f Features) Has(g Features) bool { return f&g == g }

// Welcome accepts a Hello. The agent sends a Heartbeat every
// HeartbeatInterval; the controller considers it lost after LeaseTTL
// without one.
//
// Members and Term were appended for several controllers (absent: nil
// and 0, which is what a single controller sends). Members lists the
// agent address of every controller of the cluster, the leader's
// included; the agent adds them to the addresses it dials. Term is the
// leadership term of the controller that welcomes the agent: an agent
// that has seen a higher term refuses the session, and drops a
// Dispatch or Cancel of a lower term (PROTOCOL.md §2.4).
type Welcome struct {
	Version           uint32
	ControllerID      string
	HeartbeatInterval time.Duration
	LeaseTTL          time.Duration
	Members           []string
	Term              uint64
	// Features are the bits of the agent's Hello.Features that this
	// controller applies on the session, for those that need its
	// consent (FeatureCreditWithResult). Appended after the first
	// controllers: absent, it is 0.
	Features Features
}

// Credit grants the controller Slots more dispatches. Credits add up;
// each Dispatch consumes one.
type Credit struct {
	Slots uint32
}

// Dispatch asks the agent to run one attempt of a job. Command is the
// full shell command (params already appended). Env holds KEY=VALUE
// pairs added to the agent's environment. Timeout 0 means none.
// KillGrace is how long to wait between SIGTERM and SIGKILL. MaxOutput
// caps the attempt's output as the controller stores it (0: no cap): the
// agent truncates there and ends the output with a marker line, as with
// its own cap.
//
// MaxOutput, Output and TTY were appended in version 1 after the first
// agents: absent (zero) from older controllers, which get no cap, the
// two pipes they always had (OutputSplit) and the agent's default about
// a terminal; older agents ignore them and run every job with two
// pipes, no terminal, no cap from the controller.
//
// Term, appended for several controllers, is the leadership term of
// the controller that sends it (0: a single controller, or one that
// does not say). An agent that has seen a higher term drops it.
type Dispatch struct {
	JobID       uint64
	Attempt     uint32
	Name        string
	Command     string
	Env         []string
	Dir         string
	Timeout     time.Duration
	KillGrace   time.Duration
	CaptureLogs bool
	MaxOutput   uint64
	Output      OutputMode
	TTY         TTYMode
	Term        uint64
}

// OutputMode says how an attempt's stdout and stderr are captured.
type OutputMode uint8

const (
	// OutputSplit: two pipes, chunks tagged Stdout or Stderr; the order
	// between the two is the order the agent read them, not the order
	// they were written. What agents did before Dispatch.Output; the
	// zero value, so a Dispatch without the field means it.
	OutputSplit OutputMode = 0
	// OutputOrdered: stdout and stderr are one pipe, so the log holds
	// the bytes exactly in write order; every chunk is tagged Stdout.
	// A receiver treats a value it does not know as OutputOrdered.
	OutputOrdered OutputMode = 1
)

// TTYMode says whether an attempt runs on a pseudo-terminal.
type TTYMode uint8

const (
	TTYDefault TTYMode = 0 // as the agent is configured (jobsuite agent -tty); also an unknown value
	TTYOn      TTYMode = 1 // on a pseudo-terminal: stdout and stderr are the terminal, one stream
	TTYOff     TTYMode = 2 // no terminal
)

// Cancel asks the agent to stop an attempt (kill its process group).
// Term is as Dispatch.Term (appended for several controllers; absent 0).
type Cancel struct {
	JobID   uint64
	Attempt uint32
	Reason  string
	Term    uint64
}

// Redirect tells the agent that this controller is not the leader of
// its cluster; it is sent instead of Welcome, or at any time in a
// session, and the controller closes the session after it. Leader is
// the leader's agent address (host:port), "" when no leader is known
// (an election is under way). Members lists the agent address of every
// controller this one knows. Sent only to an agent whose Hello
// announced FeatureRedirect.
type Redirect struct {
	Leader  string
	Members []string
}

// WatchLeader is the first frame of a watch session (an optional type:
// a controller from before it skips it, and closes the session when no
// Hello follows). The agent is attached to the controller at agent
// address Leader, leader of term Term, and asks this one, another
// controller of the cluster, to tell it when that changes: the
// controller answers Redirect naming the leader of a later term (itself,
// if it leads) as soon as it knows one, and nothing until then. A
// controller that is itself the leader of Term answers Error: the agent
// reached its own leader under another address. Name is the agent's
// name, as in Hello (it must match the certificate).
type WatchLeader struct {
	Version uint32
	Name    string
	Term    uint64
	Leader  string
}

// Heartbeat renews the leases of the listed attempts: Running lists
// every attempt the agent holds (as Hello.Running). Ended lists those of
// Running whose process has ended and whose slot the agent has already
// granted again (its Credit went out before this heartbeat): they hold a
// result waiting for its FinishAck, not a slot. Added in version 1 after
// the first agents; absent (nil) from older agents, which grant a slot
// only after the FinishAck.
type Heartbeat struct {
	Seq     uint64
	Running []AttemptRef
	Ended   []AttemptRef
}

// JobOpen is the first frame on a job stream: everything after it on
// that stream concerns this attempt. Offset is where the log resumes
// (0 for a fresh attempt).
type JobOpen struct {
	JobID   uint64
	Attempt uint32
	Offset  uint64
}

// Started says the attempt's process is running.
type Started struct {
	PID       uint32
	StartedAt time.Time
}

// Output stream of a log chunk.
type Stream uint8

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// LogChunk carries output bytes. Offset is the position of Data[0] in
// the attempt's combined output (stdout and stderr interleaved in the
// order the agent read them).
type LogChunk struct {
	Stream Stream
	Offset uint64
	Data   []byte
}

// LogAck says every output byte below Offset is stored.
type LogAck struct {
	Offset uint64
}

// Outcome is how an attempt ended.
type Outcome uint8

const (
	OutcomeCompleted Outcome = 1 // exit status 0
	OutcomeFailed    Outcome = 2 // non-zero exit, killed by a signal, or could not start
	OutcomeTimeout   Outcome = 3 // killed at its timeout
	OutcomeCancelled Outcome = 4 // killed on a Cancel
)

// Finished reports the end of an attempt. ExitCode is the process exit
// status, or 128+N when it was killed by signal N (Signal then names it,
// e.g. "SIGKILL"). Error explains a failure to start. LogBytes is the
// total output length, so the controller can tell it has every byte.
type Finished struct {
	Outcome   Outcome
	ExitCode  int32
	Signal    string
	Error     string
	Duration  time.Duration
	UserCPU   time.Duration
	SystemCPU time.Duration
	MaxRSS    uint64 // bytes
	LogBytes  uint64
	// Credit: this result returns the attempt's slot; no Credit was
	// sent for it (FeatureCreditWithResult). Appended after the first
	// agents: absent, it is false. It belongs to one session's frame,
	// never to a stored result (the agent's record leaves it out).
	Credit bool `json:"-"`
}

// FinishAck says the controller stored the Finished report.
type FinishAck struct{}

// Error is fatal: the sender closes the stream or session after it.
type Error struct {
	Code    uint16
	Message string
}

// Error codes.
const (
	CodeProtocol     uint16 = 1 // malformed or unexpected message
	CodeVersion      uint16 = 2 // unsupported protocol version
	CodeDuplicate    uint16 = 3 // an agent with this name is already connected
	CodeStaleAttempt uint16 = 4 // the attempt is not current (fencing)
	CodeShutdown     uint16 = 5 // the peer is going away
	CodeForbidden    uint16 = 6 // the certificate's role may not do this
	CodeStorageFull  uint16 = 7 // the controller cannot store output now (its disk is nearly full); try again later
)

// Drain tells the controller to dispatch nothing more to this agent
// (it is shutting down once its running attempts end). It has no fields.
type Drain struct{}

// StatusRequest asks the agent for the live state of an attempt. Seq
// pairs the reply with the request.
type StatusRequest struct {
	Seq     uint64
	JobID   uint64
	Attempt uint32
}

// StatusReply is the live state of an attempt. Found is false when the
// agent does not run it. CPU and RSS cover the attempt's whole process
// group; LastLine is the last complete line of output (at most 1 KiB).
type StatusReply struct {
	Seq         uint64
	JobID       uint64
	Attempt     uint32
	Found       bool
	PID         uint32
	Elapsed     time.Duration
	UserCPU     time.Duration
	SystemCPU   time.Duration
	RSS         uint64 // bytes
	Processes   uint32
	OutputBytes uint64
	LastLine    string
}

func (*Hello) Type() Type         { return TypeHello }
func (*Welcome) Type() Type       { return TypeWelcome }
func (*Credit) Type() Type        { return TypeCredit }
func (*Dispatch) Type() Type      { return TypeDispatch }
func (*Cancel) Type() Type        { return TypeCancel }
func (*Heartbeat) Type() Type     { return TypeHeartbeat }
func (*JobOpen) Type() Type       { return TypeJobOpen }
func (*Started) Type() Type       { return TypeStarted }
func (*LogChunk) Type() Type      { return TypeLogChunk }
func (*LogAck) Type() Type        { return TypeLogAck }
func (*Finished) Type() Type      { return TypeFinished }
func (*FinishAck) Type() Type     { return TypeFinishAck }
func (*Error) Type() Type         { return TypeError }
func (*Drain) Type() Type         { return TypeDrain }
func (*StatusRequest) Type() Type { return TypeStatusRequest }
func (*StatusReply) Type() Type   { return TypeStatusReply }
func (*Redirect) Type() Type      { return TypeRedirect }
func (*WatchLeader) Type() Type   { return TypeWatchLeader }
