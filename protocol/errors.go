package protocol

import (
	"errors"
	"fmt"
)

// Errors returned by this package, always wrapped with a "protocol:"
// prefix and the detail (message, field, sizes). Check them with
// errors.Is. Every one of them is fatal for the stream it came from:
// answer with an Error message (CodeProtocol, or CodeVersion for
// ErrUnsupportedVersion) and close.
var (
	// ErrFrameTooLarge is returned by Reader.Read for a frame whose
	// length prefix exceeds the Reader's limit (nothing of it is read or
	// allocated), and by Writer.Write for a message whose frame would
	// exceed MaxFrameSize (nothing is written, the Writer stays usable).
	// Either a peer misbehaves or a message carries far more data than
	// intended: send less per message.
	ErrFrameTooLarge = errors.New("frame too large")

	// ErrUnknownType is returned by Decode and Reader.Read for a message
	// type below OptionalBase that this build does not know. The peer
	// speaks a newer protocol than it announced: upgrade this side.
	ErrUnknownType = errors.New("unknown message type")

	// ErrMalformed is returned by Decode and Reader.Read for a payload that
	// breaks an encoding rule of PROTOCOL.md (truncated, a length or count
	// larger than what is left, a value out of range of its field, a zero
	// Stream or Outcome, a duplicate map key), and by Reader.Read for a
	// frame length of 0.
	ErrMalformed = errors.New("malformed message")

	// ErrUnsupportedVersion is returned by CheckVersion for a protocol
	// version this build does not speak.
	ErrUnsupportedVersion = errors.New("unsupported protocol version")
)

// CheckVersion returns nil if v is the Version this build speaks, and
// otherwise an error wrapping ErrUnsupportedVersion that names both
// versions. The controller checks Hello.Version, the agent
// Welcome.Version; on failure each answers Error{Code: CodeVersion}.
func CheckVersion(v uint32) error {
	if v == Version {
		return nil
	}
	return fmt.Errorf("protocol: %w %d: this build speaks version %d; run the same jobsuite release on agents and controller",
		ErrUnsupportedVersion, v, Version)
}
