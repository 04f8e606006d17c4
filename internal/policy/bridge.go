package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BridgeNetfilterSysctl makes bridged IPv4 pass the ip family's hooks: in
// bridge mode, pod-to-pod traffic on one node and traffic from other
// nodes to a pod is bridged, and the policy table's forward chains see it
// only through bridge netfilter.
const BridgeNetfilterSysctl = "net/bridge/bridge-nf-call-iptables"

// CheckBridgeNetfilter returns an error unless bridge netfilter is on in
// the network namespace whose /proc/sys is procSys ("/proc/sys" for the
// caller's): enforcing policy in bridge mode without it would leave bridged
// traffic unfiltered, so the agent must refuse and say why.
func CheckBridgeNetfilter(procSys string) error {
	b, err := os.ReadFile(filepath.Join(procSys, BridgeNetfilterSysctl))
	if err != nil {
		return fmt.Errorf("bridge mode needs bridge netfilter for network policy (br_netfilter not loaded?): %w", err)
	}
	if strings.TrimSpace(string(b)) != "1" {
		return fmt.Errorf("bridge mode needs bridge netfilter for network policy: %s is %s, want 1",
			strings.ReplaceAll(BridgeNetfilterSysctl, "/", "."), strings.TrimSpace(string(b)))
	}
	return nil
}
