package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Outcome is how a run ended. The values are those of protocol.Outcome.
type Outcome uint8

const (
	OutcomeCompleted Outcome = 1 // exit status 0
	OutcomeFailed    Outcome = 2 // non-zero exit, killed by a signal, or could not start
	OutcomeTimeout   Outcome = 3 // killed at Spec.Timeout
	OutcomeCancelled Outcome = 4 // killed because the context was cancelled
)

func (o Outcome) String() string {
	switch o {
	case OutcomeCompleted:
		return "completed"
	case OutcomeFailed:
		return "failed"
	case OutcomeTimeout:
		return "timeout"
	case OutcomeCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Output streams, the values of protocol.Stdout and protocol.Stderr.
const (
	streamStdout uint8 = 1
	streamStderr uint8 = 2
)

const (
	defaultShell     = "/bin/sh"
	defaultKillGrace = 5 * time.Second

	// chunkSize is the largest piece of output handed to Output at once
	// (protocol.MaxChunkSize: one spool record, one LogChunk). A stream
	// reads into buffers of smallChunkSize, the pipe's default capacity,
	// until a read finds the pipe full (the job writes faster than the
	// agent reads); then the pipe is grown to pipeGrowSize and read in
	// chunkSize pieces, so a heavy writer costs a few large records and
	// messages instead of many small ones, and a light one no memory.
	// Grown pipes count against the agent user's fs.pipe-user-pages-soft
	// (64 MiB by default; past it an unprivileged user's new pipes get
	// two pages): 512 KiB measured as fast as 1 MiB and takes half.
	chunkSize       = 256 << 10
	smallChunkSize  = pipeDefaultSize
	pipeDefaultSize = 64 << 10 // Linux's default pipe capacity
	pipeGrowSize    = 512 << 10

	// pipeDrainTimeout bounds how long Run waits for the output pipes to reach
	// EOF after the main process exited and its process group was killed. Only
	// a process that left the group (setsid, setpgid) can hold them open longer.
	pipeDrainTimeout = 2 * time.Second

	// finalDrainMax bounds, per stream, what Run still reads without blocking
	// once pipeDrainTimeout has passed, so that output the job wrote before it
	// ended is not lost when Output was slow, while an escaped process that
	// keeps writing cannot keep Run going.
	finalDrainMax = 4 << 20
)

// Spec says what to run.
type Spec struct {
	Command   string        // run as: Shell -c Command
	Shell     string        // "" → "/bin/sh"
	Env       []string      // full environment (KEY=VALUE) for the process; nil → empty environment
	Dir       string        // working directory; "" → the agent's current directory
	Timeout   time.Duration // 0 = none
	KillGrace time.Duration // between SIGTERM and SIGKILL on timeout or cancel; 0 → 5s
	Capture   bool          // false: output goes to /dev/null
	// Split gives stdout and stderr a pipe each, delivered to Output as
	// streams 1 and 2; the order between the two is the order Run read
	// them, not the order the job wrote them. By default (false) they
	// share one pipe: the output is in write order, all of it stream 1.
	Split bool
	// TTY runs the job on a pseudo-terminal (tty.go): its stdout and
	// stderr are the terminal, one stream in write order (stream 1),
	// and it leads a session of its own, whose process group is killed
	// as without a terminal. Stdin stays /dev/null. It overrides Split,
	// and needs Capture.
	TTY bool
	// Credential runs the job as another user (uid, gid, supplementary
	// groups; the agent must be root); nil runs it as the agent's user.
	Credential *syscall.Credential
}

// Output receives a job's output in the order it was read. stream is 1 for
// stdout and 2 for stderr (protocol.Stdout, protocol.Stderr). It is called
// from one goroutine at a time, and data is only valid during the call. While
// it blocks, reading the pipes pauses (backpressure): nothing is dropped, and
// a job that writes more than the pipe buffers hold waits for it.
type Output func(stream uint8, data []byte)

// Result describes a finished run.
type Result struct {
	PID       int
	StartedAt time.Time
	Outcome   Outcome
	ExitCode  int    // exit status, 128+signal number when killed by a signal, -1 if it never started
	Signal    string // "SIGKILL" etc. when killed by a signal
	Err       error  // why it could not start (Outcome Failed or Cancelled, ExitCode -1); nil otherwise
	Duration  time.Duration
	UserCPU   time.Duration
	SystemCPU time.Duration
	MaxRSS    uint64 // bytes
	Bytes     uint64 // total output bytes delivered to Output
}

// Process is a job's main process as Run started it.
type Process struct {
	PID int
	// StartTick and StartTickMax bracket its start time in clock ticks
	// since boot, as /proc/PID/stat gives it (starttime): with the PID
	// they name the process across PID reuse. They come from the clock
	// (startBracket: read once after the start, the beginning put back
	// by the start's duration), which costs no file read; the kernel
	// takes the start time in between. 0 if unknown.
	StartTick, StartTickMax uint64
	// StartedAt is the time taken just before the start, the Result's
	// StartedAt: the job's start time. (A time taken once the start has
	// returned may be late by however long the agent waited for a CPU,
	// and a `sleep 1` would then seem to run for less than a second.)
	StartedAt time.Time
}

// Is reports whether the process running as PID now, which started at
// start (ticks since boot, /proc/PID/stat), is p.
func (p Process) Is(start uint64) bool {
	return p.StartTick != 0 && start >= p.StartTick && start <= max(p.StartTick, p.StartTickMax)
}

// Run runs spec.Command as spec.Shell -c Command in a process group of its
// own (a session of its own with spec.TTY), with stdin from /dev/null, and
// returns when it has ended and its output has been delivered. started, if
// not nil, is called with the process right after a successful start,
// before any call to out. out may be nil only when spec.Capture is false.
//
// Ending:
//   - Cancelling ctx, or reaching spec.Timeout, sends SIGTERM to the whole
//     process group and SIGKILL to it spec.KillGrace later if the main process
//     is still running. The Outcome is then Cancelled or Timeout whatever the
//     exit status says.
//   - Whenever the main process exits — on its own or on a signal — whatever
//     it left running in its process group (background jobs, daemons that did
//     not call setsid) is killed at once with SIGKILL, before the main process
//     is reaped so that the group id cannot have been reused. A job therefore
//     never leaks processes that stay in its group, and its pipes reach EOF.
//   - A process that left the group (setsid, setpgid) is not killed. If it
//     still holds stdout or stderr open, Run waits at most 2s after the group
//     was killed for EOF, then reads without blocking what is left in the pipe
//     buffers (up to 4 MiB per stream), closes its ends of the pipes and
//     returns; that process's later writes fail with EPIPE.
//
// If ctx is already done Run starts nothing and reports Cancelled with
// ExitCode -1. A start failure (missing Dir or shell, ...) is reported as
// Failed with ExitCode -1 and Err set; Run never panics on it.
//
// Duration runs from the start to the exit of the main process. The CPU times
// and MaxRSS are those of the main process and the descendants it waited for
// (getrusage semantics; ru_maxrss is KiB on Linux and converted to bytes).
//
// Per job Run costs the spawn and little else: the process is started
// with syscall.StartProcess (the fork and exec os/exec does, without its
// bookkeeping), its exit is waited for in the runtime's poller through a
// pidfd (Linux 5.3; older kernels: a thread blocked in waitid) by the
// one goroutine that supervises the job (its timeout, cancellation and
// kill grace are timers, not goroutines), and one pipe is read on the
// caller's goroutine.
func Run(ctx context.Context, spec Spec, started func(Process), out Output) Result {
	res := Result{ExitCode: -1, StartedAt: time.Now()}
	fail := func(o Outcome, err error) Result {
		res.Outcome = o
		res.Err = err
		return res
	}
	if err := ctx.Err(); err != nil {
		return fail(OutcomeCancelled, fmt.Errorf("agent: job not started: %w", err))
	}
	shell := spec.Shell
	if shell == "" {
		shell = defaultShell
	}
	grace := spec.KillGrace
	if grace <= 0 {
		grace = defaultKillGrace
	}
	startErr := func(err error) Result {
		return fail(OutcomeFailed, fmt.Errorf("agent: start %s in %s: %w (check the agent's shell and the job's dir)", shell, dirName(spec.Dir), err))
	}
	path := shell
	if !strings.Contains(shell, "/") { // a bare name is looked up in PATH, as os/exec does
		p, err := exec.LookPath(shell)
		if err != nil {
			return startErr(err)
		}
		path = p
	}
	env, err := execEnv(spec.Env)
	if err != nil {
		return fail(OutcomeFailed, fmt.Errorf("agent: %w", err))
	}
	sys := &syscall.SysProcAttr{Setpgid: true, Credential: spec.Credential}
	// Stdin is /dev/null; so are stdout and stderr when not capturing.
	// The agent keeps /dev/null open rather than opening it per job.
	dn, err := devNull()
	if err != nil {
		return fail(OutcomeFailed, fmt.Errorf("agent: %w", err))
	}
	stdin, stdout, stderr := dn.r.Fd(), dn.w.Fd(), dn.w.Fd()

	// readEnds are read by the agent, stream 1 first; the child gets
	// writeEnds, plain descriptors the agent only closes (no *os.File:
	// wrapping one costs an fcntl and a cleanup per job), or the
	// terminal's slave side.
	var readEnds []*os.File
	var writeEnds []int
	var slave *os.File
	closeAll := func(fs ...*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	closeWrite := func() {
		for _, fd := range writeEnds {
			unix.Close(fd)
		}
		if slave != nil {
			slave.Close()
		}
	}
	switch {
	case !spec.Capture:
	case spec.TTY:
		master, s, err := openTTY()
		if err != nil {
			return fail(OutcomeFailed, fmt.Errorf("agent: pseudo-terminal: %w (run the job without -tty, or check /dev/ptmx and /dev/pts on the worker)", err))
		}
		if c := spec.Credential; c != nil {
			// The terminal is the job user's, as login and sshd make it,
			// so the job can open /dev/tty too. Best effort: the job has
			// its descriptors either way.
			_ = s.Chown(int(c.Uid), int(c.Gid))
		}
		slave = s
		stdout, stderr = s.Fd(), s.Fd()
		// A session of its own, with the terminal (the child's fd 1) as
		// its controlling terminal; the session leader also leads a new
		// process group, whose ID is its PID, as with Setpgid.
		sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 1, Credential: spec.Credential}
		readEnds = []*os.File{master}
	case spec.Split:
		outR, outW, err := outputPipe()
		if err != nil {
			return fail(OutcomeFailed, fmt.Errorf("agent: stdout pipe: %w", err))
		}
		errR, errW, err := outputPipe()
		if err != nil {
			outR.Close()
			unix.Close(outW)
			return fail(OutcomeFailed, fmt.Errorf("agent: stderr pipe: %w", err))
		}
		stdout, stderr = uintptr(outW), uintptr(errW)
		readEnds, writeEnds = []*os.File{outR, errR}, []int{outW, errW}
	default:
		// One pipe for both: the kernel keeps the job's writes in order.
		r, w, err := outputPipe()
		if err != nil {
			return fail(OutcomeFailed, fmt.Errorf("agent: output pipe: %w", err))
		}
		stdout, stderr = uintptr(w), uintptr(w)
		readEnds, writeEnds = []*os.File{r}, []int{w}
	}
	defer closeAll(readEnds...)

	pidfd := -1
	if pidfdPoll() {
		sys.PidFD = &pidfd
	}
	attr := &syscall.ProcAttr{Dir: spec.Dir, Env: env, Files: []uintptr{stdin, stdout, stderr}, Sys: sys}
	res.StartedAt = time.Now()
	pid, _, err := syscall.StartProcess(path, []string{shell, "-c", spec.Command}, attr)
	before, after := startBracket(res.StartedAt)
	runtime.KeepAlive(dn)
	// The child holds its own copies; ours must go for EOF to come (EIO
	// on a terminal's master: see readPipe).
	closeWrite()
	if err != nil {
		if derr := checkDir(spec.Dir); derr != nil {
			// A missing directory otherwise surfaces as the confusing
			// "fork/exec /bin/sh: no such file or directory".
			return fail(OutcomeFailed, derr)
		}
		return startErr(&os.PathError{Op: "fork/exec", Path: path, Err: err})
	}
	res.PID = pid
	proc := Process{PID: pid, StartTick: before, StartTickMax: after, StartedAt: res.StartedAt}
	if before == 0 || after < before {
		proc.StartTick, proc.StartTickMax = startTick(pid), 0
	}

	readersDone := make(chan struct{})
	// The supervisor waits for the exit, kills and reaps independently
	// of out, which may block.
	supDone := make(chan supervised, 1)
	go func() {
		supDone <- supervise(ctx, pid, pidfd, spec.Timeout, grace, readEnds, readersDone)
	}()

	if started != nil {
		started(proc)
	}
	deliver := func(c chunk) {
		out(c.stream, (*c.buf)[:c.n])
		res.Bytes += uint64(c.n)
		putChunk(c.buf)
	}
	switch len(readEnds) {
	case 0:
	case 1: // read here: no goroutine, no channel
		readPipe(readEnds[0], streamStdout, deliver)
	default: // a reader each; out is called from this goroutine only
		chunks := make(chan chunk, 4)
		var readers sync.WaitGroup
		for i, f := range readEnds {
			readers.Go(func() {
				readPipe(f, uint8(i)+streamStdout, func(c chunk) { chunks <- c })
			})
		}
		go func() {
			readers.Wait()
			close(chunks)
		}()
		for c := range chunks {
			deliver(c)
		}
	}
	close(readersDone)
	sup := <-supDone

	res.Duration = sup.exitedAt.Sub(res.StartedAt)
	res.Outcome = sup.reason
	if ws := sup.status; ws.Signaled() {
		res.ExitCode = 128 + int(ws.Signal())
		res.Signal = unix.SignalName(ws.Signal())
	} else {
		res.ExitCode = ws.ExitStatus()
	}
	if sup.err != nil {
		res.ExitCode = -1
		res.Err = fmt.Errorf("agent: waiting for the job's process: %w", sup.err)
	}
	ru := &sup.rusage
	res.UserCPU = time.Duration(ru.Utime.Nano())
	res.SystemCPU = time.Duration(ru.Stime.Nano())
	res.MaxRSS = uint64(ru.Maxrss) * 1024
	if res.Outcome == 0 {
		if res.ExitCode == 0 && sup.err == nil {
			res.Outcome = OutcomeCompleted
		} else {
			res.Outcome = OutcomeFailed
		}
	}
	return res
}

// checkDir explains why dir cannot be a job's directory, or returns nil
// (also for "", the agent's own).
func checkDir(dir string) error {
	if dir == "" {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("agent: job directory: %w (create it on the worker or fix the job's dir)", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("agent: job directory %s is not a directory (fix the job's dir)", dir)
	}
	return nil
}

// execEnv returns env as a process gets it: for a name set more than
// once, only the last value, where the first was (a later setting
// overrides an earlier one, as with os/exec); an entry holding a NUL
// byte is refused. nil is the empty environment.
func execEnv(env []string) ([]string, error) {
	for _, kv := range env {
		if strings.IndexByte(kv, 0) >= 0 {
			name, _, _ := strings.Cut(kv, "=")
			return nil, fmt.Errorf("environment variable %q holds a NUL byte", name)
		}
	}
	if len(env) < 2 {
		return env, nil
	}
	at := make(map[string]int, len(env)) // name → index in out
	var out []string
	for i, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if j, ok := at[name]; ok {
			if out == nil {
				out = append(make([]string, 0, len(env)), env[:i]...)
			}
			out[j] = kv
			continue
		}
		if out != nil {
			at[name] = len(out)
			out = append(out, kv)
		} else {
			at[name] = i
		}
	}
	if out == nil {
		return env, nil
	}
	return out, nil
}

// startBracket returns the bracket, in clock ticks since boot (USER_HZ,
// CLOCK_BOOTTIME: the clock and unit of a process's start time in
// /proc/PID/stat, which the kernel takes while it creates the process),
// of the start of a process whose start began at began (a time.Now
// with its monotonic reading) and has just returned; 0, 0 if the clock
// cannot be read. It reads the boot clock once, as the bracket's end,
// and puts the beginning as long before it as the monotonic clock says
// the start took, measured to after that read: the two clocks run
// together (they part only while the machine is suspended), so the
// beginning is no later than the boot clock was at began. One clock
// read (a system call: CLOCK_BOOTTIME has no vDSO path here) instead of
// one on each side.
func startBracket(began time.Time) (before, after uint64) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, 0
	}
	end := ts.Nano()
	took := time.Since(began) // after the read: the beginning errs early, never late
	tick := int64(time.Second / clockTick)
	return uint64(max(end-int64(took), 0) / tick), uint64(end / tick)
}

