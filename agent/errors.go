package agent

import "errors"

// Errors returned by the agent. Check them with errors.Is.
var (
	// ErrConfig: the configuration or certificates cannot work.
	ErrConfig = errors.New("invalid agent configuration")
)
