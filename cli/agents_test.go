package cli

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mcli "github.com/mitchellh/cli"
)

func TestAgents(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&AgentsCommand{Meta: m}).Run(nil); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a header and 1 agent:\n%s", out)
	}
	for i, want := range []string{
		`^NAME +TRANSPORT +STATE +SLOTS +RUNNING +LABELS +CONNECTED +LAST-HEARTBEAT$`,
		`^worker-1 +quic +active +4 +1 +gpu=yes +2h ago +\d+s ago$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i, lines[i], want)
		}
	}

	m, out, errb = clientTestMeta()
	if code := (&AgentsCommand{Meta: m}).Run([]string{"-json"}); code != ExitOK {
		t.Fatalf("-json: exit %d, stderr %q", code, errb)
	}
	var v []map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || len(v) != 1 || v[0]["name"] != "worker-1" {
		t.Errorf("-json: got %v, %v:\n%s", v, err, out)
	}
}

// drainFake answers POST /agents/NAME/drain (worker-1 is connected and
// runs 2 jobs; no other agent is) and GET /agents with worker-1
// draining once it was drained. Paths it does not know get the 404 of
// an older controller, without a field.
type drainFake struct {
	mu      sync.Mutex
	drained []string // agent names as the controller decoded them
}

func (d *drainFake) isDrained(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.drained {
		if n == name {
			return true
		}
	}
	return false
}

func (d *drainFake) agent(name string) map[string]any {
	return map[string]any{
		"name": name, "labels": map[string]string{}, "slots": 4, "running": 2, "free": 0,
		"draining": d.isDrained(name), "transport": "tcp", "address": "127.0.0.1:5001", "version": "0.1.0",
		"connected_at": time.Now().Add(-50 * time.Minute), "last_heartbeat": time.Now(), "jobs": []int{5, 6},
	}
}

func (d *drainFake) serve(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.Method == "GET" && r.URL.Path == "/agents":
		fakeJSON(w, http.StatusOK, []any{d.agent("worker-1")})
		return true
	case r.Method == "POST" && strings.HasPrefix(r.URL.Path, "/agents/") && strings.HasSuffix(r.URL.Path, "/drain"):
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/agents/"), "/drain")
		d.mu.Lock()
		d.drained = append(d.drained, name)
		d.mu.Unlock()
		if name != "worker-1" {
			fakeError(w, http.StatusNotFound, "no connected agent named "+`"`+name+`"`, "field", "name")
			return true
		}
		fakeJSON(w, http.StatusOK, d.agent(name))
		return true
	case r.Method == "POST":
		fakeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
		return true
	}
	return false
}

func TestAgentsDrain(t *testing.T) {
	tests := map[string]struct {
		args    []string
		code    int
		out     string
		err     string
		drained string
	}{
		"connected": {
			args: []string{"worker-1"}, code: ExitOK, drained: "worker-1",
			out: "Agent worker-1 is draining: no new jobs; 2 running\n",
		},
		"not connected": {
			args: []string{"worker-9"}, code: ExitError, drained: "worker-9",
			err: "error: no connected agent named worker-9\nRun 'jobsuite agents' to list the connected agents.\n",
		},
		"bad name": {
			args: []string{"a b/c"}, code: ExitUsage,
			err: `error: agent name "a b/c": agent names have only letters, digits, '.', '_' and '-'`,
		},
		"dot dot":  {args: []string{".."}, code: ExitUsage, err: `".." is not an agent name`},
		"too long": {args: []string{strings.Repeat("w", 65)}, code: ExitUsage, err: "is longer than 64 characters"},
		"no name":  {args: nil, code: ExitUsage, err: "want one agent name, got 0 arguments"},
		"two names": {
			args: []string{"worker-1", "worker-2"}, code: ExitUsage,
			err: "want one agent name, got 2 arguments\nRun 'jobsuite agents drain -h' for usage.\n",
		},
		"empty name": {args: []string{" "}, code: ExitUsage, err: "the agent name is empty"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFakeController(t)
			var d drainFake
			extendFake(t, f, d.serve)
			m, out, errb := clientTestMeta()
			if code := (&AgentsDrainCommand{Meta: m}).Run(tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errb)
			}
			if out.String() != tt.out {
				t.Errorf("stdout %q, want %q", out, tt.out)
			}
			if !strings.Contains(errb.String(), tt.err) || tt.err == "" && errb.Len() != 0 {
				t.Errorf("stderr %q, want %q", errb, tt.err)
			}
			if tt.drained != "" && !d.isDrained(tt.drained) {
				t.Errorf("the controller did not see a drain of %q (saw %q)", tt.drained, d.drained)
			}
		})
	}
}

func TestAgentsDrainOlderController(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t) // the plain fake has no drain route
	m, out, errb := clientTestMeta()
	if code := (&AgentsDrainCommand{Meta: m}).Run([]string{"worker-1"}); code != ExitError {
		t.Fatalf("exit %d, want %d; stderr %q", code, ExitError, errb)
	}
	if want := "error: no such endpoint: POST /agents/worker-1/drain; does this controller support draining agents"; !strings.HasPrefix(errb.String(), want) {
		t.Errorf("stderr %q, want it to start with %q", errb, want)
	}
	if out.Len() != 0 {
		t.Errorf("stdout %q", out)
	}
}

func TestAgentsDrainJSON(t *testing.T) {
	f := newFakeController(t)
	var d drainFake
	extendFake(t, f, d.serve)
	m, out, errb := clientTestMeta()
	if code := (&AgentsDrainCommand{Meta: m}).Run([]string{"-json", "worker-1"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	var v map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v["name"] != "worker-1" || v["draining"] != true {
		t.Errorf("got %v, %v:\n%s", v, err, out)
	}
}

// TestAgentsDrainThroughCLI runs "jobsuite agents drain NAME" the way
// main does: the nested command is found, and "agents" alone still
// lists the agents, now showing the drained one as draining.
func TestAgentsDrainThroughCLI(t *testing.T) {
	f := newFakeController(t)
	var d drainFake
	extendFake(t, f, d.serve)
	m, out, errb := clientTestMeta()
	run := func(args ...string) int {
		out.Reset()
		errb.Reset()
		c := &mcli.CLI{Name: "jobsuite", Args: args, Commands: commands(m), HelpWriter: out, ErrorWriter: errb}
		code, err := c.Run()
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	if code := run("agents", "drain", "worker-1"); code != ExitOK || out.String() != "Agent worker-1 is draining: no new jobs; 2 running\n" {
		t.Errorf("agents drain: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if code := run("agents"); code != ExitOK || !regexp.MustCompile(`(?m)^worker-1 +tcp +draining +4 +2 +- `).MatchString(out.String()) {
		t.Errorf("agents: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if code := run("agents", "-h"); code != ExitOK || !strings.Contains(out.String()+errb.String(), "drain") {
		t.Errorf("agents -h does not mention drain: exit %d, %q %q", code, out, errb)
	}
}
