// Package protocol defines the messages agents and the controller
// exchange, and their wire encoding. PROTOCOL.md beside this file is the
// specification; this package is its reference implementation.
//
// What is here:
//
//   - the message types (Hello, Dispatch, LogChunk, ...), their Type
//     numbers, Version and the ALPN name (messages.go);
//   - Append and Decode, which encode one message as a frame and decode
//     one payload, without reflection;
//   - Reader and Writer, which read and write frames on any stream
//     (io.Reader, io.Writer) the caller provides;
//   - the sentinel errors and CheckVersion (errors.go).
//
// The package does no I/O of its own: it opens no sockets or files and
// logs nothing. Transports (QUIC, yamux over TLS) live elsewhere and hand
// streams to Reader and Writer, so every decoder here can be fuzzed in
// isolation.
//
// Compatibility rules, which every change to this package must keep:
//
//   - Type numbers, Error codes, Stream and Outcome values are only ever
//     added, never reused or renumbered.
//   - New fields are only appended to the end of a payload. Decoders
//     ignore bytes after the fields they know, so an older peer reads a
//     newer message.
//   - Message types at or above OptionalBase (128) are optional: a Reader
//     that does not know one skips it. An unknown type below it is an
//     error (ErrUnknownType). Adding a required type, or changing what an
//     existing field means, needs a new Version — or, for a type only
//     some agents understand, a Features bit that the agent announces in
//     Hello and the controller checks before it sends the type
//     (Redirect, FeatureRedirect); a changed meaning that both sides
//     apply, with a Features bit the agent announces and the controller
//     answers in Welcome.Features (FeatureCreditWithResult: the slot
//     returns with the result, Finished.Credit).
//   - The Version is negotiated in the TLS ALPN name and again in
//     Hello/Welcome; CheckVersion refuses any other version with
//     ErrUnsupportedVersion, and the refusing side answers
//     Error{Code: CodeVersion}. Record each new Version in the history
//     comment on Version and in PROTOCOL.md.
package protocol
