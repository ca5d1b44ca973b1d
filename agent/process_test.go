package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"jobsuite/protocol"
)

// pathEnv is the environment the tests give jobs that run external commands.
func pathEnv() []string { return []string{"PATH=" + os.Getenv("PATH")} }

// captured is what a job wrote, per stream, as delivered to Output.
type captured struct {
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	calls  int
}

func (c *captured) out(t *testing.T) Output {
	return func(stream uint8, data []byte) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.calls++
		if len(data) == 0 || len(data) > chunkSize {
			t.Errorf("Output got %d bytes, want 1..%d", len(data), chunkSize)
		}
		switch stream {
		case streamStdout:
			c.stdout.Write(data)
		case streamStderr:
			c.stderr.Write(data)
		default:
			t.Errorf("Output got stream %d", stream)
		}
	}
}

// pids parses one pid per line.
func pids(t *testing.T, s string) []int {
	t.Helper()
	var ps []int
	for _, f := range strings.Fields(s) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("not a pid: %q in %q", f, s)
		}
		ps = append(ps, p)
	}
	return ps
}

// gone reports whether pid no longer runs. A zombie counts as gone: orphans
// are reparented to PID 1, which in a container may never reap them.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	// pid (comm) state ...; comm may contain spaces and parentheses.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	fields := bytes.Fields(rest)
	return len(fields) > 0 && (fields[0][0] == 'Z' || fields[0][0] == 'X')
}

// waitGone polls until every pid is gone, failing the test after 10s.
func waitGone(t *testing.T, ps ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, pid := range ps {
		for !gone(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still running", pid)
			}
			<-tick.C
		}
	}
}

