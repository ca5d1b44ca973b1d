package transport

import (
	"io"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// BenchmarkStreamThroughput sends 64 KiB writes over one stream on
// loopback to a peer that discards them.
func BenchmarkStreamThroughput(b *testing.B) {
	const chunk = 64 << 10
	for name, mode := range modes {
		b.Run(name, func(b *testing.B) {
			ctx, client, server := pair(b, mode, Options{Logger: hclog.NewNullLogger()})
			drained := make(chan error, 1)
			go func() {
				st, err := server.AcceptStream(ctx)
				if err == nil {
					_, err = io.Copy(io.Discard, st)
				}
				if err == nil {
					_, err = st.Write([]byte{1})
				}
				drained <- err
			}()
			st, err := client.OpenStream(ctx)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			for b.Loop() {
				if _, err := st.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(st, buf[:1]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := <-drained; err != nil {
				b.Fatal(err)
			}
		})
	}
}
