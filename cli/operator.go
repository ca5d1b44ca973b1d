package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	mcli "github.com/mitchellh/cli"

	"jobsuite/api"
	"jobsuite/controller/snapshot"
	"jobsuite/controller/store"
)

// operatorCommands are "jobsuite operator ...": running the controller
// itself. The snapshot commands are a single controller's backup and
// restore; cluster membership (members, remove-peer) goes here too.
func operatorCommands(m Meta) map[string]mcli.CommandFactory {
	groups := map[string]*groupCommand{
		"operator": {
			synopsis: "Look after the controllers: cluster members, backup and restore",
			help: `
Usage: jobsuite operator <subcommand> [options]

  Commands for running the controllers themselves. 'operator members'
  lists the controllers of a cluster (README "Running a cluster"),
  'operator remove-peer' removes one that is gone for good and
  'operator transfer-leadership' hands the leadership on before
  maintenance of the leader's machine; a single controller is a cluster
  of one to them. 'operator snapshot' saves a consistent copy of the
  controller's store while it runs, and puts one back into a running
  cluster or in place of a stopped single controller's store: the
  backup and restore (README, "Backup and restore"), and the way a
  single controller's jobs move into a cluster.

Example:

  jobsuite operator members
  jobsuite operator remove-peer ctl-3
  jobsuite operator snapshot save backup.snap
  jobsuite operator snapshot restore -force backup.snap
  jobsuite operator snapshot restore -data-dir /var/lib/jobsuite backup.snap
`,
		},
		"operator snapshot": {
			synopsis: "Save, inspect and restore snapshots of the controller's store",
			help: `
Usage: jobsuite operator snapshot <subcommand> [options]

  A snapshot is a consistent copy of the controller's whole store (every
  job, its events and output, revocations, API token hashes, the audit
  log), checked by a SHA-256. 'save' takes one from a running controller,
  'inspect' checks a file and says what it holds, 'restore' puts it into
  a running cluster (-force) or in place of a stopped single
  controller's data directory (-data-dir).

  A snapshot holds every job's command, environment and output and the
  API tokens' hashes: keep it as safe as the data directory.

Example:

  jobsuite operator snapshot save backup.snap
  jobsuite operator snapshot inspect backup.snap
  jobsuite operator snapshot restore -force backup.snap
  jobsuite operator snapshot restore -data-dir /var/lib/jobsuite backup.snap
`,
		},
	}
	out := map[string]mcli.CommandFactory{
		"operator snapshot save":    func() (mcli.Command, error) { return &SnapshotSaveCommand{Meta: m}, nil },
		"operator snapshot inspect": func() (mcli.Command, error) { return &SnapshotInspectCommand{Meta: m}, nil },
		"operator snapshot restore": func() (mcli.Command, error) { return &SnapshotRestoreCommand{Meta: m}, nil },
		// The cluster (operator_members.go).
		"operator members":     func() (mcli.Command, error) { return &OperatorMembersCommand{Meta: m}, nil },
		"operator remove-peer": func() (mcli.Command, error) { return &OperatorRemovePeerCommand{Meta: m}, nil },
		"operator transfer-leadership": func() (mcli.Command, error) {
			return &OperatorTransferLeadershipCommand{Meta: m}, nil
		},
	}
	for name, g := range groups {
		out[name] = func() (mcli.Command, error) { return g, nil }
	}
	return out
}

// fileArg is the one FILE argument of a snapshot command.
func fileArg(m Meta, args []string, name string) (string, int, bool) {
	if len(args) != 1 || args[0] == "" {
		return "", usageError(m, name, "give one snapshot FILE"), false
	}
	return args[0], 0, true
}

// SnapshotSaveCommand is "jobsuite operator snapshot save FILE".
type SnapshotSaveCommand struct{ Meta }

func (c *SnapshotSaveCommand) Synopsis() string {
	return "Save a snapshot of the running controller's store to a file"
}