// killAtEnd makes sure a test leaves no process behind even when it fails.
func killAtEnd(t *testing.T, ps ...int) {
	t.Cleanup(func() {
		for _, pid := range ps {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

func TestRunExit(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		command string
		outcome Outcome
		code    int
		signal  string
	}{
		"zero":        {"exit 0", OutcomeCompleted, 0, ""},
		"three":       {"exit 3", OutcomeFailed, 3, ""},
		"last status": {"false", OutcomeFailed, 1, ""},
		"sigkill":     {"kill -KILL $$", OutcomeFailed, 128 + 9, "SIGKILL"},
		"sigterm":     {"kill -TERM $$", OutcomeFailed, 128 + 15, "SIGTERM"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var startedPIDs []int
			var startedAt, calledAt time.Time
			res := Run(t.Context(), Spec{Command: tc.command, Env: pathEnv()},
				func(p Process) {
					startedPIDs, startedAt, calledAt = append(startedPIDs, p.PID), p.StartedAt, time.Now()
				}, nil)
			if res.Outcome != tc.outcome || res.ExitCode != tc.code || res.Signal != tc.signal || res.Err != nil {
				t.Fatalf("got outcome %v, exit %d, signal %q, err %v; want %v, %d, %q, nil",
					res.Outcome, res.ExitCode, res.Signal, res.Err, tc.outcome, tc.code, tc.signal)
			}
			if len(startedPIDs) != 1 || startedPIDs[0] != res.PID || res.PID <= 0 {
				t.Errorf("started called with %v, Result.PID %d", startedPIDs, res.PID)
			}
			if res.StartedAt.IsZero() || res.Duration <= 0 {
				t.Errorf("StartedAt %v, Duration %v", res.StartedAt, res.Duration)
			}
			// The start time the agent reports (Process.StartedAt) is
			// the Result's, taken before the start, never a later one.
			if !startedAt.Equal(res.StartedAt) || startedAt.After(calledAt) {
				t.Errorf("Process.StartedAt %v, Result.StartedAt %v, started called at %v", startedAt, res.StartedAt, calledAt)
			}
		})
	}
}

// TestRunOutput checks what split output (Spec.Split) delivers per
// stream; TestRunOrdered and TestRunTTY the one-stream modes.
func TestRunOutput(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	dir := t.TempDir()
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Setenv("JOBSUITE_TEST_INHERITED", "leak") // must not reach a job with Env nil
	t.Cleanup(func() { os.Unsetenv("JOBSUITE_TEST_INHERITED") })
	cases := map[string]struct {
		spec   Spec
		stdout func() []byte
		stderr func() []byte
	}{
		"1 MiB per stream": {
			spec: Spec{
				Command: "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero | tr '\\0' e >&2",
				Env:     pathEnv(),
			},
			stdout: func() []byte { return make([]byte, mib) },
			stderr: func() []byte { return bytes.Repeat([]byte("e"), mib) },
		},
		"order within a stream": {
			spec: Spec{Command: `i=0; while [ $i -lt 3000 ]; do echo $i; echo e$i >&2; i=$((i+1)); done`},
			stdout: func() []byte {
				var b bytes.Buffer
				for i := range 3000 {
					b.WriteString(strconv.Itoa(i) + "\n")
				}
				return b.Bytes()
			},
			stderr: func() []byte {
				var b bytes.Buffer
				for i := range 3000 {
					b.WriteString("e" + strconv.Itoa(i) + "\n")
				}
				return b.Bytes()
			},
		},
		"env applied": {
			spec:   Spec{Command: `echo "$FOO"; echo "${HOME-unset}" >&2`, Env: []string{"FOO=bar baz"}},
			stdout: func() []byte { return []byte("bar baz\n") },
			stderr: func() []byte { return []byte("unset\n") },
		},
		"nil env is empty": {
			spec:   Spec{Command: `echo "${JOBSUITE_TEST_INHERITED-unset}"`},
			stdout: func() []byte { return []byte("unset\n") },
			stderr: func() []byte { return nil },
		},
		"dir": {
			spec:   Spec{Command: "pwd -P", Dir: dir},
			stdout: func() []byte { return []byte(realDir + "\n") },
			stderr: func() []byte { return nil },
		},
		"stdin is /dev/null": {
			spec:   Spec{Command: "cat; echo done", Env: pathEnv()},
			stdout: func() []byte { return []byte("done\n") },
			stderr: func() []byte { return nil },
		},
		"explicit shell": {
			spec:   Spec{Command: "echo $0", Shell: "/bin/sh"},
			stdout: func() []byte { return []byte("/bin/sh\n") },
			stderr: func() []byte { return nil },
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var c captured
			spec := tc.spec
			spec.Capture = true
			spec.Split = true // streams apart
			res := Run(t.Context(), spec, nil, c.out(t))
			if res.Outcome != OutcomeCompleted || res.ExitCode != 0 {
				t.Fatalf("outcome %v exit %d err %v, stderr %q", res.Outcome, res.ExitCode, res.Err, c.stderr.Bytes())
			}
			wantOut, wantErr := tc.stdout(), tc.stderr()
			if !bytes.Equal(c.stdout.Bytes(), wantOut) {
				t.Errorf("stdout: got %d bytes %.80q, want %d bytes %.80q", c.stdout.Len(), c.stdout.Bytes(), len(wantOut), wantOut)
			}
			if !bytes.Equal(c.stderr.Bytes(), wantErr) {
				t.Errorf("stderr: got %d bytes %.80q, want %d bytes %.80q", c.stderr.Len(), c.stderr.Bytes(), len(wantErr), wantErr)
			}
			if want := uint64(len(wantOut) + len(wantErr)); res.Bytes != want {
				t.Errorf("Bytes %d, want %d", res.Bytes, want)
			}
		})
	}
}

func TestRunNoCapture(t *testing.T) {
	t.Parallel()
	res := Run(t.Context(), Spec{Command: "echo out; echo err >&2; head -c 100000 /dev/zero", Env: pathEnv()}, nil,
		func(stream uint8, data []byte) { t.Errorf("Output called with Capture false: %d %q", stream, data) })
	if res.Outcome != OutcomeCompleted || res.ExitCode != 0 || res.Bytes != 0 {
		t.Fatalf("outcome %v exit %d bytes %d err %v", res.Outcome, res.ExitCode, res.Bytes, res.Err)
	}
}

func TestRunStartFailure(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	cases := map[string]struct {
		ctx     context.Context
		spec    Spec
		outcome Outcome
		is      error
	}{
		"missing dir":       {t.Context(), Spec{Command: "true", Dir: "/nonexistent/jobsuite"}, OutcomeFailed, fs.ErrNotExist},
		"dir is a file":     {t.Context(), Spec{Command: "true", Dir: file}, OutcomeFailed, nil},
		"missing shell":     {t.Context(), Spec{Command: "true", Shell: "/nonexistent/sh"}, OutcomeFailed, fs.ErrNotExist},
		"shell not in PATH": {t.Context(), Spec{Command: "true", Shell: "jobsuite-no-such-shell"}, OutcomeFailed, exec.ErrNotFound},
		"cancelled before":  {cancelled, Spec{Command: "true"}, OutcomeCancelled, context.Canceled},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, capture := range []bool{false, true} {
				spec := tc.spec
				spec.Capture = capture
				res := Run(tc.ctx, spec,
					func(p Process) { t.Errorf("started called with %d", p.PID) },
					func(uint8, []byte) { t.Error("Output called") })
				if res.Outcome != tc.outcome || res.ExitCode != -1 || res.Err == nil || res.PID != 0 {
					t.Fatalf("capture %v: outcome %v exit %d pid %d err %v; want %v, -1, 0, an error",
						capture, res.Outcome, res.ExitCode, res.PID, res.Err, tc.outcome)
				}
				if tc.is != nil && !errors.Is(res.Err, tc.is) {
					t.Errorf("err %v is not %v", res.Err, tc.is)
				}
				t.Logf("capture %v: %v", capture, res.Err)
			}
		})
	}
}

