package runtimes

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nsCommand runs name inside the network namespace at netns. nsenter
// (not `ip netns exec`, which remounts /sys and breaks runc) enters only
// the network namespace and then execs name, so the PID is name's.
func nsCommand(ctx context.Context, netns string, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--", name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// daemon is a long-running process this package started.
type daemon struct {
	name    string // for messages
	pidFile string
	// marker is an argument only this instance has (its config path or
	// socket), checked before the PID is signalled.
	marker string
}

// start launches the daemon in its own session, output to logPath, and
// records its PID.
func (d daemon) start(netns string, env []string, logPath string, bin string, args ...string) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	// Not bound to any context: the daemon outlives the call that starts it.
	cmd := nsCommand(context.Background(), netns, env, bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(d.pidFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", d.name, err)
	}
	pid := cmd.Process.Pid
	// Reap it whenever it ends, if this process lives that long.
	go func() { _ = cmd.Wait() }()
	if err := os.WriteFile(d.pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return 0, err
	}
	return pid, nil
}

// running returns the recorded PID if that process is alive and is this
// daemon (its command line holds the marker).
func (d daemon) running() (int, bool) {
	b, err := os.ReadFile(d.pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, isDaemon(pid, d.marker)
}

// isProcess reports whether pid is alive (not a zombie) and its command
// line has an argument equal to marker (or ending in "="+marker).
func isProcess(pid int, marker string) bool { return matches(pid, marker, false) }

// isDaemon is isProcess for a PID this package started: a command line
// that is empty because the process is in the middle of execve (nsenter
// becoming the daemon) is looked at again rather than taken as not ours.
// (Kernel threads' command lines are always empty: never wait for those.)
func isDaemon(pid int, marker string) bool { return matches(pid, marker, true) }

func matches(pid int, marker string, waitExec bool) bool {
	for i := 0; ; i++ {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || zombie(st) {
			return false
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return false
		}
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

func zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// stop ends the daemon: SIGTERM, SIGKILL after grace. A daemon that is not
// running is not an error.
func (d daemon) stop(grace time.Duration) error {
	pid, ok := d.running()
	if !ok {
		_ = os.Remove(d.pidFile)
		return nil
	}
	if err := stopPID(pid, d.marker, grace); err != nil {
		return fmt.Errorf("stop %s: %w", d.name, err)
	}
	return os.Remove(d.pidFile)
}

// stopPID sends SIGTERM to pid and waits for it to go, then SIGKILL.
func stopPID(pid int, marker string, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil // gone
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !isProcess(pid, marker) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100; i++ {
		if !isProcess(pid, marker) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("pid %d did not exit after SIGKILL", pid)
}

// processesWith lists the live processes with an argument equal to marker
// (containerd's shims carry the socket of the containerd that started them).
func processesWith(marker string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if isProcess(pid, marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitSocket waits until a unix socket accepts connections.
func waitSocket(ctx context.Context, path string, alive func() bool) error {
	for {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil
		}
		if !alive() {
			return errors.New("the daemon exited")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for socket %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unmountUnder detaches every mount at or below dir, deepest first: the
// rootfs, shm, netns and data-root mounts a runtime leaves when it is
// killed.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CgroupRoot is where the cgroup hierarchies are mounted.
const CgroupRoot = "/sys/fs/cgroup"

// removeCgroup removes a cgroup parent and its (empty) children in every
// hierarchy. A missing one is fine.
func removeCgroup(parent string) error {
	if parent == "" || parent == "/" {
		return nil
	}
	hier, err := os.ReadDir(CgroupRoot)
	if err != nil {
		return nil
	}
	var errs []error
	roots := []string{CgroupRoot}
	for _, h := range hier {
		if h.IsDir() {
			roots = append(roots, filepath.Join(CgroupRoot, h.Name()))
		}
	}
	for _, r := range roots {
		if err := rmdirTree(filepath.Join(r, parent)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func rmdirTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := rmdirTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	var lastErr error
	for i := 0; i < 250; i++ { // a cgroup empties a moment after its last task (conmon, a shim) exits
		if lastErr = unix.Rmdir(dir); lastErr == nil || errors.Is(lastErr, unix.ENOENT) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, lastErr)
}

// overlaySupported tries an overlay mount under dir.
func overlaySupported(dir string) bool {
	tmp, err := os.MkdirTemp(dir, ".overlay-check-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(tmp)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			return false
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"))
	if err := unix.Mount("overlay", filepath.Join(tmp, "merged"), "overlay", 0, opts); err != nil {
		return false
	}
	_ = unix.Unmount(filepath.Join(tmp, "merged"), unix.MNT_DETACH)
	return true
}

// runQuiet runs cmd and returns its combined output in the error.
func runQuiet(cmd *exec.Cmd) ([]byte, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}