func (c *SnapshotSaveCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite operator snapshot save [options] FILE

  Saves a consistent snapshot of the running controller's store
  (GET /operator/snapshot; operator role): everything the controller
  acknowledged before the command started is in it, and the controller
  goes on serving meanwhile. The download goes to FILE.tmp and is checked
  as it arrives (the stream's SHA-256, its length, its format); only a
  whole, checked snapshot is synced and renamed to FILE, replacing an
  older FILE. A broken download, or a controller that sends nothing for
  a minute, leaves FILE as it was and removes FILE.tmp.

  One snapshot is taken at a time: while another is streaming the
  controller answers 429 and this command says so.

  The file holds every job's command, environment and output and the API
  tokens' hashes: keep it as safe as the data directory (mode 0600).
` + clientOptionsHelp + `

Example:

  $ jobsuite operator snapshot save /backup/jobsuite-$(date +%F).snap
  Saved /backup/jobsuite-2026-12-05.snap: 48.2 MiB, 23 files, SHA-256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 (checked)
`)
}

func (c *SnapshotSaveCommand) Run(args []string) int {
	const name = "operator snapshot save"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	file, code, ok := fileArg(c.Meta, fs.Args(), name)
	if !ok {
		return code
	}
	client, err := newClient(c.Meta, &cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	ctx, cancel := c.signalContext()
	defer cancel()
	info, err := client.saveSnapshot(ctx, file)
	if err != nil {
		return c.errorf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "Saved %s: %s, %d files, SHA-256 %s (checked)\n", file, bytesText(uint64(info.StreamBytes)), info.Files, hex.EncodeToString(info.SHA256[:]))
	return ExitOK
}

// saveSnapshot downloads GET /operator/snapshot into file.tmp, checking
// the stream as it arrives, then syncs it and renames it to file.
func (c *Client) saveSnapshot(ctx context.Context, file string) (snapshot.Info, error) {
	var info snapshot.Info
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("https", "/operator/snapshot"), nil)
	if err != nil {
		return info, err
	}
	// No overall timeout: a snapshot takes as long as the store is big.
	// The controller drops a client that stops reading; a controller
	// that sends nothing for snapshotIdleTimeout is given up on.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req = req.WithContext(ctx)
	idle := time.AfterFunc(snapshotIdleTimeout, func() { cancel(errSnapshotIdle) })
	defer idle.Stop()
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		if context.Cause(ctx) == errSnapshotIdle {
			return info, errSnapshotIdle
		}
		return info, c.connError(err)
	}
	defer resp.Body.Close()
	body := &idleReader{r: resp.Body, timer: idle}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		e := apiError(resp.StatusCode, body)
		if e.Status == http.StatusTooManyRequests {
			return info, fmt.Errorf("%v (Retry-After: %s s)", e, resp.Header.Get("Retry-After"))
		}
		return info, e
	}
	tmp := file + ".tmp"
	// A FILE.tmp left by a killed save goes; a new one is made with mode 0600.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return info, err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return info, err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if info, err = snapshot.Verify(io.TeeReader(body, f)); err != nil {
		if ctx.Err() != nil {
			return info, fmt.Errorf("%w; %s is unchanged", context.Cause(ctx), file)
		}
		return info, fmt.Errorf("the download is not a whole snapshot, %s is unchanged: %w", file, err)
	}
	if err := f.Sync(); err != nil {
		return info, err
	}
	if err := f.Close(); err != nil {
		return info, err
	}
	done = true
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return info, err
	}
	return info, snapshot.SyncDir(filepath.Dir(file))
}

// snapshotIdleTimeout is how long save waits for the controller's next
// bytes before it gives up.
const snapshotIdleTimeout = time.Minute

var errSnapshotIdle = errors.New("the controller sent nothing for a minute; the snapshot was given up")

// idleReader restarts timer on every read that returns bytes.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.timer.Reset(snapshotIdleTimeout)
	}
	return n, err
}

// SnapshotInspectCommand is "jobsuite operator snapshot inspect FILE".
type SnapshotInspectCommand struct{ Meta }

func (c *SnapshotInspectCommand) Synopsis() string {
	return "Check a snapshot file and show what it holds"
}

func (c *SnapshotInspectCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite operator snapshot inspect FILE

  Checks a snapshot file the way restore does (format, every length, the
  SHA-256 over the stream) and shows its size, its checksum, the raft
  index and term it was taken at (a cluster's snapshot; a single
  controller's has none) and how many jobs it holds in each state. To
  count the jobs it unpacks the store into a scratch directory beside
  FILE and removes it afterwards. Exits 1 if the file is not a whole
  snapshot. Needs no controller.

Example:

  $ jobsuite operator snapshot inspect backup.snap
  File:        backup.snap
  Size:        48.2 MiB (23 files)
  SHA-256:     9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 (checked)
  Raft index:  none (a single controller's store)
  Jobs:        1520 (completed 1490, failed 12, queued 18)
`)
}

func (c *SnapshotInspectCommand) Run(args []string) int {
	const name = "operator snapshot inspect"
	fs := c.flagSet(name)
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	file, code, ok := fileArg(c.Meta, fs.Args(), name)
	if !ok {
		return code
	}
	f, err := os.Open(file)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer f.Close()
	scratch, err := os.MkdirTemp(filepath.Dir(file), ".inspect-")
	if err != nil {
		return c.errorf("%v", err)
	}
	defer os.RemoveAll(scratch)
	res, err := snapshot.Inspect(f, filepath.Join(scratch, "store"), nil)
	if err != nil {
		return c.errorf("%s is not a usable snapshot: %v", file, err)
	}
	fmt.Fprintf(c.Stdout, "File:        %s\n", file)
	fmt.Fprintf(c.Stdout, "Size:        %s (%d files)\n", bytesText(uint64(res.Info.StreamBytes)), res.Info.Files)
	fmt.Fprintf(c.Stdout, "SHA-256:     %s (checked)\n", hex.EncodeToString(res.Info.SHA256[:]))
	c.printStore(res)
	return ExitOK
}

