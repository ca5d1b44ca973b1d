package sched

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/store"
)

// The package's test helpers (package controller's tests keep copies
// of their own: test files are not shared across packages).

// testLog sends log lines to t.Log.
func testLog(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: logWriter{t}})
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testStore opens a NoSync store in a temporary directory, closed when
// the test ends.
func testStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{Logger: testLog(t, "store"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// applyAll applies cmds to st as one batch and returns the batch's error
// or else the first command's.
func applyAll(st *store.Store, cmds ...store.Command) error {
	res, err := st.Apply(cmds...)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}
