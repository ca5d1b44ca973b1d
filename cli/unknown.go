package cli

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	mcli "github.com/mitchellh/cli"
)

// unknownCommand answers a command line whose first words name no
// command ("jobsuite sumbit", "jobsuite agents dran"): it says so, with
// the nearest command names, and reports ExitUnknownCommand. It leaves
// every other line, and shell completion requests, to mitchellh/cli.
func unknownCommand(w io.Writer, args []string, cmds map[string]mcli.CommandFactory) (code int, unknown bool) {
	if os.Getenv("COMP_LINE") != "" {
		return 0, false
	}
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		words = append(words, a)
	}
	n := 0 // words[:n] is the longest command named
	for i := len(words); i > 0; i-- {
		if _, ok := cmds[strings.Join(words[:i], " ")]; ok {
			n = i
			break
		}
	}
	if n == len(words) {
		return 0, false
	}
	parent := strings.Join(words[:n], " ")
	next := subcommandWords(parent, cmds)
	if n > 0 && len(next) == 0 {
		return 0, false // a command that takes arguments
	}
	typed := strings.Join(words[:n+1], " ")
	msg := fmt.Sprintf("jobsuite: unknown command %q", typed)
	if near := nearest(words[n], next); len(near) > 0 {
		for i, s := range near {
			near[i] = fmt.Sprintf("%q", strings.TrimSpace(parent+" "+s))
		}
		msg += "; did you mean " + strings.Join(near, " or ") + "?"
	}
	fmt.Fprintln(w, msg)
	if parent == "" {
		fmt.Fprintln(w, "Run 'jobsuite -h' for the list of commands.")
	} else {
		fmt.Fprintf(w, "Run 'jobsuite %s -h' for its subcommands.\n", parent)
	}
	return ExitUnknownCommand, true
}

// subcommandWords returns the words that may follow parent ("" for the
// top level) in a command name, sorted.
func subcommandWords(parent string, cmds map[string]mcli.CommandFactory) []string {
	seen := map[string]bool{}
	prefix := ""
	if parent != "" {
		prefix = parent + " "
	}
	for name := range cmds {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok || rest == "" {
			continue
		}
		word, _, _ := strings.Cut(rest, " ")
		seen[word] = true
	}
	out := make([]string, 0, len(seen))
	for w := range seen {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// nearest returns the candidates closest to word: those it starts, else
// those two neighbouring letters swapped make ("lsit"), else those at
// the smallest edit distance (config.go's) of at most 2
// (1 for words of up to 3 letters).
func nearest(word string, candidates []string) []string {
	var prefixed []string
	for _, c := range candidates {
		if len(word) >= 2 && strings.HasPrefix(c, word) {
			prefixed = append(prefixed, c)
		}
	}
	if len(prefixed) > 0 {
		return prefixed
	}
	var swapped []string
	for _, c := range candidates {
		if oneSwap(word, c) {
			swapped = append(swapped, c)
		}
	}
	if len(swapped) > 0 {
		return swapped
	}
	limit := 2
	if len(word) <= 3 {
		limit = 1
	}
	best, out := limit+1, []string(nil)
	for _, c := range candidates {
		switch d := editDistance(word, c); {
		case d < best:
			best, out = d, []string{c}
		case d == best:
			out = append(out, c)
		}
	}
	return out
}

// oneSwap reports whether swapping two neighbouring letters of a gives b.
func oneSwap(a, b string) bool {
	if len(a) != len(b) || a == b {
		return false
	}
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	return i+1 < len(a) && a[i] == b[i+1] && a[i+1] == b[i] && a[i+2:] == b[i+2:]
}
