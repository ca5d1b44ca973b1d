package outchan

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// repairRetry is how long a repair that found no peer with the bytes
// waits before it tries again.
const repairRetry = 2 * time.Second

// RepairOptions configure a node's Repairer.
type RepairOptions struct {
	Self  string
	Store func() *store.Store
	Peers func() ([]Peer, int)
	Call  Caller
	// Repaired, if set, is told of each job whose output was repaired.
	Repaired func(job uint64)
	Logger   hclog.Logger
}

// Repairer fetches, on every node, the output of ended attempts that
// the node missed: when a round that ends an attempt is applied here
// (store.TruncateLog: the job's output is final below At), Note queues
// the job, and Run fetches every hole of [0, At) from the peers
// (OpRead) and stores it with store.ReplicaOutput under the attempt the
// bytes belong to — which refuses bytes of a job pruned meanwhile. A
// quorum holds every byte below At (the attempt's end was proposed only
// once it did), so some peer that is up has them unless a quorum is down;
// then it tries again later.
type Repairer struct {
	o   RepairOptions
	log hclog.Logger

	mu   sync.Mutex
	want map[uint64]uint64 // job → the end to repair up to
	wake chan struct{}
}

// NewRepairer returns a node's Repairer; Run runs it.
func NewRepairer(o RepairOptions) *Repairer {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &Repairer{o: o, log: o.Logger, want: map[uint64]uint64{}, wake: make(chan struct{}, 1)}
}

// Note queues job for a repair of its output below at. It never blocks:
// the FSM calls it as it applies.
func (r *Repairer) Note(job, at uint64) {
	if at == 0 {
		return
	}
	r.mu.Lock()
	r.want[job] = max(r.want[job], at)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Pending returns how many jobs wait for a repair.
func (r *Repairer) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.want)
}

// Run repairs the jobs noted until ctx ends.
func (r *Repairer) Run(ctx context.Context) {
	for {
		r.mu.Lock()
		var job, at uint64
		for j, a := range r.want {
			job, at = j, a
			break
		}
		if job != 0 {
			delete(r.want, job)
		}
		r.mu.Unlock()
		if job == 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			}
			continue
		}
		if err := r.repair(ctx, job, at); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("output repair failed; trying again", "job", job, "end", at, "error", err)
			time.AfterFunc(repairRetry, func() { r.Note(job, at) })
		}
	}
}

// repair fills every hole of job's output below at.
func (r *Repairer) repair(ctx context.Context, job, at uint64) error {
	st := r.o.Store()
	pos := uint64(0)
	repaired := false
	for {
		start, end, hole, err := st.LogHole(job, pos, at)
		if err != nil {
			return err
		}
		if !hole {
			break
		}
		if err := r.fetch(ctx, st, job, start, end); err != nil {
			if errors.Is(err, errGone) {
				return nil // the job was pruned meanwhile
			}
			return err
		}
		repaired = true
		pos = end
	}
	if repaired {
		r.log.Debug("output repaired", "job", job, "end", at)
		if r.o.Repaired != nil {
			r.o.Repaired(job)
		}
	}
	return nil
}

var errGone = errors.New("job gone")

// fetch gets [from, to) of job's output from a peer that has it.
func (r *Repairer) fetch(ctx context.Context, st *store.Store, job, from, to uint64) error {
	peers, _ := r.o.Peers()
	var last error = fmt.Errorf("no peer to repair job %d from", job)
	for _, p := range peers {
		if p.ID == r.o.Self {
			continue
		}
		pos := from
		for pos < to {
			var ra ReadAnswer
			if err := r.o.Call(ctx, p.Addr, OpRead, ReadRequest{Job: job, From: pos, To: to}, &ra); err != nil {
				last = err
				break
			}
			if len(ra.Chunks) == 0 || ra.Chunks[0].Offset != pos {
				last = fmt.Errorf("peer %s lacks job %d's output at %d", p.ID, job, pos)
				break
			}
			j, err := st.Get(job)
			if errors.Is(err, store.ErrNotFound) {
				return errGone
			}
			if err != nil {
				return err
			}
			for _, c := range ra.Chunks {
				if c.Offset != pos {
					break
				}
				c.Data = c.Data[:min(uint64(len(c.Data)), to-pos)]
				if err := storeEnded(st, j, job, c); err != nil {
					return err
				}
				pos += uint64(len(c.Data))
			}
		}
		if pos >= to {
			return nil
		}
	}
	return last
}

// storeEnded stores chunk c of job j's output under the attempts whose
// ranges it spans (a chunk from a peer may cross from one attempt's
// output into the next's).
func storeEnded(st *store.Store, j *store.Job, job uint64, c store.Chunk) error {
	for len(c.Data) > 0 {
		n, end := attemptAt(j, c.Offset)
		if n == 0 {
			return nil // past every ended attempt: not final yet
		}
		part := c
		part.Data = c.Data[:min(uint64(len(c.Data)), end-c.Offset)]
		res, err := st.Apply(&store.ReplicaOutput{Job: job, Attempt: n, Chunk: part})
		if err != nil {
			return err
		}
		if err := res[0].Err; err != nil && !errors.Is(err, store.ErrStale) {
			return err
		}
		c.Offset += uint64(len(part.Data))
		c.Data = c.Data[len(part.Data):]
	}
	return nil
}

// attemptAt returns the attempt of j whose output holds offset and the
// end of that output, or 0 when no ended attempt holds it.
func attemptAt(j *store.Job, off uint64) (uint32, uint64) {
	for i := range j.Attempts {
		a := &j.Attempts[i]
		var end uint64
		switch {
		case i+1 < len(j.Attempts):
			end = j.Attempts[i+1].LogStart
		case a.Outcome != "" || j.State.Terminal():
			end = j.LogBytes
		default:
			return 0, 0
		}
		if off >= a.LogStart && off < end {
			return a.Number, end
		}
	}
	return 0, 0
}
