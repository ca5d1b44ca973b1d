// Package cli holds the jobsuite commands, one file each, built on
// mitchellh/cli. main.go hands os.Args to Run. Commands hold no business
// logic: the long-running ones (controller, agent, dev) configure and
// run controller.Server and agent.Agent; the client ones (submit,
// status, list, cancel, logs, agents, operator snapshot save) call the
// HTTP API through Client; 'operator snapshot inspect' and 'restore'
// work on files with package controller/snapshot, without a controller.
//
// Client commands find the controller through -addr/-ca-cert/
// -client-cert/-client-key, else JOBSUITE_ADDR, JOBSUITE_CACERT,
// JOBSUITE_CLIENT_CERT and JOBSUITE_CLIENT_KEY, else ./.jobsuite-dev/env
// (written by 'jobsuite dev').
//
// The address may be a comma-separated list (the controllers of a
// cluster). Client sends a request to the address that answered last
// and moves on as retry.go says: past an address that refuses the
// connection, for any request; past a 503 with Retry-After (or a
// proxy's 502/504), waiting between rounds for at most -retry-timeout,
// only for requests that are safe to repeat (reads, deletes, and
// submits, which always carry an idempotency key: submit makes one per
// invocation when the user gives none). A log stream that breaks
// reconnects at the next address from the last byte received.
//
// The client commands decode the controller's answers into the types of
// package api, the controller's own. The controller's and the agent's
// flags are bound to the fields of controller.DefaultConfig and
// agent.DefaultConfig, so their defaults are the Config's; their help
// is written with placeholders that withDefaults (defaults.go) fills in
// from those flags, config-file keys included.
//
// Exit codes: 0 success, 1 error, 2 usage error, 3 an agent refused by
// the controller for good, 127 an unknown command; submit -f, logs -f
// and resubmit -f exit with the job's own code (124 timeout, 130
// cancelled or interrupted, 1 when the job ended without an exit code),
// and tell what happens to the job on stderr (narrate.go); submit -all
// -f follows every child of a fan-out at once, each line prefixed with
// its host or each host's output held as one block (-group, hostout.go),
// and exits with the worst child's code (fanout.go).
package cli
