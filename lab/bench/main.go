package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EnvQuick set to 1 makes Main run the smoke configuration.
const EnvQuick = "BENCH_QUICK"

// Main is vnetbench: it parses flags, runs the benchmarks and writes the
// report, and returns the exit code. SIGINT and SIGTERM stop the run and
// remove the lab.
func Main(args []string) int {
	return mainWith(args, os.Stdout, os.Stderr)
}

func mainWith(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(filepath.Base(args[0]), flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", os.Getenv(EnvQuick) == "1", "smoke run of a few seconds (also $"+EnvQuick+"=1)")
	binDir := fs.String("bin", defaultBinDir(), "directory with azure-vnet, azure-vnet-ipam, bridge and host-local")
	out := fs.String("out", "", "directory for benchmarks.md and bench/ (default docs, or a new temporary directory with -quick)")
	work := fs.String("work", defaultWorkDir(), "scratch directory for plugin state, caches and logs (tmpfs, like /var/run)")
	pods := fs.Int("pods", 0, "pods per variant in the one-at-a-time benchmark (default 200, 10 with -quick)")
	burstList := fs.String("bursts", "", "comma-separated burst sizes (default 16,64,250; 16 with -quick)")
	burstRounds := fs.Int("burst-rounds", 0, "rounds per burst size (default 3)")
	dpRounds := fs.Int("datapath-rounds", -1, "datapath rounds; 0 skips the datapath (default 3)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg := DefaultConfig(*quick)
	if *pods > 0 {
		cfg.Pods = *pods
	}
	if *burstList != "" {
		cfg.Bursts = nil
		for _, f := range strings.Split(*burstList, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(stderr, "vnetbench: -bursts %q: want positive numbers\n", *burstList)
				return 2
			}
			cfg.Bursts = append(cfg.Bursts, n)
		}
	}
	if *burstRounds > 0 {
		cfg.BurstRounds = *burstRounds
	}
	if *dpRounds >= 0 {
		cfg.DatapathRounds = *dpRounds
	}
	if n := slices.Max(cfg.Bursts); n > cfg.Secondaries {
		cfg.Secondaries = n
	}
	cfg.BinDir = *binDir
	cfg.WorkDir = *work
	cfg.Command = command(args, *quick)
	cfg.Logf = func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s vnetbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}
	dir := *out
	if dir == "" && *quick {
		d, err := os.MkdirTemp("", "vnetbench-out-")
		if err != nil {
			fmt.Fprintln(stderr, "vnetbench:", err)
			return 1
		}
		dir = d
	} else if dir == "" {
		dir = "docs"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "vnetbench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "\n%s\n", Summary(res))
	if err := Write(res, dir); err != nil {
		fmt.Fprintln(stderr, "vnetbench: write report:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Wrote %s, %s and charts in %s.\n", filepath.Join(dir, ReportFile), filepath.Join(dir, ResultsFile), filepath.Join(dir, "bench"))
	return 0
}

// command is how the run was started, for the report: make's target when
// make ran it.
func command(args []string, quick bool) string {
	if os.Getenv("MAKELEVEL") != "" {
		if quick {
			return EnvQuick + "=1 make bench"
		}
		return "make bench"
	}
	return strings.Join(args, " ")
}

// defaultBinDir is the directory of the executable (bin/ after make).
func defaultBinDir() string {
	if exe, err := os.Executable(); err == nil {
		return filepath.Dir(exe)
	}
	return "bin"
}

// defaultWorkDir is /dev/shm when it is there: the plugins' state lives on
// tmpfs on a real node (/var/run).
func defaultWorkDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}
