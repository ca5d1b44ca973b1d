package controller

import "testing"

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
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := firstWords(tt.cmd); got != tt.want {
				t.Errorf("firstWords(%q) = %q, want %q", tt.cmd, got, tt.want)
			}
		})
	}
}
