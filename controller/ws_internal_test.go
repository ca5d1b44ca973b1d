package controller

import (
	"bytes"
	"strings"
	"testing"
)

// validUTF8 must produce exactly what strings.ToValidUTF8 does, which is
// what the text format sent before it (and what clients were told).
func TestValidUTF8MatchesToValidUTF8(t *testing.T) {
	for _, in := range []string{
		"", "plain ascii", "héllo 日本 🎉", "\xff", "\xff\xfe", "a\xffb", "a\xff\xfeb\xfd",
		"\xe2\x82", "\xe2\x82a", "\xe2\xff", "\xed\xa0\x80", "\xef\xbf\xbd", "\xc3\x28\xa0\xa1",
		"\xf0\x9f\x8e", "ok\xf0\x9f\x8e\x89\xf0\x9f", strings.Repeat("\x80", 10) + "x",
	} {
		checkValidUTF8(t, []byte(in))
	}
}

func FuzzValidUTF8(f *testing.F) {
	f.Add([]byte("a\xffb\xe2\x82"))
	f.Fuzz(func(t *testing.T, in []byte) { checkValidUTF8(t, in) })
}

func checkValidUTF8(t *testing.T, in []byte) {
	t.Helper()
	orig := bytes.Clone(in)
	var got bytes.Buffer
	if err := validUTF8(in, got.Write); err != nil {
		t.Fatal(err)
	}
	if want := strings.ToValidUTF8(string(in), "\uFFFD"); got.String() != want {
		t.Errorf("validUTF8(%q) = %q, want %q", in, got.String(), want)
	}
	if !bytes.Equal(in, orig) {
		t.Errorf("validUTF8 modified its input: %q, was %q", in, orig)
	}
}
