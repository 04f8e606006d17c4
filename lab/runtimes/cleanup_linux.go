package runtimes

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/vnetcni/vnetcni/lab/daemon"
)

// Cleanup ends every runtime this package started for a node under dir
// (one level down: dir/containerd, dir/podman, dir/docker, ...), whatever
// state a crashed caller left them in: podman containers are removed,
// sandboxes and containers removed, daemons and shims ended, mounts
// detached, and the node's cgroup parents removed. Nothing is an error
// if there is nothing to do.
func Cleanup(ctx context.Context, n Node, dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		switch {
		case exists(filepath.Join(sub, "containers.conf")):
			p := &Podman{Node: n, Dir: sub}
			if r, err := filepath.EvalSymlinks(sub); err == nil {
				p.Dir = r
			}
			errs = append(errs, p.Cleanup(ctx))
		case exists(filepath.Join(sub, "dockerd.pid")):
			errs = append(errs, dockerAt(n, sub).Stop(ctx))
		case exists(filepath.Join(sub, "containerd.pid")):
			errs = append(errs, ContainerdAt(n, sub, true).Stop(ctx))
		}
	}
	// Cgroup parents of this node's runtimes, including variants named
	// after it (NAME-ref for a second instance).
	parents := map[string]bool{}
	matches, _ := filepath.Glob(filepath.Join(CgroupRoot, "*", "vnetcni-"+n.Name+"-*"))
	for _, m := range matches {
		parents["/"+filepath.Base(m)] = true
	}
	for p := range parents {
		errs = append(errs, removeCgroup(p))
	}
	return errors.Join(errs...)
}

// dockerAt describes a dockerd started earlier under dir, to stop it.
func dockerAt(n Node, dir string) *Docker {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	k := &Docker{Node: n, Dir: dir, containerd: ContainerdAt(n, filepath.Join(dir, "containerd"), false)}
	k.d = daemon.Daemon{Name: "dockerd for " + n.Name, PIDFile: filepath.Join(dir, "dockerd.pid"), Marker: k.Host()}
	return k
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
