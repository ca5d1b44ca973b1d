// Package hub wakes the followers of a job's log (WebSocket, CLI) when
// the job has news — output stored, a new state — and keeps, while a
// job has followers, a copy of its newest output so that a follower
// that keeps up reads memory instead of the store.
//
// It is a package of its own because it owns one thing and depends on
// nothing of the controller: its state sits behind its own mutex, it
// knows chunks only as store.Chunk, and the controller tells it what
// happened — Appended for each chunk the committer applied, in apply
// order (so the tail is an exact copy of what the store holds),
// Truncate when a job's stored output was cut (a cluster's attempt
// ends, store.TruncateLog), Ring for any news — and asks it what it holds (Read, Followers). It never
// reads the store and never writes: a follower whose offset the tail
// does not cover reads the store itself, so a slow follower holds up
// nothing and needs no buffer of its own.
//
// Bounds: at most 8 MiB of output per followed job and 64 MiB in all
// (a chunk that would pass the latter empties its job's tail instead);
// a job's tail is freed when its last follower leaves.
package hub