// TestRunKill covers timeouts and cancellation, including a job that ignores
// SIGTERM and has to be killed after KillGrace.
func TestRunKill(t *testing.T) {
	t.Parallel()
	const grace = 200 * time.Millisecond
	// The timeout runs from the start of the process: it must leave the
	// shell time, on a loaded machine, to set its trap and print ready
	// (at 100ms both were missed under go test -race ./... on 2 cores).
	const timeout = 2 * time.Second
	cases := map[string]struct {
		command string
		timeout time.Duration
		cancel  bool // cancel once the job printed "ready"
		outcome Outcome
		signal  string
	}{
		"timeout":               {"echo ready; sleep 100", timeout, false, OutcomeTimeout, "SIGTERM"},
		"cancel":                {"echo ready; sleep 100", 0, true, OutcomeCancelled, "SIGTERM"},
		"timeout, ignores TERM": {"trap '' TERM; echo ready; sleep 100", timeout, false, OutcomeTimeout, "SIGKILL"},
		"cancel, ignores TERM":  {"trap '' TERM; echo ready; sleep 100", 0, true, OutcomeCancelled, "SIGKILL"},
		"cancel beats timeout":  {"echo ready; sleep 100", time.Hour, true, OutcomeCancelled, "SIGTERM"},
	}
	for name, tc := range cases {
		for mode, m := range outputModes {
			t.Run(name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				var c captured
				out := c.out(t)
				ready := false
				begin := time.Now()
				res := Run(ctx, m.with(Spec{Command: tc.command, Env: pathEnv(), Timeout: tc.timeout, KillGrace: grace, Capture: true}),
					nil, func(stream uint8, data []byte) {
						out(stream, data)
						if !ready && bytes.Contains(c.stdout.Bytes(), []byte("ready\n")) {
							ready = true
							if tc.cancel {
								cancel()
							}
						}
					})
				elapsed := time.Since(begin)
				if res.Outcome != tc.outcome || res.Signal != tc.signal || res.Err != nil {
					t.Fatalf("outcome %v signal %q exit %d err %v; want %v %q", res.Outcome, res.Signal, res.ExitCode, res.Err, tc.outcome, tc.signal)
				}
				wantCode := map[string]int{"SIGTERM": 128 + 15, "SIGKILL": 128 + 9}[tc.signal]
				if res.ExitCode != wantCode {
					t.Errorf("exit %d, want %d", res.ExitCode, wantCode)
				}
				if tc.signal == "SIGKILL" && res.Duration < grace {
					t.Errorf("killed after %v, before KillGrace %v", res.Duration, grace)
				}
				if elapsed > 10*time.Second {
					t.Errorf("Run took %v", elapsed)
				}
				if !ready {
					t.Errorf("job never printed ready; stdout %q", c.stdout.Bytes())
				}
				waitGone(t, res.PID)
			})
		}
	}
}

// TestRunCancelKillsTree cancels a job with children and grandchildren,
// or lets it time out, and checks that every one of them is gone — with
// each output mode, a terminal included (its job leads a session).
func TestRunCancelKillsTree(t *testing.T) {
	t.Parallel()
	const command = `
sleep 300 & echo $!
sleep 300 & echo $!
sh -c 'sleep 300 & echo $!; sleep 300 & echo $!; trap "" TERM; wait' & echo $!
wait`
	const want = 5
	for mode, m := range outputModes {
		for _, timeout := range []bool{false, true} {
			name := mode + "/cancel"
			if timeout {
				name = mode + "/timeout"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				// With timeout the job is stopped by its deadline, not
				// by cancel; the deadline is long enough for the tree to
				// be listed first (output arrives in milliseconds) and
				// the test waits for it either way.
				listed := make(chan struct{})
				spec := Spec{Command: command, Env: pathEnv(), KillGrace: 500 * time.Millisecond, Capture: true}
				if timeout {
					spec.Timeout = 5 * time.Second
				}
				var stdout bytes.Buffer
				var tree []int
				res := Run(ctx, m.with(spec),
					func(p Process) { tree = append(tree, p.PID) },
					func(stream uint8, data []byte) {
						if stream != streamStdout {
							t.Errorf("stderr: %q", data)
							return
						}
						stdout.Write(data)
						if tree != nil && bytes.Count(stdout.Bytes(), []byte("\n")) == want {
							tree = append(tree, pids(t, stdout.String())...)
							killAtEnd(t, tree...)
							close(listed)
							if !timeout {
								cancel()
							}
						}
					})
				wantOutcome := OutcomeCancelled
				if timeout {
					wantOutcome = OutcomeTimeout
				}
				if res.Outcome != wantOutcome {
					t.Fatalf("outcome %v exit %d err %v, stdout %q", res.Outcome, res.ExitCode, res.Err, stdout.Bytes())
				}
				select {
				case <-listed:
				default:
					t.Fatalf("the job ended before it listed its processes; stdout %q", stdout.Bytes())
				}
				if len(tree) != 1+want {
					t.Fatalf("pids %v, want %d", tree, 1+want)
				}
				waitGone(t, tree...)
			})
		}
	}
}

