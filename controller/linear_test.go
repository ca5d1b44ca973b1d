package controller_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// A linearizability check of job histories under faults (the issue's
// HA test 6), with porcupine. The clients of clusterFaults record every
// submission (from its first try to its acknowledgement, retries with
// the same key in between; every third key is submitted a second time
// once acknowledged, as a client that missed the answer would) and a
// reader records GET /jobs/:id answers from random nodes, retried
// through other nodes until one answers, while the faults happen. Partitioned by idempotency
// key, each job's history must be linearizable against this model:
//
//   - a submission with a key returns the job of the first one with
//     that key (any ID the first time);
//   - a read of an acknowledged job finds it, and its progress never
//     goes back: (attempts, phase) only grows, where the phase is 1
//     dispatched, 2 running, 3 waiting or queued for the next attempt,
//     4 finished — so a read served by a new leader never shows an
//     older state than one served before it.

// linOp is an operation's input: a submission or a read of one key.
type linOp struct {
	key  string
	read bool
	id   uint64 // the job read
}

// linOut is an operation's output.
type linOut struct {
	id       uint64 // submission: the job acknowledged
	found    bool   // read: the job exists
	attempts int
	phase    int
	status   string
}

// linState is the model's state of one key.
type linState struct {
	id       uint64
	attempts int
	phase    int
}

// phaseOf orders a job's status within its attempt count.
func phaseOf(status string, attempts int) int {
	switch status {
	case "dispatched":
		return 1
	case "running":
		return 2
	case "completed", "failed", "timeout", "cancelled":
		return 4
	}
	if attempts == 0 {
		return 0 // queued or blocked before any attempt
	}
	return 3 // waiting or queued after an attempt
}

var jobModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linOp).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(linState), input.(linOp), output.(linOut)
		if !in.read {
			if s.id != 0 && out.id != s.id {
				return false, s
			}
			s.id = out.id
			return true, s
		}
		if s.id == 0 || in.id != s.id || !out.found {
			return false, s
		}
		if out.attempts < s.attempts || (out.attempts == s.attempts && out.phase < s.phase) {
			return false, s
		}
		s.attempts, s.phase = out.attempts, out.phase
		return true, s
	},
	Equal: func(a, b any) bool { return a.(linState) == b.(linState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(linOp), output.(linOut)
		if !in.read {
			return fmt.Sprintf("submit(%s) → %d", in.key, out.id)
		}
		return fmt.Sprintf("get(%d) → %s, %d attempts", in.id, out.status, out.attempts)
	},
}

// linearizable checks history against jobModel.
func linearizable(history []porcupine.Operation) porcupine.CheckResult {
	return porcupine.CheckOperationsTimeout(jobModel, history, time.Minute)
}

// TestJobModel: the model refuses what a broken cluster would show.
func TestJobModel(t *testing.T) {
	sub := func(call, ret int64, key string, id uint64) porcupine.Operation {
		return porcupine.Operation{Input: linOp{key: key}, Call: call, Output: linOut{id: id}, Return: ret}
	}
	get := func(call, ret int64, key string, id uint64, status string, attempts int) porcupine.Operation {
		return porcupine.Operation{ClientId: 1, Input: linOp{key: key, read: true, id: id}, Call: call,
			Output: linOut{found: status != "", status: status, attempts: attempts, phase: phaseOf(status, attempts)}, Return: ret}
	}
	for name, tc := range map[string]struct {
		history []porcupine.Operation
		ok      bool
	}{
		"forward":             {[]porcupine.Operation{sub(0, 1, "a", 7), get(2, 3, "a", 7, "queued", 0), get(4, 5, "a", 7, "running", 1), get(6, 7, "a", 7, "completed", 1)}, true},
		"retry after a loss":  {[]porcupine.Operation{sub(0, 1, "a", 7), get(2, 3, "a", 7, "running", 1), get(4, 5, "a", 7, "queued", 1), get(6, 7, "a", 7, "running", 2)}, true},
		"same key, same job":  {[]porcupine.Operation{sub(0, 1, "a", 7), sub(2, 3, "a", 7)}, true},
		"concurrent reads":    {[]porcupine.Operation{sub(0, 1, "a", 7), get(2, 6, "a", 7, "running", 1), get(3, 5, "a", 7, "queued", 0)}, true},
		"same key, other job": {[]porcupine.Operation{sub(0, 1, "a", 7), sub(2, 3, "a", 8)}, false},
		"state goes back":     {[]porcupine.Operation{sub(0, 1, "a", 7), get(2, 3, "a", 7, "running", 1), get(4, 5, "a", 7, "queued", 0)}, false},
		"finished, then not":  {[]porcupine.Operation{sub(0, 1, "a", 7), get(2, 3, "a", 7, "completed", 1), get(4, 5, "a", 7, "running", 1)}, false},
		"acknowledged, gone":  {[]porcupine.Operation{sub(0, 1, "a", 7), get(2, 3, "a", 7, "", 0)}, false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := porcupine.CheckOperations(jobModel, tc.history); got != tc.ok {
				t.Fatalf("linearizable: %v, want %v", got, tc.ok)
			}
		})
	}
}