// printStore prints the raft index and the job counts of a store.
func (m Meta) printStore(res snapshot.Restored) {
	if res.Index == 0 {
		fmt.Fprintf(m.Stdout, "Raft index:  none (a single controller's store)\n")
	} else {
		fmt.Fprintf(m.Stdout, "Raft index:  %d (term %d)\n", res.Index, res.Term)
	}
	fmt.Fprintf(m.Stdout, "Jobs:        %s\n", jobCounts(res.Jobs))
}

// jobCounts is "1520 (completed 1490, failed 12, queued 18)".
func jobCounts(jobs map[string]int) string {
	total := 0
	var parts []string
	for state, n := range jobs {
		total += n
		parts = append(parts, fmt.Sprintf("%s %d", state, n))
	}
	if total == 0 {
		return "0"
	}
	slices.Sort(parts)
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

// SnapshotRestoreCommand is "jobsuite operator snapshot restore
// [-data-dir DIR | -force] FILE".
type SnapshotRestoreCommand struct{ Meta }

func (c *SnapshotRestoreCommand) Synopsis() string {
	return "Put a snapshot in place of a cluster's or a stopped controller's store"
}

func (c *SnapshotRestoreCommand) Help() string {
	return strings.TrimSpace(`
Usage: jobsuite operator snapshot restore -force [options] FILE
       jobsuite operator snapshot restore -data-dir DIR [options] FILE

  Puts the snapshot in FILE in place of the controllers' store. FILE is
  checked whole first (format, lengths, SHA-256); a file that is not a
  whole snapshot changes nothing. A single controller's backup restores
  into a cluster too: that is how a single controller's jobs move into
  a cluster (README, "Running a cluster").

  A cluster restores while it runs (-force, no -data-dir): the snapshot
  goes to the controller at JOBSUITE_ADDR (POST
  /operator/snapshot/restore; operator role; a follower forwards it to
  the leader), which checks it again, stops its scheduler, and restores
  it through raft: every controller of the cluster installs it, and the
  command returns once a quorum has and the leader serves from it.

  A single controller restores offline (-data-dir DIR): run it on the
  controller's machine, as the user the controller runs as, with the
  controller stopped: while a controller (or 'jobsuite dev') holds DIR
  the restore is refused and nothing changes. The store is unpacked
  into a new directory beside DIR, checked again and opened, the
  controller's own files (DIR/node) are copied over, and the two
  directories are swapped in one atomic step (renameat2
  RENAME_EXCHANGE, Linux): a crash at any point leaves DIR holding the
  old store or the new one, whole. The old store is kept as
  DIR.before-restore-<time> (printed) unless -discard-old. DIR must not
  be a mount point (the swap renames it; restore into a directory inside
  the mount instead), and a DIR that is a symlink stays one: the
  directory it names is swapped. A DIR that does not exist is created.
  A cluster node's data directory is refused: restore the cluster
  online.

  A restore rewinds the controllers to the snapshot: jobs submitted
  after it are gone, and their IDs will be handed out again. Queued jobs
  are queued again and attempts that were running get the restart grace
  as after any restart; an agent reporting an attempt the snapshot does
  not know is told it is stale. That is what -force acknowledges.

Options:

  -force
    Restore into the running cluster at JOBSUITE_ADDR.

  -data-dir=<path>
    The stopped single controller's data directory (its -data-dir).

  -discard-old
    With -data-dir: remove the replaced store instead of keeping it.

  -timeout=<duration>
    With -force: how long to wait for the cluster's answer (default 1h).
    A restore the leader has begun finishes even if the wait ends.
` + clientOptionsHelp + `

Examples:

  $ jobsuite operator snapshot restore -force backup.snap
  Checked backup.snap: 48.2 MiB, 23 files, SHA-256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  Restored into the cluster (leader ctl-2) at raft index 120456; jobs: 1520 (completed 1490, failed 12, queued 18)

  $ jobsuite operator snapshot restore -data-dir /var/lib/jobsuite backup.snap
  Checked backup.snap: 48.2 MiB, 23 files, SHA-256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  Restored /var/lib/jobsuite; jobs: 1520 (completed 1490, failed 12, queued 18)
  The previous store is kept as /var/lib/jobsuite.before-restore-20261205T081500.000Z
`)
}

func (c *SnapshotRestoreCommand) Run(args []string) int {
	const name = "operator snapshot restore"
	var cf clientFlags
	fs := c.flagSet(name)
	cf.register(fs)
	dataDir := fs.String("data-dir", "", "")
	discardOld := fs.Bool("discard-old", false, "")
	force := fs.Bool("force", false, "")
	timeout := fs.Duration("timeout", time.Hour, "")
	if code, ok := c.parse(fs, args, c.Help()); !ok {
		return code
	}
	file, code, ok := fileArg(c.Meta, fs.Args(), name)
	if !ok {
		return code
	}
	if *timeout <= 0 {
		return usageError(c.Meta, name, "-timeout must be positive")
	}
	if *dataDir == "" && !*force {
		return usageError(c.Meta, name, "give -force to restore into the running cluster at JOBSUITE_ADDR (it goes back to the snapshot: jobs submitted after it are gone), or -data-dir DIR to restore a stopped single controller")
	}
	f, err := os.Open(file)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer f.Close()
	// First the whole file, writing nothing: a bad file is refused
	// before anything is unpacked or sent.
	info, err := snapshot.Verify(f)
	if err != nil {
		return c.errorf("%s is not a whole snapshot; nothing was changed: %v", file, err)
	}
	fmt.Fprintf(c.Stdout, "Checked %s: %s, %d files, SHA-256 %s\n", file, bytesText(uint64(info.StreamBytes)), info.Files, hex.EncodeToString(info.SHA256[:]))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return c.errorf("%v", err)
	}
	if *dataDir == "" {
		return c.online(&cf, f, info.StreamBytes, *timeout)
	}
	res, err := snapshot.Restore(f, *dataDir, snapshot.RestoreOptions{Now: time.Now(), DiscardOld: *discardOld})
	for _, line := range res.Recovered {
		fmt.Fprintf(c.Stdout, "An earlier restore was interrupted: %s\n", line)
	}
	switch {
	case errors.Is(err, store.ErrLocked):
		return c.errorf("a controller (or 'jobsuite dev') is running on %s: stop it first; nothing was changed", *dataDir)
	case errors.Is(err, snapshot.ErrUnsupported):
		return c.errorf("%v; nothing was changed. Restore into a new directory instead (-data-dir NEW) and start the controller with -data-dir NEW", err)
	case errors.Is(err, snapshot.ErrClusterNode):
		return c.errorf("%s is a cluster node's data directory; nothing was changed. A cluster restores while it runs: 'jobsuite operator snapshot restore -force %s' with JOBSUITE_ADDR naming the cluster", *dataDir, file)
	case err != nil:
		return c.errorf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "Restored %s; jobs: %s\n", res.Dir, jobCounts(res.Jobs))
	if res.Before != "" {
		fmt.Fprintf(c.Stdout, "The previous store is kept as %s\n", res.Before)
	}
	return ExitOK
}

