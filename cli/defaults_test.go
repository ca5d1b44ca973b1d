package cli

import (
	"flag"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"jobsuite/agent"
	"jobsuite/controller"
)

// helpKeys is the config-file listing of a help text: its indented
// "key = value" lines, comments left out.
func helpKeys(help string) string {
	re := regexp.MustCompile(`^    [a-z_]+ *= `)
	var b strings.Builder
	for _, l := range strings.Split(help, "\n") {
		if re.MatchString(l) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// checkDefaults compares, field by field, a Config read back from a
// help's key listing with the command's DefaultConfig. skip lists the
// fields the listing gives example values for (the required ones) and
// those with no flag (left zero).
func checkDefaults(t *testing.T, cmd string, got, want any, skip map[string]bool) {
	t.Helper()
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	n := 0
	for i := range w.NumField() {
		name := w.Type().Field(i).Name
		if skip[name] {
			continue
		}
		n++
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			t.Errorf("%s -h lists %s's default as %v; the %s applies %v", cmd, name, g.Field(i), cmd, w.Field(i))
		}
	}
	if n < 10 {
		t.Errorf("%s: only %d fields compared", cmd, n)
	}
}

// The defaults the controller's and the agent's help show — their
// config-file keys, read back through the config loader into flags
// bound to a zero Config — are the Config's own defaults, which the
// controller and the agent apply (controller.TestSetDefaultsAppliesDefaultConfig).
// A flag default or a help value written by hand that drifts from
// DefaultConfig fails here.
func TestHelpShowsConfigDefaults(t *testing.T) {
	m, _, _ := clientTestMeta()

	t.Run("controller", func(t *testing.T) {
		keys := helpKeys((&ControllerCommand{Meta: m}).Help())
		if !strings.Contains(keys, "lease_ttl") {
			t.Fatalf("no key listing found in the help:\n%s", keys)
		}
		var cfg controller.Config
		var lf logFlags
		fs := flag.NewFlagSet("controller", flag.ContinueOnError)
		controllerFlags(fs, &cfg, &lf)
		if err := applyConfig(fs, "help", keys, controllerConfig); err != nil {
			t.Fatal(err)
		}
		checkDefaults(t, "controller", cfg, controller.DefaultConfig(), map[string]bool{
			"DataDir": true, "TLS": true, // example values
			"HandshakeTimeout": true, "BackoffBase": true, "BackoffMax": true, "BodyTimeout": true,
			"CertReloadInterval": true, "StatsInterval": true, // no flag
		})
		if lf.level != "info" {
			t.Errorf("log_level listed as %q, want info", lf.level)
		}
	})

	t.Run("agent", func(t *testing.T) {
		keys := helpKeys((&AgentCommand{Meta: m}).Help())
		if !strings.Contains(keys, "reconnect_min") {
			t.Fatalf("no key listing found in the help:\n%s", keys)
		}
		var cfg agent.Config
		var v agentFlagValues
		fs := flag.NewFlagSet("agent", flag.ContinueOnError)
		agentFlags(fs, &cfg, &v)
		if err := applyConfig(fs, "help", keys, agentConfig); err != nil {
			t.Fatal(err)
		}
		want := agent.DefaultConfig()
		if v.mode != string(want.Transport) {
			t.Errorf("transport listed as %q, the agent applies %q", v.mode, want.Transport)
		}
		checkDefaults(t, "agent", cfg, want, map[string]bool{
			"Controller": true, "TLS": true, // example values
			"Transport": true, // a flag of its own (checked above)
			"Shell":     true, // no flag
		})
	})
}

// The placeholders' forms.
func TestFormatDefault(t *testing.T) {
	tests := map[string]struct {
		v    any
		form string
		want string
	}{
		"duration":           {15 * time.Second, "", "15s"},
		"hours":              {720 * time.Hour, "", "720h"},
		"minutes":            {10 * time.Minute, "", "10m"},
		"zero duration":      {time.Duration(0), "", "0"},
		"zero duration toml": {time.Duration(0), "toml", `"0s"`},
		"days":               {720 * time.Hour, "days", "720h (30 days)"},
		"not whole days":     {36 * time.Hour, "days", "36h"},
		"duration toml":      {500 * time.Millisecond, "toml", `"500ms"`},
		"string":             {"127.0.0.1:8443", "", "127.0.0.1:8443"},
		"string toml":        {"", "toml", `""`},
		"MiB":                {int64(1 << 20), "size", "1048576 (1 MiB)"},
		"KiB":                {64 << 10, "size", "65536 (64 KiB)"},
		"uint64 MiB":         {uint64(64 << 20), "size", "67108864 (64 MiB)"},
		"odd size":           {1000, "size", "1000"},
		"bool toml":          {false, "toml", "false"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := formatDefault(tt.v, tt.form); got != tt.want {
				t.Errorf("formatDefault(%v, %q) = %q, want %q", tt.v, tt.form, got, tt.want)
			}
		})
	}
}
