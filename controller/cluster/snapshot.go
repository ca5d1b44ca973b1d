package cluster

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

	"github.com/hashicorp/raft"

	"jobsuite/controller/store"
)

// A snapshot is a Pebble checkpoint of the store (store.Checkpoint:
// hard-linked SSTables, copies of the manifest, options and WAL), taken
// on raft's FSM goroutine so that it holds exactly the entries applied
// up to the snapshot's index, and streamed by Persist in this format:
//
//	stream := magic "jobsuite-snapshot" (17) | version 1 (1) | file* | 0 (1) | SHA-256 (32)
//	file   := name length uvarint (1-255) | name | size uvarint | size bytes
//
// Files come in name order; a name is a plain file name (no "/", not "."
// or "..", no NUL). The SHA-256 covers every byte before it. Restore
// writes the files into a new directory beside the live store, checks
// the sum and that the stream ends right after it, opens the result as a
// store, and only then swaps the "store" link over to it (an atomic
// rename) and closes the old store. A stream that fails any check is
// refused (ErrSnapshot) and its directory removed; the live store is not
// touched.

const (
	snapshotMagic   = "jobsuite-snapshot"
	snapshotVersion = 1
	maxNameLen      = 255
)

// Snapshot takes a checkpoint of the store. Raft calls it on the FSM
// goroutine, so no ApplyBatch runs meanwhile: the checkpoint holds
// exactly the entries applied so far, and the store is durable up to
// them (the checkpoint syncs the WAL first) before raft records the
// snapshot and compacts its log.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, fmt.Errorf("cluster: snapshot: %w", ErrClosed)
	}
	dir := filepath.Join(f.dir, fmt.Sprintf("%s%d", cpPrefix, f.checkpoints.Add(1)))
	if err := f.st.Checkpoint(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("cluster: snapshot: %w", err)
	}
	index, _ := f.Applied()
	f.log.Debug("checkpoint taken", "dir", dir, "applied_index", index)
	return &checkpoint{dir: dir}, nil
}

// checkpoint is a raft.FSMSnapshot: a checkpoint directory that Persist
// streams and Release removes.
type checkpoint struct{ dir string }

// Persist writes the checkpoint to sink in the snapshot format. Raft
// calls it off the FSM goroutine; applies go on meanwhile.
func (c *checkpoint) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, c.dir); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release removes the checkpoint directory.
func (c *checkpoint) Release() { _ = os.RemoveAll(c.dir) }

// WriteSnapshot writes the files of dir (a store checkpoint) to w in the
// snapshot format.
func WriteSnapshot(w io.Writer, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 256<<10)
	bw.WriteString(snapshotMagic)
	bw.WriteByte(snapshotVersion)
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

func plainName(name string) bool {
	return name != "" && len(name) <= maxNameLen && name != "." && name != ".." &&
		!strings.ContainsAny(name, "/\x00")
}

// Restore replaces the store with the snapshot rc streams (a follower
// catching up, or raft restoring its newest snapshot at start). The
// stream goes into a new directory; only when it checked out and opened
// as a store does the "store" link move to it, and the old store is
// closed and removed. A bad stream is refused with ErrSnapshot and
// leaves the live store as it was. The applied index becomes the one
// stored in the snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.RLock()
	gen, closed := f.gen+1, f.closed
	f.mu.RUnlock()
	if closed {
		return fmt.Errorf("cluster: restore: %w", ErrClosed)
	}
	final := filepath.Join(f.dir, storeDirName(gen))
	tmp := final + tmpSuffix
	fail := func(err error) error {
		_ = os.RemoveAll(tmp)
		_ = os.RemoveAll(final)
		f.log.Error("snapshot refused; the live store is unchanged", "error", err)
		return fmt.Errorf("cluster: restore: %w", err)
	}
	if err := errors.Join(os.RemoveAll(tmp), os.RemoveAll(final)); err != nil {
		return fail(err)
	}
	if err := readSnapshot(rc, tmp); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	st, err := store.Open(final, f.opts)
	if err != nil {
		return fail(fmt.Errorf("%w: it does not open as a store: %v", ErrSnapshot, err))
	}
	index, term, err := st.Applied()
	if err != nil {
		_ = st.Close()
		return fail(err)
	}

	f.mu.Lock()
	if err := f.link(gen); err != nil {
		// The rename either happened or not: find out which store is live.
		f.mu.Unlock()
		_ = st.Close()
		return fmt.Errorf("cluster: restore: switching the store link: %w (the FSM must be reopened)", err)
	}
	old, oldGen := f.st, f.gen
	f.st, f.gen = st, gen
	f.mu.Unlock()

	// Close waits for readers that still use the old store.
	if err := old.Close(); err != nil {
		f.log.Warn("closing the replaced store", "error", err)
	}
	if err := os.RemoveAll(filepath.Join(f.dir, storeDirName(oldGen))); err != nil {
		f.log.Warn("removing the replaced store", "error", err)
	}
	f.restores.Add(1)
	f.setApplied(index, term)
	f.log.Info("snapshot restored", "store", storeDirName(gen), "applied_index", index, "applied_term", term)
	return nil
}

// readSnapshot writes the files of a snapshot stream into the new
// directory dir, checking everything the format promises, and syncs
// them.
func readSnapshot(r io.Reader, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	h := sha256.New()
	br := bufio.NewReaderSize(r, 256<<10)
	tr := &hashReader{r: br, h: h}
	head := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(tr, head); err != nil {
		return fmt.Errorf("%w: header: %v", ErrSnapshot, err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: not a jobsuite snapshot", ErrSnapshot)
	}
	if head[len(snapshotMagic)] != snapshotVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrSnapshot, head[len(snapshotMagic)], snapshotVersion)
	}
	seen := map[string]bool{}
	for {
		n, err := binary.ReadUvarint(tr)
		if err != nil {
			return fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		}
		if n == 0 {
			break
		}
		if n > maxNameLen {
			return fmt.Errorf("%w: file name of %d bytes", ErrSnapshot, n)
		}
		nb := make([]byte, n)
		if _, err := io.ReadFull(tr, nb); err != nil {
			return fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		}
		name := string(nb)
		if !plainName(name) || seen[name] {
			return fmt.Errorf("%w: file name %q", ErrSnapshot, name)
		}
		seen[name] = true
		size, err := binary.ReadUvarint(tr)
		if err != nil {
			return fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		}
		if err := writeFile(filepath.Join(dir, name), tr, size); err != nil {
			return err
		}
	}
	manifest := false
	for name := range seen {
		manifest = manifest || strings.HasPrefix(name, "MANIFEST-")
	}
	if !manifest {
		return fmt.Errorf("%w: no Pebble manifest among %d files", ErrSnapshot, len(seen))
	}
	want := h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(br, got); err != nil {
		return fmt.Errorf("%w: truncated checksum: %v", ErrSnapshot, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: checksum mismatch", ErrSnapshot)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: bytes after the checksum", ErrSnapshot)
	}
	return syncDir(dir)
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
