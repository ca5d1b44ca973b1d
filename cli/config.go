package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/hashicorp/go-hclog"

	"jobsuite/agent"
	"jobsuite/transport"
)

// Config files are TOML. Every flag of a command has a key: the flag's
// name with "_" for "-" (-data-dir is data_dir). A flag given on the
// command line wins over its key. Unknown keys and bad values are
// errors that name the file, the line and the key.

// configOptions says how a config file maps onto a command's flags.
type configOptions struct {
	// section, when set, is the only top-level table read ("submit"
	// reads [submit]); any other top-level key is unknown.
	section string
	// flat, with section, also accepts a file without that table whose
	// keys are all at the top level (the original job_suite's
	// config.toml); a file may not mix the two.
	flat bool
	// only, when set, lists the keys allowed; otherwise every flag not
	// in skip has a key.
	only []string
	// skip lists flags that have no key (-config itself).
	skip []string
	// rename maps a key to a flag of another name (labels → label).
	rename map[string]string
	// tables lists string flags that take a table, written to the flag
	// as k=v,k2=v2 (-labels).
	tables []string
	// numbers lists string flags that also take a TOML number
	// (priority = 60, timeout = 90).
	numbers []string
	// arrays lists string flags that also take an array of strings,
	// written to the flag shell-quoted and joined with spaces (params).
	arrays []string
	// commaLists lists string flags that also take an array of strings,
	// written to the flag joined with commas (-controller a,b,c).
	commaLists []string
	// check validates a flag's value in the form the flag takes, so a
	// bad value is reported with its line.
	check map[string]func(string) error
	// help is the command whose help lists the keys.
	help string
}

// Config file layouts of the commands that read one.
var (
	controllerConfig = configOptions{
		help:  "jobsuite controller -h",
		skip:  []string{"config"},
		check: map[string]func(string) error{"log-level": checkLogLevel},
	}
	agentConfig = configOptions{
		help:       "jobsuite agent -h",
		skip:       []string{"config"},
		tables:     []string{"labels"},
		commaLists: []string{"controller"},
		check: map[string]func(string) error{
			"log-level": checkLogLevel,
			"controller": func(s string) error {
				_, err := agent.ParseControllers(s)
				return err
			},
			"labels": func(s string) error {
				_, err := parseLabels(s)
				return err
			},
			"transport": func(s string) error {
				_, err := transport.ParseMode(s)
				return err
			},
			"allow-command": func(s string) error {
				_, err := regexp.Compile(s)
				return err
			},
			"slots": func(s string) error {
				if n, _ := strconv.Atoi(s); n < 0 {
					return errors.New("must be at least 1 (or 0 for the number of CPUs)")
				}
				return nil
			},
		},
	}
	submitConfig = configOptions{
		help:    "jobsuite submit -h",
		section: "submit",
		flat:    true,
		only:    []string{"name", "params", "priority", "timeout", "retries", "logs", "labels", "env", "split_output", "tty"},
		rename:  map[string]string{"labels": "label"},
		numbers: []string{"priority", "timeout"},
		arrays:  []string{"params"},
		check: map[string]func(string) error{
			"priority": func(s string) error {
				_, err := parsePriority(s)
				return err
			},
			"timeout": func(s string) error {
				_, err := parseTimeout(s)
				return err
			},
			"retries": func(s string) error {
				if n, _ := strconv.Atoi(s); n < 0 {
					return fmt.Errorf("must not be negative, got %d", n)
				}
				return nil
			},
		},
	}
)

func checkLogLevel(s string) error {
	if hclog.LevelFromString(s) == hclog.NoLevel {
		return fmt.Errorf("want trace, debug, info, warn or error, got %q", s)
	}
	return nil
}

// loadConfigFile reads the TOML file at path and sets the flags of fs
// from it. Flags already set on the command line keep their value, but
// their keys are still checked. A repeatable key=value flag (-label,
// -env) gets the file's entries that the command line did not set.
// The error lists every problem, each as "path:line: key "k": what".
func loadConfigFile(fs *flag.FlagSet, path string, o configOptions) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return applyConfig(fs, path, string(data), o)
}

