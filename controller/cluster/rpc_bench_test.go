package cluster

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// BenchmarkRPCCall is one request and answer on the cluster port, both
// ends in this process, on a fresh mutual-TLS connection each
// (Identity.Call) or on a kept one (Conns: the lag bound's status
// question, asked of each voter every LagPoll). It reports the CPU time
// of both ends per call.
//
//	go test ./controller/cluster -run '^$' -bench RPCCall -benchtime 2000x
func BenchmarkRPCCall(b *testing.B) {
	b.Run("fresh", func(b *testing.B) { benchCall(b, false) })
	b.Run("kept", func(b *testing.B) { benchCall(b, true) })
}

func benchCall(b *testing.B, kept bool) {
	p := newPKI(b)
	srvID := identity(b, p.dir, "c1", nil)
	cliID := identity(b, p.dir, "c2", nil)
	m := serve(b, srvID)
	rpc := NewRPCServer(hclog.NewNullLogger())
	rpc.Handle("status", func(context.Context, string, json.RawMessage) (any, error) {
		return map[string]uint64{"applied_index": 12345, "last_index": 12346}, nil
	})
	go func() { _ = rpc.Serve(m.Listener(ALPNCluster)) }()
	addr := m.Addr().String()
	var out map[string]uint64
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	call := cliID.Call
	if kept {
		k := cliID.Kept()
		defer k.Close()
		call = k.Call
	}
	b.ResetTimer()
	start := cpu()
	for range b.N {
		if err := call(context.Background(), addr, "status", nil, &out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpu()-start).Microseconds())/float64(b.N), "cpu-µs/call")
}
