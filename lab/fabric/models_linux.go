package fabric

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/nft"
)

// The network models of seed 002 in the fabric, beside Azure CNI's /32 per
// NIC address:
//
//   - Azure CNI Overlay: per VM with a PodCIDR, a route of the block to the
//     NIC (ip route replace BLOCK via PRIMARY dev p-VM), the block admitted
//     as a source on that port only, and in table ip fabric
//
//     set overlay-blocks  { type ipv4_addr; flags interval; elements = { <blocks> } }
//     set overlay-members { type ipv4_addr; flags interval; elements = { <primaries>, <blocks> } }
//     chain forward { ip daddr @overlay-blocks ip saddr != @overlay-members counter name "overlay_not_member" drop }
//
//     so only the cluster's nodes and pods reach pods.
//   - Route tables (kubenet's user-defined routes): table i is kernel table
//     RouteTableBase+i, holding BLOCK via NEXTHOP dev p-<owner>, and a rule
//     fwmark RouteTableBase+i lookup RouteTableBase+i; the ports of VMs in
//     the table's subnets set that mark on ingress, so the routes apply to
//     what those NICs send and to nothing else.

// RouteTableBase is the kernel table (and mark, and rule priority) of the
// spec's first route table; the i-th is RouteTableBase+i.
const RouteTableBase = 1000

const (
	setOverlayBlocks  = "overlay-blocks"
	setOverlayMembers = "overlay-members"
	cntOverlayDenied  = "overlay_not_member"
)

// routeTableOf is the index of the route table associated with subnet.
func (s Spec) routeTableOf(subnet netip.Prefix) (int, bool) {
	for i, rt := range s.RouteTables {
		for _, sn := range rt.Subnets {
			if sn == subnet {
				return i, true
			}
		}
	}
	return 0, false
}

// overlayPrefixes are the blocks of the spec's overlay nodes and the
// addresses allowed to reach them.
func (s Spec) overlayPrefixes() (blocks, members []netip.Prefix) {
	for _, v := range s.VMs {
		if v.PodCIDR.IsValid() {
			blocks = append(blocks, v.PodCIDR)
			members = append(members, netip.PrefixFrom(v.PrimaryIP, 32), v.PodCIDR)
		}
	}
	return blocks, members
}

// addOverlaySets adds the overlay sets, filled, to a transaction on table
// ip fabric; it returns nil sets when no VM is an overlay node.
func addOverlaySets(c *nftables.Conn, ex existing, s Spec) (blocks, members *nftables.Set, err error) {
	bp, mp := s.overlayPrefixes()
	if len(bp) == 0 {
		return nil, nil, nil
	}
	blocks = &nftables.Set{Table: ipTable, Name: setOverlayBlocks, Interval: true, KeyType: nftables.TypeIPAddr}
	members = &nftables.Set{Table: ipTable, Name: setOverlayMembers, Interval: true, KeyType: nftables.TypeIPAddr}
	for _, x := range []struct {
		set *nftables.Set
		ps  []netip.Prefix
	}{{blocks, bp}, {members, mp}} {
		if err := c.AddSet(x.set, nil); err != nil {
			return nil, nil, fmt.Errorf("add set %s: %w", x.set.Name, err)
		}
		if ex.sets[key(ipTable, x.set.Name)] {
			c.FlushSet(x.set)
		}
		if err := c.SetAddElements(x.set, nft.PrefixElements(x.ps)); err != nil {
			return nil, nil, fmt.Errorf("add elements to set %s: %w", x.set.Name, err)
		}
	}
	return blocks, members, nil
}

// overlayRule keeps VMs outside the overlay cluster from its pods.
func overlayRule(c *nftables.Conn, forward *nftables.Chain, blocks, members *nftables.Set) {
	if blocks == nil {
		return
	}
	c.AddObj(&nftables.CounterObj{Table: ipTable, Name: cntOverlayDenied})
	c.AddRule(nft.Rule(forward, nft.In(nft.IPDaddr, blocks, true), nft.In(nft.IPSaddr, members, false),
		nft.NamedCounter(cntOverlayDenied), nft.Drop()))
}

