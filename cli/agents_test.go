package cli

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
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
		`^NAME +TRANSPORT +SLOTS +RUNNING +LABELS +CONNECTED +LAST-HEARTBEAT$`,
		`^worker-1 +quic +4 +1 +gpu=yes +2h ago +\d+s ago$`,
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
