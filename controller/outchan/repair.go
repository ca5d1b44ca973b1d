package outchan

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// repairRetry is how long a repair that found no peer with the bytes
// waits before it tries again.
const repairRetry = 2 * time.Second

// repairBatch bounds the jobs one pass repairs before it takes them out
// of the store's queue together (one store batch).
const repairBatch = 256

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
// the node missed. Its queue is the store's (store.PendingRepairs): the
// FSM's apply of a round that ends an attempt (store.TruncateLog: the
// job's output is final below At) queues the job in the same batch, so
// the queue survives a restart, and a snapshot carries the queue of the
// node it was taken on. Note hears of each such round as it is applied
// (so the Repairer need not read the store's queue for it); Run reads
// the store's queue when it starts and after Rescan (a snapshot was
// installed), fetches every hole of [0, At) from the peers (OpRead) and
// stores it with store.ReplicaOutput under the attempt the bytes
// belong to — which refuses bytes of a job pruned meanwhile — then
// takes the job out of the store's queue (store.RepairDone). A quorum
// holds every byte below At (the attempt's end was proposed only once
// it did), so some peer that is up has them unless a quorum is down;
// then it tries again later.
type Repairer struct {
	o   RepairOptions
	log hclog.Logger

	mu   sync.Mutex
	want map[uint64]*repairJob // job → what to repair
	scan bool                  // read the store's queue before the next pass
	wake chan struct{}

	repaired atomic.Uint64 // bytes fetched and stored
}

// repairJob is a job waiting for a repair of its output below at; a
// repair that failed is tried again from retry on.
type repairJob struct {
	at    uint64
	retry time.Time
}

// NewRepairer returns a node's Repairer; Run runs it.
func NewRepairer(o RepairOptions) *Repairer {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &Repairer{o: o, log: o.Logger, want: map[uint64]*repairJob{}, scan: true, wake: make(chan struct{}, 1)}
}

// Note queues job for a repair of its output below at. It never blocks:
// the FSM calls it as it applies.
func (r *Repairer) Note(job, at uint64) {
	if at == 0 {
		return
	}
	r.mu.Lock()
	r.add(job, at)
	r.mu.Unlock()
	r.kick()
}

// add queues job up to at, now. The caller holds r.mu.
func (r *Repairer) add(job, at uint64) {
	if w := r.want[job]; w != nil {
		w.at = max(w.at, at)
		w.retry = time.Time{}
		return
	}
	r.want[job] = &repairJob{at: at}
}

func (r *Repairer) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Rescan makes Run forget what it was told and read the store's queue
// again: the node's store was replaced by a snapshot, whose queue is
// now the truth (the jobs the node it came from had not repaired when
// it was taken, and those whose end the node applied since). It never
// blocks: the FSM calls it once it restored.
func (r *Repairer) Rescan() {
	r.mu.Lock()
	r.scan = true
	r.mu.Unlock()
	r.kick()
}

// Pending returns how many jobs wait for a repair.
func (r *Repairer) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.want)
}

// RepairedBytes returns how many bytes of output the Repairer fetched
// from peers and stored since it was made.
func (r *Repairer) RepairedBytes() uint64 { return r.repaired.Load() }

// Run repairs the jobs queued until ctx ends.
func (r *Repairer) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := r.rescan(); err != nil {
			r.log.Warn("reading the output repair queue failed; trying again", "error", err)
			if !r.sleep(ctx, repairRetry) {
				return
			}
			continue
		}
		jobs, wait := r.ready(time.Now())
		if len(jobs) == 0 {
			if !r.sleep(ctx, wait) {
				return
			}
			continue
		}
		r.pass(ctx, jobs)
	}
}

// sleep waits for a Note or Rescan, d (if not 0), or the end of ctx,
// and reports whether ctx is still live.
func (r *Repairer) sleep(ctx context.Context, d time.Duration) bool {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-r.wake:
	case <-timer:
	}
	return true
}

// rescan reads the store's queue into want if Rescan asked for it (or
// the Repairer just started). What it was told before is dropped first,
// so a Note that comes meanwhile is kept: its job is in the store read
// after the drop anyway.
func (r *Repairer) rescan() error {
	r.mu.Lock()
	if !r.scan {
		r.mu.Unlock()
		return nil
	}
	r.scan = false
	clear(r.want)
	r.mu.Unlock()
	p, err := r.o.Store().PendingRepairs()
	if err != nil {
		r.mu.Lock()
		r.scan = true
		r.mu.Unlock()
		return err
	}
	r.mu.Lock()
	for _, q := range p {
		r.add(q.Job, q.At)
	}
	r.mu.Unlock()
	if len(p) > 0 {
		r.log.Info("output repair queue read from the store", "jobs", len(p))
	}
	return nil
}

// ready returns up to repairBatch jobs due for a repair, or, if none
// is, how long until one is (0: none is waiting for a retry).
func (r *Repairer) ready(now time.Time) ([]store.PendingRepair, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var jobs []store.PendingRepair
	var next time.Time
	for job, w := range r.want {
		if w.retry.After(now) {
			if next.IsZero() || w.retry.Before(next) {
				next = w.retry
			}
			continue
		}
		jobs = append(jobs, store.PendingRepair{Job: job, At: w.at})
		if len(jobs) == repairBatch {
			break
		}
	}
	if len(jobs) > 0 || next.IsZero() {
		return jobs, 0
	}
	return nil, next.Sub(now)
}

// pass repairs jobs in one store and takes those it finished out of the
// store's queue in one batch. A job whose repair failed stays queued,
// to be tried again after repairRetry. All of it uses one store: if a
// snapshot replaces it meanwhile, the writes fail (store.ErrClosed) and
// the Rescan that follows the restore starts over from the new store.
func (r *Repairer) pass(ctx context.Context, jobs []store.PendingRepair) {
	st := r.o.Store()
	var done []store.Command
	var failed []store.PendingRepair
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		if err := r.repair(ctx, st, j.Job, j.At); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("output repair failed; trying again", "job", j.Job, "end", j.At, "error", err)
			failed = append(failed, j)
			continue
		}
		done = append(done, &store.RepairDone{Job: j.Job, At: j.At})
	}
	if len(done) > 0 {
		if _, err := st.Apply(done...); err != nil {
			r.log.Warn("output repair: taking repaired jobs out of the store's queue failed; trying again", "error", err)
			for _, c := range done {
				d := c.(*store.RepairDone)
				failed = append(failed, store.PendingRepair{Job: d.Job, At: d.At})
			}
			done = nil
		}
	}
	retry := time.Now().Add(repairRetry)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range done {
		d := c.(*store.RepairDone)
		if w := r.want[d.Job]; w != nil && w.at <= d.At {
			delete(r.want, d.Job)
		}
	}
	for _, f := range failed {
		if w := r.want[f.Job]; w != nil && w.at <= f.At {
			w.retry = retry
		}
	}
}

// repair fills every hole of job's output below at in st.
func (r *Repairer) repair(ctx context.Context, st *store.Store, job, at uint64) error {
	pos := uint64(0)
	fetched := uint64(0)
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
		fetched += end - start
		pos = end
	}
	if fetched > 0 {
		r.repaired.Add(fetched)
		r.log.Debug("output repaired", "job", job, "end", at, "bytes", fetched)
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
