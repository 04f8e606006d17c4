package fabric

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// Build creates the fabric spec describes, or repairs it: every step
// ensures its object, so running Build on a complete fabric changes
// nothing and running it on a half-built or damaged one completes it.
// Build owns the fabric namespace and the internet namespace entirely. In
// a VM namespace it provisions the NIC like a VM's first boot (eth0 up
// with the primary address, default route via the subnet gateway) and
// afterwards only fills in what is missing, and nothing once eth0 is
// enslaved to a bridge: from then on the VM's OS (the CNI plugin) owns it.
//
// In the fabric namespace (<name>-fab):
//
//	lo: 168.63.129.16/32, 169.254.169.254/32, each subnet's gateway /32
//	internet: 203.0.113.1/24, veth to eth0 (203.0.113.100/24) in <name>-inet
//	default via 203.0.113.100; unreachable <each VNet prefix>
//	p-<vm>: veth to eth0 in <name>-<vm>, MAC 12:34:56:78:9a:bc, proxy_arp
//	per NIC address: <ip>/32 dev p-<vm>; neigh <ip> lladdr <NIC MAC> permanent
//	nftables: see the ruleset in nft_linux.go
//
// The spec is the whole truth: NIC addresses added with AddSecondaryIPs
// but missing from spec are unregistered. Build returns once the links it
// brought up are operational. It does not touch the root namespace.
func Build(spec Spec) (*Fabric, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("build fabric: %w", err)
	}
	f := Open(spec)
	f.opMu.Lock()
	defer f.opMu.Unlock()
	if err := build(f.spec); err != nil {
		return nil, fmt.Errorf("build fabric %s: %w", spec.Name, err)
	}
	return f, nil
}

func build(s Spec) error {
	// Namespaces, and the sysctls that must be in place before any
	// interface appears in them (IPv6 off, so no frame but IPv4 and ARP
	// ever leaves a VM on its own).
	fabName, inetName := fabricNS(s.Name), internetNS(s.Name)
	noIPv6 := [][2]string{{"net/ipv6/conf/all/disable_ipv6", "1"}, {"net/ipv6/conf/default/disable_ipv6", "1"}}
	if err := netns.Create(fabName); err != nil {
		return err
	}
	if err := sysctls(fabName, append(noIPv6,
		[2]string{"net/ipv4/ip_forward", "1"},
		// The nftables port filters are the anti-spoofing authority; the
		// namespace inherits the host's rp_filter otherwise.
		[2]string{"net/ipv4/conf/all/rp_filter", "0"},
		[2]string{"net/ipv4/conf/default/rp_filter", "0"},
		[2]string{"net/ipv4/conf/all/send_redirects", "0"},
		[2]string{"net/ipv4/conf/default/send_redirects", "0"},
	)); err != nil {
		return err
	}
	if err := netns.Create(inetName); err != nil {
		return err
	}
	if err := sysctls(inetName, append(noIPv6, [2]string{"net/ipv4/ip_forward", "0"})); err != nil {
		return err
	}
	for _, v := range s.VMs {
		name := vmNS(s.Name, v.Name)
		fresh := !netns.Exists(name)
		if err := netns.Create(name); err != nil {
			return err
		}
		kv := noIPv6
		if fresh {
			// A new VM does not forward until it is installed (vnetctl install,
			// the lab's installVM) or its first ADD.
			kv = append(slices.Clone(noIPv6), [2]string{"net/ipv4/ip_forward", "0"})
		}
		if err := sysctls(name, kv); err != nil {
			return err
		}
	}

	fab, err := openNS(fabName)
	if err != nil {
		return err
	}
	defer fab.Close()
	inet, err := openNS(inetName)
	if err != nil {
		return err
	}
	defer inet.Close()
	if err := buildBase(fab, inet, s); err != nil {
		return err
	}

	// Ports: the veth pairs first, filters before the ports come up.
	vms := make(map[string]*nsConn, len(s.VMs))
	for _, v := range s.VMs {
		c, err := openNS(vmNS(s.Name, v.Name))
		if err != nil {
			return err
		}
		defer c.Close()
		vms[v.Name] = c
		if _, err := ensurePair(fab, PortName(v.Name), net.HardwareAddr(VirtualMAC), c, "eth0", net.HardwareAddr(v.MAC)); err != nil {
			return err
		}
	}
	if err := removeStalePorts(fab, s); err != nil {
		return err
	}
	var portConf [][2]string
	for _, v := range s.VMs {
		p := PortName(v.Name)
		portConf = append(portConf,
			[2]string{"net/ipv4/conf/" + p + "/proxy_arp", "1"},
			// Answer ARP at once instead of after a random delay of up to 0.8 s.
			[2]string{"net/ipv4/neigh/" + p + "/proxy_delay", "0"})
	}
	if err := sysctls(fabName, portConf); err != nil {
		return err
	}
	if err := syncNFT(fab, s); err != nil {
		return err
	}
	ready := []endpoint{{fab, internetDev}, {inet, "eth0"}}
	for _, v := range s.VMs {
		port, err := fab.nl.LinkByName(PortName(v.Name))
		if err != nil {
			return fmt.Errorf("find port %s: %w", PortName(v.Name), err)
		}
		if err := fab.nl.LinkSetUp(port); err != nil {
			return fmt.Errorf("set port %s up: %w", PortName(v.Name), err)
		}
		if err := syncPortRoutes(fab, port, v); err != nil {
			return err
		}
		managed, err := provisionVM(vms[v.Name], v, s.Image)
		if err != nil {
			return err
		}
		if managed {
			ready = append(ready, endpoint{fab, PortName(v.Name)}, endpoint{vms[v.Name], "eth0"})
		}
	}
	if err := syncModelRoutes(fab, s, func(v VMSpec) string { return PortName(v.Name) }); err != nil {
		return err
	}
	return waitOperUp(ready)
}