// applyConfig is loadConfigFile for a file already read.
func applyConfig(fs *flag.FlagSet, path, data string, o configOptions) error {
	var doc map[string]any
	if _, err := toml.Decode(data, &doc); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			where := path
			if pe.Position.Line > 0 {
				where = fmt.Sprintf("%s:%d", path, pe.Position.Line)
			}
			if pe.LastKey != "" {
				return fmt.Errorf("%s: key %q: %s", where, pe.LastKey, pe.Message)
			}
			return fmt.Errorf("%s: %s", where, pe.Message)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	lines := keyLines(data)
	c := &configApply{fs: fs, path: path, lines: lines, o: o, set: map[string]bool{}}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })

	table := doc
	var prefix []string
	_, hasSection := doc[o.section]
	if o.section != "" && !(o.flat && !hasSection) {
		for _, k := range sortedKeys(doc) {
			switch {
			case k == o.section:
			case o.flat:
				c.errorf([]string{k}, "outside the [%s] table: put every key in [%s], or write none of them in a table (the flat layout of the original job_suite's config.toml)", o.section, o.section)
			default:
				c.errorf([]string{k}, "unknown key: this file holds only a [%s] table", o.section)
			}
		}
		switch v := doc[o.section].(type) {
		case nil:
			table = nil
		case map[string]any:
			table = v
		default:
			c.errorf([]string{o.section}, "must be a table ([%s]), got %s", o.section, tomlType(v))
			table = nil
		}
		prefix = []string{o.section}
	}
	for _, k := range orderedKeys(table, prefix, lines) {
		c.apply(append(prefix[:len(prefix):len(prefix)], k), table[k])
	}
	if c.unknown {
		c.errs = append(c.errs, fmt.Errorf("%s: known keys: %s (see '%s')", path, strings.Join(c.keys(), ", "), o.help))
	}
	return errors.Join(c.errs...)
}

// configApply collects the problems of one file.
type configApply struct {
	fs    *flag.FlagSet
	path  string
	lines map[string]int
	o     configOptions
	set   map[string]bool // flags given on the command line
	errs  []error
	// unknown is set when a key was unknown: the error ends with the
	// list of known keys.
	unknown bool
}

func (c *configApply) errorf(key []string, format string, args ...any) {
	where := c.path
	if n := lineOf(c.lines, key); n > 0 {
		where = fmt.Sprintf("%s:%d", c.path, n)
	}
	c.errs = append(c.errs, fmt.Errorf("%s: key %q: %s", where, toml.Key(key).String(), fmt.Sprintf(format, args...)))
}

// flagFor is the flag a key sets, or nil for an unknown key.
func (c *configApply) flagFor(key string) *flag.Flag {
	if len(c.o.only) > 0 && !contains(c.o.only, key) {
		return nil
	}
	name := key
	if r, ok := c.o.rename[key]; ok {
		name = r
	} else {
		if strings.Contains(key, "-") {
			return nil // keys are snake_case; -data-dir is data_dir
		}
		name = strings.ReplaceAll(key, "_", "-")
	}
	if contains(c.o.skip, name) {
		return nil
	}
	return c.fs.Lookup(name)
}

// keys lists the keys of the file, sorted.
func (c *configApply) keys() []string {
	if len(c.o.only) > 0 {
		out := append([]string(nil), c.o.only...)
		sort.Strings(out)
		return out
	}
	var out []string
	c.fs.VisitAll(func(f *flag.Flag) {
		if !contains(c.o.skip, f.Name) {
			out = append(out, strings.ReplaceAll(f.Name, "-", "_"))
		}
	})
	sort.Strings(out)
	return out
}

