package runtimes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/lab/cri"
	"github.com/vnetcni/vnetcni/lab/daemon"
)

// Containerd is a private containerd running in a node's namespace.
type Containerd struct {
	Node        Node
	Dir         string // resolved; holds config.toml, the socket, root, state
	Snapshotter string
	CRI         bool
	d           daemon.Daemon
}

// ContainerdOptions configure StartContainerd.
type ContainerdOptions struct {
	// CRI enables the CRI plugin (a Kubernetes node's containerd); off, it
	// is a containerd for dockerd.
	CRI bool
	// Binary is containerd's path; "containerd" from PATH when empty.
	Binary string
}

// StartContainerd starts a containerd for the node with everything under
// dir, or returns the one already running there. With CRI it waits until
// the CRI plugin reports the runtime and network ready.
func StartContainerd(ctx context.Context, n Node, dir string, o ContainerdOptions) (*Containerd, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	dir, err := resolveDir(dir)
	if err != nil {
		return nil, err
	}
	c := ContainerdAt(n, dir, o.CRI)
	c.Snapshotter = Snapshotter(dir)
	cfg := c.d.Marker
	if _, ok := c.d.Running(); !ok {
		if err := os.WriteFile(cfg, []byte(ContainerdConfig(dir, n, c.Snapshotter, o.CRI)), 0o644); err != nil {
			return nil, err
		}
		bin := o.Binary
		if bin == "" {
			bin = "containerd"
		}
		if _, err := c.d.Start(n.NetNS, n.Env, filepath.Join(dir, "containerd.log"), bin, "--config", cfg); err != nil {
			return nil, err
		}
	}
	alive := func() bool { _, ok := c.d.Running(); return ok }
	if err := waitSocket(ctx, c.Socket(), alive); err != nil {
		return nil, c.failed(err)
	}
	if o.CRI {
		cl, err := cri.Dial(c.Socket())
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		if err := cl.WaitReady(ctx); err != nil {
			return nil, c.failed(err)
		}
	}
	return c, nil
}

// failed stops what was started and adds the end of containerd's log to err.
func (c *Containerd) failed(err error) error {
	_ = c.Stop(context.Background())
	return fmt.Errorf("containerd for %s: %w\n%s", c.Node.Name, err, tail(filepath.Join(c.Dir, "containerd.log"), 15))
}

// Socket is containerd's gRPC (and CRI) socket.
func (c *Containerd) Socket() string { return filepath.Join(c.Dir, "containerd.sock") }

// PID is containerd's process ID, 0 if it is not running.
func (c *Containerd) PID() int { pid, _ := c.d.Running(); return pid }

// Namespace is the containerd namespace the CRI plugin uses.
const Namespace = "k8s.io"

// Import loads an image tarball (OCI layout or docker-archive) into the
// CRI's namespace and unpacks it for the snapshotter.
// Equivalent to: ctr -a SOCK -n k8s.io images import --snapshotter S TAR.
func (c *Containerd) Import(ctx context.Context, tarball string) error {
	_, err := runQuiet(exec.CommandContext(ctx, "ctr", "--address", c.Socket(), "--namespace", Namespace,
		"images", "import", "--snapshotter", c.Snapshotter, tarball))
	return err
}

// EnsurePauseImage imports the sandbox image built from the pause binary
// unless the runtime has it.
func (c *Containerd) EnsurePauseImage(ctx context.Context, pauseBinary string) error {
	tarball := filepath.Join(c.Dir, "pause-image.tar")
	return c.ensurePause(ctx, func() (string, error) { return tarball, WritePauseImage(pauseBinary, tarball) })
}

// EnsurePauseImageTar imports a pause image tarball unless the runtime has
// the image.
func (c *Containerd) EnsurePauseImageTar(ctx context.Context, tarball string) error {
	return c.ensurePause(ctx, func() (string, error) { return tarball, nil })
}

func (c *Containerd) ensurePause(ctx context.Context, tarball func() (string, error)) error {
	cl, err := cri.Dial(c.Socket())
	if err != nil {
		return err
	}
	defer cl.Close()
	if ok, err := cl.HasImage(ctx, PauseImage); err != nil || ok {
		return err
	}
	tar, err := tarball()
	if err != nil {
		return err
	}
	if err := c.Import(ctx, tar); err != nil {
		return err
	}
	// The CRI plugin learns of the image from an event: wait for it.
	for {
		if ok, err := cl.HasImage(ctx, PauseImage); err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("imported %s but the CRI plugin does not list it: %w", PauseImage, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop removes every pod sandbox (so the CNI DELs run while the plugins
// can still reach the node), ends containerd and any shim it left, and
// removes its mounts and cgroup parent. The directory stays, for its logs.
func (c *Containerd) Stop(ctx context.Context) error {
	var errs []error
	if _, ok := c.d.Running(); ok && c.CRI {
		errs = append(errs, c.removeSandboxes(ctx))
	}
	errs = append(errs, c.d.Stop(5*time.Second))
	for _, pid := range daemon.With(c.Socket()) {
		errs = append(errs, daemon.StopPID(pid, c.Socket(), 2*time.Second))
	}
	errs = append(errs, unmountUnder(c.Dir), removeCgroup(c.Node.CgroupParent("containerd")))
	return errors.Join(errs...)
}

func (c *Containerd) removeSandboxes(ctx context.Context) error {
	cl, err := cri.Dial(c.Socket())
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ids, err := cl.ListPodSandboxes(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, cl.StopPodSandbox(ctx, id), cl.RemovePodSandbox(ctx, id))
	}
	return errors.Join(errs...)
}

// tail returns the last n lines of a file, indented, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// ContainerdAt describes the containerd of a node under dir without
// starting it, to stop one started earlier (by another process).
func ContainerdAt(n Node, dir string, cri bool) *Containerd {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	cfg := filepath.Join(dir, "config.toml")
	return &Containerd{Node: n, Dir: dir, CRI: cri,
		d: daemon.Daemon{Name: "containerd for " + n.Name, PIDFile: filepath.Join(dir, "containerd.pid"), Marker: cfg}}
}
