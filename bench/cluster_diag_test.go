package bench

import (
	"strings"
	"testing"
)

// TestExitedNodes: a row that finds no leader names the controllers
// whose process ended, with the last line each logged; a running one is
// not named.
func TestExitedNodes(t *testing.T) {
	gone := &binNode{id: "ctl-1", dir: t.TempDir(), args: []string{"-c", "echo starting; echo 'listen tcp 127.0.0.1:7001: bind: address already in use'; exit 3"}}
	alive := &binNode{id: "ctl-2", dir: t.TempDir(), args: []string{"-c", "exec sleep 60"}}
	for _, n := range []*binNode{gone, alive} {
		if err := n.start("/bin/sh"); err != nil {
			t.Fatal(err)
		}
	}
	defer alive.kill()
	<-gone.exited
	got := exitedNodes([]*binNode{gone, alive, {id: "ctl-3"}})
	if !strings.Contains(got, "ctl-1 exited (exit status 3): listen tcp 127.0.0.1:7001: bind: address already in use") || strings.Contains(got, "ctl-2") || strings.Contains(got, "ctl-3") {
		t.Fatalf("exitedNodes: %q", got)
	}
}