// suggest is the known key closest to an unknown one, or "".
func (c *configApply) suggest(key string) string {
	key = strings.ReplaceAll(strings.ToLower(key), "-", "_")
	best, bestDist := "", 3 // at most two edits away
	for _, k := range c.keys() {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (c *configApply) apply(key []string, v any) {
	name := key[len(key)-1]
	f := c.flagFor(name)
	if f == nil {
		c.unknown = true
		if alt := c.suggest(name); alt != "" {
			c.errorf(key, "unknown key (did you mean %s?)", alt)
		} else {
			c.errorf(key, "unknown key")
		}
		return
	}
	if _, ok := f.Value.(*webhookFlag); ok {
		c.applyWebhooks(key, f, v)
		return
	}
	if kv, ok := f.Value.(kvFlag); ok {
		c.applyKV(key, kv, v)
		return
	}
	if _, ok := f.Value.(*listFlag); ok {
		c.applyList(key, f, v)
		return
	}
	s, ok := c.flagString(key, f, v)
	if !ok {
		return
	}
	if check := c.o.check[f.Name]; check != nil {
		if err := check(s); err != nil {
			c.errorf(key, "%v", err)
			return
		}
	}
	if c.set[f.Name] {
		return // the command line wins
	}
	if err := c.fs.Set(f.Name, s); err != nil {
		c.errorf(key, "%v", err)
	}
}

// flagString converts a TOML value to the text form of flag f.
func (c *configApply) flagString(key []string, f *flag.Flag, v any) (string, bool) {
	bad := func(want string) (string, bool) {
		c.errorf(key, "must be %s, got %s %s", want, tomlType(v), tomlValue(v))
		return "", false
	}
	var kind any
	if g, ok := f.Value.(flag.Getter); ok {
		kind = g.Get()
	}
	switch kind.(type) {
	case bool:
		if b, ok := v.(bool); ok {
			return strconv.FormatBool(b), true
		}
		return bad("true or false")
	case int, int64, uint, uint64:
		if n, ok := v.(int64); ok {
			return strconv.FormatInt(n, 10), true
		}
		return bad("an integer")
	case float64:
		switch n := v.(type) {
		case int64:
			return strconv.FormatInt(n, 10), true
		case float64:
			return strconv.FormatFloat(n, 'g', -1, 64), true
		}
		return bad("a number")
	case time.Duration:
		s, ok := v.(string)
		if !ok {
			return bad(`a duration in quotes, such as "15s" or "5m"`)
		}
		if _, err := time.ParseDuration(s); err != nil {
			return bad(`a duration such as "15s" or "5m"`)
		}
		return s, true
	case string:
		switch x := v.(type) {
		case string:
			return x, true
		case int64:
			if contains(c.o.numbers, f.Name) {
				return strconv.FormatInt(x, 10), true
			}
		case float64:
			if contains(c.o.numbers, f.Name) {
				return strconv.FormatFloat(x, 'g', -1, 64), true
			}
		case map[string]any:
			if contains(c.o.tables, f.Name) {
				return c.tableString(key, x)
			}
		case []any:
			if contains(c.o.arrays, f.Name) {
				words := make([]string, len(x))
				for i, e := range x {
					w, ok := e.(string)
					if !ok {
						return bad("a string or an array of strings")
					}
					words[i] = shellQuote(w)
				}
				return strings.Join(words, " "), true
			}
			if contains(c.o.commaLists, f.Name) {
				words := make([]string, len(x))
				for i, e := range x {
					w, ok := e.(string)
					if !ok || strings.Contains(w, ",") {
						return bad("a string or an array of strings without commas")
					}
					words[i] = w
				}
				return strings.Join(words, ","), true
			}
		}
		switch {
		case contains(c.o.tables, f.Name):
			return bad(`a table such as {gpu = "true"}`)
		case contains(c.o.numbers, f.Name):
			return bad("a string or a number")
		case contains(c.o.arrays, f.Name), contains(c.o.commaLists, f.Name):
			return bad("a string or an array of strings")
		}
		return bad("a string")
	}
	if s, ok := v.(string); ok {
		return s, true
	}
	return bad("a string")
}

// tableString writes a table of scalars as k=v,k2=v2 (keys sorted).
func (c *configApply) tableString(key []string, t map[string]any) (string, bool) {
	entries, ok := c.tableEntries(key, t)
	if !ok {
		return "", false
	}
	parts := make([]string, 0, len(entries))
	for _, e := range entries {
		if strings.ContainsAny(e[0], ",=") || strings.Contains(e[1], ",") {
			c.errorf(append(key, e[0]), "must not contain ',' (or '=' in the key)")
			return "", false
		}
		parts = append(parts, e[0]+"="+e[1])
	}
	return strings.Join(parts, ","), true
}

// tableEntries returns the entries of a table of scalars, sorted by key.
func (c *configApply) tableEntries(key []string, t map[string]any) ([][2]string, bool) {
	var out [][2]string
	ok := true
	for _, k := range sortedKeys(t) {
		var s string
		switch x := t[k].(type) {
		case string:
			s = x
		case int64:
			s = strconv.FormatInt(x, 10)
		case bool:
			s = strconv.FormatBool(x)
		default:
			c.errorf(append(key[:len(key):len(key)], k), "must be a string, got %s", tomlType(x))
			ok = false
			continue
		}
		out = append(out, [2]string{k, s})
	}
	return out, ok
}

// applyList sets a repeatable flag (listFlag) from an array of strings
// or one string, unless the command line set it.
func (c *configApply) applyList(key []string, f *flag.Flag, v any) {
	var values []string
	switch x := v.(type) {
	case string:
		values = []string{x}
	case []any:
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				c.errorf(key, "must be an array of strings; element %d is %s %s", i+1, tomlType(e), tomlValue(e))
				return
			}
			values = append(values, s)
		}
	default:
		c.errorf(key, `must be an array of strings such as ["a", "b"], got %s %s`, tomlType(v), tomlValue(v))
		return
	}
	for _, s := range values {
		if check := c.o.check[f.Name]; check != nil {
			if err := check(s); err != nil {
				c.errorf(key, "%v", err)
				return
			}
		}
	}
	if c.set[f.Name] {
		return // the command line wins
	}
	for _, s := range values {
		if err := c.fs.Set(f.Name, s); err != nil {
			c.errorf(key, "%v", err)
		}
	}
}