// TestRunKillsLeftovers runs jobs that exit leaving a background process in
// their group: Run returns without waiting for it and kills it.
func TestRunKillsLeftovers(t *testing.T) {
	t.Parallel()
	cases := map[string]Spec{"no capture": {}}
	for mode, m := range outputModes {
		cases[mode] = m.with(Spec{Capture: true})
	}
	for name, spec := range cases {
		capture := spec.Capture
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pidFile := filepath.Join(t.TempDir(), "pid")
			begin := time.Now()
			var c captured
			spec.Command = `sleep 300 & echo $! > "$PIDFILE"; echo bye`
			spec.Env = append(pathEnv(), "PIDFILE="+pidFile)
			res := Run(t.Context(), spec, nil, c.out(t))
			elapsed := time.Since(begin)
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			left := pids(t, string(b))
			killAtEnd(t, left...)
			if res.Outcome != OutcomeCompleted || res.ExitCode != 0 {
				t.Fatalf("outcome %v exit %d err %v", res.Outcome, res.ExitCode, res.Err)
			}
			if capture && c.stdout.String() != "bye\n" {
				t.Errorf("stdout %q", c.stdout.Bytes())
			}
			if elapsed >= pipeDrainTimeout {
				t.Errorf("Run took %v, the leftover process kept the pipes open", elapsed)
			}
			waitGone(t, left...)
		})
	}
}

// TestRunEscapedProcess runs a job whose child leaves the process group with
// setsid and keeps stdout open: Run returns after pipeDrainTimeout anyway.
func TestRunEscapedProcess(t *testing.T) {
	t.Parallel()
	setsid, err := exec.LookPath("setsid")
	if err != nil {
		t.Skip("no setsid:", err)
	}
	for mode, m := range outputModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testRunEscapedProcess(t, setsid, m)
		})
	}
}

func testRunEscapedProcess(t *testing.T, setsid string, m outputMode) {
	// The job waits on a FIFO until its child has left the group, or the
	// group kill at exit could catch the child before setsid.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	var c captured
	begin := time.Now()
	res := Run(t.Context(), m.with(Spec{
		Command: setsid + ` sh -c 'echo $$ > "$FIFO"; exec sleep 300' & read pid < "$FIFO"; echo $pid`,
		Env:     append(pathEnv(), "FIFO="+fifo),
		Capture: true,
	}), nil, c.out(t))
	elapsed := time.Since(begin)
	escaped := pids(t, c.stdout.String())
	killAtEnd(t, escaped...)
	if res.Outcome != OutcomeCompleted || res.ExitCode != 0 || len(escaped) != 1 {
		t.Fatalf("outcome %v exit %d err %v stdout %q", res.Outcome, res.ExitCode, res.Err, c.stdout.Bytes())
	}
	if elapsed < pipeDrainTimeout || elapsed > pipeDrainTimeout+5*time.Second {
		t.Errorf("Run took %v, want about %v", elapsed, pipeDrainTimeout)
	}
	if gone(escaped[0]) {
		t.Errorf("escaped process %d was killed; it left the group", escaped[0])
	}
}

