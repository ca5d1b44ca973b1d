package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// openPTY returns the terminal end of a new pseudo-terminal, or skips
// the test where there is none.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pseudo-terminal number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening the pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

func TestColorize(t *testing.T) {
	tty := openPTY(t)
	file, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	r, pipe, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer pipe.Close()

	tests := map[string]struct {
		w       io.Writer
		noColor string // "-" leaves NO_COLOR unset
		term    string
		want    string
	}{
		"terminal":                    {w: tty, noColor: "-", term: "xterm", want: "\x1b[31mfailed\x1b[0m"},
		"NO_COLOR disables":           {w: tty, noColor: "1", term: "xterm", want: "failed"},
		"NO_COLOR with any value":     {w: tty, noColor: "false", term: "xterm", want: "failed"},
		"empty NO_COLOR is unset":     {w: tty, noColor: "", term: "xterm", want: "\x1b[31mfailed\x1b[0m"},
		"dumb terminal":               {w: tty, noColor: "-", term: "dumb", want: "failed"},
		"buffer":                      {w: &bytes.Buffer{}, noColor: "-", term: "xterm", want: "failed"},
		"file":                        {w: file, noColor: "-", term: "xterm", want: "failed"},
		"pipe":                        {w: pipe, noColor: "-", term: "xterm", want: "failed"},
		"a writer that is not a file": {w: io.Discard, noColor: "-", term: "xterm", want: "failed"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv("NO_COLOR", tt.noColor)
			if tt.noColor == "-" {
				os.Unsetenv("NO_COLOR")
			}
			t.Setenv("TERM", tt.term)
			if got := colorize(tt.w, "failed"); got != tt.want {
				t.Errorf("colorize = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestColorKeepsColumns checks that coloured cells keep a tabwriter
// table aligned: every coloured word, known state or not, grows by the
// same invisible bytes.
func TestColorKeepsColumns(t *testing.T) {
	tty := openPTY(t)
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm")
	states := append([]string{"STATUS", "paused"}, stateOrder...)
	for _, s := range states {
		if got := colorize(tty, s); len(got) != len(s)+9 || !strings.HasPrefix(got, "\x1b[") {
			t.Errorf("colorize(%q) = %q: not 9 bytes longer", s, got)
		}
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	for _, s := range states {
		fmt.Fprintf(tw, "12\t%s\tmid\n", colorize(tty, s))
	}
	tw.Flush()
	plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(buf.String(), "")
	col := -1
	for _, line := range strings.Split(strings.TrimSpace(plain), "\n") {
		i := strings.Index(line, "mid")
		if col >= 0 && i != col {
			t.Fatalf("columns not aligned:\n%s", plain)
		}
		col = i
	}
}

// TestColorNotInCommandOutput: commands writing to a buffer (a file, a
// pipe) never write escape codes, even with NO_COLOR unset.
func TestColorNotInCommandOutput(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm")
	for name, run := range map[string]func(Meta) int{
		"list":   func(m Meta) int { return (&ListCommand{Meta: m}).Run(nil) },
		"status": func(m Meta) int { return (&StatusCommand{Meta: m}).Run([]string{"12"}) },
		"agents": func(m Meta) int { return (&AgentsCommand{Meta: m}).Run(nil) },
	} {
		t.Run(name, func(t *testing.T) {
			m, out, errb := clientTestMeta()
			if code := run(m); code != ExitOK {
				t.Fatalf("exit %d: %s", code, errb)
			}
			if strings.Contains(out.String(), "\x1b") || strings.Contains(errb.String(), "\x1b") {
				t.Errorf("escape codes in output to a buffer:\n%q", out)
			}
		})
	}
}