// applyWebhooks sets -webhook from [[webhook]] tables, unless the
// command line set it.
func (c *configApply) applyWebhooks(key []string, f *flag.Flag, v any) {
	tables, ok := v.([]map[string]any)
	if !ok {
		c.errorf(key, `must be tables: [[webhook]] with url, events, secret_file or secret_env; got %s`, tomlType(v))
		return
	}
	var specs []string
	for i, t := range tables {
		spec, err := webhookTableSpec(t)
		if err != nil {
			c.errorf(key, "table %d: %v", i+1, err)
			return
		}
		if _, err := parseWebhook(spec); err != nil {
			c.errorf(key, "table %d: %v", i+1, err)
			return
		}
		specs = append(specs, spec)
	}
	if c.set[f.Name] {
		return // the command line wins
	}
	for _, s := range specs {
		if err := c.fs.Set(f.Name, s); err != nil {
			c.errorf(key, "%v", err)
		}
	}
}

// applyKV adds the file's entries to a repeatable key=value flag,
// keeping those the command line set.
func (c *configApply) applyKV(key []string, kv kvFlag, v any) {
	t, ok := v.(map[string]any)
	if !ok {
		c.errorf(key, `must be a table such as {NAME = "value"}, got %s %s`, tomlType(v), tomlValue(v))
		return
	}
	entries, ok := c.tableEntries(key, t)
	if !ok {
		return
	}
	for _, e := range entries {
		if _, set := kv[e[0]]; set {
			continue
		}
		if err := kv.Set(e[0] + "=" + e[1]); err != nil {
			c.errorf(append(key[:len(key):len(key)], e[0]), "%v", err)
		}
	}
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	case time.Time:
		return "date-time"
	}
	return fmt.Sprintf("%T", v)
}

// tomlValue shows a scalar value for an error message.
func tomlValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case int64, float64, bool:
		return fmt.Sprint(x)
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// orderedKeys returns the keys of table in the order they appear in the
// file, so errors come out in reading order.
func orderedKeys(table map[string]any, prefix []string, lines map[string]int) []string {
	keys := sortedKeys(table)
	sort.SliceStable(keys, func(i, j int) bool {
		return lineOf(lines, append(prefix[:len(prefix):len(prefix)], keys[i])) <
			lineOf(lines, append(prefix[:len(prefix):len(prefix)], keys[j]))
	})
	return keys
}

// lineOf is the line a key is defined on, or that of its nearest
// enclosing table (a key inside an inline table), or 0.
func lineOf(lines map[string]int, key []string) int {
	for n := len(key); n > 0; n-- {
		if l, ok := lines[toml.Key(key[:n]).String()]; ok {
			return l
		}
	}
	return 0
}

