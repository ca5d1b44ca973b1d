package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"jobsuite/certs"
	ctlcluster "jobsuite/controller/cluster"
	"jobsuite/controller/store"
)

// Rows 9h and 9p (issue 14's output decision). Both move the same
// output bytes from a leader to two followers over the real cluster
// port (TCP, mutual TLS 1.3, controller certificates, ctlcluster.Mux) and
// make them durable on a quorum; they differ in the path:
//
//   - 9h, the raft layer alone: hashicorp/raft with raft.NetworkTransport
//     over cluster.StreamLayer, raft-wal behind raft.LogCache(128) as in
//     controller/node.go, and ctlcluster.FSM (each entry a round of one
//     store.Output command, applied to a Pebble store) or, for
//     reference, a trivial FSM that only counts. The leader keeps
//     raftInFlight entries proposed, as the committer does; an entry is
//     done when its ApplyFuture returns (committed on a quorum, applied
//     on the leader).
//   - 9p, a PROTOTYPE of the separate output channel of the design note
//     (ha-design.md 8.2), bench-only, not wired into the controller: the
//     leader applies each chunk to its own Pebble store as one
//     store.Output batch, streams it on an ALPNCluster connection to each
//     follower, which applies it to its store and acknowledges the
//     highest chunk whose fsync has completed; "durable on a quorum" is
//     the second highest of {the leader's own synced chunk, the two
//     followers' acks}. Fsyncs are grouped by Pebble's commit pipeline
//     (each chunk's batch is waited on in order by a syncer goroutine),
//     which is the design's group syncer. The leader keeps at most
//     channelWindow bytes beyond the quorum in flight.
//
// The leader runs in the benchmark process, each follower in a child
// process of its own, so the CPU figures split leader / follower.

// raftInFlight is how many entries the 9h leader keeps proposed: the
// committer's maxInFlightLog (controller/sched/commit.go).
const raftInFlight = 8

// channelWindow bounds the prototype's unacknowledged bytes (the agent's
// spool bound, -spool-max, is 64 MiB; the design's sender bound is
// 64 MiB too).
const channelWindow = 64 << 20

// outputVariant is one measurement of 9h or 9p.
type outputVariant struct {
	id, name string
	kind     string // "raft" (ctlcluster.FSM), "raft-trivial", "channel"
	chunk    int    // bytes of output per entry or chunk
	// maxAppend is raft's MaxAppendEntries (0: raft's default, 64).
	maxAppend int
	// inFlight is how many entries the leader keeps proposed (0:
	// raftInFlight).
	inFlight int
}

// outputResult is what one variant measured.
type outputResult struct {
	took            time.Duration
	bytes           int64
	chunks          int
	leaderCPU       time.Duration
	followerCPU     []time.Duration
	leaderWritten   uint64
	followerWritten []uint64
	load            string
}

func (r outputResult) mbps() float64 { return float64(r.bytes) / r.took.Seconds() / 1e6 }

// cpuPerGiB is CPU seconds per GiB of output.
func cpuPerGiB(d time.Duration, n int64) float64 { return d.Seconds() / (float64(n) / (1 << 30)) }

func (r outputResult) detail() string {
	fol := make([]string, len(r.followerCPU))
	for i, d := range r.followerCPU {
		fol[i] = fmt.Sprintf("%.1f", cpuPerGiB(d, r.bytes))
	}
	wr := make([]string, len(r.followerWritten))
	for i, w := range r.followerWritten {
		wr[i] = fmt.Sprintf("%.1f×", float64(w)/float64(r.bytes))
	}
	total := r.leaderCPU
	for _, d := range r.followerCPU {
		total += d
	}
	return fmt.Sprintf("%s in %d pieces in %s, %s pieces/s; CPU s per GiB: leader %.1f, followers %s, all %.1f (%.2f cores busy); disk writes ÷ output: leader %.1f×, followers %s; %s",
		bytesName(r.bytes), r.chunks, r.took.Round(time.Millisecond), num(float64(r.chunks)/r.took.Seconds()),
		cpuPerGiB(r.leaderCPU, r.bytes), strings.Join(fol, ", "), cpuPerGiB(total, r.bytes), total.Seconds()/r.took.Seconds(),
		float64(r.leaderWritten)/float64(r.bytes), strings.Join(wr, ", "), r.load)
}

