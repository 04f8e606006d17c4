package datapath

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Bridge netfilter: bridge mode needs it so that the replies of NATed
// connections (Services, host ports) that stay on the bridge between two
// pods of one node are un-NATed by conntrack. It is the br_netfilter
// module's, and the sysctl exists only once the module is loaded; since
// Linux 5.3 the sysctl is per network namespace.
const (
	BridgeNetfilterModule = "br_netfilter"
	BridgeNetfilterSysctl = "net/bridge/bridge-nf-call-iptables"
)

// BridgeNetfilter reports, for the calling thread's network namespace,
// whether br_netfilter is loaded (its sysctl exists) and on.
func BridgeNetfilter() (loaded, on bool, err error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", BridgeNetfilterSysctl))
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("read sysctl %s: %w", BridgeNetfilterSysctl, err)
	}
	return true, strings.TrimSpace(string(b)) == "1", nil
}

// EnsureBridgeNetfilter loads br_netfilter if needed and turns it on in the
// calling thread's namespace. Idempotent.
func (h *Host) EnsureBridgeNetfilter() error {
	loaded, on, err := BridgeNetfilter()
	if err != nil || on {
		return err
	}
	if !loaded {
		load := h.LoadModule
		if load == nil {
			load = LoadModule
		}
		if err := load(BridgeNetfilterModule); err != nil {
			return fmt.Errorf("bridge mode needs %s (Service replies between pods of one node bypass conntrack without it): %w", BridgeNetfilterModule, err)
		}
	}
	sysctl := h.Sysctl
	if sysctl == nil {
		sysctl = WriteSysctl
	}
	return sysctl(BridgeNetfilterSysctl, "1")
}

// LoadModule loads a kernel module with its dependencies. Equivalent to:
// modprobe NAME. Runs only when the module is missing, once per node.
func LoadModule(name string) error {
	path, err := exec.LookPath("modprobe")
	if err != nil {
		// A CNI plugin's PATH is the runtime's; look where distributions
		// keep it.
		for _, p := range []string{"/usr/sbin/modprobe", "/sbin/modprobe", "/usr/bin/modprobe"} {
			if _, serr := os.Stat(p); serr == nil {
				path, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("load module %s: modprobe not found: %w", name, err)
	}
	if out, err := exec.Command(path, name).CombinedOutput(); err != nil {
		return fmt.Errorf("load module %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
