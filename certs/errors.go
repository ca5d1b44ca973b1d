package certs

import "errors"

// Errors returned by this package, always wrapped with context (the path,
// the name or the role concerned). Check them with errors.Is.
var (
	// ErrExists is returned by CreateCA and IssueFiles when a file they
	// would write already exists. Nothing is overwritten: remove the old
	// files or choose another directory or name.
	ErrExists = errors.New("already exists")

	// ErrInvalidName is returned by Issue and IssueFiles for a certificate
	// name that is empty, longer than 64 characters, contains characters
	// other than [A-Za-z0-9._-] or is reserved ("ca"), and for a malformed
	// DNS name or a nil IP in a Request.
	ErrInvalidName = errors.New("invalid name")

	// ErrInvalidRole is returned by ParseRole and Issue for a role that is
	// not one of controller, agent, operator or viewer.
	ErrInvalidRole = errors.New("invalid role")

	// ErrInvalidTTL is returned by Issue for a negative TTL or one longer
	// than MaxTTL.
	ErrInvalidTTL = errors.New("invalid ttl")

	// ErrNoRole is returned by RoleOf and PeerIdentity for a certificate
	// that does not carry exactly one known jobsuite role.
	ErrNoRole = errors.New("certificate carries no jobsuite role")

	// ErrWrongRole is returned during a handshake by the VerifyConnection
	// hook of ClientTLS when the server's certificate is not a controller
	// certificate.
	ErrWrongRole = errors.New("wrong role")

	// ErrNoCertificate is returned by PeerIdentity when the connection has
	// no verified peer certificate.
	ErrNoCertificate = errors.New("no verified peer certificate")
)
