package api

import "time"

// AgentInfo describes a connected agent: an element of GET /agents, and
// the answer of GET /agents/:name and of a drain or undrain.
type AgentInfo struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Slots       int               `json:"slots"`
	Running     int               `json:"running"`
	Credits     int               `json:"free"`
	Draining    bool              `json:"draining"`
	DrainedBy   string            `json:"drained_by,omitempty"` // "agent" (it is stopping) or "operator" (POST /agents/:name/drain)
	Transport   string            `json:"transport"`
	Address     string            `json:"address"`
	Version     string            `json:"version"`
	ConnectedAt time.Time         `json:"connected_at"`
	LastSeen    time.Time         `json:"last_heartbeat"`
	Jobs        []uint64          `json:"jobs"`
}

// WhoAmI is the answer of GET /whoami: the identity a request was
// admitted with.
type WhoAmI struct {
	Name string `json:"name"` // certificate common name or token name
	Role string `json:"role"` // operator or viewer
	Via  string `json:"via"`  // certificate or token
}

// StatsView is the answer of GET /stats.
type StatsView struct {
	Jobs       map[string]int `json:"jobs"`        // stored jobs by state (the State constants)
	Total      int            `json:"total"`       // stored jobs
	QueueDepth map[string]int `json:"queue_depth"` // queued jobs by priority: low, mid, high, other
	Agents     AgentStats     `json:"agents"`
	Followers  int            `json:"followers"` // WebSocket log followers
	Interval   float64        `json:"interval"`  // seconds between history samples
	History    []StatsSample  `json:"history"`   // oldest first; the last one is now
}

// AgentStats sums up the connected agents.
type AgentStats struct {
	Connected int `json:"connected"`
	Draining  int `json:"draining"`
	Slots     int `json:"slots"`
	SlotsUsed int `json:"slots_used"`
	SlotsFree int `json:"slots_free"` // slots that could take a job now
}

// StatsSample is one point of the history. The counts of finished jobs
// are totals since the controller started (counters): the rate between
// two samples is the throughput.
type StatsSample struct {
	Time       time.Time `json:"time"`
	Queued     int       `json:"queued"`
	Waiting    int       `json:"waiting"`
	Dispatched int       `json:"dispatched"`
	Running    int       `json:"running"`
	Blocked    int       `json:"blocked"`
	SlotsUsed  int       `json:"slots_used"`
	Slots      int       `json:"slots"`
	Submitted  uint64    `json:"submitted"`
	Completed  uint64    `json:"completed"`
	Failed     uint64    `json:"failed"`
	Timeout    uint64    `json:"timeout"`
	Cancelled  uint64    `json:"cancelled"`
}

// Error is the body of every error answer. Field names the request
// field (or query parameter) at fault; Status and JobID are set by the
// answers about one job (its state, for a 409).
type Error struct {
	Error  string `json:"error"`
	Field  string `json:"field,omitempty"`
	Status string `json:"status,omitempty"`
	JobID  uint64 `json:"job_id,omitempty"`
}

// Health is the answer of GET /health.
type Health struct {
	Status string `json:"status"` // "ok"
}

// Member is one controller of the cluster: an element of GET
// /operator/members. A single controller answers with itself alone, as
// leader.
type Member struct {
	ID          string `json:"id"`                     // its certificate's name
	ClusterAddr string `json:"cluster_addr,omitempty"` // raft and controller-to-controller traffic
	APIAddr     string `json:"api_addr,omitempty"`
	AgentAddr   string `json:"agent_addr,omitempty"`
	// Role is leader, follower or candidate as the member itself says,
	// or unreachable when it did not answer.
	Role  string `json:"role"`
	Voter bool   `json:"voter"`
	Term  uint64 `json:"term,omitempty"`
	// AppliedIndex is the last raft entry its store applied; LastIndex
	// the last in its log. Behind the leader's: it is catching up.
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	// LastContactSeconds is how long ago a follower last heard from the
	// leader (absent for the leader itself).
	LastContactSeconds *float64 `json:"last_contact_seconds,omitempty"`
	// WatchSessions is how many agents attached to the leader watch
	// this member for a change of leader (PROTOCOL.md §2.4); usually
	// spread over the followers.
	WatchSessions int `json:"watch_sessions,omitempty"`
	// Output is how the member would send agents' output to the others
	// if it led: "channel" (the default) or "raft" (-output-channel=false,
	// for measurements, and only while the cluster never used the
	// channel: after that every member says "channel").
	Output string `json:"output,omitempty"`
	// Error says why an unreachable member did not answer.
	Error string `json:"error,omitempty"`
}

// SnapshotRestored answers POST /operator/snapshot/restore: a cluster
// took the snapshot in place of its store.
type SnapshotRestored struct {
	// Bytes and SHA256 describe the stream received and checked.
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// Index is the raft index the cluster gave the restored state (past
	// its log's end before the restore); SnapshotIndex the raft index
	// stored in the file (0: a single controller's snapshot).
	Index         uint64 `json:"index"`
	SnapshotIndex uint64 `json:"snapshot_index"`
	// Jobs counts the restored jobs by state.
	Jobs map[string]int `json:"jobs"`
	// Leader is the node that restored it and leads afterwards.
	Leader string `json:"leader"`
}
