package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Key prefixes of the security records; see doc.go.
const (
	prefixRevoked = 'r'
	prefixToken   = 't'
	prefixAudit   = 'u'
)

// Revocation denies certificates: one certificate by its serial number,
// or, with Serial empty, every certificate of Role named Name.
type Revocation struct {
	Serial   string    `json:"serial,omitempty"` // lowercase hex, no leading zeros
	Role     string    `json:"role,omitempty"`   // the certificate's role
	Name     string    `json:"name,omitempty"`   // the certificate's name (CN)
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by"`                  // who revoked it: "operator alice"
	At       time.Time `json:"at"`                  // when
	NotAfter time.Time `json:"not_after,omitempty"` // the certificate's expiry, when known
}

// ID names the revocation: "serial:HEX" for one certificate,
// "name:ROLE:NAME" for every certificate of a role and name.
func (r *Revocation) ID() string {
	if r.Serial != "" {
		return "serial:" + r.Serial
	}
	return "name:" + r.Role + ":" + r.Name
}

// Token is an API token. Only the SHA-256 of its secret is stored.
type Token struct {
	ID        string    `json:"id"`
	Hash      []byte    `json:"hash"` // SHA-256 of the secret
	Role      string    `json:"role"`
	Name      string    `json:"name"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AuditEntry records who did what, and when.
type AuditEntry struct {
	// ID orders the entries: it strictly increases and is at least Time
	// in Unix nanoseconds. The caller assigns it.
	ID         uint64    `json:"id"`
	Time       time.Time `json:"time"`
	Who        string    `json:"who"`        // certificate or token name
	Role       string    `json:"role"`       // its role
	Via        string    `json:"via"`        // "certificate" or "token"
	Credential string    `json:"credential"` // certificate serial (hex) or token ID
	Remote     string    `json:"remote,omitempty"`
	Action     string    `json:"action"` // submit, cancel, drain, revoke, ...
	Target     string    `json:"target"` // "job 12", "agent worker-1", ...
	Detail     string    `json:"detail,omitempty"`
}

func revokedKey(id string) []byte { return append([]byte{prefixRevoked}, id...) }
func tokenKey(id string) []byte   { return append([]byte{prefixToken}, id...) }

func auditKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixAudit
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

// Revocations returns every revocation, oldest first.
func (s *Store) Revocations() ([]Revocation, error) {
	var out []Revocation
	err := s.scan(prefixRevoked, func(v []byte) error {
		var r Revocation
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: revocations: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// Tokens returns every stored token, oldest first.
func (s *Store) Tokens() ([]Token, error) {
	var out []Token
	err := s.scan(prefixToken, func(v []byte) error {
		var t Token
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: tokens: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// LastAuditID returns the ID of the newest audit entry, or 0.
func (s *Store) LastAuditID() (uint64, error) {
	if !s.acquire() {
		return 0, fmt.Errorf("store: last audit entry: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: []byte{prefixAudit + 1}})
	if err != nil {
		return 0, fmt.Errorf("store: last audit entry: %w", err)
	}
	var id uint64
	if it.Last() && len(it.Key()) == 9 {
		id = binary.BigEndian.Uint64(it.Key()[1:])
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, fmt.Errorf("store: last audit entry: %w", err)
	}
	return id, nil
}

// Audit returns up to limit audit entries older than before (every
// entry when before is 0), newest first.
func (s *Store) Audit(before uint64, limit int) ([]AuditEntry, error) {
	if !s.acquire() {
		return nil, fmt.Errorf("store: audit: %w", ErrClosed)
	}
	defer s.mu.RUnlock()
	upper := []byte{prefixAudit + 1}
	if before != 0 {
		upper = auditKey(before)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("store: audit: %w", err)
	}
	var out []AuditEntry
	for ok := it.Last(); ok && len(out) < limit; ok = it.Prev() {
		var e AuditEntry
		if err := decodeAudit(it.Value(), &e); err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("store: audit: entry %x: %w", it.Key(), err)
		}
		out = append(out, e)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("store: audit: %w", err)
	}
	return out, nil
}

// scan calls fn with the value of every key starting with p.
func (s *Store) scan(p byte, fn func(v []byte) error) error {
	if !s.acquire() {
		return ErrClosed
	}
	defer s.mu.RUnlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Value()); err != nil {
			_ = it.Close()
			return fmt.Errorf("key %q: %w", it.Key(), err)
		}
	}
	return errors.Join(it.Error(), it.Close())
}
