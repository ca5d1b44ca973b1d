package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	waltypes "github.com/hashicorp/raft-wal/types"
)

// TestSealedWALSays: raft-wal's "segment is sealed" refusal is passed
// on as it is and logged once, with what to do; other errors are not.
func TestSealedWALSays(t *testing.T) {
	var buf bytes.Buffer
	w := &SealedWAL{Log: hclog.New(&hclog.LoggerOptions{Output: &buf})}
	other := errors.New("disk on fire")
	if err := w.check(other); err != other || buf.Len() != 0 {
		t.Fatalf("another error: %v, logged %q", err, buf.String())
	}
	for range 3 {
		sealed := fmt.Errorf("append: %w", waltypes.ErrSealed)
		if err := w.check(sealed); err != sealed {
			t.Fatalf("the refusal came back as %v", err)
		}
	}
	if n := strings.Count(buf.String(), "remove-peer"); n != 1 {
		t.Fatalf("logged the remedy %d times, want once:\n%s", n, buf.String())
	}
}