// pidfdPoll reports whether the kernel gives pidfds that poll readable
// when the process exits (Linux 5.3, which also added pidfd_open).
var pidfdPoll = sync.OnceValue(func() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
})

// waitExit returns once process pid has exited, still unreaped (a
// zombie: its PID and process group ID stay taken). With a pidfd it
// waits in the runtime's poller and closes pidfd; without (-1), in a
// thread blocked in waitid.
func waitExit(pid, pidfd int) {
	if pidfd >= 0 {
		// O_NONBLOCK makes os.NewFile put it in the poller.
		if _, err := unix.FcntlInt(uintptr(pidfd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
			unix.Close(pidfd)
			pidfd = -1
		}
	}
	if pidfd < 0 {
		waitExited(pid)
		return
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		waitExited(pid)
		return
	}
	// Checked before the first wait too: the poller only reports the
	// pidfd becoming readable after the wait began.
	if err := rc.Read(func(uintptr) bool { return hasExited(pid) }); err != nil {
		waitExited(pid)
	}
}

// hasExited reports whether pid has exited, without waiting or reaping;
// on an error it reports true (waiting would fail too).
func hasExited(pid int) bool {
	for {
		var info unix.Siginfo // zeroed: stays so while pid runs
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		return err != nil || info.Signo != 0
	}
}

// outputPipe returns a pipe for a job's stdout or stderr. Only the read
// end is non-blocking and in the runtime's poller; the write end, which
// the child gets and Run closes right after the start, stays a plain
// blocking descriptor, returned as such (os.Pipe would register it with
// the poller, and os/exec would then switch it back to blocking; even
// os.NewFile would cost an fcntl to learn its flags).
func outputPipe() (r *os.File, w int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, os.NewSyscallError("pipe2", err)
	}
	// The read end is O_RDONLY: F_SETFL leaves that and sets only
	// O_NONBLOCK, with no F_GETFL first.
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, -1, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(p[0]), "|0"), p[1], nil
}

