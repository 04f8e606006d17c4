package runtimes

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vnetcni/vnetcni/lab/daemon"
)

// Podman runs Debian's podman (rootful, CNI backend) for a node: its own
// containers.conf, storage and temporary directories under Dir, the node's
// CNI directories, run inside the node's namespace. Podman has no daemon;
// every call is a process.
type Podman struct {
	Node    Node
	Dir     string
	Network string // the CNI network (conflist name) containers join
	Storage string // storage driver: overlay, or vfs where overlay fails
}

// NewPodman writes the configuration for a node's podman under dir.
func NewPodman(n Node, dir, network string) (*Podman, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	dir, err := resolveDir(dir)
	if err != nil {
		return nil, err
	}
	p := &Podman{Node: n, Dir: dir, Network: network, Storage: "vfs"}
	if overlaySupported(dir) {
		p.Storage = "overlay"
	}
	for _, sub := range []string{"tmp", "root", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(PodmanConfig(dir, n, network)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "storage.conf"), []byte(PodmanStorageConfig(dir, p.Storage)), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// Env is the environment that points podman at this instance's files.
func (p *Podman) Env() []string {
	return append([]string{
		"CONTAINERS_CONF=" + filepath.Join(p.Dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(p.Dir, "storage.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(p.Dir, "registries.conf"),
	}, p.Node.Env...)
}

// Command is `podman ARGS` inside the node's namespace.
func (p *Podman) Command(ctx context.Context, args ...string) *exec.Cmd {
	base := []string{"--root", filepath.Join(p.Dir, "root"), "--runroot", filepath.Join(p.Dir, "run"),
		"--tmpdir", filepath.Join(p.Dir, "tmp"), "--cgroup-manager", "cgroupfs"}
	return daemon.NSCommand(ctx, p.Node.NetNS, p.Env(), "podman", append(base, args...)...)
}

// Run runs `podman ARGS` and returns its trimmed standard output.
func (p *Podman) Run(ctx context.Context, args ...string) (string, error) {
	cmd := p.Command(ctx, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", errors.New(strings.Join(append([]string{"podman"}, args...), " ") + ": " + err.Error() + ": " + strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// Load loads an image tarball. Equivalent to: podman load -i TAR.
func (p *Podman) Load(ctx context.Context, tarball string) error {
	_, err := p.Run(ctx, "load", "-q", "-i", tarball)
	return err
}

// CgroupParent is where the containers' cgroups go.
func (p *Podman) CgroupParent() string { return p.Node.CgroupParent("podman") }

// Cleanup removes every container (their CNI DELs run), then the storage's
// mounts and the cgroup parent. The directory stays, for its logs.
func (p *Podman) Cleanup(ctx context.Context) error {
	var errs []error
	if _, err := p.Run(ctx, "rm", "--all", "--force", "--time", "0"); err != nil {
		errs = append(errs, err)
	}
	if _, err := p.Run(ctx, "unmount", "--all"); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, unmountUnder(p.Dir), removeCgroup(p.CgroupParent()))
	return errors.Join(errs...)
}
