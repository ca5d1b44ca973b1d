package api

import "time"

// TokenRequest is the body of POST /tokens.
type TokenRequest struct {
	Role string   `json:"role"` // viewer or operator
	Name string   `json:"name"` // for humans and the audit log; default "token"
	TTL  *float64 `json:"ttl"`  // seconds; default 24 h, at most a year
}

// TokenView is an API token as the API shows it. Token, the secret, is
// only in the answer to POST /tokens: the controller keeps its hash.
type TokenView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Expired   bool      `json:"expired"`
	Token     string    `json:"token,omitempty"`
}

// JoinTokenRequest is the body of POST /agent-tokens; every field is
// optional.
type JoinTokenRequest struct {
	TTL        *float64          `json:"ttl"`         // seconds; default 1800, at most 7 days
	Uses       *int              `json:"uses"`        // enrollments allowed; default 1, at most 1000
	Labels     map[string]string `json:"labels"`      // labels the enrolled agents take
	NamePrefix string            `json:"name_prefix"` // enrolled names are PREFIX-…; default "agent"
}

// JoinTokenView is a join token as the API shows it. Token, CAPin and
// AgentPort are only in the answer to POST /agent-tokens: the controller
// keeps the token's hash, never the token.
type JoinTokenView struct {
	ID         string            `json:"id"`
	Uses       int               `json:"uses"`
	UsesLeft   int               `json:"uses_left"`
	Labels     map[string]string `json:"labels"`
	NamePrefix string            `json:"name_prefix"`
	CreatedBy  string            `json:"created_by"`
	CreatedAt  time.Time         `json:"created_at"`
	ExpiresAt  time.Time         `json:"expires_at"`
	Expired    bool              `json:"expired"`
	Enrolled   []string          `json:"enrolled"` // names of the agents it enrolled
	Token      string            `json:"token,omitempty"`
	CAPin      string            `json:"ca_pin,omitempty"`     // SHA-256 of the CA certificate, hex
	AgentPort  int               `json:"agent_port,omitempty"` // port of the agent listener
}

// EnrollRequest is the body of POST /enroll.
type EnrollRequest struct {
	Token string `json:"token"` // the join token, jsj_…
	// CSR is a PEM certificate signing request for the agent's ECDSA
	// P-256 key. Its CommonName, if any, is the name the agent asks for;
	// everything else in it is ignored.
	CSR string `json:"csr"`
}

// RenewRequest is the body of POST /enroll/renew.
type RenewRequest struct {
	CSR string `json:"csr"` // PEM CSR for the agent's new key; only the key is used
}

// CertificateView answers POST /enroll and POST /enroll/renew.
type CertificateView struct {
	Name        string            `json:"name"`
	Certificate string            `json:"certificate"` // PEM, role agent
	CA          string            `json:"ca"`          // PEM of the CA that signed it
	Serial      string            `json:"serial"`      // hex
	NotAfter    time.Time         `json:"not_after"`
	Labels      map[string]string `json:"labels,omitempty"` // the join token's labels (enrollment)
}

// RevocationView is a revocation as the API shows it.
type RevocationView struct {
	ID       string    `json:"id"`
	Serial   string    `json:"serial,omitempty"`
	Role     string    `json:"role,omitempty"`
	Name     string    `json:"name,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// RevokeResult answers a revocation.
type RevokeResult struct {
	Revocation     RevocationView `json:"revocation"`
	SessionsClosed []string       `json:"sessions_closed"` // agents whose session was closed
	JobsLost       []uint64       `json:"jobs_lost"`       // jobs whose running attempt was lost
}

// RevokeAgentRequest is the optional body of POST /agents/:name/revoke.
type RevokeAgentRequest struct {
	Reason string `json:"reason"`
	// AllCerts revokes the name: every agent certificate with it is
	// refused, including ones issued later. Otherwise only the
	// certificate of the connected session is.
	AllCerts bool `json:"all_certs"`
}

// RevokeCertRequest is the body of POST /certs/revoke: a serial, or a
// role and name (every certificate of that role with that name).
type RevokeCertRequest struct {
	Serial   string    `json:"serial"`
	Role     string    `json:"role"`
	Name     string    `json:"name"`
	Reason   string    `json:"reason"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// AuditEntry is one entry of GET /audit, newest first: who did what,
// through which credential.
type AuditEntry struct {
	ID         uint64    `json:"id"` // strictly increasing; at least Time in Unix nanoseconds
	Time       time.Time `json:"time"`
	Who        string    `json:"who"`        // certificate or token name
	Role       string    `json:"role"`       // its role
	Via        string    `json:"via"`        // "certificate" or "token"
	Credential string    `json:"credential"` // certificate serial (hex) or token ID
	Remote     string    `json:"remote,omitempty"`
	Action     string    `json:"action"` // submit, cancel, drain, revoke, ...
	Target     string    `json:"target"` // "job 12", "agent worker-1", ...
	Detail     string    `json:"detail,omitempty"`
}
