package jsonstr

import (
	"bytes"
	"encoding/json"
	"testing"
)

func check(t *testing.T, s string) {
	t.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := Append([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
		t.Errorf("Append(%q) = %s, want %s", s, got[1:], want)
	}
}

func TestAppend(t *testing.T) {
	for name, s := range map[string]string{
		"empty": "", "plain": "hello", "quotes": `a"b\c`, "controls": "\b\f\n\r\t\x00\x1f",
		"html": "<a href='x'>&</a>", "separators": "a\u2028b\u2029c", "invalid utf-8": "a\xffb\xc3",
		"multibyte": "héllo, 世界 🎉", "delete": "\x7f",
	} {
		t.Run(name, func(t *testing.T) { check(t, s) })
	}
}

func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\u2028", "\xff", "<&>", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { check(t, s) })
}