// devNullFiles is /dev/null, opened once for reading and once for writing.
type devNullFiles struct{ r, w *os.File }

var devNull = sync.OnceValues(func() (devNullFiles, error) {
	r, err := os.Open(os.DevNull)
	if err != nil {
		return devNullFiles{}, err
	}
	w, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		r.Close()
		return devNullFiles{}, err
	}
	return devNullFiles{r: r, w: w}, nil
})

func dirName(dir string) string {
	if dir == "" {
		return "the agent's directory"
	}
	return dir
}

// supervised is what supervise reports.
type supervised struct {
	reason   Outcome // OutcomeTimeout or OutcomeCancelled if Run killed the job, else 0
	exitedAt time.Time
	status   unix.WaitStatus
	rusage   unix.Rusage
	err      error // of wait4, when it failed: status and rusage are unknown
}

// supervise waits for the main process pgid to exit (through pidfd,
// as waitExit), enforces the timeout and cancellation meanwhile, kills
// the rest of the process group when the main process exits, reaps it,
// and bounds the wait for the pipes to reach EOF. It is the one
// goroutine a job has besides Run's: the timeout, the cancellation and
// the kill grace are callbacks (time.AfterFunc, context.AfterFunc) that
// cost no goroutine unless they fire.
func supervise(ctx context.Context, pgid, pidfd int, timeout, grace time.Duration, readEnds []*os.File, readersDone <-chan struct{}) supervised {
	var (
		mu         sync.Mutex
		reason     Outcome // guarded by mu, as the two below
		reaped     bool    // pgid may name another group from now on: no more signals
		graceTimer *time.Timer
	)
	terminate := func(r Outcome) {
		mu.Lock()
		defer mu.Unlock()
		if reason != 0 || reaped {
			return
		}
		reason = r
		signalGroup(pgid, syscall.SIGTERM)
		graceTimer = time.AfterFunc(grace, func() {
			mu.Lock()
			defer mu.Unlock()
			if !reaped {
				signalGroup(pgid, syscall.SIGKILL)
			}
		})
	}
	stopCancel := context.AfterFunc(ctx, func() { terminate(OutcomeCancelled) })
	var timeoutTimer *time.Timer
	if timeout > 0 {
		timeoutTimer = time.AfterFunc(timeout, func() { terminate(OutcomeTimeout) })
	}

	waitExit(pgid, pidfd)

	var s supervised
	s.exitedAt = time.Now()
	stopCancel()
	if timeoutTimer != nil {
		timeoutTimer.Stop()
	}
	// The main process is a zombie until reaped, so pgid still names its
	// group; once it is reaped, no callback may signal it.
	mu.Lock()
	signalGroup(pgid, syscall.SIGKILL)
	for {
		_, err := unix.Wait4(pgid, &s.status, 0, &s.rusage)
		if err != unix.EINTR {
			s.err = err
			break
		}
	}
	reaped = true
	s.reason = reason
	if graceTimer != nil {
		graceTimer.Stop()
	}
	mu.Unlock()

	if len(readEnds) > 0 {
		t := time.NewTimer(pipeDrainTimeout)
		defer t.Stop()
		select {
		case <-readersDone:
		case <-t.C:
			now := time.Now()
			for _, f := range readEnds {
				f.SetReadDeadline(now)
			}
		}
	}
	return s
}

