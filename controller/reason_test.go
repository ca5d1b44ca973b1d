package controller

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestFirstWords: a job without a name is named after the start of its
// command, without a separator that ends it.
func TestFirstWords(t *testing.T) {
	tests := map[string]struct{ cmd, want string }{
		"two words":             {"make -j8 test", "make -j8"},
		"one word":              {"uptime", "uptime"},
		"a trailing semicolon":  {"echo hello; echo oops >&2; exit 3", "echo hello"},
		"a trailing and":        {"make && make install", "make"},
		"a trailing pipe":       {"ps aux| grep x", "ps aux"},
		"a trailing background": {"sleep 1& wait", "sleep 1"},
		"only separators":       {";; ;", "job"},
		"blank":                 {"   ", "job"},
		"a separator inside":    {"a;b c", "a;b c"},
		"tabs and newlines":     {"\tgo\n\ttest  ./...", "go test"},
		"unicode spaces":        {"echo\u00a0hi\u2003there", "echo hi"},
		"invalid UTF-8":         {"\xff\xfe x", "\xff\xfe x"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := firstWords(tt.cmd); got != tt.want {
				t.Errorf("firstWords(%q) = %q, want %q", tt.cmd, got, tt.want)
			}
		})
	}
}

// firstWordsFields is firstWords as it was written, with strings.Fields.
func firstWordsFields(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) == 0 {
		return "job"
	}
	name := f[0]
	if len(f) > 1 {
		name += " " + f[1]
	}
	name = strings.TrimRight(name, ";&| ")
	if name == "" {
		return "job"
	}
	if len(name) > 64 {
		n := 64
		for n > 0 && !utf8.RuneStart(name[n]) {
			n--
		}
		name = name[:n]
	}
	return name
}

// FuzzFirstWords: firstWords names every command as the strings.Fields
// version did.
func FuzzFirstWords(f *testing.F) {
	for _, s := range []string{"make -j8 test", "a  b", "\tgo\n\ttest", "echo\u00a0hi\u2003there", "\xff\xfe x", "", " ", strings.Repeat("x", 70) + " y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		if got, want := firstWords(cmd), firstWordsFields(cmd); got != want {
			t.Fatalf("firstWords(%q) = %q, want %q", cmd, got, want)
		}
	})
}
