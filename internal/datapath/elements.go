package datapath

import (
	"fmt"
	"net"
	"net/netip"
)

// The nftables sets and maps that hold pods, by family. One pod owns a
// few elements in them (PodElements); the static rules never change per pod.
const (
	// SetPods (bridge): pod address -> pod MAC, the frame rewrite for
	// traffic the fabric delivers to the NIC's MAC.
	SetPods = "pods"
	// SetPodMACs (bridge): host veth . pod MAC, the pod's only source MAC.
	SetPodMACs = "pod-macs"
	// SetPodIPs (bridge, ip and arp): host veth . pod address, the pod's
	// only source address.
	SetPodIPs = "pod-ips"
)

// Families of the network's tables.
const (
	FamilyBridge = "bridge"
	FamilyIP     = "ip"
	FamilyARP    = "arp"
)

// Element is one pod's element of a set or map in a network's tables.
type Element struct {
	Family string           // FamilyBridge, FamilyIP or FamilyARP
	Set    string           // SetPods, SetPodMACs or SetPodIPs
	HostIf string           // SetPodMACs, SetPodIPs
	IP     netip.Addr       // SetPods (the key), SetPodIPs
	MAC    net.HardwareAddr // SetPods (the value), SetPodMACs
}

// String is the element as nft prints it, after its family and set.
func (e Element) String() string {
	switch e.Set {
	case SetPods:
		return fmt.Sprintf("%s %s %s : %s", e.Family, e.Set, e.IP, e.MAC)
	case SetPodMACs:
		return fmt.Sprintf("%s %s %s . %s", e.Family, e.Set, e.HostIf, e.MAC)
	}
	return fmt.Sprintf("%s %s %s . %s", e.Family, e.Set, e.HostIf, e.IP)
}

// ID identifies an element by its set and key: the pods map holds one
// value per address, so two elements with the same ID cannot coexist.
func (e Element) ID() string {
	switch e.Set {
	case SetPods:
		return e.Family + " " + e.Set + " " + e.IP.String()
	case SetPodMACs:
		return e.Family + " " + e.Set + " " + e.HostIf + " " + e.MAC.String()
	}
	return e.Family + " " + e.Set + " " + e.HostIf + " " + e.IP.String()
}

// PodElements are the elements a pod owns in a network of the given mode.
// In bridge mode without a known MAC (DEL after the state was lost), the
// pods map element is keyed by address alone and carries no MAC.
func PodElements(mode string, p PodElem) []Element {
	if mode == ModeBridge {
		out := []Element{
			{Family: FamilyBridge, Set: SetPodIPs, HostIf: p.HostIf, IP: p.IP},
			{Family: FamilyBridge, Set: SetPods, IP: p.IP, MAC: p.MAC},
		}
		if p.MAC != nil {
			out = append(out, Element{Family: FamilyBridge, Set: SetPodMACs, HostIf: p.HostIf, MAC: p.MAC})
		}
		return out
	}
	return []Element{
		{Family: FamilyIP, Set: SetPodIPs, HostIf: p.HostIf, IP: p.IP},
		{Family: FamilyARP, Set: SetPodIPs, HostIf: p.HostIf, IP: p.IP},
	}
}

// Owned is everything of one attachment in the node's kernel: the host
// veth (its removal takes the pod end, addresses and routes with it), the
// nftables elements, and in transparent mode the host's /32 route to the
// pod through the veth. Its state record and lock file are the store's
// (store.EndpointKey, store.AttachmentLockName).
type Owned struct {
	HostIf   string
	Elements []Element
	Route    netip.Prefix // transparent mode: dev HostIf; invalid otherwise
}

// Owns describes what an attachment of the given mode owns in the kernel.
func Owns(mode string, p PodElem) Owned {
	o := Owned{HostIf: p.HostIf, Elements: PodElements(mode, p)}
	if mode == ModeTransparent && p.IP.IsValid() {
		o.Route = netip.PrefixFrom(p.IP, 32)
	}
	return o
}
