package controller

import (
	"reflect"
	"testing"

	"jobsuite/certs"
)

// A Config that sets only what is required ends up with DefaultConfig's
// values, field by field: the defaults the CLI shows (from DefaultConfig)
// are the ones the controller applies.
func TestSetDefaultsAppliesDefaultConfig(t *testing.T) {
	cfg := Config{DataDir: "/data", TLS: certs.Files{CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	want := reflect.ValueOf(DefaultConfig())
	got := reflect.ValueOf(cfg)
	n := 0
	for i := range want.NumField() {
		f := want.Type().Field(i)
		if want.Field(i).IsZero() {
			continue // no default of its own
		}
		n++
		if !reflect.DeepEqual(got.Field(i).Interface(), want.Field(i).Interface()) {
			t.Errorf("setDefaults left %s = %v, DefaultConfig says %v", f.Name, got.Field(i), want.Field(i))
		}
	}
	if n < 15 {
		t.Errorf("DefaultConfig sets only %d fields", n)
	}
	if cfg.HeartbeatInterval != cfg.LeaseTTL/3 {
		t.Errorf("HeartbeatInterval %v, want LeaseTTL/3 = %v", cfg.HeartbeatInterval, cfg.LeaseTTL/3)
	}
}
