package cli

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"jobsuite/controller"
)

// Controller-wide webhooks from flags and from [[webhook]] tables: the
// secret is read from its file or variable, never kept in the flag's
// text; a spec without exactly one secret source, or with an unknown
// option, is refused.
func TestWebhookSettings(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(secretFile, []byte("file-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOOK_SECRET": "env-secret-0123456789"}
	tests := map[string]struct {
		args    []string
		file    string
		want    []controller.Webhook
		wantErr string
	}{
		"flag with a file": {
			args: []string{"-webhook", "https://h.example/x events=started,failed secret-file=" + secretFile + " name=ops"},
			want: []controller.Webhook{{Name: "ops", URL: "https://h.example/x", Events: []string{"started", "failed"}, Secret: []byte("file-secret-0123456789")}},
		},
		"table with env": {
			file: "[[webhook]]\nurl = \"https://h.example/y\"\nevents = [\"finished\"]\nsecret_env = \"HOOK_SECRET\"\n",
			want: []controller.Webhook{{URL: "https://h.example/y", Events: []string{"finished"}, Secret: []byte("env-secret-0123456789")}},
		},
		"no secret":      {args: []string{"-webhook", "https://h.example/x"}, wantErr: "exactly one of secret-file= or secret-env="},
		"unknown option": {args: []string{"-webhook", "https://h.example/x secret-env=HOOK_SECRET colour=red"}, wantErr: `unknown option "colour"`},
		"table key":      {file: "[[webhook]]\nurl = \"https://h.example/y\"\nsecret = \"inline\"\n", wantErr: `unknown key "secret"`},
		"empty env":      {args: []string{"-webhook", "https://h.example/x secret-env=NOPE"}, wantErr: "NOPE holding its secret is empty"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := controller.DefaultConfig()
			fs := flag.NewFlagSet("controller", flag.ContinueOnError)
			_, _, _, nf := controllerFlags(fs, &cfg, &logFlags{})
			err := fs.Parse(tc.args)
			if err == nil && tc.file != "" {
				err = applyConfig(fs, "test.toml", tc.file, controllerConfig)
			}
			if err == nil {
				err = nf.apply(&cfg, func(k string) string { return env[k] })
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Webhooks) != len(tc.want) {
				t.Fatalf("webhooks %v, want %v", cfg.Webhooks, tc.want)
			}
			for i, w := range tc.want {
				g := cfg.Webhooks[i]
				if g.Name != w.Name || g.URL != w.URL || strings.Join(g.Events, ",") != strings.Join(w.Events, ",") || string(g.Secret) != string(w.Secret) {
					t.Errorf("webhook %d: %+v, want %+v", i, g, w)
				}
				if strings.Contains(g.String(), "secret-0123") || strings.Contains(nf.hooks.String(), "secret-0123") {
					t.Errorf("a secret shows in %q or %q", g.String(), nf.hooks.String())
				}
			}
		})
	}
}