// bootImage applies an image's traits to a VM being provisioned.
func bootImage(c *nsConn, eth0 netlink.Link, v VMSpec, img Image) error {
	if img.SecondariesOnEth0 {
		for _, a := range v.SecondaryIPs {
			// Equivalent to: ip addr add A/BITS brd + dev eth0, as
			// networkd configures what cloud-init rendered.
			p := netip.PrefixFrom(a, v.Subnet.Bits())
			if err := c.nl.AddrReplace(eth0, &netlink.Addr{IPNet: ipNet(p), Broadcast: broadcast(p)}); err != nil {
				return fmt.Errorf("add %s to eth0 in netns %s: %w", p, c.name, err)
			}
		}
	}
	if img.ForwardDrop {
		// Equivalent to: iptables-nft -P FORWARD DROP.
		nc, err := nftables.New(nftables.WithNetNSFd(int(c.fd)))
		if err != nil {
			return fmt.Errorf("open nftables in netns %s: %w", c.name, err)
		}
		t := nc.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
		drop := nftables.ChainPolicyDrop
		nc.AddChain(&nftables.Chain{Table: t, Name: "FORWARD", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		if err := nc.Flush(); err != nil {
			return fmt.Errorf("set the FORWARD policy to drop in netns %s: %w", c.name, err)
		}
	}
	return nil
}

// broadcast is a prefix's broadcast address.
func broadcast(p netip.Prefix) net.IP {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return net.IP(b[:])
}

// endpoint is an interface in a namespace.
type endpoint struct {
	c   *nsConn
	dev string
}

// operUpTimeout bounds the wait for new links to come up.
const operUpTimeout = 10 * time.Second

// waitOperUp waits until the interfaces report the operational state up.
// On a busy machine a veth whose carrier just came on can drop the first
// packet it transmits (counted as TX dropped): in stress runs, with other
// fabrics being built and destroyed in parallel, the first ping through a
// new port was lost in about one run in six without this wait and never
// with it. The kernel activates a link from its link-watch worker, which
// competes for the RTNL lock with namespace teardown.
func waitOperUp(eps []endpoint) error {
	deadline := time.Now().Add(operUpTimeout)
	for _, ep := range eps {
		for {
			l, err := ep.c.nl.LinkByName(ep.dev)
			if err != nil {
				return fmt.Errorf("find %s in netns %s: %w", ep.dev, ep.c.name, err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("wait for %s in netns %s to come up: still %s after %v", ep.dev, ep.c.name, l.Attrs().OperState, operUpTimeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// systemNoneRoutes are the ranges Azure's system routes drop unless the
// VNet (or a more specific route) covers them.
var systemNoneRoutes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// buildBase sets up the fabric's loopback addresses, the internet link and
// the routes that do not depend on VMs.
func buildBase(fab, inet *nsConn, s Spec) error {
	lo, err := linkUp(fab, "lo")
	if err != nil {
		return err
	}
	local := []netip.Addr{WireserverIP, IMDSIP}
	for _, sn := range s.Subnets {
		local = append(local, Gateway(sn))
	}
	// The fabric answers ARP for load balancer frontends and translates
	// their ports before routing.
	for _, lb := range s.LoadBalancers {
		local = append(local, lb.VIP)
	}
	for _, a := range local {
		if err := fab.nl.AddrReplace(lo, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, 32))}); err != nil {
			return fmt.Errorf("add %s/32 to lo in netns %s: %w", a, fab.name, err)
		}
	}

	if _, err := ensurePair(fab, internetDev, nil, inet, "eth0", nil); err != nil {
		return err
	}
	for _, end := range []struct {
		c    *nsConn
		dev  string
		addr netip.Addr
	}{{fab, internetDev, InternetGatewayIP}, {inet, "eth0", InternetHostIP}} {
		l, err := end.c.nl.LinkByName(end.dev)
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", end.dev, end.c.name, err)
		}
		a := netip.PrefixFrom(end.addr, InternetPrefix.Bits())
		if err := end.c.nl.AddrReplace(l, &netlink.Addr{IPNet: ipNet(a)}); err != nil {
			return fmt.Errorf("add %s to %s in netns %s: %w", a, end.dev, end.c.name, err)
		}
		if err := end.c.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up in netns %s: %w", end.dev, end.c.name, err)
		}
	}
	if _, err := linkUp(inet, "lo"); err != nil {
		return err
	}
	if err := inet.nl.RouteReplace(&netlink.Route{Dst: ipNet(PublicPrefix), Gw: InternetGatewayIP.AsSlice()}); err != nil {
		return fmt.Errorf("add route %s via %s in netns %s: %w", PublicPrefix, InternetGatewayIP, inet.name, err)
	}
	if err := fab.nl.RouteReplace(&netlink.Route{Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: InternetHostIP.AsSlice()}); err != nil {
		return fmt.Errorf("add default route via %s in netns %s: %w", InternetHostIP, fab.name, err)
	}
	// Azure's system routes send the private ranges outside the VNet
	// nowhere (next hop None), not to the internet: a pod CIDR no route
	// covers, for one.
	for _, p := range systemNoneRoutes {
		if err := fab.nl.RouteReplace(&netlink.Route{Dst: ipNet(p), Type: unix.RTN_BLACKHOLE}); err != nil {
			return fmt.Errorf("add blackhole route %s in netns %s: %w", p, fab.name, err)
		}
	}
	// VNet addresses no NIC holds go nowhere: not to the internet, and
	// proxy ARP does not answer for them.
	for _, p := range s.VNet {
		if err := fab.nl.RouteReplace(&netlink.Route{Dst: ipNet(p), Type: unix.RTN_UNREACHABLE}); err != nil {
			return fmt.Errorf("add unreachable route %s in netns %s: %w", p, fab.name, err)
		}
	}
	return nil
}

// provisionVM gives a VM's NIC the configuration Azure's DHCP would: up,
// primary address with the subnet's prefix length, default route via the
// subnet gateway. It only adds what is missing and leaves an eth0 that is
// enslaved alone; it reports whether it managed eth0. On the first
// provisioning (no primary address yet) it applies the image's traits.
func provisionVM(c *nsConn, v VMSpec, img Image) (bool, error) {
	if _, err := linkUp(c, "lo"); err != nil {
		return false, err
	}
	eth0, err := c.nl.LinkByName("eth0")
	if err != nil {
		return false, fmt.Errorf("find eth0 in netns %s: %w", c.name, err)
	}
	if eth0.Attrs().MasterIndex != 0 {
		return false, nil
	}
	if err := c.nl.LinkSetUp(eth0); err != nil {
		return false, fmt.Errorf("set eth0 up in netns %s: %w", c.name, err)
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return c.nl.AddrList(eth0, netlink.FAMILY_V4) })
	if err != nil {
		return false, fmt.Errorf("list addresses of eth0 in netns %s: %w", c.name, err)
	}
	primary := netip.PrefixFrom(v.PrimaryIP, v.Subnet.Bits())
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return prefixOf(a.IPNet) == primary }) {
		if err := c.nl.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(primary)}); err != nil {
			return false, fmt.Errorf("add %s to eth0 in netns %s: %w", primary, c.name, err)
		}
		if err := bootImage(c, eth0, v, img); err != nil {
			return false, err
		}
	}
	routes, err := dump(func() ([]netlink.Route, error) { return c.nl.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return false, fmt.Errorf("list routes in netns %s: %w", c.name, err)
	}
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst == nil || prefixOf(r.Dst).Bits() == 0 }) {
		gw := Gateway(v.Subnet)
		r := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gw.AsSlice()}
		if err := c.nl.RouteAdd(r); err != nil {
			return false, fmt.Errorf("add default route via %s in netns %s: %w", gw, c.name, err)
		}
	}
	return true, nil
}

