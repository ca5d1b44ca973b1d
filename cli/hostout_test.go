package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestHostLines(t *testing.T) {
	var out bytes.Buffer
	h := newHostLines(&out, []string{"web-1", "db", "web-10"})
	a, b := h.host("web-1"), h.host("db")
	for _, w := range []struct {
		to   interface{ Write([]byte) (int, error) }
		data string
	}{
		{a, "up 3 d"}, {b, "load 0.1\nload"}, {a, "ays\n"}, {b, " 0.2\n"}, {a, "no newline at the end"},
	} {
		if n, err := w.to.Write([]byte(w.data)); err != nil || n != len(w.data) {
			t.Fatalf("Write(%q) = %d, %v", w.data, n, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	want := "db:     load 0.1\n" +
		"web-1:  up 3 days\n" +
		"db:     load 0.2\n" +
		"web-1:  no newline at the end\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestHostBlocks(t *testing.T) {
	var out bytes.Buffer
	b := newHostBlocks(&out)
	b.memLimit = 16 // the second host spills to a file
	one, two := b.host("web-1"), b.host("web-2")
	big := strings.Repeat("x", 40) + "\n"
	for _, w := range []struct {
		h    *hostBlock
		data string
	}{{one, "a\n"}, {two, big}, {one, "b"}, {two, big}} {
		if _, err := w.h.Write([]byte(w.data)); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("printed before any host ended: %q", out.String())
	}
	if err := two.end("exit 0"); err != nil {
		t.Fatal(err)
	}
	if err := one.end("exit 3"); err != nil {
		t.Fatal(err)
	}
	want := "=== web-2 (exit 0) ===\n" + big + big + "=== web-1 (exit 3) ===\na\nb\n"
	if out.String() != want {
		t.Errorf("got\n%q\nwant\n%q", out.String(), want)
	}
}

func TestCountOrPercent(t *testing.T) {
	tests := map[string]struct {
		in    string
		total int
		want  int
		err   bool
	}{
		"count":           {"3", 10, 3, false},
		"zero":            {"0", 10, 0, false},
		"count above":     {"30", 10, 30, false},
		"share":           {"25%", 8, 2, false},
		"share rounds up": {"10%", 5, 1, false},
		"exact share":     {"50%", 10, 5, false},
		"zero share":      {"0%", 10, 0, false},
		"all":             {"100%", 7, 7, false},
		"fraction":        {"33.3%", 3, 1, false},
		"over 100%":       {"150%", 10, 0, true},
		"negative":        {"-1", 10, 0, true},
		"word":            {"half", 10, 0, true},
		"empty share":     {"%", 10, 0, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := countOrPercent(tt.in, tt.total)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("countOrPercent(%q, %d) = %d, %v; want %d, error %v", tt.in, tt.total, got, err, tt.want, tt.err)
			}
		})
	}
}
