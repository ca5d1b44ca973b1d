package store

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestRevocationsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	revs := map[string]Revocation{
		"serial:1f":           {Serial: "1f", Role: "agent", Name: "w1", By: "operator alice", At: at, Reason: "stolen laptop"},
		"name:agent:w2":       {Role: "agent", Name: "w2", By: "operator alice", At: at.Add(time.Second)},
		"name:operator:alice": {Role: "operator", Name: "alice", By: "operator bob", At: at.Add(2 * time.Second)},
	}
	for id, r := range revs {
		if r.ID() != id {
			t.Fatalf("ID() = %q, want %q", r.ID(), id)
		}
		if err := applyErr(s, &PutRevocation{Revocation: r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyErr(s, &DeleteRevocation{ID: "name:operator:alice"}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(s, &DeleteRevocation{ID: "name:operator:alice"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	got, err := s.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	want := []Revocation{revs["serial:1f"], revs["name:agent:w2"]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Revocations() = %+v, want %+v (oldest first)", got, want)
	}
}

func TestTokens(t *testing.T) {
	s := open(t)
	now := time.Now().UTC().Round(0)
	a := Token{ID: "a1", Hash: []byte{1, 2, 3}, Role: "viewer", Name: "grafana", CreatedBy: "operator alice", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	b := Token{ID: "b2", Hash: []byte{4}, Role: "operator", Name: "ci", CreatedBy: "operator alice", CreatedAt: now.Add(time.Second), ExpiresAt: now.Add(time.Hour)}
	for _, tok := range []Token{b, a} {
		if err := applyErr(s, &PutToken{Token: tok}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyErr(s, &PutToken{Token: Token{ID: "x"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("token without hash: %v, want ErrInvalid", err)
	}
	got, err := s.Tokens()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []Token{a, b}) {
		t.Fatalf("Tokens() = %+v", got)
	}
	if err := applyErr(s, &DeleteToken{ID: "a1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyErr(s, &DeleteToken{ID: "a1"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if got, _ := s.Tokens(); len(got) != 1 || got[0].ID != "b2" {
		t.Fatalf("after delete: %+v", got)
	}
}

func TestAuditOrderPagingPrune(t *testing.T) {
	s := open(t)
	if id, err := s.LastAuditID(); err != nil || id != 0 {
		t.Fatalf("LastAuditID of an empty store = %d, %v", id, err)
	}
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		at := base.Add(time.Duration(i) * time.Minute)
		e := AuditEntry{ID: uint64(at.UnixNano()), Time: at, Who: "alice", Role: "operator", Via: "certificate", Action: "submit", Target: "job"}
		if err := applyErr(s, &AppendAudit{Entry: e}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyErr(s, &AppendAudit{Entry: AuditEntry{}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("entry without ID: %v", err)
	}
	last, err := s.LastAuditID()
	if err != nil || last != uint64(base.Add(9*time.Minute).UnixNano()) {
		t.Fatalf("LastAuditID = %d, %v", last, err)
	}
	page, err := s.Audit(0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 4 || page[0].ID != last || !page[3].Time.Equal(base.Add(6*time.Minute)) {
		t.Fatalf("first page: %+v", page)
	}
	page, err = s.Audit(page[3].ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 6 || !page[0].Time.Equal(base.Add(5*time.Minute)) || !page[5].Time.Equal(base) {
		t.Fatalf("second page: %+v", page)
	}
	if err := applyErr(s, &PruneAudit{Before: base.Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	all, err := s.Audit(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || !all[4].Time.Equal(base.Add(5*time.Minute)) {
		t.Fatalf("after prune: %d entries, oldest %v", len(all), all[len(all)-1].Time)
	}
	// Jobs are untouched by the security records.
	if n := countPrefix(t, s, prefixJob); n != 0 {
		t.Fatalf("%d job keys", n)
	}
}
