package cli

import (
	"flag"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The controller's and the agent's help show the defaults of their
// flags, and each flag's default is its field's value in the command's
// DefaultConfig (controller.DefaultConfig, agent.DefaultConfig). So the
// help is written with placeholders that withDefaults fills in from the
// flags themselves:
//
//	{name}       the default as prose: 15s, 720h, 0, 127.0.0.1:8443, 128
//	{name:days}  a duration with its days: 720h (30 days)
//	{name:size}  a byte count with its unit: 1048576 (1 MiB)
//	{name:toml}  the default as a TOML value: "15s", 128, false
//
// A placeholder naming no flag panics: the help tests catch it.
var placeholderRE = regexp.MustCompile(`\{([a-z][a-z-]*)(?::(days|size|toml))?\}`)

// withDefaults fills in text's placeholders from the defaults of fs.
func withDefaults(fs *flag.FlagSet, text string) string {
	return placeholderRE.ReplaceAllStringFunc(text, func(p string) string {
		m := placeholderRE.FindStringSubmatch(p)
		f := fs.Lookup(m[1])
		if f == nil {
			panic("help placeholder " + p + " names no flag")
		}
		return formatDefault(flagValue(f), m[2])
	})
}

// flagValue is a flag's default as its Go value.
func flagValue(f *flag.Flag) any {
	if g, ok := f.Value.(flag.Getter); ok {
		// Lookup on a fresh flag set: the value is still the default.
		return g.Get()
	}
	return f.DefValue
}

// formatDefault writes v in one of the placeholder forms.
func formatDefault(v any, form string) string {
	switch x := v.(type) {
	case time.Duration:
		switch form {
		case "toml":
			return strconv.Quote(flagDuration(x))
		case "days":
			if x >= 48*time.Hour && x%(24*time.Hour) == 0 {
				return fmt.Sprintf("%s (%d days)", flagDuration(x), x/(24*time.Hour))
			}
		}
		if x == 0 {
			return "0"
		}
		return flagDuration(x)
	case string:
		if form == "toml" {
			return strconv.Quote(x)
		}
		return x
	case int, int64, uint64:
		n := fmt.Sprint(x)
		if form == "size" {
			b, _ := strconv.ParseInt(n, 10, 64)
			switch {
			case b >= 1<<20 && b%(1<<20) == 0:
				return fmt.Sprintf("%s (%d MiB)", n, b>>20)
			case b >= 1<<10 && b%(1<<10) == 0:
				return fmt.Sprintf("%s (%d KiB)", n, b>>10)
			}
		}
		return n
	}
	return fmt.Sprint(v)
}

// flagDuration is d, as a flag takes it, without its zero minutes and seconds: 720h, 5m,
// 15s, 500ms, 0s.
func flagDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
