package cli

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"jobsuite/controller"
)

// The controller's webhook settings (issue 17; SECURITY.md "Webhooks").
//
// A controller-wide webhook is one -webhook value, or one [[webhook]]
// table of the config file:
//
//	-webhook 'https://hooks.example.com/jobs events=started,failed secret-file=/etc/jobsuite/hook.secret'
//
//	[[webhook]]
//	url = "https://hooks.example.com/jobs"
//	events = ["started", "failed"]
//	secret_file = "/etc/jobsuite/hook.secret"   # or secret_env = "HOOK_SECRET"
//	name = "ops"                                 # optional
//
// The URL comes first (a URL holds no space); the options after it are
// name=, events= (comma-separated), secret-file= or secret-env=. The
// secret is read when the controller starts, from the file (surrounding
// white space trimmed) or the environment variable, and is never logged
// or shown: the flag's String prints the file or variable's name only.

// webhookFlag collects -webhook values.
type webhookFlag struct{ specs []string }

func (f *webhookFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(f.specs, "; ")
}

func (f *webhookFlag) Set(v string) error {
	if _, err := parseWebhook(v); err != nil {
		return err
	}
	f.specs = append(f.specs, v)
	return nil
}

// webhookSpec is a -webhook value before its secret is read.
type webhookSpec struct {
	name, url, secretFile, secretEnv string
	events                           []string
}

func parseWebhook(v string) (webhookSpec, error) {
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return webhookSpec{}, fmt.Errorf("empty -webhook: give a URL and its options")
	}
	s := webhookSpec{url: fields[0]}
	for _, opt := range fields[1:] {
		k, val, ok := strings.Cut(opt, "=")
		if !ok || val == "" {
			return s, fmt.Errorf("-webhook %s: option %q: want key=value (name, events, secret-file, secret-env)", s.url, opt)
		}
		switch strings.ReplaceAll(k, "_", "-") {
		case "name":
			s.name = val
		case "events":
			s.events = strings.Split(val, ",")
		case "secret-file":
			s.secretFile = val
		case "secret-env":
			s.secretEnv = val
		default:
			return s, fmt.Errorf("-webhook %s: unknown option %q (name, events, secret-file, secret-env)", s.url, k)
		}
	}
	if (s.secretFile == "") == (s.secretEnv == "") {
		return s, fmt.Errorf("-webhook %s: give its signing secret with exactly one of secret-file= or secret-env=", s.url)
	}
	return s, nil
}

// webhookTableSpec turns a [[webhook]] table of the config file into a
// -webhook value.
func webhookTableSpec(t map[string]any) (string, error) {
	var url string
	var opts []string
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := t[k].(type) {
		case string:
			if strings.ContainsAny(v, " \t\n") {
				return "", fmt.Errorf("key %q must not contain white space", k)
			}
			switch k {
			case "url":
				url = v
			case "name", "secret_file", "secret_env":
				opts = append(opts, k+"="+v)
			case "events":
				opts = append(opts, "events="+v)
			default:
				return "", fmt.Errorf("unknown key %q (url, events, secret_file, secret_env, name)", k)
			}
		case []any:
			if k != "events" {
				return "", fmt.Errorf("key %q must be a string", k)
			}
			var evs []string
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return "", fmt.Errorf("events must be strings")
				}
				evs = append(evs, s)
			}
			opts = append(opts, "events="+strings.Join(evs, ","))
		default:
			return "", fmt.Errorf("key %q must be a string", k)
		}
	}
	if url == "" {
		return "", fmt.Errorf("a [[webhook]] needs a url")
	}
	return strings.Join(append([]string{url}, opts...), " "), nil
}

// notifyFlags are the controller's webhook flags.
type notifyFlags struct {
	hooks webhookFlag
	allow string // CIDRs
	hosts string
	ca    string
}

func (n *notifyFlags) register(fs *flag.FlagSet, cfg *controller.Config) {
	fs.Var(&n.hooks, "webhook", "")
	fs.BoolVar(&cfg.NotifyAllowHTTP, "notify-allow-http", cfg.NotifyAllowHTTP, "")
	fs.StringVar(&n.allow, "notify-allow", "", "")
	fs.StringVar(&n.hosts, "notify-hosts", "", "")
	fs.StringVar(&n.ca, "notify-ca", "", "")
	fs.DurationVar(&cfg.NotifyRetryBase, "notify-retry-base", cfg.NotifyRetryBase, "")
	fs.DurationVar(&cfg.NotifyRetryMax, "notify-retry-max", cfg.NotifyRetryMax, "")
	fs.IntVar(&cfg.NotifyMaxTries, "notify-max-tries", cfg.NotifyMaxTries, "")
}

// apply resolves the flags into cfg: the address ranges, the hosts, the
// receivers' CA and each webhook with its secret read.
func (n *notifyFlags) apply(cfg *controller.Config, getenv func(string) string) error {
	for _, c := range splitList(n.allow) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return fmt.Errorf("-notify-allow %s: not an address or a CIDR range", c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		cfg.NotifyAllow = append(cfg.NotifyAllow, p.Masked())
	}
	cfg.NotifyHosts = splitList(n.hosts)
	if n.ca != "" {
		pem, err := os.ReadFile(n.ca)
		if err != nil {
			return fmt.Errorf("-notify-ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-notify-ca %s: no PEM certificate in it", n.ca)
		}
		cfg.NotifyTLS = &tls.Config{RootCAs: pool}
	}
	for _, v := range n.hooks.specs {
		s, err := parseWebhook(v)
		if err != nil {
			return err
		}
		var secret string
		if s.secretFile != "" {
			b, err := os.ReadFile(s.secretFile)
			if err != nil {
				return fmt.Errorf("webhook %s: secret: %w", s.url, err)
			}
			secret = strings.TrimSpace(string(b))
		} else if secret = getenv(s.secretEnv); secret == "" {
			return fmt.Errorf("webhook %s: the environment variable %s holding its secret is empty or unset", s.url, s.secretEnv)
		}
		cfg.Webhooks = append(cfg.Webhooks, controller.Webhook{Name: s.name, URL: s.url, Events: s.events, Secret: []byte(secret)})
	}
	return nil
}

// splitList splits a comma-separated list, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