// outputVariants are the rows of 9h and 9p, in the order they run.
func outputVariants() []outputVariant {
	return []outputVariant{
		{id: "9h", kind: "raft", chunk: 64 << 10, name: "raft alone (TLS cluster port, raft-wal, cluster.FSM): 64 KiB Output entries, 8 in flight"},
		{id: "9h-256k", kind: "raft", chunk: 256 << 10, name: "raft alone, as 9h: 256 KiB Output entries (the agent's LogChunk size, what 9d carries)"},
		{id: "9h-trivial", kind: "raft-trivial", chunk: 64 << 10, name: "raft alone, as 9h with a trivial FSM (counts entries): 64 KiB entries"},
		{id: "9h-256k-m8", kind: "raft", chunk: 256 << 10, maxAppend: 8, name: "raft alone, as 9h-256k with MaxAppendEntries 8 (2 MiB per AppendEntries instead of 16)"},
		{id: "9h-256k-f32", kind: "raft", chunk: 256 << 10, inFlight: 32, name: "raft alone, as 9h-256k with 32 entries in flight instead of 8"},
		{id: "9p", kind: "channel", chunk: 64 << 10, name: "PROTOTYPE separate output channel (design 8.2, bench-only): 64 KiB chunks, quorum = 2nd highest synced"},
		{id: "9p-256k", kind: "channel", chunk: 256 << 10, name: "PROTOTYPE separate output channel, as 9p: 256 KiB chunks"},
	}
}

// raftAlone runs the 9h and 9p variants and returns 9h's MB/s per
// entry size (for 9d's limit column).
func (e *env) raftAlone(ctx context.Context) map[int]float64 {
	size := e.sz.LogBytes / 4
	best := map[int]float64{}
	if err := e.clusterCerts(); err != nil {
		for _, v := range outputVariants() {
			e.fail(v.id, v.name, err)
		}
		return best
	}
	for _, v := range outputVariants() {
		res, err := e.runOutputVariant(ctx, v, size)
		retried := ""
		if errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader) {
			// On a loaded machine the leader may miss its lease (500 ms)
			// and step down mid-run; the row says so and runs once more
			// on a fresh cluster.
			retried = fmt.Sprintf("; the first try lost its leader (%v) and was run again", err)
			res, err = e.runOutputVariant(ctx, v, size)
		}
		if err != nil {
			e.fail(v.id, v.name, err)
			continue
		}
		got := res.mbps()
		if v.kind == "raft" && v.maxAppend == 0 && v.inFlight == 0 {
			best[v.chunk] = got
		}
		r := Row{ID: v.id, Name: v.name, Value: got, Unit: "MB/s", Detail: res.detail() + retried,
			Target: "report (issue 14's output decision)", Verdict: "reported"}
		if d, ok := e.diskRate(); ok {
			r.Limit, r.LimitUnit, r.LimitName = d, "MB/s", "disk: sequential writes then fdatasync (one node's share is a third: three nodes, one disk)"
		}
		e.add(r)
	}
	return best
}

// diskRate is the sequential write rate of the data disk, measured once
// per run.
func (e *env) diskRate() (float64, bool) {
	if e.limits.disk > 0 {
		return e.limits.disk, true
	}
	dir, err := scratch(e.dir, "limits")
	if err != nil {
		return 0, false
	}
	d, err := diskProbe(dir, min(e.sz.LogBytes, 512<<20))
	if err != nil {
		return 0, false
	}
	e.limits.disk = d / 1e6
	e.limits.measured = append(e.limits.measured, Row{Name: fmt.Sprintf("disk: %s written sequentially in 1 MiB blocks, then fdatasync", bytesName(min(e.sz.LogBytes, 512<<20))), Value: e.limits.disk, Unit: "MB/s"})
	return e.limits.disk, true
}

