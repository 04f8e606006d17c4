// Package datapath builds the kernel side of azure-vnet's attachments: the
// node-level network (bridge mode's bridge that takes over the NIC's
// configuration, or transparent mode's routing), the nftables rules that make
// the node's traffic acceptable to Azure's fabric, and one veth per pod.
//
// Per-pod kernel state is one veth pair, its addresses and routes, and a few
// nftables set or map elements; static rules never change per pod.
package datapath

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Modes.
const (
	ModeBridge      = "bridge"
	ModeTransparent = "transparent"
)

// ForwardingSysctl is the node's IPv4 forwarding switch. A node forwards
// before its first pod arrives: kube-proxy's NodePorts and every route to a
// pod depend on it, so installing the plugins turns it on (see package
// install) and the first ADD makes sure of it.
const ForwardingSysctl = "net/ipv4/ip_forward"

// HostIfPrefix starts the name of every host-side veth the plugin creates.
const HostIfPrefix = "azv"

// TransparentGateway is the pod's next hop in transparent mode: a link-local
// address answered by the host veth's fixed MAC.
var TransparentGateway = netip.MustParseAddr("169.254.1.1")

// TransparentHostMAC is the host veth's MAC in transparent mode.
var TransparentHostMAC = net.HardwareAddr{0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa}

// HostIfName names the host veth of a container interface: stable, so DEL
// finds it without state, and at most 15 characters.
func HostIfName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return HostIfPrefix + hex.EncodeToString(sum[:])[:12]
}

// RandomMAC returns a random locally administered unicast MAC.
func RandomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = (b[0] | 0x02) &^ 0x01
	return b
}

// aliasPrefix marks a host veth as ours and starts its alias, which records
// the attachment in the kernel itself so state can be rebuilt from it.
const aliasPrefix = "azure-vnet"

// Attachment is what the kernel records about one pod interface, in the
// host veth's alias.
type Attachment struct {
	Mode        string
	ContainerID string
	IfName      string
	Network     string
	IP          netip.Prefix
	PodMAC      net.HardwareAddr
	HostIfName  string // filled when read back
}

// Alias encodes an attachment for IFLA_IFALIAS.
func (a Attachment) Alias() string {
	return strings.Join([]string{aliasPrefix, a.Mode, a.Network, a.ContainerID, a.IfName, a.IP.String(), a.PodMAC.String()}, " ")
}

// ParseAlias decodes an alias written by Alias.
func ParseAlias(s string) (Attachment, error) {
	f := strings.Fields(s)
	if len(f) != 7 || f[0] != aliasPrefix {
		return Attachment{}, fmt.Errorf("not an azure-vnet alias: %q", s)
	}
	ip, err := netip.ParsePrefix(f[5])
	if err != nil {
		return Attachment{}, fmt.Errorf("alias %q: %w", s, err)
	}
	mac, err := net.ParseMAC(f[6])
	if err != nil {
		return Attachment{}, fmt.Errorf("alias %q: %w", s, err)
	}
	return Attachment{Mode: f[1], Network: f[2], ContainerID: f[3], IfName: f[4], IP: ip, PodMAC: mac}, nil
}