func TestRunRusage(t *testing.T) {
	t.Parallel()
	res := Run(t.Context(), Spec{
		Command: `i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; dd if=/dev/zero of=/dev/null bs=1M count=3000 2>/dev/null`,
		Env:     pathEnv(),
	}, nil, nil)
	if res.Outcome != OutcomeCompleted {
		t.Fatalf("outcome %v exit %d err %v", res.Outcome, res.ExitCode, res.Err)
	}
	if res.UserCPU <= 0 || res.SystemCPU <= 0 || res.MaxRSS == 0 {
		t.Errorf("user %v system %v maxrss %d, want all > 0", res.UserCPU, res.SystemCPU, res.MaxRSS)
	}
	if res.MaxRSS < 1<<10 || res.MaxRSS > 1<<34 {
		t.Errorf("MaxRSS %d bytes is implausible", res.MaxRSS)
	}
	if res.UserCPU+res.SystemCPU > res.Duration+time.Second {
		t.Errorf("cpu %v+%v exceeds duration %v", res.UserCPU, res.SystemCPU, res.Duration)
	}
}

// A stream whose pipe was found full is read from a grown pipe in large
// chunks; until then, in small ones.
func TestReadPipeGrowsForHeavyWriters(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if sz, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0); err != nil || sz != pipeDefaultSize {
		t.Skipf("pipe capacity %d (%v), not Linux's default", sz, err)
	}
	if err := growPipe(r); err != nil { // probe: may the agent grow pipes here?
		t.Skipf("cannot grow a pipe: %v", err)
	}
	if _, err := unix.FcntlInt(r.Fd(), unix.F_SETPIPE_SZ, pipeDefaultSize); err != nil {
		t.Fatal(err)
	}
	// Fill the pipe before the reader starts: its first read finds it full.
	full := bytes.Repeat([]byte{'a'}, pipeDefaultSize)
	if _, err := w.Write(full); err != nil {
		t.Fatal(err)
	}
	chunks := make(chan chunk, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		readPipe(r, streamStdout, func(c chunk) { chunks <- c })
	}()
	first := <-chunks
	if first.n != pipeDefaultSize || cap(*first.buf) != smallChunkSize {
		t.Fatalf("first chunk %d bytes in a %d-byte buffer, want %d in %d", first.n, cap(*first.buf), pipeDefaultSize, smallChunkSize)
	}
	// The pipe was grown before the first chunk was handed on: a write
	// of more than its old capacity now fits without a reader.
	if sz, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0); err != nil || sz != pipeGrowSize {
		t.Fatalf("pipe capacity after a full read: %d (%v), want %d", sz, err, pipeGrowSize)
	}
	if _, err := w.Write(bytes.Repeat([]byte{'b'}, pipeGrowSize/2)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	<-done
	close(chunks)
	total, largest := first.n, 0
	for c := range chunks {
		total += c.n
		largest = max(largest, c.n)
		if c.n > chunkSize {
			t.Errorf("chunk of %d bytes, more than %d", c.n, chunkSize)
		}
	}
	if want := pipeDefaultSize + pipeGrowSize/2; total != want {
		t.Errorf("read %d bytes, want %d", total, want)
	}
	if largest != chunkSize {
		t.Errorf("largest chunk after growing %d bytes, want %d", largest, chunkSize)
	}
}

// The job gets a blocking write end, the agent a non-blocking read end.
func TestOutputPipeModes(t *testing.T) {
	r, w, err := outputPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer unix.Close(w)
	nonblock := func(fd uintptr) bool {
		t.Helper()
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fl&unix.O_NONBLOCK != 0
	}
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rNonblock bool
	if err := rc.Control(func(fd uintptr) { rNonblock = nonblock(fd) }); err != nil {
		t.Fatal(err)
	}
	if !rNonblock {
		t.Error("read end is blocking")
	}
	if nonblock(uintptr(w)) {
		t.Error("write end is non-blocking")
	}
	if fl, err := unix.FcntlInt(uintptr(w), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("write end: close-on-exec not set (flags %#x, %v): a job would leak it to the next", fl, err)
	}
	// Deadlines work on the read end: it is in the poller.
	if err := r.SetReadDeadline(time.Now()); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
}

// The /dev/null the agent keeps open serves job after job, captured or not.
func TestRunSharedDevNull(t *testing.T) {
	for i := range 3 {
		for _, capture := range []bool{false, true} {
			var c captured
			res := Run(t.Context(), Spec{Command: "cat; echo done", Env: pathEnv(), Capture: capture}, nil, c.out(t))
			if res.Outcome != OutcomeCompleted {
				t.Fatalf("run %d capture %v: outcome %v exit %d err %v", i, capture, res.Outcome, res.ExitCode, res.Err)
			}
			want := ""
			if capture {
				want = "done\n"
			}
			if got := c.stdout.String(); got != want {
				t.Errorf("run %d capture %v: stdout %q, want %q", i, capture, got, want)
			}
		}
	}
	dn, err := devNull()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []*os.File{dn.r, dn.w} {
		if _, err := f.Stat(); err != nil {
			t.Errorf("%s closed by a run: %v", f.Name(), err)
		}
	}
}