// runOutputVariant starts two follower children and runs v's leader
// here, moving size bytes.
func (e *env) runOutputVariant(ctx context.Context, v outputVariant, size int64) (outputResult, error) {
	base, err := scratch(e.dir, "output-"+v.id)
	if err != nil {
		return outputResult{}, err
	}
	var peers []*proc
	defer func() {
		for _, p := range peers {
			_ = p.stop()
		}
		// Three copies of the output, several times over: the data
		// goes, the logs stay.
		for i := 1; i <= clusterSize; i++ {
			_ = os.RemoveAll(filepath.Join(base, nodeName(i)))
		}
	}()
	for i := 2; i <= clusterSize; i++ {
		id := nodeName(i)
		cfg := childConfig{Mode: "output-peer", PKI: e.pki.dir, Name: id, Data: filepath.Join(base, id),
			Log: filepath.Join(base, id+".log"), LogLevel: e.cfg.LogLevel, Variant: v.kind, MaxAppend: v.maxAppend}
		if e.cfg.ProfileDir != "" {
			cfg.Profile = filepath.Join(e.cfg.ProfileDir, "output-"+v.id+"-"+id+".pprof")
		}
		p, err := startChild(ctx, cfg, time.Minute)
		if err != nil {
			return outputResult{}, err
		}
		peers = append(peers, p)
	}
	logf, err := os.Create(filepath.Join(base, nodeName(1)+".log"))
	if err != nil {
		return outputResult{}, err
	}
	defer logf.Close()
	logger := hclog.New(&hclog.LoggerOptions{Name: "leader", Level: hclog.LevelFromString(e.cfg.LogLevel), Output: logf})
	id, err := benchIdentity(e.pki.dir, nodeName(1))
	if err != nil {
		return outputResult{}, err
	}
	data := make([]byte, v.chunk)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	n := int(size / int64(v.chunk))
	res := outputResult{bytes: int64(n) * int64(v.chunk), chunks: n}
	self := os.Getpid()
	var cpu0 time.Duration
	var w0 uint64
	fcpu0 := make([]time.Duration, len(peers))
	fw0 := make([]uint64, len(peers))
	mark := func() { // called by the leader just before its clock starts
		cpu0, w0 = selfCPU(), procWritten(self)
		for i, p := range peers {
			fcpu0[i], fw0[i] = p.cpu(), p.written()
		}
	}
	dir := filepath.Join(base, nodeName(1))
	if v.kind == "channel" {
		res.took, err = runChannelLeader(ctx, dir, id, peers, data, n, logger, mark)
	} else {
		res.took, err = runRaftLeader(ctx, dir, id, peers, data, n, v, logger, mark)
	}
	if err != nil {
		return res, err
	}
	res.load = loadNote()
	// The followers' CPU and writes up to now: they have applied what
	// the quorum needed; their own background work (compactions) after
	// that is not counted, nor is the leader's.
	res.leaderCPU, res.leaderWritten = selfCPU()-cpu0, procWritten(self)-w0
	for i, p := range peers {
		res.followerCPU = append(res.followerCPU, p.cpu()-fcpu0[i])
		res.followerWritten = append(res.followerWritten, p.written()-fw0[i])
	}
	return res, nil
}

// benchIdentity is node name's cluster identity in the benchmark PKI.
func benchIdentity(pkiDir, name string) (*ctlcluster.Identity, error) {
	pool, err := certs.LoadPool(certs.CAFile(pkiDir))
	if err != nil {
		return nil, err
	}
	cert, err := certs.LoadKeyPair(certs.CertFile(pkiDir, name), certs.KeyFile(pkiDir, name))
	if err != nil {
		return nil, err
	}
	return &ctlcluster.Identity{CA: pool, Certificate: func() (*tls.Certificate, error) { return &cert, nil }}, nil
}

