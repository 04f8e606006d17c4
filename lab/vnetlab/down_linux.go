package vnetlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/daemon"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// Down removes everything a lab made: its daemon, every namespace whose
// name starts with "<name>-" (fabric, internet, VMs, pods — and with them
// every link, route and rule inside), and its run directory. It works on a
// half-built or crashed lab and does nothing for one that is gone.
func Down(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	var errs []error
	l, err := Load(name)
	if err == nil {
		if l.Kubernetes != nil {
			// Nodes first: they remove their pods through the CRI.
			l.Kubernetes.Stop()
		}
		// Runtimes first: their sandboxes' DELs run while the VMs exist.
		if err := stopRuntimes(l); err != nil {
			errs = append(errs, err)
		}
		// Agents after the runtimes (their DELs may go through them),
		// before the namespaces they serve.
		if err := l.stopAgents(); err != nil {
			errs = append(errs, err)
		}
		if pid, ok := l.daemonPID(); ok {
			if err := stopProcess(pid); err != nil {
				errs = append(errs, err)
			}
		}
		if err := fabric.Destroy(l.Spec); err != nil {
			errs = append(errs, err)
		}
	} else if !errors.Is(err, ErrNoLab) {
		// An unreadable description must not keep the rest from going.
		errs = append(errs, err)
	}
	// Whatever a crash left running without a record: the lab's daemon
	// and cluster supervisors, found by their command lines.
	for _, pid := range labProcesses(name) {
		if err := stopProcess(pid); err != nil {
			errs = append(errs, err)
		}
	}
	left, err := netns.List(name + "-")
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range left {
		if err := netns.Delete(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(Dir(name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopProcess ends the daemon: SIGTERM, then SIGKILL after 5 s.
func stopProcess(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil // already gone
	}
	for i := 0; i < 50; i++ {
		if err := p.Signal(syscall.Signal(0)); err != nil {
			return nil
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && daemon.Zombie(st) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return nil
	}
	return nil
}

// labProcesses lists the running vnetctl processes of a lab: "lab serve
// --name NAME" and "lab k8s ... --name NAME".
func labProcesses(name string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if isLabProcess(args, name) {
			out = append(out, pid)
		}
	}
	return out
}

func isLabProcess(args []string, name string) bool {
	i := slices.IndexFunc(args, func(a string) bool { return filepath.Base(a) == Binary })
	if i < 0 || i+1 >= len(args) || (args[i+1] != "serve" && args[i+1] != "k8s") {
		return false
	}
	for k := i; k+1 < len(args); k++ {
		if args[k] == "--name" && args[k+1] == name {
			return true
		}
	}
	return false
}
