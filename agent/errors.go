package agent

import "errors"

// Errors returned by the agent. Check them with errors.Is.
var (
	// ErrConfig: the configuration or certificates cannot work.
	ErrConfig = errors.New("invalid agent configuration")
	// ErrRejected: the controller refused this agent for good (a revoked
	// certificate, a wrong role or name, an unsupported protocol
	// version). Run returns it instead of reconnecting: starting the
	// agent again does not help until the cause is fixed.
	ErrRejected = errors.New("rejected by the controller for good")
)
