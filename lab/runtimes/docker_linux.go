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

	"github.com/vnetcni/vnetcni/lab/daemon"
)

// Docker is a private dockerd with its own containerd, both in a node's
// namespace, with no bridge, no iptables and no IP forwarding: containers
// run with --network none and are attached by the CNI plugins
// (scripts/docker-run.sh), as Azure's Docker flow does.
type Docker struct {
	Node       Node
	Dir        string
	containerd *Containerd
	d          daemon.Daemon
}

// DockerCLI is the docker client to use: Debian's, which matches its
// daemon, when installed.
func DockerCLI() string {
	if _, err := os.Stat("/usr/bin/docker"); err == nil {
		return "/usr/bin/docker"
	}
	return "docker"
}

// DockerOptions change how dockerd runs.
type DockerOptions struct {
	// Firewall lets dockerd manage iptables and IP forwarding in the
	// node's namespace as it does by default on a host: among others it
	// sets the FORWARD policy to DROP.
	Firewall bool
}

// StartDocker starts containerd and dockerd for the node under dir, or
// returns the ones running there.
func StartDocker(ctx context.Context, n Node, dir string) (*Docker, error) {
	return StartDockerWith(ctx, n, dir, DockerOptions{})
}

// StartDockerWith is StartDocker with options.
func StartDockerWith(ctx context.Context, n Node, dir string, o DockerOptions) (*Docker, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	dir, err := resolveDir(dir)
	if err != nil {
		return nil, err
	}
	ctd, err := StartContainerd(ctx, n, filepath.Join(dir, "containerd"), ContainerdOptions{})
	if err != nil {
		return nil, err
	}
	k := dockerAt(n, dir)
	k.containerd = ctd
	if _, ok := k.d.Running(); !ok {
		cfg := filepath.Join(dir, "daemon.json")
		if err := os.WriteFile(cfg, []byte("{}\n"), 0o644); err != nil {
			return nil, err
		}
		_, err := k.d.Start(n.NetNS, nil, filepath.Join(dir, "dockerd.log"), "dockerd",
			"--host", "unix://"+k.socket(),
			"--containerd", ctd.Socket(),
			"--data-root", filepath.Join(dir, "data"),
			"--exec-root", filepath.Join(dir, "exec"),
			"--pidfile", filepath.Join(dir, "dockerd.self.pid"),
			"--config-file", cfg,
			"--bridge", "none", "--iptables="+fmt.Sprint(o.Firewall), "--ip6tables=false", "--ip-forward="+fmt.Sprint(o.Firewall), "--ip-masq=false",
			"--userland-proxy=false",
			"--exec-opt", "native.cgroupdriver=cgroupfs",
			"--cgroup-parent", n.CgroupParent("docker"),
			"--default-ulimit", "nproc=4096:4096")
		if err != nil {
			return nil, err
		}
	}
	alive := func() bool { _, ok := k.d.Running(); return ok }
	failed := func(err error) error {
		_ = k.Stop(context.Background())
		return fmt.Errorf("dockerd for %s: %w\n%s", n.Name, err, tail(filepath.Join(dir, "dockerd.log"), 15))
	}
	if err := waitSocket(ctx, k.socket(), alive); err != nil {
		return nil, failed(err)
	}
	// The socket accepts before the API answers.
	for {
		if _, err := k.Run(ctx, "version", "--format", "{{.Server.Version}}"); err == nil {
			return k, nil
		} else if ctx.Err() != nil || !alive() {
			return nil, failed(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (k *Docker) socket() string { return filepath.Join(k.Dir, "docker.sock") }

// Host is the DOCKER_HOST of this daemon.
func (k *Docker) Host() string { return "unix://" + k.socket() }

// PID is dockerd's process ID, 0 if it is not running.
func (k *Docker) PID() int { pid, _ := k.d.Running(); return pid }

// Command is `docker ARGS` against this daemon.
func (k *Docker) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, DockerCLI(), append([]string{"--host", k.Host()}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(k.Dir, "client"))
	return cmd
}

// Run runs `docker ARGS` and returns its trimmed standard output.
func (k *Docker) Run(ctx context.Context, args ...string) (string, error) {
	cmd := k.Command(ctx, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// Load loads an image tarball. Equivalent to: docker load -i TAR.
func (k *Docker) Load(ctx context.Context, tarball string) error {
	_, err := k.Run(ctx, "load", "-q", "-i", tarball)
	return err
}

// Stop removes every container, ends dockerd and its containerd, and
// removes their mounts and cgroup parent.
func (k *Docker) Stop(ctx context.Context) error {
	var errs []error
	if _, ok := k.d.Running(); ok {
		if ids, err := k.Run(ctx, "ps", "-aq"); err == nil && ids != "" {
			if _, err := k.Run(ctx, append([]string{"rm", "-f"}, strings.Fields(ids)...)...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, k.d.Stop(10*time.Second), k.containerd.Stop(ctx), unmountUnder(k.Dir), removeCgroup(k.Node.CgroupParent("docker")))
	return errors.Join(errs...)
}
