package install

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/vnetcni/vnetcni/internal/datapath"
)

// SysctlFile is where Forwarding persists the node's forwarding across
// reboots, in the sysctl.d directory.
const SysctlFile = "90-azure-vnet.conf"

// DefaultSysctlDir is the node's sysctl.d directory.
const DefaultSysctlDir = "/etc/sysctl.d"

// Forwarding turns on IPv4 forwarding in the calling thread's network
// namespace and, unless sysctlDir is empty, writes SysctlFile there so it
// stays on after a reboot. A node must forward before its first pod
// arrives: a NodePort on a node without pods forwards to pods on other
// nodes. The plugin's first ADD turns it on as well; installing must not
// wait for it.
// Equivalent to: sysctl -w net.ipv4.ip_forward=1.
func Forwarding(sysctlDir string) (Action, error) {
	if err := datapath.WriteSysctl(datapath.ForwardingSysctl, "1"); err != nil {
		return Action{}, err
	}
	act := Action{Path: "/proc/sys/" + datapath.ForwardingSysctl, Outcome: "1"}
	if sysctlDir == "" {
		return act, nil
	}
	if err := os.MkdirAll(sysctlDir, 0o755); err != nil {
		return act, err
	}
	dst := filepath.Join(sysctlDir, SysctlFile)
	line := "# azure-vnet: pods and NodePorts need the node to forward\n" +
		strings.ReplaceAll(datapath.ForwardingSysctl, "/", ".") + " = 1\n"
	out, err := place(dst, []byte(line), 0o644, true)
	if err != nil {
		return act, err
	}
	return Action{Path: dst, Outcome: out}, nil
}
