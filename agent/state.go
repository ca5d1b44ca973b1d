package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"jobsuite/protocol"
)

// An attempt's state is kept in the state directory (doc.go, "The state
// directory"): its meta in a record file, rec-N, taken from a pool and
// reused by later attempts, and its output, once the job writes any, in
// a spool JOBID-ATTEMPT.out with JOBID-ATTEMPT.out.ack. Creating and
// deleting files is what costs most on a busy file system (a journal
// transaction each); a reused record file costs one pwrite per change.
// Agents before this layout kept the files of an attempt in a directory
// JOBID-ATTEMPT/ (meta.json, output, output.ack); recover still reads it.
const (
	recPrefix = "rec-"
	spoolExt  = ".out"
)

// meta is what the agent keeps on disk about an attempt besides its
// output: enough to report it after an agent restart.
type meta struct {
	Dispatch protocol.Dispatch `json:"dispatch"`
	PID      int               `json:"pid,omitempty"`
	// StartTick is the process's start time, /proc/PID/stat starttime, to
	// recognise it; when StartTickMax is set the start time lies between
	// the two (agents before it wrote the exact value, and read only that).
	StartTick    uint64             `json:"start_tick,omitempty"`
	StartTickMax uint64             `json:"start_tick_max,omitempty"`
	Result       *protocol.Finished `json:"result,omitempty"` // set once the process ended
}

// A record file holds one attempt's meta: a 4-byte big-endian length
// and that many bytes of JSON, at offset 0. Length 0 is a free record.
// Bytes after the record are left over from a longer one and ignored,
// so the file is never truncated.
const recHeader = 4

// recPool hands out record files. Free ones stay open for reuse.
type recPool struct {
	dir  string
	keep int // free files kept; more are deleted

	mu   sync.Mutex
	free []*os.File
	next int // number of the next new file
}

// get returns a free record file, creating one if none is left.
func (p *recPool) get() (*os.File, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		f := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return f, nil
	}
	n := p.next
	p.next++
	p.mu.Unlock()
	return os.OpenFile(filepath.Join(p.dir, recPrefix+strconv.Itoa(n)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
}

// put marks f free and returns it to the pool.
func (p *recPool) put(f *os.File) {
	var zero [recHeader]byte
	if _, err := f.WriteAt(zero[:], 0); err != nil {
		f.Close()
		_ = os.Remove(f.Name()) // a record we cannot free must not be read again
		return
	}
	p.mu.Lock()
	if len(p.free) < p.keep {
		p.free = append(p.free, f)
		f = nil
	}
	p.mu.Unlock()
	if f != nil {
		f.Close()
		_ = os.Remove(f.Name())
	}
}

// metaFile is an attempt's meta record. It is written when the process
// has started (or with the result, if none started) and rewritten in
// place with the result; the record returns to the pool when the
// attempt is forgotten.
//
// Nothing is synced on the way: the page cache keeps the record across
// a crash of the agent, which is what the PID (to kill an orphaned
// process group) and the result (to report it again) are for. Only the
// result is synced, by sync, after it has been reported — see doc.go for
// why that order loses nothing.
type metaFile struct {
	pool *recPool

	mu   sync.Mutex
	f    *os.File // nil until the first write
	buf  []byte
	disp []byte // the dispatch's JSON, from the first write: an attempt's dispatch does not change
	gone bool   // the attempt is forgotten
}

// write replaces the record's content with m.
func (mf *metaFile) write(m *meta) error {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	if mf.gone {
		return nil
	}
	b := mf.encode(append(mf.buf[:0], 0, 0, 0, 0), m)
	mf.buf = b
	binary.BigEndian.PutUint32(b, uint32(len(b)-recHeader))
	if mf.f == nil {
		if mf.pool == nil {
			return errors.New("agent: no record file for this attempt")
		}
		f, err := mf.pool.get()
		if err != nil {
			return err
		}
		mf.f = f
	}
	_, err := mf.f.WriteAt(b, 0)
	return err
}

// encode appends m's JSON to b: what json.Marshal(m) gives, appended
// by hand (recjson.go), with the dispatch encoded only once per attempt
// (the record is written twice, at the start and with the result).
func (mf *metaFile) encode(b []byte, m *meta) []byte {
	if mf.disp == nil {
		mf.disp = appendDispatchJSON(nil, &m.Dispatch)
	}
	b = append(b, `{"dispatch":`...)
	b = append(b, mf.disp...)
	if m.PID != 0 {
		b = append(b, `,"pid":`...)
		b = strconv.AppendInt(b, int64(m.PID), 10)
	}
	for _, f := range [...]struct {
		name string
		v    uint64
	}{{"start_tick", m.StartTick}, {"start_tick_max", m.StartTickMax}} {
		if f.v != 0 {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":`...)
			b = strconv.AppendUint(b, f.v, 10)
		}
	}
	if m.Result != nil {
		b = append(b, `,"result":`...)
		b = appendFinishedJSON(b, m.Result)
	}
	return append(b, '}')
}

// sync makes what was written durable, unless the attempt is forgotten
// already (the controller stored its result: nothing to keep).
func (mf *metaFile) sync() error {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	if mf.gone || mf.f == nil {
		return nil
	}
	return unix.Fdatasync(int(mf.f.Fd()))
}

// remove frees the record for good; later writes and syncs do nothing.
func (mf *metaFile) remove() {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	mf.gone = true
	if mf.f != nil && mf.pool != nil {
		mf.pool.put(mf.f)
	}
	mf.f = nil
}

// readRecord reads a record file: the meta it holds, or nil if it is free.
func readRecord(f *os.File) (*meta, error) {
	var hdr [recHeader]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // created, never written
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return nil, nil
	}
	if fi, err := f.Stat(); err != nil || fi.Size() < int64(recHeader)+int64(n) {
		return nil, fmt.Errorf("%s: record of %d bytes is cut short", f.Name(), n)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, recHeader); err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return &m, nil
}