// BenchmarkRunTrue runs `true` jobs with captured output, 8 at a time as
// the benchmark's real agents do, and reports the agent's own CPU time
// per job (getrusage RUSAGE_SELF: the jobs' processes not counted) and
// the shells' (RUSAGE_CHILDREN).
func BenchmarkRunTrue(b *testing.B) {
	m := startCPUMeter()
	b.SetParallelism(4) // × GOMAXPROCS 2 = 8
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res := Run(context.Background(), Spec{Command: "true", Capture: true}, func(Process) {}, func(uint8, []byte) {})
			if res.Outcome != OutcomeCompleted {
				b.Errorf("outcome %v: %v", res.Outcome, res.Err)
			}
		}
	})
	m.report(b)
}

// cpuMeter reports a benchmark's CPU per op: this process's (the
// spawner's) and its reaped children's (the shells'), as row 3b of the
// benchmark table splits a real agent's.
type cpuMeter struct{ self, kids time.Duration }

func rusageCPU(who int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPUMeter() cpuMeter {
	return cpuMeter{self: rusageCPU(syscall.RUSAGE_SELF), kids: rusageCPU(syscall.RUSAGE_CHILDREN)}
}

func (m cpuMeter) report(b *testing.B) {
	self, kids := rusageCPU(syscall.RUSAGE_SELF)-m.self, rusageCPU(syscall.RUSAGE_CHILDREN)-m.kids
	b.ReportMetric(float64(self.Microseconds())/float64(b.N), "agent-cpu-µs/op")
	b.ReportMetric(float64(kids.Microseconds())/float64(b.N), "shell-cpu-µs/op")
}

// BenchmarkBareSpawn is BenchmarkRunTrue's floor: the same jobs through
// os/exec with nothing captured, no process group, no supervision.
func BenchmarkBareSpawn(b *testing.B) {
	m := startCPUMeter()
	b.SetParallelism(4) // × GOMAXPROCS 2 = 8
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := exec.Command("/bin/sh", "-c", "true").Run(); err != nil {
				b.Error(err)
			}
		}
	})
	m.report(b)
}

// outputMode is one way of capturing output, for tests that must behave
// the same in each.
type outputMode struct{ split, tty bool }

var outputModes = map[string]outputMode{
	"ordered": {},
	"split":   {split: true},
	"tty":     {tty: true},
}

func (m outputMode) with(s Spec) Spec {
	s.Split, s.TTY = m.split, m.tty
	return s
}

// interleaved is a job that alternates stdout and stderr, and what it
// writes in write order.
const (
	interleaved     = `echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf tail`
	interleavedWant = "out1\nerr1\nout2\nerr2\ntail"
)

// TestRunOrdered runs the interleaving job many times: with one pipe the
// output is in write order every time, all of it stream 1 — and so on a
// terminal, which is one stream too.
func TestRunOrdered(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"ordered", "tty"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			for i := range 50 {
				var c captured
				res := Run(t.Context(), outputModes[mode].with(Spec{Command: interleaved, Capture: true}), nil, c.out(t))
				if res.Outcome != OutcomeCompleted {
					t.Fatalf("run %d: outcome %v exit %d err %v", i, res.Outcome, res.ExitCode, res.Err)
				}
				if got := c.stdout.String(); got != interleavedWant || c.stderr.Len() != 0 {
					t.Fatalf("run %d: stream 1 %q, stream 2 %q; want %q on stream 1", i, got, c.stderr.Bytes(), interleavedWant)
				}
				if res.Bytes != uint64(len(interleavedWant)) {
					t.Errorf("run %d: Bytes %d, want %d", i, res.Bytes, len(interleavedWant))
				}
			}
		})
	}
}