// listenMux starts a ctlcluster.Mux for id on a loopback port.
func listenMux(id *ctlcluster.Identity, logger hclog.Logger) (*ctlcluster.Mux, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := ctlcluster.NewMux(ln, id, logger, ctlcluster.ALPNRaft, ctlcluster.ALPNCluster)
	go func() { _ = m.Serve() }()
	return m, nil
}

// ---------------------------------------------------------------------
// 9h: raft

// raftNode is one raft server of the 9h measurement: the production
// stack of controller/node.go without the controller.
type raftNode struct {
	mux   *ctlcluster.Mux
	trans *raft.NetworkTransport
	wal   *wal.WAL
	fsm   raft.FSM
	cfsm  *ctlcluster.FSM
	r     *raft.Raft
}

// trivialFSM counts entries and bytes and stores nothing.
type trivialFSM struct{ n, bytes atomic.Int64 }

func (f *trivialFSM) Apply(l *raft.Log) any {
	f.n.Add(1)
	f.bytes.Add(int64(len(l.Data)))
	return nil
}
func (f *trivialFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (f *trivialFSM) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

// startRaftNode opens a raft node in dir, its peers reach it on the
// returned Mux; bootstrap makes it a one-voter cluster.
func startRaftNode(dir, name, kind string, maxAppend int, id *ctlcluster.Identity, logger hclog.Logger, bootstrap bool) (*raftNode, error) {
	n := &raftNode{}
	ok := false
	defer func() {
		if !ok {
			n.close()
		}
	}()
	var err error
	if n.mux, err = listenMux(id, logger.Named("mux")); err != nil {
		return nil, err
	}
	n.trans = raft.NewNetworkTransportWithLogger(ctlcluster.NewStreamLayer(n.mux, id), 3, 10*time.Second, logger.Named("transport"))
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		return nil, err
	}
	if n.wal, err = wal.Open(filepath.Join(dir, "raft")); err != nil {
		return nil, err
	}
	logs, err := raft.NewLogCache(128, n.wal)
	if err != nil {
		return nil, err
	}
	if kind == "raft-trivial" {
		n.fsm = &trivialFSM{}
	} else {
		n.cfsm, err = ctlcluster.Open(filepath.Join(dir, "fsm"), ctlcluster.Options{Logger: logger.Named("fsm"),
			Fatal: func(err error) { logger.Error("FSM stopped", "error", err) }})
		if err != nil {
			return nil, err
		}
		n.fsm = n.cfsm
	}
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(name)
	conf.Logger = logger.Named("raft")
	// controller/node.go's timeouts at -raft-multiplier 1.
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
	conf.SnapshotThreshold, conf.SnapshotInterval = 1<<40, time.Hour // no snapshots during a measurement
	if maxAppend > 0 {
		conf.MaxAppendEntries = maxAppend
	}
	snaps := raft.NewInmemSnapshotStore()
	if bootstrap {
		c := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: conf.LocalID, Address: raft.ServerAddress(n.mux.Addr().String())}}}
		if err := raft.BootstrapCluster(conf, logs, n.wal, snaps, n.trans, c); err != nil {
			return nil, err
		}
	}
	if n.r, err = raft.NewRaft(conf, n.fsm, logs, n.wal, snaps, n.trans); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

func (n *raftNode) close() {
	if n.r != nil {
		_ = n.r.Shutdown().Error()
	}
	if n.trans != nil {
		_ = n.trans.Close()
	}
	if n.mux != nil {
		_ = n.mux.Close()
	}
	if n.cfsm != nil {
		_ = n.cfsm.Close()
	}
	if n.wal != nil {
		_ = n.wal.Close()
	}
}

