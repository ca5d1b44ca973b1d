package controller_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// Test addresses are chosen before the process that binds them starts
// (a cluster's nodes must know each other's addresses; a controller
// process is told its ports). A port the kernel hands out for
// 127.0.0.1:0 comes from the ephemeral range, which every outgoing
// connection on the machine also draws its local port from, so between
// the choice and the bind a client elsewhere could take it (CI saw a
// node fail with "address already in use"). These ports come from below
// the ephemeral range instead (ip_local_port_range starts at 32768 by
// default), where only listeners that ask for a port by number go.
const (
	testPortLow  = 20000
	testPortHigh = 32768
)

// freePort returns a loopback address whose port was free a moment ago
// on TCP, and on UDP too when udp is set.
func freePort(t *testing.T, udp bool) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", testPortLow+rand.IntN(testPortHigh-testPortLow))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		if udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				ln.Close()
				continue
			}
			pc.Close()
		}
		ln.Close()
		return addr
	}
	t.Fatal("found no free loopback port below the ephemeral range")
	return ""
}

// freeAddr returns a loopback TCP address that was free a moment ago:
// the nodes must know each other's cluster addresses before they start.
func freeAddr(t *testing.T) string {
	t.Helper()
	return freePort(t, false)
}

// freeAddrs picks a loopback TCP port for the API and one free on both
// TCP and UDP for the agent listener.
func freeAddrs(t *testing.T) (httpAddr, agentAddr string) {
	t.Helper()
	httpAddr = freePort(t, false)
	for {
		if agentAddr = freePort(t, true); agentAddr != httpAddr {
			return httpAddr, agentAddr
		}
	}
}

func TestFreePortBelowEphemeralRange(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		addr := freePort(t, true)
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		var p int
		fmt.Sscan(port, &p)
		if p < testPortLow || p >= testPortHigh {
			t.Fatalf("port %d outside [%d, %d)", p, testPortLow, testPortHigh)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s was handed out but cannot be bound: %v", addr, err)
		}
		ln.Close()
		seen[addr] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 picks gave %d distinct ports", len(seen))
	}
}