// syncPortRoutes makes the routes and permanent neighbour entries on a
// port exactly the NIC's addresses.
// Equivalent to: ip route replace IP/32 dev p-VM; ip neigh replace IP lladdr MAC dev p-VM nud permanent.
func syncPortRoutes(fab *nsConn, port netlink.Link, v VMSpec) error {
	want := v.IPs()
	idx := port.Attrs().Index
	routes, err := dump(func() ([]netlink.Route, error) { return fab.nl.RouteList(port, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", port.Attrs().Name, err)
	}
	var errs []error
	for _, r := range routes {
		if p := prefixOf(r.Dst); p.Bits() == 32 && !slices.Contains(want, p.Addr()) {
			if err := fab.nl.RouteDel(&r); err != nil && !notFound(err) {
				errs = append(errs, fmt.Errorf("delete stale route %s dev %s: %w", p, port.Attrs().Name, err))
			}
		}
	}
	neighs, err := dump(func() ([]netlink.Neigh, error) { return fab.nl.NeighList(idx, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", port.Attrs().Name, err)
	}
	for _, n := range neighs {
		ip, _ := netip.AddrFromSlice(n.IP)
		if n.State&netlink.NUD_PERMANENT != 0 && !slices.Contains(want, ip.Unmap()) {
			if err := fab.nl.NeighDel(&n); err != nil && !notFound(err) {
				errs = append(errs, fmt.Errorf("delete stale neighbour %s dev %s: %w", ip, port.Attrs().Name, err))
			}
		}
	}
	if err := addPortIPs(fab, port, v.MAC, want); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// addPortIPs adds the route and the permanent neighbour entry of NIC
// addresses on their port.
func addPortIPs(fab *nsConn, port netlink.Link, mac HardwareAddr, ips []netip.Addr) error {
	var errs []error
	for _, ip := range ips {
		r := &netlink.Route{LinkIndex: port.Attrs().Index, Dst: ipNet(netip.PrefixFrom(ip, 32)), Scope: netlink.SCOPE_LINK}
		if err := fab.nl.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("add route %s/32 dev %s: %w", ip, port.Attrs().Name, err))
		}
		n := &netlink.Neigh{LinkIndex: port.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: net.HardwareAddr(mac)}
		if err := fab.nl.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("add neighbour %s lladdr %s dev %s: %w", ip, mac, port.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// delPortIPs removes what addPortIPs added; what is already gone is fine.
func delPortIPs(fab *nsConn, port netlink.Link, ips []netip.Addr) error {
	var errs []error
	for _, ip := range ips {
		n := &netlink.Neigh{LinkIndex: port.Attrs().Index, Family: netlink.FAMILY_V4, IP: ip.AsSlice()}
		if err := fab.nl.NeighDel(n); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete neighbour %s dev %s: %w", ip, port.Attrs().Name, err))
		}
		r := &netlink.Route{LinkIndex: port.Attrs().Index, Dst: ipNet(netip.PrefixFrom(ip, 32)), Scope: netlink.SCOPE_LINK}
		if err := fab.nl.RouteDel(r); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete route %s/32 dev %s: %w", ip, port.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// removeStalePorts deletes ports of VMs the spec no longer has.
func removeStalePorts(fab *nsConn, s Spec) error {
	links, err := dump(fab.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list links in netns %s: %w", fab.name, err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		vm, ok := strings.CutPrefix(name, "p-")
		if _, known := s.VM(vm); !ok || known || l.Type() != "veth" {
			continue
		}
		if err := fab.nl.LinkDel(l); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete stale port %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// ensurePair makes near (in a) and far (in b) the two ends of one veth,
// re-creating the pair when an end is missing or the ends are not peers
// (a half-built fabric, or a namespace deleted by hand). It reports
// whether it created the pair. A new pair's interfaces are down.
// Equivalent to: ip -n A link add NEAR address MAC type veth peer name FAR netns B address MAC.
func ensurePair(a *nsConn, near string, nearMAC net.HardwareAddr, b *nsConn, far string, farMAC net.HardwareAddr) (bool, error) {
	l1, err1 := a.nl.LinkByName(near)
	if err1 != nil && !linkNotFound(err1) {
		return false, fmt.Errorf("find %s in netns %s: %w", near, a.name, err1)
	}
	l2, err2 := b.nl.LinkByName(far)
	if err2 != nil && !linkNotFound(err2) {
		return false, fmt.Errorf("find %s in netns %s: %w", far, b.name, err2)
	}
	if err1 == nil && err2 == nil && isPeer(l1, l2) {
		return false, nil
	}
	if err1 == nil {
		if err := a.nl.LinkDel(l1); err != nil && !notFound(err) {
			return false, fmt.Errorf("delete unpaired %s in netns %s: %w", near, a.name, err)
		}
	}
	if err2 == nil {
		if err := b.nl.LinkDel(l2); err != nil && !notFound(err) {
			return false, fmt.Errorf("delete unpaired %s in netns %s: %w", far, b.name, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: near, HardwareAddr: nearMAC},
		PeerName:         far,
		PeerHardwareAddr: farMAC,
		PeerNamespace:    netlink.NsFd(b.fd),
	}
	if err := a.nl.LinkAdd(veth); err != nil {
		return false, fmt.Errorf("add veth %s (netns %s) peer %s (netns %s): %w", near, a.name, far, b.name, err)
	}
	return true, nil
}

func isPeer(l1, l2 netlink.Link) bool {
	_, ok1 := l1.(*netlink.Veth)
	_, ok2 := l2.(*netlink.Veth)
	return ok1 && ok2 && l1.Attrs().ParentIndex == l2.Attrs().Index && l2.Attrs().ParentIndex == l1.Attrs().Index
}

// Destroy removes every namespace of the fabric spec describes, and with
// them every interface, route and rule the fabric made. Namespaces that
// are already gone are fine. Stop the fabric's Services first: a socket
// keeps its namespace alive after its name is removed.
// Equivalent to: ip netns delete NAME-... for each.
func Destroy(spec Spec) error {
	if err := validName(spec.Name, MaxNameLen); err != nil {
		return fmt.Errorf("destroy fabric: name %q: %w", spec.Name, err)
	}
	names := []string{}
	for _, v := range spec.VMs {
		if err := validName(v.Name, MaxVMNameLen); err != nil {
			return fmt.Errorf("destroy fabric %s: vm name %q: %w", spec.Name, v.Name, err)
		}
		names = append(names, vmNS(spec.Name, v.Name))
	}
	names = append(names, fabricNS(spec.Name), internetNS(spec.Name))
	var errs []error
	for _, n := range names {
		if err := netns.Delete(n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy fabric %s: %w", spec.Name, err)
	}
	return nil
}

// AddSecondaryIPs registers further IP configurations on a VM's NIC: for
// each, the port's filter set admits it, a /32 route and a permanent
// neighbour entry deliver to it, and from then on the wireserver and IMDS
// list it. Addresses the NIC already has are skipped.
func (f *Fabric) AddSecondaryIPs(vm string, ips ...netip.Addr) error {
	f.opMu.Lock()
	defer f.opMu.Unlock()
	next := f.Spec()
	i := slices.IndexFunc(next.VMs, func(v VMSpec) bool { return v.Name == vm })
	if i < 0 {
		return fmt.Errorf("add secondary IPs to vm %s: no such vm", vm)
	}
	v := &next.VMs[i]
	var added []netip.Addr
	for _, ip := range ips {
		if !slices.Contains(v.IPs(), ip) {
			v.SecondaryIPs = append(v.SecondaryIPs, ip)
			added = append(added, ip)
		}
	}
	if err := next.Validate(); err != nil {
		return fmt.Errorf("add secondary IPs %v to vm %s: %w", ips, vm, err)
	}
	if err := f.applyIPs(*v, added, nil); err != nil {
		return fmt.Errorf("add secondary IPs %v to vm %s: %w", added, vm, err)
	}
	f.setSpec(next)
	return nil
}

// RemoveSecondaryIPs unregisters IP configurations of a VM's NIC: the
// wireserver and IMDS stop listing them first, then the fabric stops
// admitting and delivering them. Addresses the NIC does not have are
// skipped; the primary address cannot be removed.
func (f *Fabric) RemoveSecondaryIPs(vm string, ips ...netip.Addr) error {
	f.opMu.Lock()
	defer f.opMu.Unlock()
	next := f.Spec()
	i := slices.IndexFunc(next.VMs, func(v VMSpec) bool { return v.Name == vm })
	if i < 0 {
		return fmt.Errorf("remove secondary IPs from vm %s: no such vm", vm)
	}
	v := &next.VMs[i]
	var removed []netip.Addr
	for _, ip := range ips {
		if ip == v.PrimaryIP {
			return fmt.Errorf("remove secondary IPs from vm %s: %s is the primary address", vm, ip)
		}
		if k := slices.Index(v.SecondaryIPs, ip); k >= 0 {
			v.SecondaryIPs = slices.Delete(v.SecondaryIPs, k, k+1)
			removed = append(removed, ip)
		}
	}
	f.setSpec(next)
	if err := f.applyIPs(*v, nil, removed); err != nil {
		return fmt.Errorf("remove secondary IPs %v from vm %s: %w", removed, vm, err)
	}
	return nil
}

// applyIPs brings a port's filter set to v's addresses (one nftables
// transaction) and adds or removes routes and neighbours.
func (f *Fabric) applyIPs(v VMSpec, added, removed []netip.Addr) error {
	fab, err := openNS(f.FabricNetNS())
	if err != nil {
		return err
	}
	defer fab.Close()
	port, err := fab.nl.LinkByName(PortName(v.Name))
	if err != nil {
		return fmt.Errorf("find port %s in netns %s: %w", PortName(v.Name), fab.name, err)
	}
	if err := syncPortSet(fab, v); err != nil {
		return err
	}
	return errors.Join(addPortIPs(fab, port, v.MAC, added), delPortIPs(fab, port, removed))
}

// Counters returns, per VM, the frames its port dropped, and the number of
// packets dropped on the way to the internet because their source was no
// VM's primary address with a public address.
func (f *Fabric) Counters() (map[string]PortCounters, uint64, error) {
	fab, err := openNS(f.FabricNetNS())
	if err != nil {
		return nil, 0, fmt.Errorf("read fabric counters: %w", err)
	}
	defer fab.Close()
	ports, noPublic, err := readCounters(fab, f.Spec())
	if err != nil {
		return nil, 0, fmt.Errorf("read fabric counters: %w", err)
	}
	return ports, noPublic, nil
}

// nsConn is a namespace opened for configuration: a netlink handle bound to
// it, and its file descriptor for nftables connections.
type nsConn struct {
	name string
	fd   vnetns.NsHandle
	nl   *netlink.Handle
}

func openNS(name string) (*nsConn, error) {
	h, err := netns.Open(netns.Path(name))
	if err != nil {
		return nil, err
	}
	return &nsConn{name: name, fd: h.Fd, nl: h.Netlink}, nil
}

func (c *nsConn) Close() {
	c.nl.Close()
	c.fd.Close()
}

// sysctls writes sysctls (paths under /proc/sys) inside a namespace: the
// kernel resolves /proc/sys/net by the writing thread's namespace.
// Equivalent to: ip netns exec NS sysctl -w KEY=VALUE.
func sysctls(ns string, kv [][2]string) error {
	if len(kv) == 0 {
		return nil
	}
	return netns.Do(ns, func() error {
		var errs []error
		for _, e := range kv {
			if err := os.WriteFile(filepath.Join("/proc/sys", e[0]), []byte(e[1]), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("set %s=%s in netns %s: %w", strings.ReplaceAll(e[0], "/", "."), e[1], ns, err))
			}
		}
		return errors.Join(errs...)
	})
}

func linkUp(c *nsConn, name string) (netlink.Link, error) {
	l, err := c.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s in netns %s: %w", name, c.name, err)
	}
	if err := c.nl.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up in netns %s: %w", name, c.name, err)
	}
	return l, nil
}

// dump retries a netlink dump the kernel interrupted because the table
// changed underneath it.
func dump[T any](fn func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := fn()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 10 {
			continue
		}
		return v, err
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func linkNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || notFound(err)
}

func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL)
}
