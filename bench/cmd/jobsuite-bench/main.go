// Command jobsuite-bench runs the jobsuite benchmarks (package bench)
// and prints their table as Markdown: `make bench` runs it.
//
//	jobsuite-bench [-full] [-groups submit,capacity,...,cluster,cluster-output,cluster-log] [-dir DIR -keep]
//	               [-log-level info] [-cpuprofile DIR] [-o FILE] [-jobsuite BIN]
//
// JOBSUITE_BENCH_FULL=1 is the same as -full: the large sizes
// (1M-job burn-down and deep queue, 10k idle agents).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"jobsuite/bench"
)

func main() {
	if code, ok := bench.Child(); ok {
		os.Exit(code)
	}
	os.Exit(run())
}

func run() int {
	full := flag.Bool("full", os.Getenv("JOBSUITE_BENCH_FULL") == "1", "the issue's large sizes: 1M jobs, 10k agents (also JOBSUITE_BENCH_FULL=1)")
	smoke := flag.Bool("smoke", false, "tiny sizes: check the harness, not the speed")
	groups := flag.String("groups", "", "comma-separated groups to run ("+strings.Join(bench.Groups, ",")+", and "+strings.Join(bench.OptInGroups, ",")+" only when named); default all but "+strings.Join(bench.OptInGroups, ","))
	dir := flag.String("dir", "", "scratch directory for data, PKI and logs (on the disk to measure); default a temporary directory")
	keep := flag.Bool("keep", false, "keep the scratch directory (logs, data) afterwards")
	level := flag.String("log-level", "info", "log level of the controller and agent processes (their logs go to files in -dir)")
	prof := flag.String("cpuprofile", "", "write a CPU profile of each controller process to this directory")
	out := flag.String("o", "", "also write the Markdown report to this file")
	realRate := flag.Int("real-rate", 0, "offer row 4d this many jobs/s instead of half of row 3's rate (at most 500): the same rate for both runs of a before/after pair")
	jobsuite := flag.String("jobsuite", "", "the jobsuite binary the cluster group's failover rows run; default: go build it into -dir")
	flag.Parse()

	cfg := bench.Config{Dir: *dir, Keep: *keep, LogLevel: *level, ProfileDir: *prof, Progress: os.Stderr, Jobsuite: *jobsuite,
		Sizes: bench.DefaultSizes(*full)}
	if *smoke {
		cfg.Sizes = bench.SmokeSizes()
	}
	cfg.Sizes.RealRate = *realRate
	if *groups != "" {
		cfg.Groups = strings.Split(*groups, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "jobsuite-bench: %v\n", err)
		return 1
	}
	var w io.Writer = os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "jobsuite-bench: %v\n", err)
			return 1
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	rep.Markdown(w)
	for _, r := range rep.Rows {
		if r.Err != nil {
			return 1
		}
	}
	return 0
}