// syncModelRoutes makes the fabric's overlay routes and route tables those
// of the spec. portOf names the interface that reaches a VM's NIC.
// Equivalent to: ip route replace BLOCK via PRIMARY dev p-VM; ip route
// replace PREFIX via NEXTHOP dev p-OWNER table T; ip rule add fwmark T
// lookup T pref T.
func syncModelRoutes(fab *nsConn, s Spec, portOf func(VMSpec) string) error {
	links := map[string]netlink.Link{}
	link := func(v VMSpec) (netlink.Link, error) {
		name := portOf(v)
		if l, ok := links[name]; ok {
			return l, nil
		}
		l, err := fab.nl.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("find port %s: %w", name, err)
		}
		links[name] = l
		return l, nil
	}
	var errs []error
	// Overlay blocks, in the main table. Only what differs is written:
	// a route controller changes one route at a time in large tables.
	main, err := dump(func() ([]netlink.Route, error) {
		return fab.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes in netns %s: %w", fab.name, err)
	}
	have := routesByPrefix(main)
	want := map[netip.Prefix]bool{}
	for _, v := range s.VMs {
		if !v.PodCIDR.IsValid() {
			continue
		}
		want[v.PodCIDR] = true
		l, err := link(v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r := &netlink.Route{Dst: ipNet(v.PodCIDR), Gw: v.PrimaryIP.AsSlice(), LinkIndex: l.Attrs().Index, Flags: int(netlink.FLAG_ONLINK)}
		if sameRoute(have[v.PodCIDR], r) {
			continue
		}
		if err := fab.nl.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("add route %s via %s dev %s: %w", v.PodCIDR, v.PrimaryIP, l.Attrs().Name, err))
		}
	}
	// Gateway routes to blocks no VM has any more.
	for _, r := range main {
		if p := prefixOf(r.Dst); r.Gw != nil && p.IsValid() && p.Bits() > 0 && !want[p] && r.LinkIndex != 0 && isPortRoute(fab, r) {
			if err := fab.nl.RouteDel(&r); err != nil && !notFound(err) {
				errs = append(errs, fmt.Errorf("delete stale route %s: %w", p, err))
			}
		}
	}

	// Route tables.
	wantRules := map[int]bool{}
	for i, rt := range s.RouteTables {
		table := RouteTableBase + i
		wantRules[table] = true
		cur, err := dump(func() ([]netlink.Route, error) {
			return fab.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("list routes of table %d: %w", table, err))
			continue
		}
		have := routesByPrefix(cur)
		wantRoutes := map[netip.Prefix]bool{}
		for _, rr := range rt.Routes {
			wantRoutes[rr.AddressPrefix] = true
			r := &netlink.Route{Table: table, Dst: ipNet(rr.AddressPrefix)}
			if owner, ok := s.Owner(rr.NextHop); ok {
				l, err := link(owner)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				r.Gw, r.LinkIndex, r.Flags = rr.NextHop.AsSlice(), l.Attrs().Index, int(netlink.FLAG_ONLINK)
			} else {
				r.Type = unix.RTN_BLACKHOLE
			}
			if sameRoute(have[rr.AddressPrefix], r) {
				continue
			}
			if err := fab.nl.RouteReplace(r); err != nil {
				errs = append(errs, fmt.Errorf("route table %s: add route %s via %s: %w", rt.Name, rr.AddressPrefix, rr.NextHop, err))
			}
		}
		for _, r := range cur {
			if p := prefixOf(r.Dst); !wantRoutes[p] {
				if err := fab.nl.RouteDel(&r); err != nil && !notFound(err) {
					errs = append(errs, fmt.Errorf("route table %s: delete stale route %s: %w", rt.Name, p, err))
				}
			}
		}
	}
	// Tables of route tables the spec no longer has.
	for table := RouteTableBase + len(s.RouteTables); ; table++ {
		cur, err := dump(func() ([]netlink.Route, error) {
			return fab.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		})
		if err != nil || len(cur) == 0 {
			break
		}
		for _, r := range cur {
			if err := fab.nl.RouteDel(&r); err != nil && !notFound(err) {
				errs = append(errs, fmt.Errorf("delete route %s of removed table %d: %w", prefixOf(r.Dst), table, err))
			}
		}
	}
	rules, err := dump(func() ([]netlink.Rule, error) { return fab.nl.RuleList(netlink.FAMILY_V4) })
	if err != nil {
		return joinFew(append(errs, fmt.Errorf("list rules in netns %s: %w", fab.name, err)))
	}
	haveRules := map[int]bool{}
	for _, r := range rules {
		if r.Priority < RouteTableBase || r.Priority >= RouteTableBase+1000 {
			continue
		}
		if wantRules[r.Priority] && r.Table == r.Priority && r.Mark == uint32(r.Priority) {
			haveRules[r.Priority] = true
			continue
		}
		if err := fab.nl.RuleDel(&r); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete stale rule %d: %w", r.Priority, err))
		}
	}
	for table := range wantRules {
		if haveRules[table] {
			continue
		}
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table, r.Mark = netlink.FAMILY_V4, table, table, uint32(table)
		if err := fab.nl.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add rule fwmark %d lookup %d: %w", table, table, err))
		}
	}
	return joinFew(errs)
}

