package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// prefixCluster is the prefix of the replicated log's bookkeeping keys
// (doc.go): "zi", the last log index applied, and "zc", the replicated
// log's membership configuration.
const prefixCluster = 'z'

var (
	appliedKey = []byte{prefixCluster, 'i'}
	configKey  = []byte{prefixCluster, 'c'}
)

// SetApplied records that the store holds every log entry up to Index
// (of Term) of a replicated log: the FSM (controller/cluster) appends
// it to the commands of the entries it applies, so the index is written
// in the same atomic batch as what it describes and a restart knows
// exactly which entries to skip. It replaces the index stored before;
// nothing else reads or checks it. It has no type number and cannot
// travel in a round (EncodeRound refuses it): only the node applying an
// entry knows the entry's index.
type SetApplied struct{ Index, Term uint64 }

func (c *SetApplied) check() error {
	if c.Index == 0 {
		return fmt.Errorf("%w: applied index 0", ErrInvalid)
	}
	return nil
}

func (c *SetApplied) apply(r *round) (Result, error) {
	var v [16]byte
	binary.BigEndian.PutUint64(v[:8], c.Index)
	binary.BigEndian.PutUint64(v[8:], c.Term)
	_ = r.b.Set(appliedKey, v[:], nil)
	return Result{}, nil
}

// Applied returns the index and term SetApplied last wrote, or zeros if
// it never did.
func (s *Store) Applied() (index, term uint64, err error) {
	if !s.acquire() {
		return 0, 0, fmt.Errorf("store: applied index: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	v, closer, err := s.db.Get(appliedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("store: applied index: %w", err)
	}
	defer closer.Close()
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("store: applied index: malformed value (%d bytes)", len(v))
	}
	return binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:]), nil
}

// SetConfiguration records the membership configuration of a replicated
// log (Data, as the log encodes it: the store does not read it) and the
// index of the entry that set it. The FSM (controller/cluster) writes it
// in the batch of the configuration entry it applies, and with a
// restored snapshot, so that the store itself says which servers its
// state belongs with. Like SetApplied it has no type number and cannot
// travel in a round: only the FSM writes it.
type SetConfiguration struct {
	Index uint64
	Data  []byte
}

func (c *SetConfiguration) check() error {
	if c.Index == 0 || len(c.Data) == 0 {
		return fmt.Errorf("%w: a configuration needs its index and its bytes", ErrInvalid)
	}
	return nil
}

func (c *SetConfiguration) apply(r *round) (Result, error) {
	v := make([]byte, 8+len(c.Data))
	binary.BigEndian.PutUint64(v[:8], c.Index)
	copy(v[8:], c.Data)
	_ = r.b.Set(configKey, v, nil)
	return Result{}, nil
}

// Configuration returns the bytes and the index SetConfiguration last
// wrote, or nil and 0 if it never did.
func (s *Store) Configuration() (data []byte, index uint64, err error) {
	if !s.acquire() {
		return nil, 0, fmt.Errorf("store: configuration: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	v, closer, err := s.db.Get(configKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("store: configuration: %w", err)
	}
	defer closer.Close()
	if len(v) <= 8 {
		return nil, 0, fmt.Errorf("store: configuration: malformed value (%d bytes)", len(v))
	}
	return append([]byte(nil), v[8:]...), binary.BigEndian.Uint64(v[:8]), nil
}

// Checkpoint writes a consistent copy of the whole store to dir, which
// must not exist: a Pebble checkpoint (SSTables hard-linked where the
// file system allows, the manifest, options and WAL copied), after
// syncing the WAL, so that everything applied before the call is both in
// the copy and durable in the store itself, with Options.NoSync too.
// The copy opens with Open like any store directory. Node-local files
// (Secret's node/) are not part of it.
func (s *Store) Checkpoint(dir string) error {
	if !s.acquire() {
		return fmt.Errorf("store: checkpoint: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("store: checkpoint %s: %w", dir, err)
	}
	return nil
}

// outputChannelKey ("zo") marks a replicated store whose cluster has
// sent agents' output on the output channel (controller/outchan).
var outputChannelKey = []byte{prefixCluster, 'o'}

// UseOutputChannel records, for good, that the cluster's leaders send
// agents' output on the output channel beside the replicated log rather
// than in its rounds. A leader that sends on the channel commits it
// before it takes any output, and a leader set to send output in the
// rounds (controller Config.OutputInRaft) uses the channel all the same
// once the store says so: only the channel's gap fill finds the
// acknowledged output an earlier leader sent on it. It travels in a
// round (type 23) like any replicated command.
type UseOutputChannel struct{}

func (c *UseOutputChannel) check() error { return nil }

func (c *UseOutputChannel) apply(r *round) (Result, error) {
	_ = r.b.Set(outputChannelKey, []byte{1}, nil)
	return Result{}, nil
}

// OutputChannel reports whether UseOutputChannel was applied.
func (s *Store) OutputChannel() (bool, error) {
	if !s.acquire() {
		return false, fmt.Errorf("store: output channel mark: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	_, closer, err := s.db.Get(outputChannelKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: output channel mark: %w", err)
	}
	closer.Close()
	return true, nil
}