func readMeta(path string) (*meta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

// stateEntry is one attempt found in the state directory.
type stateEntry struct {
	ref   protocol.AttemptRef
	m     *meta // nil: unreadable (err says why)
	err   error
	rec   *os.File // its record file; nil in the old layout
	spool string   // path of its spool
	dir   string   // its directory, in the layout of earlier agents; else ""
}

// scanState reads the state directory: the attempts it holds, and the
// pool's free record files. Files that belong to no attempt are removed
// (a spool whose record was freed by an agent that stopped half-way
// through forgetting it, a record that cannot be read).
func scanState(dir string, pool *recPool) ([]stateEntry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []stateEntry
	held := map[string]bool{} // JOBID-ATTEMPT of the attempts found
	for _, e := range entries {
		name := e.Name()
		var ref protocol.AttemptRef
		if e.IsDir() {
			if rest, ok := parseRef(name, &ref); !ok || rest != "" {
				continue
			}
			d := filepath.Join(dir, name)
			m, err := readMeta(filepath.Join(d, "meta.json"))
			out = append(out, stateEntry{ref: ref, m: m, err: err, spool: filepath.Join(d, "output"), dir: d})
			continue
		}
		num, ok := strings.CutPrefix(name, recPrefix)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 {
			continue
		}
		pool.next = max(pool.next, n+1)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		m, err := readRecord(f)
		if m == nil && err == nil {
			pool.put(f)
			continue
		}
		if m != nil {
			ref = protocol.AttemptRef{JobID: m.Dispatch.JobID, Attempt: m.Dispatch.Attempt}
			held[fmt.Sprintf("%d-%d", ref.JobID, ref.Attempt)] = true
		}
		base := filepath.Join(dir, fmt.Sprintf("%d-%d", ref.JobID, ref.Attempt))
		out = append(out, stateEntry{ref: ref, m: m, err: err, rec: f, spool: base + spoolExt})
	}
	for _, e := range entries {
		name := e.Name()
		var ref protocol.AttemptRef
		rest, ok := parseRef(name, &ref)
		if e.IsDir() || !ok || !strings.HasPrefix(rest, spoolExt) {
			continue
		}
		if !held[strings.TrimSuffix(name, rest)] {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
	}
	return out, nil
}

// parseRef reads JOBID-ATTEMPT from the start of name and returns what
// follows it.
func parseRef(name string, ref *protocol.AttemptRef) (rest string, ok bool) {
	digits := func(s string) (uint64, string, bool) {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, s, false
		}
		v, err := strconv.ParseUint(s[:i], 10, 64)
		return v, s[i:], err == nil
	}
	id, s, ok := digits(name)
	if !ok || !strings.HasPrefix(s, "-") {
		return "", false
	}
	at, s, ok := digits(s[1:])
	if !ok || at > math.MaxUint32 {
		return "", false
	}
	ref.JobID, ref.Attempt = id, uint32(at)
	return s, true
}
