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
	"time"

	"golang.org/x/sys/unix"
)

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

// Snapshotter is the containerd snapshotter for a root directory:
// overlayfs where the kernel mounts an overlay there, so a container shares
// its image's layers instead of copying the whole rootfs (the native
// snapshotter's way, which a suite of a few hundred pods of Debian-based
// images turns into gigabytes and minutes); native otherwise (an upper
// directory on overlayfs itself, or a kernel without it).
func Snapshotter(dir string) string {
	if overlaySupported(dir) {
		return "overlayfs"
	}
	return "native"
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