// joinFew joins the first few errors and counts the rest, so a table of
// thousands of routes fails with a readable message.
func joinFew(errs []error) error {
	const few = 3
	if len(errs) <= few {
		return errors.Join(errs...)
	}
	return errors.Join(append(errs[:few:few], fmt.Errorf("and %d more errors", len(errs)-few))...)
}

// routesByPrefix indexes routes by destination.
func routesByPrefix(rs []netlink.Route) map[netip.Prefix]*netlink.Route {
	m := make(map[netip.Prefix]*netlink.Route, len(rs))
	for i := range rs {
		if p := prefixOf(rs[i].Dst); p.IsValid() {
			m[p] = &rs[i]
		}
	}
	return m
}

// sameRoute reports whether the kernel's route is the one wanted.
func sameRoute(have, want *netlink.Route) bool {
	if have == nil {
		return false
	}
	if want.Type == unix.RTN_BLACKHOLE {
		return have.Type == unix.RTN_BLACKHOLE
	}
	return have.Type != unix.RTN_BLACKHOLE && have.LinkIndex == want.LinkIndex && have.Gw.Equal(want.Gw)
}

// isPortRoute reports whether a route leaves through a VM port (not the
// internet link).
func isPortRoute(fab *nsConn, r netlink.Route) bool {
	l, err := fab.nl.LinkByIndex(r.LinkIndex)
	return err == nil && l.Attrs().Name != internetDev
}

// SetRouteTable creates or replaces a route table (its routes and subnet
// associations) and applies it: the routes at once, the subnets' ports'
// marks in one nftables transaction when the associations change.
func (f *Fabric) SetRouteTable(rt RouteTable) error {
	return f.changeRouteTables(rt.Name, func(s *Spec) {
		for i := range s.RouteTables {
			if s.RouteTables[i].Name == rt.Name {
				s.RouteTables[i] = rt
				return
			}
		}
		s.RouteTables = append(s.RouteTables, rt)
	})
}

// DeleteRouteTable removes a route table; one that does not exist is fine.
func (f *Fabric) DeleteRouteTable(name string) error {
	return f.changeRouteTables(name, func(s *Spec) {
		s.RouteTables = slices.DeleteFunc(s.RouteTables, func(rt RouteTable) bool { return rt.Name == name })
	})
}

func (f *Fabric) changeRouteTables(name string, change func(*Spec)) error {
	f.opMu.Lock()
	defer f.opMu.Unlock()
	prev := f.Spec()
	next := prev.Clone()
	change(&next)
	if err := next.validateRouteTables(); err != nil {
		return err
	}
	fab, err := openNS(f.FabricNetNS())
	if err != nil {
		return err
	}
	defer fab.Close()
	if !f.sim && !sameAssociations(prev, next) {
		if err := syncNFT(fab, next); err != nil {
			return fmt.Errorf("route table %s: %w", name, err)
		}
	}
	if err := syncModelRoutes(fab, next, f.portOf); err != nil {
		return fmt.Errorf("route table %s: %w", name, err)
	}
	f.setSpec(next)
	return nil
}

