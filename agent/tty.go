package agent

import (
	"fmt"
	"os"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// The pseudo-terminal a job runs on with Spec.TTY (jobsuite submit -tty, or
// the agent's -tty): a fixed size, echo and output processing off.
const (
	ttyCols = 80
	ttyRows = 24
	// ttyTerm is the TERM a job on a terminal gets unless its env sets one.
	ttyTerm = "xterm-256color"
)

// openTTY opens a pseudo-terminal for one job. slave becomes the job's
// stdout and stderr; the agent reads master, which is non-blocking and in
// the runtime's poller like the read end of an output pipe, so the read
// deadline that bounds the last drain (supervise) works on it too.
//
// The terminal is 80x24. Echo is off (stdin is /dev/null, so there is
// nothing to echo, but nothing the agent does can make a job's input show
// up in its log either), and so is output processing: without OPOST the
// line discipline does not turn "\n" into "\r\n", so the log holds the
// bytes the job wrote, as with a pipe.
func openTTY() (master, slave *os.File, err error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// pty.Open leaves the master in blocking mode (its ioctls go through
	// Fd). A duplicate made non-blocking is registered with the poller by
	// os.NewFile; O_NONBLOCK belongs to the open file, which only the
	// duplicate uses once m is closed.
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("dup: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("fcntl: %w", err)
	}
	master = os.NewFile(uintptr(fd), "ptmx")
	defer func() {
		if err != nil {
			master.Close()
		}
	}()

	if err := pty.Setsize(s, &pty.Winsize{Cols: ttyCols, Rows: ttyRows}); err != nil {
		return nil, nil, fmt.Errorf("window size: %w", err)
	}
	sfd := int(s.Fd()) // also leaves the slave blocking, as a job expects its stdout
	t, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err != nil {
		return nil, nil, fmt.Errorf("terminal attributes: %w", err)
	}
	t.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL | unix.ECHOCTL | unix.ECHOKE
	t.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(sfd, unix.TCSETS, t); err != nil {
		return nil, nil, fmt.Errorf("terminal attributes: %w", err)
	}
	return master, s, nil
}

// setEnv sets key to value in env (KEY=VALUE entries), replacing an entry
// for key if there is one.
func setEnv(env []string, key, value string) []string {
	for i, kv := range env {
		if len(kv) > len(key) && kv[len(key)] == '=' && kv[:len(key)] == key {
			env[i] = key + "=" + value
			return env
		}
	}
	return append(env, key+"="+value)
}
