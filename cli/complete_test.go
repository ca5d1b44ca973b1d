package cli

import (
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/posener/complete"
)

// completions runs jobsuite as the shell does for a Tab at the end of
// line (COMP_LINE) and returns what it offers.
func completions(t *testing.T, line string) []string {
	t.Helper()
	t.Setenv("COMP_LINE", line)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w // posener/complete prints to os.Stdout
	code := run(nil, strings.NewReader(""), io.Discard, io.Discard)
	os.Stdout = stdout
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Errorf("completing %q: exit %d", line, code)
	}
	got := strings.Fields(string(out))
	sort.Strings(got)
	return got
}

// TestCompletion: the shell completes commands, subcommands, flags, flag
// values, job IDs and agent names (read from the controller).
func TestCompletion(t *testing.T) {
	f := newFakeController(t)
	f.useEnv(t)
	tests := map[string]struct {
		line string
		want []string // all of these, and nothing not starting with the last word
	}{
		"a command":          {"jobsuite sub", []string{"submit"}},
		"subcommands":        {"jobsuite agents ", []string{"drain", "revoke", "undrain"}},
		"a flag":             {"jobsuite submit -pri", []string{"-priority"}},
		"connection flags":   {"jobsuite list -ad", []string{"-addr"}},
		"a flag's values":    {"jobsuite list -status ", []string{"queued", "running", "failed"}},
		"priorities":         {"jobsuite submit -priority ", []string{"low", "mid", "high"}},
		"job IDs":            {"jobsuite status ", []string{"7", "12"}},
		"job IDs to cancel":  {"jobsuite cancel 1", []string{"12"}},
		"agent names":        {"jobsuite agents drain ", []string{"worker-1"}},
		"the new commands":   {"jobsuite au", []string{"audit"}},
		"resubmit takes IDs": {"jobsuite resubmit ", []string{"7", "12"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := completions(t, tt.line)
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("completing %q: %q lacks %q", tt.line, got, w)
				}
			}
			last := tt.line[strings.LastIndex(tt.line, " ")+1:]
			for _, g := range got {
				if !strings.HasPrefix(g, last) {
					t.Errorf("completing %q offers %q", tt.line, g)
				}
			}
		})
	}
}

// TestCompletionFlags: every command's flags are found, each with a
// predictor that matches its kind.
func TestCompletionFlags(t *testing.T) {
	m, _, _ := clientTestMeta()
	cmds := withCompletion(m, commands(m))
	for name, factory := range cmds {
		cmd, err := factory()
		if err != nil {
			t.Fatal(err)
		}
		flags := cmd.(*completing).AutocompleteFlags()
		if _, client := clientCommands(m)[name]; client && flags["-addr"] == nil {
			t.Errorf("%s: -addr is not completed (flags %v)", name, keys(flags))
		}
		if jobIDCommands[name] || agentCommands[name] {
			if cmd.(*completing).AutocompleteArgs() == nil {
				t.Errorf("%s takes a job ID or agent name but completes none", name)
			}
		}
	}
	submit, _ := cmds["submit"]()
	flags := submit.(*completing).AutocompleteFlags()
	if p, ok := flags["-f"]; !ok || p != nil {
		t.Errorf("-f: %v (present %v); want a flag that takes no value", p, ok)
	}
	if got := flags["-priority"].Predict(complete.Args{}); !slices.Equal(got, []string{"low", "mid", "high"}) {
		t.Errorf("-priority predicts %q", got)
	}
	if _, ok := flags["-q"]; !ok {
		t.Error("submit -q is not completed")
	}
}

// TestCompletionWithoutController: no controller, no job IDs, and no
// error or wait worth a Tab.
func TestCompletionWithoutController(t *testing.T) {
	clearClientEnv(t)
	if got := completions(t, "jobsuite status "); len(got) != 0 {
		t.Errorf("without a controller: %q", got)
	}
}

func keys(f complete.Flags) []string {
	out := make([]string, 0, len(f))
	for k := range f {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