// outputEntry is the raft entry of chunk k: a round of one Output
// command, as the committer encodes it.
func outputEntry(data []byte, k int) ([]byte, error) {
	return store.EncodeRound([]store.Command{&store.Output{Job: 1, Chunk: store.Chunk{Offset: uint64(k) * uint64(len(data)), Stream: 1, Data: data, Time: time.Unix(1, 0)}}})
}

// runRaftLeader bootstraps a one-node cluster here, adds the two peers
// as voters, then proposes n entries with raftInFlight in flight and
// returns the time from the first proposal to the last one's commit.
func runRaftLeader(ctx context.Context, dir string, id *ctlcluster.Identity, peers []*proc, data []byte, n int, v outputVariant, logger hclog.Logger, mark func()) (time.Duration, error) {
	nd, err := startRaftNode(dir, nodeName(1), v.kind, v.maxAppend, id, logger, true)
	if err != nil {
		return 0, err
	}
	defer nd.close()
	if err := poll(ctx, time.Minute, func() (bool, error) { return nd.r.State() == raft.Leader, nil }); err != nil {
		return 0, fmt.Errorf("no leadership: %w", err)
	}
	for i, p := range peers {
		if err := nd.r.AddVoter(raft.ServerID(nodeName(i+2)), raft.ServerAddress(p.info.Cluster), 0, time.Minute).Error(); err != nil {
			return 0, fmt.Errorf("adding %s: %w", nodeName(i+2), err)
		}
	}
	// Entries are encoded before the clock starts: the committer's
	// encoding is not what this row measures.
	entries := make([][]byte, n)
	for k := range entries {
		if entries[k], err = outputEntry(data, k); err != nil {
			return 0, err
		}
	}
	// Warm up: one entry committed by the three.
	if err := nd.r.Apply(entries[0], time.Minute).Error(); err != nil {
		return 0, err
	}
	mark()
	start := time.Now()
	inFlight := raftInFlight
	if v.inFlight > 0 {
		inFlight = v.inFlight
	}
	futures := make(chan raft.ApplyFuture, inFlight)
	errc := make(chan error, 1)
	go func() {
		var first error
		for f := range futures {
			if err := f.Error(); err != nil && first == nil {
				first = err
			}
			if r, ok := f.Response().(*ctlcluster.Response); ok && r.Err != nil && first == nil {
				first = r.Err
			}
		}
		errc <- first
	}()
	for k := range n {
		if ctx.Err() != nil {
			break
		}
		futures <- nd.r.Apply(entries[k], time.Minute)
	}
	close(futures)
	if err := <-errc; err != nil {
		return 0, err
	}
	took := time.Since(start)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Every follower applied everything before the CPU is read (as the
	// channel waits for both followers' acks).
	last := nd.r.LastIndex()
	for _, p := range peers {
		if err := waitPeerApplied(ctx, id, p, last); err != nil {
			return 0, fmt.Errorf("%s: %w", p.cfg.Name, err)
		}
	}
	return took, nil
}

// waitPeerApplied asks a 9h follower child (on ALPNCluster: 8 bytes,
// an index) to answer once its FSM applied that index.
func waitPeerApplied(ctx context.Context, id *ctlcluster.Identity, p *proc, index uint64) error {
	c, err := id.Dial(ctx, p.info.Cluster, ctlcluster.ALPNCluster)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], index)
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	_, err = io.ReadFull(c, b[:])
	return err
}

// answerApplied serves waitPeerApplied on a 9h follower.
func answerApplied(ctx context.Context, ln net.Listener, r *raft.Raft) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var b [8]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
			want := binary.BigEndian.Uint64(b[:])
			_ = poll(ctx, time.Minute, func() (bool, error) { return r.AppliedIndex() >= want, nil })
			_, _ = c.Write(b[:])
		}()
	}
}