// keyLines finds the line each key of a TOML document is defined on:
// "key = ", "a.b = " and table headers "[a]", "[[a]]", with bare or
// quoted keys. The TOML decoder keeps key positions to itself, so this
// reads the lines again; lines inside multi-line strings are skipped.
// Keys are written as toml.Key.String() writes them.
func keyLines(data string) map[string]int {
	out := map[string]int{}
	record := func(key []string, line int) {
		for n := 1; n <= len(key); n++ {
			k := toml.Key(key[:n]).String()
			if _, ok := out[k]; !ok {
				out[k] = line
			}
		}
	}
	var table []string
	closing := "" // the delimiter that ends the multi-line string we are in
	for i, line := range strings.Split(data, "\n") {
		n := i + 1
		if closing != "" {
			if strings.Contains(line, closing) {
				closing = ""
			}
			continue
		}
		s := strings.TrimSpace(line)
		switch {
		case s == "" || s[0] == '#':
		case strings.HasPrefix(s, "[["):
			if key, rest, ok := parseTOMLKey(s[2:]); ok && strings.HasPrefix(rest, "]]") {
				table = key
				record(key, n)
			}
		case s[0] == '[':
			if key, rest, ok := parseTOMLKey(s[1:]); ok && strings.HasPrefix(rest, "]") {
				table = key
				record(key, n)
			}
		default:
			key, rest, ok := parseTOMLKey(s)
			if !ok || !strings.HasPrefix(rest, "=") {
				continue
			}
			record(append(table[:len(table):len(table)], key...), n)
			v := strings.TrimSpace(rest[1:])
			for _, d := range []string{`"""`, `'''`} {
				if strings.HasPrefix(v, d) && !strings.Contains(v[3:], d) {
					closing = d
				}
			}
		}
	}
	return out
}

// parseTOMLKey reads a dotted key (bare, "basic" or 'literal' parts)
// from the start of s and returns it with the rest of s, trimmed.
func parseTOMLKey(s string) (key []string, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return nil, "", false
		}
		var part string
		switch s[0] {
		case '"':
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return nil, "", false
			}
			u, err := strconv.Unquote(s[:end+1])
			if err != nil {
				return nil, "", false
			}
			part, s = u, s[end+1:]
		case '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return nil, "", false
			}
			part, s = s[1:end+1], s[end+2:]
		default:
			end := strings.IndexFunc(s, func(r rune) bool {
				return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
			})
			if end == 0 {
				return nil, "", false
			}
			if end < 0 {
				end = len(s)
			}
			part, s = s[:end], s[end:]
		}
		key = append(key, part)
		s = strings.TrimLeft(s, " \t")
		if !strings.HasPrefix(s, ".") {
			return key, s, true
		}
		s = s[1:]
	}
}

// submitConfigFile is the file the CLI reads submit defaults from:
// ./jobsuite.toml, else ./config.toml when it is the original
// job_suite's (originalConfig), else $XDG_CONFIG_HOME/jobsuite/config.toml
// (~/.config/jobsuite/config.toml), whichever exists first; "" if none.
func submitConfigFile() string {
	candidates := []string{"jobsuite.toml"}
	if originalConfig("config.toml") {
		candidates = append(candidates, "config.toml")
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".config")
		}
	}
	if dir != "" {
		candidates = append(candidates, filepath.Join(dir, "jobsuite", "config.toml"))
	}
	for _, p := range candidates {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// originalKeys are the keys of the original job_suite CLI's
// ./config.toml, flat at the top level.
var originalKeys = []string{"name", "params", "priority", "timeout", "retries", "logs"}

// originalConfig reports whether the file at path is a submit defaults
// file: a [submit] table, or one of the original job_suite's flat keys
// at the top level. A config.toml of another tool is left alone; one
// that does not parse counts when it mentions such a key, so that its
// error is shown.
func originalConfig(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		lines := keyLines(string(data))
		for _, k := range append([]string{"submit"}, originalKeys...) {
			if _, ok := lines[k]; ok {
				return true
			}
		}
		return false
	}
	if _, ok := doc["submit"]; ok {
		return true
	}
	for _, k := range originalKeys {
		if _, ok := doc[k]; ok {
			return true
		}
	}
	return false
}

// loadSubmitDefaults applies the [submit] table of the CLI's config
// file, if there is one, to the flags of 'jobsuite submit'.
func loadSubmitDefaults(fs *flag.FlagSet) error {
	path := submitConfigFile()
	if path == "" {
		return nil
	}
	return loadConfigFile(fs, path, submitConfig)
}
