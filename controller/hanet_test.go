package controller_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// haNet is the network of the cluster partition test: each controller
// in a network namespace of its own with two links, so that the test
// can cut a controller off from its peers while its clients and agents
// still reach it.
//
//	root namespace (test, clients, agents)
//	  jspPID-Nh 10.213.X.254/24 ─┐
//	                             │ veth
//	switch namespace (js-part-PID-N): bridge "access" ── 10.213.X.i/24 "access" in ctl i
//	                                  bridge "peers"  ── 10.214.X.i/24 "peers"  in ctl i
//
// Controller i (1..3, namespace js-part-PID-N+i) serves its API and
// agents on 10.213.X.i (the access LAN, which the root namespace joins)
// and raft with the other controller traffic on 10.214.X.i (the peers
// LAN, which exists only between the controller namespaces). cut takes
// the controller's own end of its peers link down: its packets to the
// others are not sent, theirs to it are dropped at the bridge, and its
// access link is untouched. The bridges live in a namespace of their
// own, so nothing in the root namespace changes but one veth end with a
// /24 the test checked was unused; t.Cleanup deletes the namespaces
// (which takes every link with them). The names follow the partition
// test's, so sweepStaleNamespaces removes what a killed run left.
type haNet struct {
	t      *testing.T
	sw     string    // the switch namespace
	ns     [3]string // controller namespaces
	rootIf string    // the root namespace's end of the access LAN
	octet  int       // X
}

// newHANet builds the network or skips the test when it cannot.
func newHANet(t *testing.T) *haNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cluster partition test: needs root to create network namespaces, veth pairs and bridges; run it as root, e.g. sudo go test -run 'TestClusterFaults/partition' ./controller/")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("cluster partition test: needs the ip command (iproute2; on Debian: apt-get install iproute2)")
	}
	sweepStaleNamespaces(t)
	h := &haNet{t: t}
	octet, first := netnsAlloc(t, 1+len(h.ns), "the access LAN") // the switch's and the controllers' namespaces
	h.octet = octet
	h.sw = netnsName(first)
	for i := range h.ns {
		h.ns[i] = netnsName(first + 1 + i)
	}
	h.rootIf = netnsRootIf(first)

	if out, err := exec.Command("ip", "netns", "add", h.sw).CombinedOutput(); err != nil {
		t.Skipf("cluster partition test: cannot create a network namespace (ip netns add: %v: %s); it needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(h.remove) // runs last: after the processes in it stopped
	for _, ns := range h.ns {
		ipCmd(t, "netns", "add", ns)
	}
	for _, br := range []string{"access", "peers"} {
		if out, err := exec.Command("ip", "-n", h.sw, "link", "add", br, "type", "bridge").CombinedOutput(); err != nil {
			t.Skipf("cluster partition test: cannot create a bridge (%v: %s); it needs the kernel's bridge support", err, strings.TrimSpace(string(out)))
		}
		ipCmd(t, "-n", h.sw, "link", "set", br, "up")
	}
	// The root namespace's end of the access LAN.
	ipCmd(t, "link", "add", h.rootIf, "type", "veth", "peer", "name", "root", "netns", h.sw)
	ipCmd(t, "-n", h.sw, "link", "set", "root", "master", "access", "up")
	ipCmd(t, "addr", "add", fmt.Sprintf("10.213.%d.254/24", h.octet), "dev", h.rootIf)
	ipCmd(t, "link", "set", h.rootIf, "up")
	for i, ns := range h.ns {
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		for _, lan := range []struct {
			name string
			net  int
		}{{"access", 213}, {"peers", 214}} {
			swEnd := fmt.Sprintf("%s%d", lan.name[:1], i+1) // a1, p1, ...
			ipCmd(t, "-n", ns, "link", "add", lan.name, "type", "veth", "peer", "name", swEnd, "netns", h.sw)
			ipCmd(t, "-n", h.sw, "link", "set", swEnd, "master", lan.name, "up")
			ipCmd(t, "-n", ns, "addr", "add", fmt.Sprintf("10.%d.%d.%d/24", lan.net, h.octet, i+1), "dev", lan.name)
			ipCmd(t, "-n", ns, "link", "set", lan.name, "up")
		}
	}
	t.Logf("cluster network: switch %s, controllers %v, access LAN 10.213.%d.0/24 (root end %s), peers LAN 10.214.%d.0/24",
		h.sw, h.ns, h.octet, h.rootIf, h.octet)
	return h
}

// accessIP is controller i's address for clients and agents.
func (h *haNet) accessIP(i int) net.IP { return net.IPv4(10, 213, byte(h.octet), byte(i+1)) }

// peerIP is controller i's address on the peers LAN (its cluster port).
func (h *haNet) peerIP(i int) net.IP { return net.IPv4(10, 214, byte(h.octet), byte(i+1)) }

// prefix runs a command in controller i's namespace.
func (h *haNet) prefix(i int) []string { return []string{"ip", "netns", "exec", h.ns[i]} }

// cut takes controller i's end of its peers link down and returns when.
func (h *haNet) cut(i int) time.Time {
	h.t.Helper()
	ipCmd(h.t, "-n", h.ns[i], "link", "set", "peers", "down")
	return time.Now()
}

// heal brings controller i's peers link back.
func (h *haNet) heal(i int) {
	h.t.Helper()
	ipCmd(h.t, "-n", h.ns[i], "link", "set", "peers", "up")
}

// remove deletes the namespaces (their links go with them) and the
// root end of the access LAN should it still be there.
func (h *haNet) remove() { removeNetns(h.t, append([]string{h.sw}, h.ns[:]...), h.rootIf) }

// logTime is the time at the start of a controller's text log line
// (cli's logTimeFormat).
func logTime(line string) (time.Time, error) {
	f, _, _ := strings.Cut(line, " ")
	return time.Parse("2006-01-02T15:04:05.000Z0700", f)
}
