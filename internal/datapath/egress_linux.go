package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Pod egress through the pool's NIC. The fabric accepts a pod's address
// only from the NIC it belongs to, and SNAT (oifname of that NIC) only
// applies there. The node routes its pods' traffic off their subnet (in
// both modes), so on a VM with more than one NIC whose default route goes
// through another NIC, that traffic would follow the node's default route
// out of the wrong NIC and be dropped. Source routing sends it out of the
// pool's NIC instead, and changes nothing else:
//
//	ip rule add from SUBNET lookup main suppress_prefixlength 0 priority PodEgressPriority
//	ip rule add from SUBNET lookup PodEgressTable priority PodEgressPriority+1
//	ip route replace default via GATEWAY dev NIC table PodEgressTable
//
// The first rule keeps every more specific route of the main table (the
// pods' /32s, the subnet, the VNet's routes, a Service's); only the
// default route is replaced for traffic from the pool's subnet. Traffic the
// node sends with no source chosen yet still follows its default route.
const (
	PodEgressTable    = 30400 // a free table ID, as the priorities are free rule slots
	PodEgressPriority = 30400
)

// PoolEgress is the source routing of a pool's subnet through its NIC.
type PoolEgress struct {
	Subnet  netip.Prefix
	Gateway netip.Addr // the subnet's gateway, reached through Dev
	Dev     string     // the NIC (or, in bridge mode, the bridge holding its address)
}

func (e PoolEgress) rules() []*netlink.Rule {
	src := &net.IPNet{IP: e.Subnet.Masked().Addr().AsSlice(), Mask: net.CIDRMask(e.Subnet.Bits(), 32)}
	main := netlink.NewRule()
	main.Family, main.Src, main.Table, main.Priority, main.SuppressPrefixlen = unix.AF_INET, src, unix.RT_TABLE_MAIN, PodEgressPriority, 0
	own := netlink.NewRule()
	own.Family, own.Src, own.Table, own.Priority = unix.AF_INET, src, PodEgressTable, PodEgressPriority+1
	return []*netlink.Rule{main, own}
}

func sameRule(a, b *netlink.Rule) bool {
	return a.Priority == b.Priority && a.Table == b.Table && a.Src != nil && b.Src != nil && a.Src.String() == b.Src.String() &&
		a.SuppressPrefixlen == b.SuppressPrefixlen
}

// Ready reports whether the rules and the table's default route are there.
func (e PoolEgress) Ready(h *netlink.Handle) bool {
	have, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return false
	}
	for _, want := range e.rules() {
		found := false
		for i := range have {
			if sameRule(&have[i], want) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	l, err := h.LinkByName(e.Dev)
	if err != nil {
		return false
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: PodEgressTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return false
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex == l.Attrs().Index && r.Gw.Equal(e.Gateway.AsSlice()) {
			return true
		}
	}
	return false
}

// Ensure installs the rules and the route. Idempotent.
func (e PoolEgress) Ensure(h *netlink.Handle) error {
	if !e.Subnet.IsValid() || !e.Gateway.IsValid() {
		return fmt.Errorf("pod egress through %s: no subnet or gateway", e.Dev)
	}
	l, err := h.LinkByName(e.Dev)
	if err != nil {
		return fmt.Errorf("pod egress through %s: %w", e.Dev, err)
	}
	r := &netlink.Route{Table: PodEgressTable, LinkIndex: l.Attrs().Index, Gw: e.Gateway.AsSlice(),
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("add route default via %s dev %s table %d: %w", e.Gateway, e.Dev, PodEgressTable, err)
	}
	for _, rule := range e.rules() {
		if err := h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add rule from %s lookup %d: %w", e.Subnet, rule.Table, err)
		}
	}
	return nil
}

// RemovePoolEgress deletes every rule at the pod egress priorities and the
// table's routes; what is already gone is fine.
func RemovePoolEgress(h *netlink.Handle) error {
	var errs []error
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	for i := range rules {
		if r := &rules[i]; r.Priority == PodEgressPriority || r.Priority == PodEgressPriority+1 {
			if err := h.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete rule priority %d: %w", r.Priority, err))
			}
		}
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: PodEgressTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list routes of table %d: %w", PodEgressTable, err))...)
	}
	for i := range routes {
		if err := h.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route of table %d: %w", PodEgressTable, err))
		}
	}
	return errors.Join(errs...)
}

// PoolEgressFor is the pool egress r needs: in the Azure CNI model only
// (the pool's subnet holds the node's primary IP and its gateway is the
// subnet's first address), through the NIC in transparent mode and
// through the bridge that holds the NIC's address in bridge mode (whose
// pods' traffic off the subnet is routed by the node too); nothing
// otherwise.
func PoolEgressFor(r Rules) (PoolEgress, bool) {
	if r.Routed || !r.Subnet.IsValid() || !r.PrimaryIP.IsValid() || !r.Subnet.Contains(r.PrimaryIP) {
		return PoolEgress{}, false
	}
	dev := r.Master
	if r.Mode == ModeBridge {
		dev = r.Bridge
	}
	if dev == "" {
		return PoolEgress{}, false
	}
	return PoolEgress{Subnet: r.Subnet.Masked(), Gateway: r.Subnet.Masked().Addr().Next(), Dev: dev}, true
}
