// Package netns creates, opens and removes named network namespaces the way
// iproute2 does (a bind mount under /run/netns), and runs code inside one.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named namespaces are bind-mounted, as for `ip netns`.
const Dir = "/run/netns"

// Path is the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// Exists reports whether a named namespace is mounted.
func Exists(name string) bool {
	return isNetNS(Path(name))
}

func isNetNS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC || st.Type == unix.PROC_SUPER_MAGIC
}

// Create makes a named namespace, doing nothing if it already exists.
// Equivalent to: ip netns add NAME.
func Create(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("create netns %q: invalid name", name)
	}
	path := Path(name)
	if Exists(name) {
		return nil
	}
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// The thread enters the new namespace; it is only returned to the
		// scheduler once it is back in the original one.
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		mountErr := unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with the goroutine.
			errc <- errors.Join(mountErr, fmt.Errorf("return to original netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- mountErr
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	return nil
}

// Delete removes a named namespace; a missing one is not an error.
// Equivalent to: ip netns delete NAME.
func Delete(name string) error {
	path := Path(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// List returns the names of the mounted namespaces whose name starts with prefix.
func List(prefix string) ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns: %w", err)
	}
	var out []string
	for _, e := range ents {
		if len(e.Name()) >= len(prefix) && e.Name()[:len(prefix)] == prefix {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Do runs fn with the calling goroutine's thread inside the named namespace.
func Do(name string, fn func() error) error {
	return DoPath(Path(name), fn)
}

// DoPath runs fn inside the namespace at path.
func DoPath(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// Handle is a network namespace held open, with a netlink handle whose
// sockets live in it. Fd serves what needs the namespace itself (nftables
// connections, moving a link into it).
type Handle struct {
	Fd      vnetns.NsHandle
	Netlink *netlink.Handle
}

// Open opens the network namespace at path. Equivalent to: ip -n NAME ...
func Open(path string) (*Handle, error) {
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("open netlink in netns %s: %w", path, err)
	}
	return &Handle{Fd: ns, Netlink: h}, nil
}

// Close closes the netlink handle and the namespace.
func (h *Handle) Close() {
	h.Netlink.Close()
	h.Fd.Close()
}

// Netlink returns a netlink handle whose sockets live in the network
// namespace at path; the namespace file is not needed after it is made.
func Netlink(path string) (*netlink.Handle, error) {
	h, err := Open(path)
	if err != nil {
		return nil, err
	}
	h.Fd.Close()
	return h.Netlink, nil
}