// TestRunTTY runs jobs on a pseudo-terminal: stdout and stderr are the
// terminal, stdin is not, the terminal is the controlling one and 80x24,
// escape sequences and newlines arrive byte for byte (no \r added), and
// nothing is echoed.
func TestRunTTY(t *testing.T) {
	t.Parallel()
	const command = `test -t 1 && echo stdout-tty; test -t 2 && echo stderr-tty >&2; test -t 0 || echo stdin-not-tty
printf '\033[1;31mred\033[0m \033[38;5;82mgreen\033[0m\ttab\n'
stty size < /dev/tty
echo "$TERM"
printf 'no newline'`
	const want = "stdout-tty\nstderr-tty\nstdin-not-tty\n" +
		"\x1b[1;31mred\x1b[0m \x1b[38;5;82mgreen\x1b[0m\ttab\n" +
		"24 80\n" +
		"xterm-256color\n" +
		"no newline"
	var c captured
	res := Run(t.Context(), Spec{Command: command, Env: append(pathEnv(), "TERM=xterm-256color"), Capture: true, TTY: true}, nil, c.out(t))
	if res.Outcome != OutcomeCompleted {
		t.Fatalf("outcome %v exit %d err %v, output %q", res.Outcome, res.ExitCode, res.Err, c.stdout.Bytes())
	}
	if got := c.stdout.String(); got != want || c.stderr.Len() != 0 {
		t.Errorf("output %q, stream 2 %q; want %q", got, c.stderr.Bytes(), want)
	}
	// Without a terminal, the same job sees pipes.
	c = captured{}
	res = Run(t.Context(), Spec{Command: `test -t 1 || echo not-a-tty`, Capture: true}, nil, c.out(t))
	if res.Outcome != OutcomeCompleted || c.stdout.String() != "not-a-tty\n" {
		t.Errorf("without TTY: outcome %v, output %q", res.Outcome, c.stdout.Bytes())
	}
}

// TestRunTTYTail checks that the end of a terminal job's output survives
// the EIO that ends it: a job that writes a lot and exits at once (the
// slave side closes right after its last write) has every byte, its last
// bytes included, run after run.
func TestRunTTYTail(t *testing.T) {
	t.Parallel()
	const n = 200000
	for i := range 10 {
		var c captured
		res := Run(t.Context(), Spec{
			Command: fmt.Sprintf(`head -c %d /dev/zero | tr '\0' x; printf END`, n),
			Env:     pathEnv(), Capture: true, TTY: true,
		}, nil, c.out(t))
		if res.Outcome != OutcomeCompleted {
			t.Fatalf("run %d: outcome %v exit %d err %v", i, res.Outcome, res.ExitCode, res.Err)
		}
		out := c.stdout.Bytes()
		if len(out) != n+3 || !bytes.HasSuffix(out, []byte("END")) || bytes.Count(out, []byte("x")) != n {
			t.Fatalf("run %d: %d bytes ending %q, want %d x's and END", i, len(out), out[max(0, len(out)-10):], n)
		}
	}
}

// TestOutputModeChoice checks how the agent turns a dispatch and its own
// -tty into a capture mode.
func TestOutputModeChoice(t *testing.T) {
	type want struct{ tty, split bool }
	cases := map[string]struct {
		agentTTY bool
		output   protocol.OutputMode
		tty      protocol.TTYMode
		want     want
	}{
		"ordered":                          {false, protocol.OutputOrdered, protocol.TTYDefault, want{}},
		"split":                            {false, protocol.OutputSplit, protocol.TTYDefault, want{split: true}},
		"tty asked":                        {false, protocol.OutputOrdered, protocol.TTYOn, want{tty: true}},
		"tty asked, split":                 {false, protocol.OutputSplit, protocol.TTYOn, want{tty: true}},
		"agent default tty":                {true, protocol.OutputOrdered, protocol.TTYDefault, want{tty: true}},
		"agent default tty, split job":     {true, protocol.OutputSplit, protocol.TTYDefault, want{split: true}},
		"agent default tty, job says no":   {true, protocol.OutputOrdered, protocol.TTYOff, want{}},
		"unknown output is ordered":        {false, 7, protocol.TTYDefault, want{}},
		"unknown tty is the agent default": {true, protocol.OutputOrdered, 9, want{tty: true}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := &Agent{cfg: Config{TTY: tc.agentTTY}}
			tty, split := a.outputMode(&protocol.Dispatch{Output: tc.output, TTY: tc.tty})
			if (want{tty, split}) != tc.want {
				t.Errorf("tty %v split %v, want %+v", tty, split, tc.want)
			}
		})
	}
}

func TestSetEnv(t *testing.T) {
	env := []string{"TERMINAL=x", "TERM=dumb", "A=1"}
	if got := setEnv(env, "TERM", "xterm"); strings.Join(got, " ") != "TERMINAL=x TERM=xterm A=1" {
		t.Errorf("replace: %q", got)
	}
	if got := setEnv([]string{"A=1"}, "TERM", "xterm"); strings.Join(got, " ") != "A=1 TERM=xterm" {
		t.Errorf("add: %q", got)
	}
	if !hasEnv([]string{"TERM="}, "TERM") || hasEnv([]string{"TERMX=1"}, "TERM") {
		t.Error("hasEnv")
	}
}

