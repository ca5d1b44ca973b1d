package store

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
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
