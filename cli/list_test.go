package cli

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func TestList(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&ListCommand{Meta: m}).Run([]string{"-status", "Failed", "-limit", "5"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	if q := f.lastQuery(); q != "limit=5&status=failed" {
		t.Errorf("query %q", q)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 jobs:\n%s", out)
	}
	for i, want := range []string{
		`^ID +NAME +STATUS +PRIORITY +EXIT +AGENT +CREATED$`,
		`^12 +build +failed +high +3 +worker-1 +\d+m ago$`, // newest first
		`^7 +job 7 +completed +mid +- +- +\d+m ago$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i, lines[i], want)
		}
	}
}

func TestListJSON(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	m, out, errb := clientTestMeta()
	if code := (&ListCommand{Meta: m}).Run([]string{"-json"}); code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	var v []map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || len(v) != 2 {
		t.Fatalf("got %v, %v:\n%s", v, err, out)
	}
	if q := f.lastQuery(); q != "" {
		t.Errorf("query %q, want none", q)
	}
}

func TestListUsage(t *testing.T) {
	clearClientEnv(t)
	for name, args := range map[string][]string{
		"argument":  {"12"},
		"big limit": {"-limit", "5000"},
	} {
		t.Run(name, func(t *testing.T) {
			m, _, errb := clientTestMeta()
			if code := (&ListCommand{Meta: m}).Run(args); code != ExitUsage {
				t.Errorf("exit %d, want %d; stderr %q", code, ExitUsage, errb)
			}
		})
	}
}