// The start ticks Run reports around a process bracket the one
// /proc/PID/stat gives it.
func TestRunStartTick(t *testing.T) {
	for i := range 100 {
		ctx, cancel := context.WithCancel(t.Context())
		var got Process
		var want uint64
		var err error
		res := Run(ctx, Spec{Command: "exec sleep 60", Env: pathEnv(), KillGrace: time.Second}, func(p Process) {
			got = p
			var st procStat
			st, err = readProcStat(p.PID) // still running: sleep waits for the cancel
			want = st.startTick
			cancel()
		}, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != OutcomeCancelled {
			t.Fatalf("run %d: outcome %v, err %v", i, res.Outcome, res.Err)
		}
		if !got.Is(want) {
			t.Fatalf("run %d: start ticks %d to %d, /proc says %d", i, got.StartTick, got.StartTickMax, want)
		}
	}
}

func TestExecEnv(t *testing.T) {
	for name, tc := range map[string]struct {
		in, want []string
		err      bool
	}{
		"nil":           {nil, nil, false},
		"one":           {[]string{"A=1"}, []string{"A=1"}, false},
		"no duplicates": {[]string{"A=1", "B=2", "C"}, []string{"A=1", "B=2", "C"}, false},
		"later wins":    {[]string{"A=1", "B=2", "A=3", "C=4", "B="}, []string{"A=3", "B=", "C=4"}, false},
		"no value":      {[]string{"A", "A=1"}, []string{"A=1"}, false},
		"NUL":           {[]string{"A=1", "B=x\x00y"}, nil, true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := execEnv(tc.in)
			if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
				t.Fatalf("execEnv(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
	// A job sees the last value.
	var c captured
	res := Run(t.Context(), Spec{Command: `echo "$A"`, Env: []string{"A=1", "A=2"}, Capture: true}, nil, c.out(t))
	if res.Outcome != OutcomeCompleted || c.stdout.String() != "2\n" {
		t.Fatalf("outcome %v err %v stdout %q, want 2", res.Outcome, res.Err, c.stdout.Bytes())
	}
}

// waitExit reports the exit of a process and leaves it unreaped (its
// process group ID stays taken), through a pidfd or without one.
func TestWaitExit(t *testing.T) {
	for _, withPidfd := range []bool{false, true} {
		if withPidfd && !pidfdPoll() {
			t.Log("no pidfd poll on this kernel")
			continue
		}
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		pidfd := -1
		sys := &syscall.SysProcAttr{Setpgid: true}
		if withPidfd {
			sys.PidFD = &pidfd
		}
		pid, _, err := syscall.StartProcess("/bin/sh", []string{"sh", "-c", "read x < " + fifo}, &syscall.ProcAttr{Sys: sys})
		if err != nil {
			t.Fatal(err)
		}
		killAtEnd(t, pid)
		if withPidfd && pidfd < 0 {
			t.Fatal("no pidfd")
		}
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			waitExit(pid, pidfd)
		}()
		select {
		case <-exited:
			t.Fatalf("pidfd %v: exit reported while the process waits on the fifo", withPidfd)
		default:
		}
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // opens once sh has opened it
		if err != nil {
			t.Fatal(err)
		}
		w.Close() // read gets EOF: sh exits
		<-exited
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil || got != pid {
			t.Fatalf("pidfd %v: wait4 after the exit: %d, %v; want the unreaped process %d", withPidfd, got, err, pid)
		}
	}
}

// The start tick bracket Run reports (one boot-clock read after the
// start, the beginning put back by the start's duration) holds the start
// time /proc gives the process: recover tells a job's process from a
// reused PID by it.
func TestStartBracket(t *testing.T) {
	t.Parallel()
	for i := range 20 {
		ctx, cancel := context.WithCancel(t.Context())
		var got Process
		var start uint64
		res := Run(ctx, Spec{Command: "sleep 5", Env: pathEnv(), KillGrace: time.Second}, func(p Process) {
			got, start = p, startTick(p.PID) // the process runs: it sleeps
			cancel()
		}, nil)
		cancel()
		if res.Outcome != OutcomeCancelled {
			t.Fatalf("run %d: outcome %v, want cancelled (err %v)", i, res.Outcome, res.Err)
		}
		if start == 0 || got.StartTick == 0 || got.StartTickMax < got.StartTick {
			t.Fatalf("run %d: /proc start %d, bracket [%d, %d]", i, start, got.StartTick, got.StartTickMax)
		}
		if !got.Is(start) {
			t.Errorf("run %d: /proc start tick %d outside the bracket [%d, %d]", i, start, got.StartTick, got.StartTickMax)
		}
		if got.Is(got.StartTickMax + 1) {
			t.Errorf("run %d: a process started after the bracket counts as the job's", i)
		}
	}
}
