package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The stream format:
//
//	stream := magic "jobsuite-snapshot" (17) | version 1 (1) | file* | 0 (1) | SHA-256 (32)
//	file   := name length uvarint (1-255) | name | size uvarint | size bytes
//
// Files come in name order; a name is a plain file name (no "/", not "."
// or "..", no NUL). The SHA-256 covers every byte before it, and the
// stream ends right after it.
const (
	// Magic starts every stream.
	Magic = "jobsuite-snapshot"
	// Version is the format version this build writes and reads.
	Version    = 1
	maxNameLen = 255
)

// Info describes a stream that Read or Verify accepted.
type Info struct {
	Files       int      // files in the stream
	DataBytes   int64    // their bytes
	StreamBytes int64    // the stream's bytes, checksum included
	SHA256      [32]byte // the stream's checksum, checked
}

// Write writes the files of dir (a store checkpoint: regular files
// only) to w in the snapshot format. It reads the files as it writes,
// with a fixed buffer: memory does not grow with the store.
func Write(w io.Writer, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 256<<10)
	bw.WriteString(Magic)
	bw.WriteByte(Version)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", filepath.Join(dir, e.Name()))
		}
		names = append(names, e.Name())
	}
	slices.Sort(names)
	var num [binary.MaxVarintLen64]byte
	for _, name := range names {
		if !plainName(name) {
			return fmt.Errorf("%s: not a plain file name", name)
		}
		file, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		fi, err := file.Stat()
		if err != nil {
			file.Close()
			return err
		}
		bw.Write(num[:binary.PutUvarint(num[:], uint64(len(name)))])
		bw.WriteString(name)
		bw.Write(num[:binary.PutUvarint(num[:], uint64(fi.Size()))])
		n, err := io.Copy(bw, file)
		file.Close()
		if err == nil && n != fi.Size() {
			err = fmt.Errorf("%s changed size while it was read", name)
		}
		if err != nil {
			return err
		}
	}
	bw.WriteByte(0)
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(h.Sum(nil))
	return err
}

// Size is the length of the stream Write makes of dir, as long as its
// files do not change.
func Size(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := HeaderSize + TrailerSize
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		n += EntrySize(e.Name(), fi.Size())
	}
	return n, nil
}

// HeaderSize and TrailerSize are the bytes of a stream before its first
// file and after its last (the end mark and the checksum); a stream is
// HeaderSize + TrailerSize + the EntrySize of each of its files long.
const (
	HeaderSize  = int64(len(Magic) + 1)
	TrailerSize = int64(1 + sha256.Size)
)

// EntrySize is the bytes a file of that name and size takes in a stream.
func EntrySize(name string, size int64) int64 {
	var num [binary.MaxVarintLen64]byte
	return int64(binary.PutUvarint(num[:], uint64(len(name)))) + int64(len(name)) +
		int64(binary.PutUvarint(num[:], uint64(size))) + size
}

func plainName(name string) bool {
	return name != "" && len(name) <= maxNameLen && name != "." && name != ".." &&
		!strings.ContainsAny(name, "/\x00")
}

// Read writes the files of the stream r into dir, which it creates (it
// must not exist), checking everything the format promises, and syncs
// them and dir. On an error dir may hold some of the files: the caller
// removes it. A stream that fails a check gives ErrSnapshot.
func Read(r io.Reader, dir string) (Info, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return Info{}, err
	}
	return readInto(r, dir)
}

// readInto is Read into the existing directory dir.
func readInto(r io.Reader, dir string) (Info, error) {
	info, err := read(r, func(name string, r io.Reader, size uint64) error {
		return writeFile(filepath.Join(dir, name), r, size)
	})
	if err != nil {
		return info, err
	}
	return info, SyncDir(dir)
}

// Verify reads the stream r to its end and checks it as Read does,
// writing nothing.
func Verify(r io.Reader) (Info, error) {
	return read(r, func(name string, r io.Reader, size uint64) error {
		n, err := io.CopyN(io.Discard, r, int64(min(size, 1<<62)))
		if err == io.EOF || (err == nil && uint64(n) != size) {
			return fmt.Errorf("%w: truncated in %s", ErrSnapshot, name)
		}
		return err
	})
}

// read checks the stream and hands each file's bytes to file, which
// must consume exactly size bytes of r or fail.
func read(r io.Reader, file func(name string, r io.Reader, size uint64) error) (Info, error) {
	var info Info
	h := sha256.New()
	cr := &countReader{r: r}
	br := bufio.NewReaderSize(cr, 256<<10)
	tr := &hashReader{r: br, h: h}
	head := make([]byte, len(Magic)+1)
	if _, err := io.ReadFull(tr, head); err != nil {
		return info, fmt.Errorf("%w: header: %v", ErrSnapshot, err)
	}
	if string(head[:len(Magic)]) != Magic {
		return info, fmt.Errorf("%w: not a jobsuite snapshot", ErrSnapshot)
	}
	if head[len(Magic)] != Version {
		return info, fmt.Errorf("%w: version %d, this build reads %d", ErrSnapshot, head[len(Magic)], Version)
	}
	seen := map[string]bool{}
	for {
		n, err := binary.ReadUvarint(tr)
		if err != nil {
			return info, fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		}
		if n == 0 {
			break
		}
		if n > maxNameLen {
			return info, fmt.Errorf("%w: file name of %d bytes", ErrSnapshot, n)
		}
		nb := make([]byte, n)
		if _, err := io.ReadFull(tr, nb); err != nil {
			return info, fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		}
		name := string(nb)
		if !plainName(name) || seen[name] {
			return info, fmt.Errorf("%w: file name %q", ErrSnapshot, name)
		}
		seen[name] = true
		size, err := binary.ReadUvarint(tr)
		if err != nil {
			return info, fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		}
		if err := file(name, tr, size); err != nil {
			return info, err
		}
		info.Files++
		info.DataBytes += int64(size)
	}
	manifest := false
	for name := range seen {
		manifest = manifest || strings.HasPrefix(name, "MANIFEST-")
	}
	if !manifest {
		return info, fmt.Errorf("%w: no Pebble manifest among %d files", ErrSnapshot, len(seen))
	}
	want := h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(br, got); err != nil {
		return info, fmt.Errorf("%w: truncated checksum: %v", ErrSnapshot, err)
	}
	if !bytes.Equal(got, want) {
		return info, fmt.Errorf("%w: checksum mismatch", ErrSnapshot)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: bytes after the checksum", ErrSnapshot)
		}
		return info, err
	}
	copy(info.SHA256[:], got)
	info.StreamBytes = cr.n
	return info, nil
}

func writeFile(path string, r io.Reader, size uint64) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.CopyN(file, r, int64(min(size, 1<<62)))
	if err == io.EOF || (err == nil && uint64(n) != size) {
		err = fmt.Errorf("%w: truncated in %s", ErrSnapshot, filepath.Base(path))
	}
	if err == nil {
		err = file.Sync()
	}
	return errors.Join(err, file.Close())
}

// SyncDir fsyncs a directory: the names created, renamed or removed in
// it are durable afterwards.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// hashReader hashes what it reads; a byte at a time for ReadUvarint.
type hashReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (t *hashReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.h.Write(p[:n])
	return n, err
}

func (t *hashReader) ReadByte() (byte, error) {
	b, err := t.r.ReadByte()
	if err == nil {
		t.h.Write([]byte{b})
	}
	return b, err
}

// countReader counts the bytes read from the stream.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
