package protocol

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func benchChunk() *LogChunk {
	return &LogChunk{Stream: Stdout, Offset: 1 << 30, Data: bytes.Repeat([]byte("0123456789abcdef"), 32<<10/16)}
}

func benchDispatch() *Dispatch {
	return &Dispatch{
		JobID:       123456789,
		Attempt:     2,
		Name:        "nightly-report",
		Command:     "python3 /opt/reports/nightly.py --date 2024-05-01 --format pdf",
		Env:         []string{"TZ=UTC", "REPORT_BUCKET=s3://reports", "LOG_LEVEL=info"},
		Dir:         "/opt/reports",
		Timeout:     2 * time.Hour,
		KillGrace:   10 * time.Second,
		CaptureLogs: true,
	}
}

func benchAppend(b *testing.B, m Message) {
	buf := Append(nil, m)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], m)
	}
}

func benchDecode(b *testing.B, m Message) {
	frame := Append(nil, m)
	typ, payload := Type(frame[4]), frame[frameHeader:]
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(typ, payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendLogChunk32K(b *testing.B) { benchAppend(b, benchChunk()) }
func BenchmarkDecodeLogChunk32K(b *testing.B) { benchDecode(b, benchChunk()) }
func BenchmarkAppendDispatch(b *testing.B)    { benchAppend(b, benchDispatch()) }
func BenchmarkDecodeDispatch(b *testing.B)    { benchDecode(b, benchDispatch()) }

// BenchmarkMemcpy32K is the yardstick for the LogChunk benchmarks.
func BenchmarkMemcpy32K(b *testing.B) {
	src := benchChunk().Data
	dst := make([]byte, len(src))
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		copy(dst, src)
	}
}

func BenchmarkWriterLogChunk32K(b *testing.B) {
	w := NewWriter(io.Discard)
	m := benchChunk()
	b.SetBytes(int64(len(Append(nil, m))))
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Write(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReaderLogChunk32K(b *testing.B) {
	var stream []byte
	for range 64 {
		stream = Append(stream, benchChunk())
	}
	src := bytes.NewReader(stream)
	r := NewReader(src, 0)
	b.SetBytes(int64(len(stream) / 64))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%64 == 0 {
			src.Reset(stream)
			r = NewReader(src, 0)
		}
		if _, err := r.Read(); err != nil {
			b.Fatal(err)
		}
	}
}
