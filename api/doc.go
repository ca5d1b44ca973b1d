// Package api holds the bodies of the controller's HTTP API: every
// request the controller reads and every answer it writes as JSON,
// declared once. The controller's handlers fill them in and the CLI
// (and the agent's enrollment) decode them, as nomad/api does for Nomad.
//
// The JSON on the wire is the contract — the original job_suite
// clients and controller/openapi.json depend on it — so a field's JSON
// name and its omitempty/omitzero never change here without the
// OpenAPI document changing with it (controller/openapi_test.go compares
// the two).
//
// Decoding is lenient where it is the client's side: encoding/json
// ignores fields a type does not have, so a CLI built from an older
// api package reads a newer controller's answers. The controller's
// strictness (unknown fields refused in a submission) is the
// controller's choice, made where it decodes.
//
// The package depends on nothing of jobsuite: job states are plain
// strings (the State constants name them), and the controller converts
// its store records into these types where it answers.
package api
