package store

import (
	"crypto/sha256"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"
)

func joinHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func TestJoinTokenUses(t *testing.T) {
	now := time.Now().UTC().Round(0)
	tests := map[string]struct {
		uses    int
		expires time.Duration // after now
		tries   int
		want    []error // per try
	}{
		"single use":            {uses: 1, expires: time.Hour, tries: 2, want: []error{nil, ErrTokenUsedUp}},
		"three uses":            {uses: 3, expires: time.Hour, tries: 4, want: []error{nil, nil, nil, ErrTokenUsedUp}},
		"expired":               {uses: 1, expires: -time.Second, tries: 1, want: []error{ErrTokenExpired}},
		"expires exactly now":   {uses: 1, expires: 0, tries: 1, want: []error{ErrTokenExpired}},
		"expired and used up":   {uses: 1, expires: -time.Second, tries: 2, want: []error{ErrTokenExpired, ErrTokenExpired}},
		"unknown token refused": {uses: 0, tries: 1, want: []error{ErrNotFound}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			hash := joinHash(name)
			if tt.uses > 0 {
				tok := JoinToken{Hash: hash, Uses: tt.uses, UsesLeft: tt.uses, Labels: map[string]string{"gpu": "yes"}, NamePrefix: "ci",
					CreatedBy: "operator alice", CreatedAt: now, ExpiresAt: now.Add(tt.expires)}
				if err := applyErr(s, &CreateJoinToken{Token: tok}); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < tt.tries; i++ {
				before, _ := s.JoinToken(hash)
				got, err := useJoinToken(s, hash, now, "ci-x")
				if !errors.Is(err, tt.want[i]) || (tt.want[i] == nil) != (err == nil) {
					t.Fatalf("use %d: %v, want %v", i+1, err, tt.want[i])
				}
				after, _ := s.JoinToken(hash)
				if err != nil {
					if !reflect.DeepEqual(before, after) {
						t.Fatalf("a refused use changed the token: %+v → %+v", before, after)
					}
					continue
				}
				if got.UsesLeft != tt.uses-i-1 || after.UsesLeft != got.UsesLeft || len(after.Enrolled) != i+1 || after.Labels["gpu"] != "yes" {
					t.Fatalf("after use %d: returned %+v, stored %+v", i+1, got, after)
				}
			}
		})
	}
}

// TestJoinTokenConcurrentUses: N concurrent enrollments with a token of
// K uses: exactly K succeed.
func TestJoinTokenConcurrentUses(t *testing.T) {
	s := open(t)
	now := time.Now()
	hash := joinHash("shared")
	const uses, tries = 5, 40
	if err := applyErr(s, &CreateJoinToken{Token: JoinToken{Hash: hash, Uses: uses, UsesLeft: uses, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, usedUp := 0, 0
	for range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := useJoinToken(s, hash, now, "a")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrTokenUsedUp):
				usedUp++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != uses || usedUp != tries-uses {
		t.Fatalf("%d uses succeeded and %d were refused; want %d and %d", ok, usedUp, uses, tries-uses)
	}
}

func TestJoinTokensListDeletePrune(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	now := time.Now().UTC().Round(0)
	a := JoinToken{Hash: joinHash("a"), Uses: 1, UsesLeft: 1, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	b := JoinToken{Hash: joinHash("b"), Uses: 2, UsesLeft: 2, CreatedAt: now.Add(time.Second), ExpiresAt: now.Add(-time.Hour)}
	for _, tok := range []JoinToken{b, a} {
		if err := applyErr(s, &CreateJoinToken{Token: tok}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyErr(s, &CreateJoinToken{Token: a}); !errors.Is(err, ErrExists) {
		t.Fatalf("storing a token twice: %v, want ErrExists", err)
	}
	for name, bad := range map[string]JoinToken{
		"no hash":       {Uses: 1, UsesLeft: 1},
		"no uses":       {Hash: joinHash("c")},
		"more left":     {Hash: joinHash("c"), Uses: 1, UsesLeft: 2},
		"negative left": {Hash: joinHash("c"), Uses: 1, UsesLeft: -1},
	} {
		if err := applyErr(s, &CreateJoinToken{Token: bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: PutJoinToken = %v, want ErrInvalid", name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	got, err := s.JoinTokens()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []JoinToken{a, b}) {
		t.Fatalf("JoinTokens() = %+v, want a then b", got)
	}
	if len(a.ID()) != 2*JoinTokenIDBytes {
		t.Fatalf("ID %q", a.ID())
	}
	n, err := pruneJoinTokens(s, now)
	if err != nil || n != 1 {
		t.Fatalf("PruneJoinTokens = %d, %v; want 1 (b expired)", n, err)
	}
	if _, err := s.JoinToken(b.Hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pruned token: %v", err)
	}
	del, err := deleteJoinToken(s, a.ID())
	if err != nil || !reflect.DeepEqual(del, a) {
		t.Fatalf("DeleteJoinToken = %+v, %v", del, err)
	}
	for _, id := range []string{a.ID(), "zz", "", "0011"} {
		if _, err := deleteJoinToken(s, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("DeleteJoinToken(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := useJoinToken(s, a.Hash, now, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted token used: %v", err)
	}
}
