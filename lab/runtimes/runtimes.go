// Package runtimes runs real container runtimes — containerd with its CRI
// plugin, podman, and dockerd with its own containerd — privately inside a
// node's network namespace, so that they call a node's CNI plugins the way
// they do on a real machine while touching nothing global: each instance
// has its own sockets, state, storage, cgroup parent and CNI directories
// under one directory, and is ended by the PID it was started with.
//
// The images they run are built locally (package ociimage) around a tiny
// static pause binary; no registry is needed.
package runtimes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vnetcni/vnetcni/lab/ociimage"
)

// Node is where a runtime runs: a node's network namespace (the plugins'
// "host") and the CNI directories and environment of that node.
type Node struct {
	// Name is unique among nodes on the machine; it names the runtime's
	// cgroup parent, e.g. "lab-vm-1".
	Name string
	// NetNS is the path of the namespace the runtime and its plugins run in.
	NetNS      string
	CNIBinDir  string
	CNIConfDir string
	// Env is extra KEY=VALUE for the runtime and so for every plugin it
	// runs, e.g. the plugin's state directory.
	Env []string
}

func (n Node) validate() error {
	if n.Name == "" || strings.ContainsAny(n.Name, "/ \t\n") {
		return fmt.Errorf("node name %q: want a non-empty name without '/' or spaces", n.Name)
	}
	if !filepath.IsAbs(n.NetNS) {
		return fmt.Errorf("node %s: network namespace %q is not an absolute path", n.Name, n.NetNS)
	}
	for what, d := range map[string]string{"CNI bin": n.CNIBinDir, "CNI conf": n.CNIConfDir} {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("node %s: %s directory %q is not an absolute path", n.Name, what, d)
		}
	}
	return nil
}

// CgroupParent is the cgroupfs parent of everything a runtime of this node
// starts, one per runtime kind.
func (n Node) CgroupParent(kind string) string { return "/vnetcni-" + n.Name + "-" + kind }

// PauseImage is the reference of the locally built sandbox image.
const PauseImage = "localhost/vnetcni/pause:v1"

// PauseBinaryName is the pause program's file name next to the plugins.
const PauseBinaryName = "vnetcni-pause"

// PauseImageFor is the sandbox image around a pause binary: one file,
// /pause, run as the entrypoint.
func PauseImageFor(binary []byte) ociimage.Image {
	return ociimage.Image{
		Name:       PauseImage,
		Entrypoint: []string{"/pause"},
		Env:        []string{"PATH=/"},
		Files:      []ociimage.File{{Path: "pause", Mode: 0o755, Data: binary}},
	}
}

// WritePauseImage writes the sandbox image tarball for the pause binary at
// binPath to out.
func WritePauseImage(binPath, out string) error {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return fmt.Errorf("read pause binary: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := PauseImageFor(bin).Write(f); err != nil {
		f.Close()
		return fmt.Errorf("write pause image %s: %w", out, err)
	}
	return f.Close()
}

// resolveDir creates dir and returns its path without symlinks: runc
// refuses a rootfs path that crosses one (/var/run -> /run).
func resolveDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// ContainerdConfig is a containerd configuration (version 2) with every
// path under dir. With cri, the CRI plugin uses the node's CNI
// directories, cgroupfs, the pause image as sandbox image, and
// restrict_oom_score_adj (the tests' root may lack CAP_SYS_RESOURCE);
// without it, the CRI plugin is disabled (a containerd for dockerd).
func ContainerdConfig(dir string, n Node, snapshotter string, cri bool) string {
	var b strings.Builder
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	disabled := []string{"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"}
	if !cri {
		disabled = append([]string{"io.containerd.grpc.v1.cri"}, disabled...)
	}
	for i := range disabled {
		disabled[i] = q(disabled[i])
	}
	fmt.Fprintf(&b, "# Written by vnetcni for node %s; everything lives under %s.\n", n.Name, dir)
	fmt.Fprintf(&b, "version = 2\nroot = %s\nstate = %s\noom_score = 0\n", q(filepath.Join(dir, "root")), q(filepath.Join(dir, "state")))
	fmt.Fprintf(&b, "disabled_plugins = [%s]\n\n", strings.Join(disabled, ", "))
	fmt.Fprintf(&b, "[grpc]\n  address = %s\n\n", q(filepath.Join(dir, "containerd.sock")))
	fmt.Fprintf(&b, "[ttrpc]\n  address = %s\n\n", q(filepath.Join(dir, "containerd.sock.ttrpc")))
	fmt.Fprintf(&b, "[debug]\n  address = \"\"\n\n[metrics]\n  address = \"\"\n\n")
	fmt.Fprintf(&b, "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = %s\n", q(filepath.Join(dir, "opt")))
	if !cri {
		return b.String()
	}
	fmt.Fprintf(&b, `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %s
  restrict_oom_score_adj = true
  disable_apparmor = true
  disable_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %s
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %s
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %s
    conf_dir = %s
    max_conf_num = 1
`, q(PauseImage), q(snapshotter), q(filepath.Join(dir, "runc")), q(n.CNIBinDir), q(n.CNIConfDir))
	return b.String()
}

// PodmanConfig is podman's containers.conf for a node: the CNI backend on
// the node's directories, cgroupfs, lower ulimits (root here may lack
// CAP_SYS_RESOURCE), every path under dir. The node's plugin environment
// goes into [engine] env: podman does not pass its own environment to
// conmon, whose exit command ("podman container cleanup") may be the one
// that runs the CNI DEL — without it the plugin would use its defaults.
func PodmanConfig(dir string, n Node, network string) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	env := make([]string, len(n.Env))
	for i, e := range n.Env {
		env[i] = q(e)
	}
	return fmt.Sprintf(`# Written by vnetcni for node %s; everything lives under %s.
[containers]
default_ulimits = ["nproc=4096:4096", "nofile=4096:4096"]
netns = "private"

[network]
network_backend = "cni"
cni_plugin_dirs = [%s]
network_config_dir = %s
default_network = %s

[engine]
env = [%s]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %s
tmp_dir = %s
static_dir = %s
volume_path = %s
runtime = "runc"
`, n.Name, dir, q(n.CNIBinDir), q(n.CNIConfDir), q(network), strings.Join(env, ", "), q(filepath.Join(dir, "events.log")),
		q(filepath.Join(dir, "tmp")), q(filepath.Join(dir, "root", "libpod")), q(filepath.Join(dir, "root", "volumes")))
}

// PodmanStorageConfig is containers-storage's storage.conf under dir.
func PodmanStorageConfig(dir, driver string) string {
	return fmt.Sprintf("[storage]\ndriver = %q\ngraphroot = %q\nrunroot = %q\n", driver, filepath.Join(dir, "root"), filepath.Join(dir, "run"))
}
