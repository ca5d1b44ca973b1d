package store

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Join tokens let new agents enroll: whoever holds one may ask the
// controller to sign an agent certificate, a given number of times,
// until it expires. Only the SHA-256 of the secret is stored, under
// "n" + hash, so a copy of the data directory enrolls nobody.

// prefixJoin is the key prefix of join tokens; see doc.go.
const prefixJoin = 'n'

// Errors of UseJoinToken, besides ErrNotFound (no token has this hash:
// unknown, mistyped, revoked, or pruned after it expired).
var (
	// ErrTokenExpired: the join token's ExpiresAt has passed.
	ErrTokenExpired = errors.New("join token expired")
	// ErrTokenUsedUp: the join token was used as many times as it allows.
	ErrTokenUsedUp = errors.New("join token used up")
)

// JoinTokenIDBytes is how many leading bytes of the hash make a join
// token's ID.
const JoinTokenIDBytes = 8

// JoinToken is a join token's record.
type JoinToken struct {
	Hash       []byte            `json:"hash"`                  // SHA-256 of the secret; the key
	Uses       int               `json:"uses"`                  // enrollments allowed in all
	UsesLeft   int               `json:"uses_left"`             // enrollments still allowed
	Labels     map[string]string `json:"labels,omitempty"`      // given to the agents it enrolls
	NamePrefix string            `json:"name_prefix,omitempty"` // enrolled names start with it and "-"
	CreatedBy  string            `json:"created_by"`
	CreatedAt  time.Time         `json:"created_at"`
	ExpiresAt  time.Time         `json:"expires_at"`
	Enrolled   []string          `json:"enrolled,omitempty"` // names of the agents it enrolled, in order
}

// ID names the token in lists, the audit log and DeleteJoinToken: the
// hex of the first JoinTokenIDBytes of its hash. It is not a secret.
func (t *JoinToken) ID() string {
	return hex.EncodeToString(t.Hash[:min(len(t.Hash), JoinTokenIDBytes)])
}

func joinKey(hash []byte) []byte { return append([]byte{prefixJoin}, hash...) }

// joinMu serializes the read-modify-write of UseJoinToken, so two
// enrollments can never both take a token's last use. One lock for
// every Store is enough: the section is a point read and a write.
var joinMu sync.Mutex