// ---------------------------------------------------------------------
// 9p: the prototype output channel

// chunkHeader is seq, job, offset (8 bytes each) and the data's length
// (4): the prototype's frame, followed by the data. An ack is the
// follower's highest synced seq (8 bytes).
const chunkHeader = 28

// syncedSeq waits, in order, for each appended chunk's batch to be
// synced and publishes the highest synced seq through set.
func syncedSeq(pending <-chan seqPending, set func(uint64)) error {
	var first error
	for sp := range pending {
		if err := sp.p.Wait(); err != nil && first == nil {
			first = err
		}
		if first == nil {
			set(sp.seq)
		}
	}
	return first
}

type seqPending struct {
	seq uint64
	p   *store.Pending
}

// runChannelLeader opens the leader's store, dials both peers on
// ALPNCluster and streams n chunks, returning the time until the quorum
// (the second highest of the three synced seqs) reaches n.
func runChannelLeader(ctx context.Context, dir string, id *ctlcluster.Identity, peers []*proc, data []byte, n int, logger hclog.Logger, mark func()) (time.Duration, error) {
	st, err := store.Open(filepath.Join(dir, "store"), store.Options{Logger: logger.Named("store")})
	if err != nil {
		return 0, err
	}
	defer st.Close()

	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	synced := make([]uint64, 1+len(peers)) // [0] the leader's own
	var failed error
	set := func(i int, seq uint64) {
		mu.Lock()
		synced[i] = max(synced[i], seq)
		mu.Unlock()
		cond.Broadcast()
	}
	fail := func(err error) {
		mu.Lock()
		if failed == nil {
			failed = err
		}
		mu.Unlock()
		cond.Broadcast()
	}
	quorum := func() uint64 { // with mu held
		s := slices.Clone(synced)
		slices.Sort(s)
		return s[len(s)-(len(s)/2+1)]
	}

	var conns []net.Conn
	var sends []chan uint64
	var wg sync.WaitGroup
	defer func() {
		for _, c := range sends {
			close(c)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		wg.Wait()
	}()
	for i, p := range peers {
		c, err := id.Dial(ctx, p.info.Cluster, ctlcluster.ALPNCluster)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		ch := make(chan uint64, channelWindow/len(data)+1)
		sends = append(sends, ch)
		wg.Go(func() { // sender: frames from the shared data buffer
			w := bufio.NewWriterSize(c, 1<<20)
			var h [chunkHeader]byte
			for seq := range ch {
				binary.BigEndian.PutUint64(h[0:], seq)
				binary.BigEndian.PutUint64(h[8:], 1)
				binary.BigEndian.PutUint64(h[16:], (seq-1)*uint64(len(data)))
				binary.BigEndian.PutUint32(h[24:], uint32(len(data)))
				if _, err := w.Write(h[:]); err != nil {
					fail(err)
					return
				}
				if _, err := w.Write(data); err != nil {
					fail(err)
					return
				}
				if len(ch) == 0 {
					if err := w.Flush(); err != nil {
						fail(err)
						return
					}
				}
			}
		})
		wg.Go(func() { // acks
			r := bufio.NewReader(c)
			var b [8]byte
			for {
				if _, err := io.ReadFull(r, b[:]); err != nil {
					return
				}
				set(1+i, binary.BigEndian.Uint64(b[:]))
			}
		})
	}
	pend := make(chan seqPending, channelWindow/len(data)+1)
	syncDone := make(chan error, 1)
	go func() { syncDone <- syncedSeq(pend, func(s uint64) { set(0, s) }) }()

	stop := context.AfterFunc(ctx, func() { fail(ctx.Err()) })
	defer stop()
	mark()
	start := time.Now()
	window := uint64(max(channelWindow/len(data), 1))
	for k := 1; k <= n; k++ {
		seq := uint64(k)
		mu.Lock()
		for failed == nil && seq > quorum()+window {
			cond.Wait()
		}
		err := failed
		mu.Unlock()
		if err != nil {
			close(pend)
			<-syncDone
			return 0, err
		}
		p, err := st.ApplyNoWait(&store.Output{Job: 1, Chunk: store.Chunk{Offset: (seq - 1) * uint64(len(data)), Stream: 1, Data: data, Time: time.Unix(1, 0)}})
		if err != nil {
			close(pend)
			<-syncDone
			return 0, err
		}
		pend <- seqPending{seq, p}
		for _, ch := range sends {
			ch <- seq
		}
	}
	close(pend)
	mu.Lock()
	for failed == nil && quorum() < uint64(n) {
		cond.Wait()
	}
	err = failed
	mu.Unlock()
	took := time.Since(start)
	if serr := <-syncDone; err == nil {
		err = serr
	}
	if err != nil {
		return 0, err
	}
	// Both followers, not only the quorum, have every chunk before the
	// next measurement starts.
	mu.Lock()
	for failed == nil && slices.Min(synced) < uint64(n) {
		cond.Wait()
	}
	err = failed
	mu.Unlock()
	return took, err
}

// runOutputPeer is the child side of 9h and 9p: a follower that prints
// its cluster address and runs until ctx ends.
func runOutputPeer(ctx context.Context, cfg childConfig, logger hclog.Logger, out interface{ Encode(any) error }) error {
	id, err := benchIdentity(cfg.PKI, cfg.Name)
	if err != nil {
		return err
	}
	if cfg.Variant != "channel" {
		nd, err := startRaftNode(cfg.Data, cfg.Name, cfg.Variant, cfg.MaxAppend, id, logger, false)
		if err != nil {
			return err
		}
		defer nd.close()
		go answerApplied(ctx, nd.mux.Listener(ctlcluster.ALPNCluster), nd.r)
		if err := out.Encode(childInfo{Cluster: nd.mux.Addr().String()}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	m, err := listenMux(id, logger.Named("mux"))
	if err != nil {
		return err
	}
	defer m.Close()
	st, err := store.Open(filepath.Join(cfg.Data, "store"), store.Options{Logger: logger.Named("store")})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := out.Encode(childInfo{Cluster: m.Addr().String()}); err != nil {
		return err
	}
	ln := m.Listener(ctlcluster.ALPNCluster)
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	var wmu sync.Mutex
	w := bufio.NewWriter(c)
	pend := make(chan seqPending, 1024)
	syncDone := make(chan error, 1)
	go func() {
		syncDone <- syncedSeq(pend, func(seq uint64) {
			wmu.Lock()
			defer wmu.Unlock()
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], seq)
			_, _ = w.Write(b[:])
			if len(pend) == 0 {
				_ = w.Flush()
			}
		})
	}()
	r := bufio.NewReaderSize(c, 1<<20)
	var h [chunkHeader]byte
	var err2 error
	for {
		if _, err2 = io.ReadFull(r, h[:]); err2 != nil {
			break
		}
		data := make([]byte, binary.BigEndian.Uint32(h[24:]))
		if _, err2 = io.ReadFull(r, data); err2 != nil {
			break
		}
		p, err := st.ApplyNoWait(&store.Output{Job: binary.BigEndian.Uint64(h[8:]), Chunk: store.Chunk{Offset: binary.BigEndian.Uint64(h[16:]), Stream: 1, Data: data, Time: time.Unix(1, 0)}})
		if err != nil {
			err2 = err
			break
		}
		pend <- seqPending{binary.BigEndian.Uint64(h[0:]), p}
	}
	close(pend)
	serr := <-syncDone
	// The leader hung up: stay until the parent stops us, so that it
	// reads this process's CPU time from /proc first.
	if !errors.Is(err2, io.EOF) && !errors.Is(err2, net.ErrClosed) {
		logger.Error("output channel", "error", err2)
	}
	<-ctx.Done()
	return serr
}
