package datapath

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Repair kinds: the kernel objects Repair and the agent's reconciler put
// back, as named in logs and in the vnetd_reconcile_repairs_total metric.
const (
	KindTables  = "nftables-tables"  // a network's tables (nft flush ruleset)
	KindRules   = "nftables-rules"   // rules deleted from the tables' chains
	KindElement = "nftables-element" // one pod's set or map element
	KindBridge  = "bridge"           // the bridge, its enslavement of the NIC, its address
	KindSysctl  = "sysctl"           // ip_forward, send_redirects, proxy_arp
	KindRoute   = "route"            // transparent mode's /32 route to a pod
	KindFDB     = "fdb"              // bridge mode's static FDB entry of a pod
	KindLink    = "link"             // a host veth's state: up, bridge port, hairpin
)

// Repair puts back what the node side of an existing endpoint lost: the
// host veth's state (up; attached to the bridge, hairpin), the pod's FDB
// entry (bridge mode) or its proxy ARP and /32 route (transparent mode),
// and its nftables elements. It returns the kinds it repaired. An endpoint
// whose host veth is gone is left alone: its pod is gone, and DEL or GC
// releases it. The pod side belongs to the pod and is not touched.
func (h *Host) Repair(ep *Endpoint, r Rules) (repaired []string, err error) {
	host, err := h.Netlink.LinkByName(ep.HostIf)
	if err != nil {
		return nil, nil
	}
	if a, err := ParseAlias(host.Attrs().Alias); err != nil || a.ContainerID != ep.ContainerID || a.IfName != ep.IfName {
		return nil, nil
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		if err := h.Netlink.LinkSetUp(host); err != nil {
			return repaired, fmt.Errorf("set %s up: %w", ep.HostIf, err)
		}
		repaired = append(repaired, KindLink)
	}
	switch ep.Mode {
	case ModeBridge:
		br, err := h.Netlink.LinkByName(ep.Bridge)
		if err != nil {
			return repaired, fmt.Errorf("find bridge %s: %w", ep.Bridge, err)
		}
		if host.Attrs().MasterIndex != br.Attrs().Index {
			if err := h.Netlink.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
				return repaired, fmt.Errorf("attach %s to %s: %w", ep.HostIf, ep.Bridge, err)
			}
			if err := h.Netlink.LinkSetHairpin(host, true); err != nil {
				return repaired, fmt.Errorf("set hairpin on %s: %w", ep.HostIf, err)
			}
			repaired = append(repaired, KindLink)
		}
		if ep.PodMAC != nil {
			ok, err := h.hasFDB(host.Attrs().Index, ep.PodMAC)
			if err != nil {
				return repaired, err
			}
			if !ok {
				fdb := &netlink.Neigh{LinkIndex: host.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP,
					Flags: netlink.NTF_MASTER | netlink.NTF_STICKY, HardwareAddr: ep.PodMAC}
				if err := h.Netlink.NeighSet(fdb); err != nil {
					return repaired, fmt.Errorf("add FDB entry %s on %s: %w", ep.PodMAC, ep.HostIf, err)
				}
				repaired = append(repaired, KindFDB)
			}
		}
	case ModeTransparent:
		if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + ep.HostIf + "/proxy_arp"); err == nil && strings.TrimSpace(string(b)) != "1" {
			if err := h.Sysctl("net/ipv4/conf/"+ep.HostIf+"/proxy_arp", "1"); err != nil {
				return repaired, err
			}
			repaired = append(repaired, KindSysctl)
		}
		dst := &net.IPNet{IP: ep.IP.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}
		routes, err := h.Netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, LinkIndex: host.Attrs().Index},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
		if err != nil {
			return repaired, fmt.Errorf("list routes to %s: %w", ep.IP.Addr(), err)
		}
		if len(routes) == 0 {
			rt := &netlink.Route{LinkIndex: host.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: dst}
			if err := h.Netlink.RouteReplace(rt); err != nil {
				return repaired, fmt.Errorf("add route %s dev %s: %w", ep.IP.Addr(), ep.HostIf, err)
			}
			repaired = append(repaired, KindRoute)
		}
	}
	pe := PodElem{HostIf: ep.HostIf, MAC: ep.PodMAC, IP: ep.IP.Addr()}
	if ok, err := r.HasPod(h.NFT, pe); err == nil && !ok {
		if err := r.AddPod(h.NFT, pe); err != nil {
			return repaired, err
		}
		repaired = append(repaired, KindElement)
	}
	return repaired, nil
}

// hasFDB reports whether the bridge port has a static entry for mac.
func (h *Host) hasFDB(index int, mac net.HardwareAddr) (bool, error) {
	neighs, err := h.Netlink.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		return false, fmt.Errorf("list FDB entries: %w", err)
	}
	for _, n := range neighs {
		if n.HardwareAddr.String() == mac.String() && n.State&netlink.NUD_NOARP != 0 {
			return true, nil
		}
	}
	return false, nil
}

// RuleCount is the number of rules in the network's tables: compared with
// the count right after Program, it tells that someone deleted rules
// while the tables stayed.
func (r Rules) RuleCount(c *nftables.Conn) (int, error) {
	t := r.tables()
	tabs := []*nftables.Table{t.ip}
	if r.Mode == ModeBridge {
		tabs = append(tabs, t.br)
	} else {
		tabs = append(tabs, t.arp)
	}
	chains, err := c.ListChains()
	if err != nil {
		return 0, fmt.Errorf("list chains: %w", err)
	}
	n := 0
	for _, ch := range chains {
		for _, tab := range tabs {
			if ch.Table.Name != tab.Name || ch.Table.Family != tab.Family {
				continue
			}
			rules, err := c.GetRules(tab, ch)
			if err != nil {
				return 0, fmt.Errorf("list rules of %s: %w", ch.Name, err)
			}
			n += len(rules)
		}
	}
	return n, nil
}