// online restores the snapshot f into the running cluster, waiting at
// most timeout for the answer.
//
// Only a refusal (a 4xx answer) says for certain that nothing was
// restored. Once the leader has the whole file it hands it to raft,
// which finishes the restore whatever happens to this request; so when
// the answer does not come (a timeout, ^C, a dropped connection) or is
// a 5xx, the message says the restore may have happened and how to
// tell.
func (c *SnapshotRestoreCommand) online(cf *clientFlags, f *os.File, size int64, timeout time.Duration) int {
	client, err := newClient(c.Meta, cf)
	if err != nil {
		return c.errorf("%v", err)
	}
	defer client.close()
	ctx, cancel := c.signalContext()
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	defer cancelTimeout()
	res, err := client.restoreSnapshot(ctx, f, size)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			// A single controller answers 409 saying how it restores.
			return c.errorf("%v; nothing was restored", err)
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within -timeout %s or interrupted (%w)", timeout, err)
		}
		return c.errorf("%v. The restore may still have happened (raft finishes it once the leader holds the whole file): 'jobsuite audit' lists a %q entry when it did, and 'jobsuite operator members' shows the new applied index", err, "snapshot-restore")
	}
	fmt.Fprintf(c.Stdout, "Restored into the cluster (leader %s) at raft index %d; jobs: %s\n", res.Leader, res.Index, jobCounts(res.Jobs))
	return ExitOK
}

// restoreSnapshot sends the snapshot r (size bytes) to POST
// /operator/snapshot/restore and waits for the answer, as long as ctx
// allows: a restore takes as long as the store is big (the command's
// -timeout, an hour by default).
func (c *Client) restoreSnapshot(ctx context.Context, r io.Reader, size int64) (api.SnapshotRestored, error) {
	var out api.SnapshotRestored
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("https", "/operator/snapshot/restore"), io.NopCloser(r))
	if err != nil {
		return out, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return out, c.connError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return out, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return out, apiError(resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("the answer is not the JSON expected: %v", err)
	}
	return out, nil
}