// PutJoinToken stores a new join token, synced. Its Hash must be set
// (at least JoinTokenIDBytes long) and not be stored yet.
func (s *Store) PutJoinToken(t JoinToken) error {
	if len(t.Hash) < JoinTokenIDBytes || t.Uses <= 0 || t.UsesLeft < 0 || t.UsesLeft > t.Uses {
		return fmt.Errorf("store: put join token: %w: a hash and 0 <= uses left <= uses > 0 are required", ErrInvalid)
	}
	joinMu.Lock()
	defer joinMu.Unlock()
	if _, err := s.JoinToken(t.Hash); err == nil {
		return fmt.Errorf("store: put join token %s: %w", t.ID(), ErrInvalid)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	if err := s.putJSON(joinKey(t.Hash), &t); err != nil {
		return fmt.Errorf("store: put join token %s: %w", t.ID(), err)
	}
	return nil
}

// JoinToken returns the join token whose secret hashes to hash, or
// ErrNotFound. It does not use the token.
func (s *Store) JoinToken(hash []byte) (JoinToken, error) {
	if !s.acquire() {
		return JoinToken{}, fmt.Errorf("store: join token: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	t, err := s.joinToken(hash)
	if err != nil {
		return JoinToken{}, fmt.Errorf("store: join token: %w", err)
	}
	return t, nil
}

func (s *Store) joinToken(hash []byte) (JoinToken, error) {
	if len(hash) == 0 {
		return JoinToken{}, ErrNotFound
	}
	v, closer, err := s.db.Get(joinKey(hash))
	if errors.Is(err, pebble.ErrNotFound) {
		return JoinToken{}, ErrNotFound
	}
	if err != nil {
		return JoinToken{}, err
	}
	defer closer.Close()
	var t JoinToken
	if err := json.Unmarshal(v, &t); err != nil {
		return JoinToken{}, err
	}
	return t, nil
}

// UseJoinToken takes one use of the join token whose secret hashes to
// hash for the agent name, atomically and synced, and returns the token
// as it is after the use. A token that is unknown (ErrNotFound), expired
// at now (ErrTokenExpired) or used up (ErrTokenUsedUp) is left as it is.
func (s *Store) UseJoinToken(hash []byte, now time.Time, name string) (JoinToken, error) {
	joinMu.Lock()
	defer joinMu.Unlock()
	if !s.acquire() {
		return JoinToken{}, fmt.Errorf("store: use join token: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	t, err := s.joinToken(hash)
	if err != nil {
		return JoinToken{}, fmt.Errorf("store: use join token: %w", err)
	}
	switch {
	case !now.Before(t.ExpiresAt):
		return t, fmt.Errorf("store: use join token %s: %w", t.ID(), ErrTokenExpired)
	case t.UsesLeft <= 0:
		return t, fmt.Errorf("store: use join token %s: %w", t.ID(), ErrTokenUsedUp)
	}
	t.UsesLeft--
	t.Enrolled = append(t.Enrolled, name)
	data, err := json.Marshal(&t)
	if err == nil {
		err = s.db.Set(joinKey(t.Hash), data, s.write)
	}
	if err != nil {
		return JoinToken{}, fmt.Errorf("store: use join token %s: %w", t.ID(), err)
	}
	return t, nil
}

// JoinTokens returns every stored join token, oldest first.
func (s *Store) JoinTokens() ([]JoinToken, error) {
	var out []JoinToken
	err := s.scan(prefixJoin, func(v []byte) error {
		var t JoinToken
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: join tokens: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// DeleteJoinToken removes the join token with the given ID (see
// JoinToken.ID) and returns it, or returns ErrNotFound.
func (s *Store) DeleteJoinToken(id string) (JoinToken, error) {
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != JoinTokenIDBytes {
		return JoinToken{}, fmt.Errorf("store: delete join token %q: %w", id, ErrNotFound)
	}
	joinMu.Lock()
	defer joinMu.Unlock()
	if !s.acquire() {
		return JoinToken{}, fmt.Errorf("store: delete join token: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	p := joinKey(b)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return JoinToken{}, fmt.Errorf("store: delete join token %s: %w", id, err)
	}
	var found []JoinToken
	for ok := it.First(); ok; ok = it.Next() {
		var t JoinToken
		if err := json.Unmarshal(it.Value(), &t); err != nil {
			_ = it.Close()
			return JoinToken{}, fmt.Errorf("store: delete join token %s: %w", id, err)
		}
		found = append(found, t)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return JoinToken{}, fmt.Errorf("store: delete join token %s: %w", id, err)
	}
	if len(found) == 0 {
		return JoinToken{}, fmt.Errorf("store: delete join token %s: %w", id, ErrNotFound)
	}
	b2 := s.db.NewBatch()
	defer b2.Close()
	for _, t := range found { // two tokens sharing 64 bits of hash: both go
		if err := b2.Delete(joinKey(t.Hash), nil); err != nil {
			return JoinToken{}, fmt.Errorf("store: delete join token %s: %w", id, err)
		}
	}
	if err := b2.Commit(s.write); err != nil {
		return JoinToken{}, fmt.Errorf("store: delete join token %s: %w", id, err)
	}
	return found[0], nil
}

// PruneJoinTokens removes the join tokens that expired before before and
// returns how many it removed.
func (s *Store) PruneJoinTokens(before time.Time) (int, error) {
	joinMu.Lock()
	defer joinMu.Unlock()
	if !s.acquire() {
		return 0, fmt.Errorf("store: prune join tokens: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixJoin}, UpperBound: []byte{prefixJoin + 1}})
	if err != nil {
		return 0, fmt.Errorf("store: prune join tokens: %w", err)
	}
	var old [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		var t JoinToken
		if err := json.Unmarshal(it.Value(), &t); err == nil && t.ExpiresAt.Before(before) {
			old = append(old, bytes.Clone(it.Key()))
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, fmt.Errorf("store: prune join tokens: %w", err)
	}
	if len(old) == 0 {
		return 0, nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, k := range old {
		if err := b.Delete(k, nil); err != nil {
			return 0, fmt.Errorf("store: prune join tokens: %w", err)
		}
	}
	if err := b.Commit(s.write); err != nil {
		return 0, fmt.Errorf("store: prune join tokens: %w", err)
	}
	return len(old), nil
}
