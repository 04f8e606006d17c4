// Package daemon starts, finds and stops the long-running processes the lab
// and the runtime harnesses leave behind them: containerd, dockerd, the
// Kubernetes supervisors. A daemon is recorded by a PID file and recognised
// by a marker, an argument only that instance has, so a PID the kernel has
// given to another process is never signalled.
package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Daemon is a long-running process started in a network namespace.
type Daemon struct {
	Name    string // for messages
	PIDFile string
	// Marker is an argument only this instance has (its config path,
	// socket or name), checked before the PID is signalled.
	Marker string
}

// NSCommand runs name inside the network namespace at netns. nsenter (not
// `ip netns exec`, which remounts /sys and breaks runc) enters only the
// network namespace and then execs name, so the PID is name's.
func NSCommand(ctx context.Context, netns string, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--", name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// Start launches the daemon in the namespace at netns, in its own session,
// with output appended to logPath, and records its PID.
func (d Daemon) Start(netns string, env []string, logPath string, bin string, args ...string) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	// Not bound to any context: the daemon outlives the call that starts it.
	cmd := NSCommand(context.Background(), netns, env, bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(d.PIDFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", d.Name, err)
	}
	pid := cmd.Process.Pid
	// Reap it whenever it ends, if this process lives that long.
	go func() { _ = cmd.Wait() }()
	if err := os.WriteFile(d.PIDFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return 0, err
	}
	return pid, nil
}

// Running returns the recorded PID if that process is alive and is this
// daemon. A command line that is empty because the process is in the
// middle of execve (nsenter becoming the daemon) is looked at again rather
// than taken as not ours.
func (d Daemon) Running() (int, bool) {
	b, err := os.ReadFile(d.PIDFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, matches(pid, d.Marker, true)
}

// Stop ends the daemon: SIGTERM, SIGKILL after grace. A daemon that is not
// running is not an error.
func (d Daemon) Stop(grace time.Duration) error {
	pid, ok := d.Running()
	if !ok {
		_ = os.Remove(d.PIDFile)
		return nil
	}
	if err := StopPID(pid, d.Marker, grace); err != nil {
		return fmt.Errorf("stop %s: %w", d.Name, err)
	}
	return os.Remove(d.PIDFile)
}

// IsProcess reports whether pid is alive (not a zombie) and its command
// line has an argument equal to marker (or ending in "="+marker).
func IsProcess(pid int, marker string) bool { return matches(pid, marker, false) }

func matches(pid int, marker string, waitExec bool) bool {
	for i := 0; ; i++ {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || Zombie(st) {
			return false
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return false
		}
		// Kernel threads' command lines are always empty: the wait is
		// bounded.
		if len(cmdline) == 0 && waitExec && i < 100 {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		for _, a := range bytes.Split(cmdline, []byte{0}) {
			s := string(a)
			if s == marker || strings.HasSuffix(s, "="+marker) {
				return true
			}
		}
		return false
	}
}

// Zombie reports whether a /proc/PID/stat line is a zombie's: the state
// follows the last ')' (the command name may hold any character).
func Zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// StopPID sends SIGTERM to pid and waits for it to go, then SIGKILL. It
// signals nothing unless pid still carries marker.
func StopPID(pid int, marker string, grace time.Duration) error {
	if !IsProcess(pid, marker) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil // gone
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !IsProcess(pid, marker) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100; i++ {
		if !IsProcess(pid, marker) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("pid %d did not exit after SIGKILL", pid)
}

// With lists the live processes with an argument equal to marker
// (containerd's shims carry the socket of the containerd that started them).
func With(marker string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if IsProcess(pid, marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}