// sameAssociations reports whether every subnet maps to the same kernel
// table in both specs.
func sameAssociations(a, b Spec) bool {
	for _, sn := range append(slices.Clone(a.Subnets), b.Subnets...) {
		i, ok := a.routeTableOf(sn)
		j, ok2 := b.routeTableOf(sn)
		if ok != ok2 || i != j {
			return false
		}
	}
	return true
}

// Simulate builds, for a spec of any size, only what the network models
// put in the fabric namespace — overlay routes and sets, route tables —
// with one interface (SimPort) standing for every VM's port: no VM
// namespaces, no per-port filters. It measures route programming at the
// scale of thousands of nodes; Destroy removes it.
func Simulate(spec Spec) (*Fabric, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("simulate fabric: %w", err)
	}
	f := Open(spec)
	f.sim = true
	name := f.FabricNetNS()
	if err := netns.Create(name); err != nil {
		return nil, err
	}
	fab, err := openNS(name)
	if err != nil {
		return nil, err
	}
	defer fab.Close()
	// A veth pair with both ends here: the dummy driver is not always
	// available.
	la := netlink.NewLinkAttrs()
	la.Name = SimPort
	if err := fab.nl.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: SimPort + "-peer"}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("add %s in netns %s: %w", SimPort, name, err)
	}
	// lo up: without a local table the kernel takes every next hop for a
	// broadcast address.
	for _, l := range []string{"lo", SimPort, SimPort + "-peer"} {
		if _, err := linkUp(fab, l); err != nil {
			return nil, err
		}
	}
	// Every NIC address is delivered by a /32 route, as Build's ports do
	// (and next hops must be reachable).
	sim, err := fab.nl.LinkByName(SimPort)
	if err != nil {
		return nil, fmt.Errorf("find %s in netns %s: %w", SimPort, name, err)
	}
	for _, v := range spec.VMs {
		for _, ip := range v.IPs() {
			r := &netlink.Route{LinkIndex: sim.Attrs().Index, Dst: ipNet(netip.PrefixFrom(ip, 32)), Scope: netlink.SCOPE_LINK}
			if err := fab.nl.RouteReplace(r); err != nil {
				return nil, fmt.Errorf("add route %s/32 dev %s: %w", ip, SimPort, err)
			}
		}
	}
	if err := syncModelRoutes(fab, spec, f.portOf); err != nil {
		return nil, err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(fab.fd)))
	if err != nil {
		return nil, fmt.Errorf("open nftables in netns %s: %w", name, err)
	}
	c.AddTable(ipTable)
	forward := c.AddChain(&nftables.Chain{Name: "forward", Table: ipTable, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: ptr(nftables.ChainPolicyAccept)})
	blocks, members, err := addOverlaySets(c, existing{}, spec)
	if err != nil {
		return nil, err
	}
	overlayRule(c, forward, blocks, members)
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("write nftables in netns %s: %w", name, err)
	}
	return f, nil
}

// TableSizes counts what the fabric namespace holds for the network
// models: routes in the main table and in the route tables' tables, and
// the overlay sets' elements.
func (f *Fabric) TableSizes() (mainRoutes, tableRoutes, setElements int, err error) {
	fab, err := openNS(f.FabricNetNS())
	if err != nil {
		return 0, 0, 0, err
	}
	defer fab.Close()
	all, err := dump(func() ([]netlink.Route, error) {
		return fab.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return 0, 0, 0, err
	}
	for _, r := range all {
		switch {
		case r.Table == unix.RT_TABLE_MAIN:
			mainRoutes++
		case r.Table >= RouteTableBase && r.Table < RouteTableBase+1000:
			tableRoutes++
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(fab.fd)))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, name := range []string{setOverlayBlocks, setOverlayMembers} {
		elems, err := c.GetSetElements(&nftables.Set{Table: ipTable, Name: name, Interval: true, KeyType: nftables.TypeIPAddr})
		if err != nil {
			continue // no overlay
		}
		for _, e := range elems {
			if !e.IntervalEnd {
				setElements++
			}
		}
	}
	return mainRoutes, tableRoutes, setElements, nil
}
