package agent

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procStat is what the agent reads from /proc/PID/stat.
type procStat struct {
	pgrp      int
	utime     uint64 // clock ticks
	stime     uint64 // clock ticks
	startTick uint64 // clock ticks since boot
	rssPages  int64
}

// clockTick is USER_HZ, which Linux fixes at 100 for /proc.
const clockTick = 100

func readProcStat(pid int) (procStat, error) {
	// Read with bare system calls: os.ReadFile adds an fstat, a poller
	// registration and a second read, and live status reads this file
	// for every process on the machine (groupUsage).
	var b [2048]byte // the file is a few hundred bytes
	n, err := readSmallFile("/proc/"+strconv.Itoa(pid)+"/stat", b[:])
	if err != nil {
		return procStat{}, err
	}
	s := string(b[:n])
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start after the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 22 {
		return procStat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var st procStat
	st.pgrp, _ = strconv.Atoi(f[2])
	st.utime, _ = strconv.ParseUint(f[11], 10, 64)
	st.stime, _ = strconv.ParseUint(f[12], 10, 64)
	st.startTick, _ = strconv.ParseUint(f[19], 10, 64)
	st.rssPages, _ = strconv.ParseInt(f[21], 10, 64)
	return st, nil
}

// readSmallFile reads the file at path into buf, up to len(buf) bytes.
func readSmallFile(path string, buf []byte) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	total := 0
	for total < len(buf) {
		n, err := unix.Read(fd, buf[total:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total, nil
}

type usage struct {
	user, system time.Duration
	rss          uint64
	procs        int
}

// groupUsage sums CPU time and resident memory over the processes of
// process group pgid (a job's whole tree, unless something left it).
func groupUsage(pgid int) usage {
	var u usage
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return u
	}
	page := uint64(os.Getpagesize())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.pgrp != pgid {
			continue
		}
		u.procs++
		u.user += time.Duration(st.utime) * time.Second / clockTick
		u.system += time.Duration(st.stime) * time.Second / clockTick
		if st.rssPages > 0 {
			u.rss += uint64(st.rssPages) * page
		}
	}
	return u
}

// killGroup kills process group pgid with SIGKILL.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}
