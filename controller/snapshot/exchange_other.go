//go:build !linux

package snapshot

import "fmt"

func exchange(a, b string) error {
	return fmt.Errorf("%w: exchanging %s and %s needs Linux's renameat2", ErrUnsupported, a, b)
}
