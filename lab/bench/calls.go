package bench

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// Exec is one plugin process libcni started: what it cost, from the
// child's rusage (wait4 reports the child and the descendants it waited
// for, so bridge's figures include the host-local it ran), and what it
// wrote to stderr.
type Exec struct {
	Plugin   string        // base name of the binary
	Command  string        // CNI_COMMAND
	Wall     time.Duration // fork to exit, as seen by the parent
	User     time.Duration
	Sys      time.Duration
	MaxRSSKB int64 // peak resident set, KiB
	// MinFlt counts page faults served without I/O: pages of the binary
	// and of new memory the process touched.
	MinFlt int64
	Stderr string
}

// CPU is user plus system time.
func (e Exec) CPU() time.Duration { return e.User + e.Sys }

// call is one libcni call and what it cost.
type call struct {
	Wall  time.Duration // the libcni call, as a runtime sees it
	Execs []Exec
	Err   error
}

// outcome is one call of the setup benchmarks, kept for the report.
type outcome struct {
	call
	ip netip.Addr
}

// rotate returns vs starting at index i mod len(vs), so that no variant is
// always measured first (or right after another's teardown).
func rotate[T any](vs []T, i int) []T {
	k := i % len(vs)
	return append(append([]T(nil), vs[k:]...), vs[:k]...)
}

// The lab's address plan: one /21 subnet, so three NICs can hold 256
// secondary addresses each and the reference's host-local range fits
// beside them.
var (
	benchVNet   = netip.MustParsePrefix("10.0.0.0/16")
	benchSubnet = netip.MustParsePrefix("10.0.0.0/21")
	// refRange is host-local's range on the reference VM: inside the
	// subnet, outside every NIC's addresses.
	refRangeStart = netip.MustParseAddr("10.0.3.1")
	refRangeEnd   = netip.MustParseAddr("10.0.3.254")
)

// Plugin configurations. Each is the plugin alone, without portmap: the
// comparison is one main plugin with its IPAM against another.
const (
	cniVersion = "1.0.0"
	ourNetwork = "azure"
	refNetwork = "reference"
	refBridge  = "cni0"
)

func ourConflist(mode string) []byte {
	b, _ := json.Marshal(map[string]any{
		"cniVersion": cniVersion,
		"name":       ourNetwork,
		"plugins": []any{map[string]any{
			"type": netconf.PluginType,
			"mode": mode,
			"ipam": map[string]any{"type": netconf.IPAMType},
		}},
	})
	return b
}

// refConflist is bridge + host-local with the bridge plugin's defaults
// (no gateway address on the bridge, no masquerading): per pod, a veth on
// a bridge, an address and a default route via the subnet gateway, the
// same kernel work as our bridge mode less its nftables elements.
func refConflist(dataDir string) []byte {
	b, _ := json.Marshal(map[string]any{
		"cniVersion": cniVersion,
		"name":       refNetwork,
		"plugins": []any{map[string]any{
			"type":   "bridge",
			"bridge": refBridge,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": dataDir,
				"ranges": [][]map[string]string{{{
					"subnet":     benchSubnet.String(),
					"rangeStart": refRangeStart.String(),
					"rangeEnd":   refRangeEnd.String(),
					"gateway":    fabric.Gateway(benchSubnet).String(),
				}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		}},
	})
	return b
}
