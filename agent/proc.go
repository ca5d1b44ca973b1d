package agent

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
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