// waitExited blocks until pid has exited, without reaping it.
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return // on any other error cmd.Wait reports what happened
		}
	}
}

// signalGroup sends sig to process group pgid; a group that is already gone
// is not an error.
func signalGroup(pgid int, sig syscall.Signal) {
	syscall.Kill(-pgid, sig)
}

type chunk struct {
	stream uint8
	buf    *[]byte
	n      int
}

var (
	chunkPool = sync.Pool{New: func() any {
		b := make([]byte, chunkSize)
		return &b
	}}
	smallChunkPool = sync.Pool{New: func() any {
		b := make([]byte, smallChunkSize)
		return &b
	}}
)

// putChunk returns buf to the pool it came from.
func putChunk(buf *[]byte) {
	if cap(*buf) >= chunkSize {
		chunkPool.Put(buf)
	} else {
		smallChunkPool.Put(buf)
	}
}

// readPipe hands what it reads from f to emit until EOF. When supervise
// sets a read deadline it reads what is left in the pipe without blocking.
//
// f may be a pseudo-terminal's master (Spec.TTY): Linux answers a read
// there with EIO once every descriptor of the slave side is closed — the
// terminal's EOF — and only after what the slave wrote has been read, so
// EIO ends the stream like EOF, with nothing lost.
func readPipe(f *os.File, stream uint8, emit func(chunk)) {
	pool := &smallChunkPool
	for {
		buf := pool.Get().(*[]byte)
		n, err := f.Read(*buf)
		if n >= pipeDefaultSize && pool != &chunkPool {
			// The pipe was full: a heavy writer.
			_ = growPipe(f)
			pool = &chunkPool
		}
		if n > 0 {
			emit(chunk{stream: stream, buf: buf, n: n})
		} else {
			putChunk(buf)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			drainPipe(f, stream, emit)
		}
		return
	}
}

// growPipe raises f's pipe capacity to pipeGrowSize, if the system lets
// it (an unprivileged user past fs.pipe-user-pages-soft cannot); the
// pipe works the same either way.
func growPipe(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		_, ferr = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeGrowSize)
	}); err != nil {
		return err
	}
	return ferr
}

// drainPipe reads what f's pipe holds right now, up to finalDrainMax bytes,
// without waiting for more.
func drainPipe(f *os.File, stream uint8, emit func(chunk)) {
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for total := 0; total < finalDrainMax; {
		buf := chunkPool.Get().(*[]byte)
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, rerr = syscall.Read(int(fd), *buf)
				if rerr != syscall.EINTR {
					return true // never wait for the pipe to become readable
				}
			}
		})
		if err != nil || rerr != nil || n <= 0 {
			putChunk(buf)
			return // EAGAIN (empty), EOF or an error
		}
		total += n
		emit(chunk{stream: stream, buf: buf, n: n})
	}
}
