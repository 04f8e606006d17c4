// Package fabric emulates an Azure virtual network's software-defined
// network with Linux network namespaces, so the CNI plugin can be tested
// against the fabric's rules without Azure:
//
//   - A frame leaving a VM's NIC is accepted only if its source MAC is the
//     NIC's MAC and its source IP is one of the NIC's IP configurations;
//     other frames are dropped and counted.
//   - Traffic for every IP configuration of a NIC is delivered with the NIC's
//     MAC as destination; the fabric never ARPs for it.
//   - The fabric answers ARP for VNet addresses with VirtualMAC, but not for
//     a VM's own addresses, and not for VNet addresses no NIC holds.
//   - 168.63.129.16 (wireserver: DNS, HTTP) and 169.254.169.254 (IMDS) answer
//     each VM about its own NIC, identifying it by source address.
//   - Outbound internet traffic from a VM's primary address is SNATed to its
//     public address; from any other source it is dropped and counted.
//
// One namespace, <name>-fab, is the fabric: one veth port p-<vm> per VM,
// routes, permanent neighbours and nftables. Each VM is a namespace
// <name>-<vm> whose eth0 is the NIC, and <name>-inet holds an internet
// host. See Build for the kernel objects.
package fabric

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Addresses and names of the emulated Azure services and of the lab's
// internet. They are values, not settings: treat them as constants.
var (
	// WireserverIP serves DNS (53), the NMAgent HTTP API (80) and a
	// management HTTP port (WireserverManagementPort).
	WireserverIP = netip.MustParseAddr("168.63.129.16")
	// IMDSIP serves the Instance Metadata Service on port 80.
	IMDSIP = netip.MustParseAddr("169.254.169.254")
	// InternetPrefix is the link between the fabric and the internet host.
	InternetPrefix = netip.MustParsePrefix("203.0.113.0/24")
	// InternetGatewayIP is the fabric's address on the internet link.
	InternetGatewayIP = netip.MustParseAddr("203.0.113.1")
	// InternetHostIP is the internet host; its HTTP server on port 80
	// answers with the caller's source address.
	InternetHostIP = netip.MustParseAddr("203.0.113.100")
	// PublicPrefix holds the VMs' public addresses.
	PublicPrefix = netip.MustParsePrefix("198.51.100.0/24")
	// VirtualMAC is the MAC of every fabric port, the answer to every ARP
	// request the fabric answers.
	VirtualMAC = HardwareAddr{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}
)

// Service ports and DNS names.
const (
	WireserverManagementPort = 32526
	// DNSSuffix: <vm>.DNSSuffix resolves to the VM's primary address.
	DNSSuffix = "internal.cloudapp.net"
	// InternetHostName resolves to InternetHostIP.
	InternetHostName = "internet.test"
)

// Length limits that keep every namespace and interface name valid.
const (
	MaxNameLen   = 12
	MaxVMNameLen = 10
)

// HardwareAddr is a MAC address that encodes as "00:0d:3a:..." in JSON.
type HardwareAddr net.HardwareAddr

// String formats the address as "00:0d:3a:6e:18:25".
func (a HardwareAddr) String() string { return net.HardwareAddr(a).String() }

// MarshalText implements encoding.TextMarshaler.
func (a HardwareAddr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts what
// net.ParseMAC accepts.
func (a *HardwareAddr) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*a = nil
		return nil
	}
	m, err := net.ParseMAC(string(b))
	if err != nil {
		return err
	}
	*a = HardwareAddr(m)
	return nil
}

// Spec describes a virtual network and its VMs, one NIC per VM.
type Spec struct {
	// Name prefixes every namespace the fabric creates; [a-z0-9-], at
	// most MaxNameLen characters.
	Name string `json:"name"`
	// VNet is the virtual network's address space.
	VNet []netip.Prefix `json:"vnet"`
	// Subnets lie inside VNet; each is /29 or larger.
	Subnets []netip.Prefix `json:"subnets"`
	VMs     []VMSpec       `json:"vms"`
	// LoadBalancers are internal load balancers with a VIP in a subnet.
	LoadBalancers []LoadBalancer `json:"loadBalancers,omitempty"`
	// NSGs filter inbound traffic of subnets.
	NSGs []NSG `json:"nsgs,omitempty"`
	// Image is how the VMs boot: Azure's images differ from a clean VM.
	Image Image `json:"image,omitempty"`
	// RouteTables are user-defined routes (kubenet's), each applied to
	// the traffic that NICs of its subnets send.
	RouteTables []RouteTable `json:"routeTables,omitempty"`
}

// MaxRoutesPerTable is Azure's limit of routes in one route table, and so
// kubenet's limit of 400 nodes per cluster (seed 002).
const MaxRoutesPerTable = 400

// RouteTable is a subnet route table: its routes apply to what NICs in
// its subnets send, and to nothing else.
type RouteTable struct {
	Name    string         `json:"name"`
	Subnets []netip.Prefix `json:"subnets"`
	Routes  []Route        `json:"routes,omitempty"`
}

// Route sends AddressPrefix to the NIC holding NextHop (a virtual
// appliance, in Azure's terms: here a node, whose NIC has IP forwarding
// on). A next hop no NIC holds drops the traffic.
type Route struct {
	Name          string       `json:"name"`
	AddressPrefix netip.Prefix `json:"addressPrefix"`
	NextHop       netip.Addr   `json:"nextHopIpAddress"`
}

// Image lists traits of VM images as Azure boots them, which a clean VM
// lacks. They are applied when a VM is first provisioned.
type Image struct {
	// SecondariesOnEth0: cloud-init's Azure datasource
	// (apply_network_config_for_secondary_ips, on by default in many
	// images) puts every secondary IP of the NIC on eth0.
	SecondariesOnEth0 bool `json:"secondariesOnEth0,omitempty"`
	// ForwardDrop: a firewall with a FORWARD policy of DROP, as Docker
	// sets (iptables -P FORWARD DROP; with iptables-nft, the chain FORWARD
	// of table ip filter).
	ForwardDrop bool `json:"forwardDrop,omitempty"`
	// DHCP: the VM's network manager keeps eth0's address and default
	// route from the fabric's DHCP (Azure's: the primary IP, the subnet's
	// gateway, infinite lease), and re-applies them at each renewal. The
	// fabric always answers DHCP; this trait runs a client (DHCPClient) in
	// each VM, started by whoever serves the fabric (the lab's daemon,
	// the tests).
	DHCP bool `json:"dhcp,omitempty"`
}

// RealImage is the traits test suites meet by default; DHCP, which runs a
// client process per VM, is asked for by the tests of it and lab up --dhcp.
var RealImage = Image{SecondariesOnEth0: true, ForwardDrop: true}

// VMSpec describes a VM and its NIC.
type VMSpec struct {
	// Name is [a-z0-9-], at most MaxVMNameLen characters, and neither
	// "fab" nor "inet".
	Name string       `json:"name"`
	MAC  HardwareAddr `json:"mac"`
	// Subnet is one of Spec.Subnets.
	Subnet    netip.Prefix `json:"subnet"`
	PrimaryIP netip.Addr   `json:"primaryIP"`
	// SecondaryIPs are the NIC's further IP configurations (the pod pool).
	SecondaryIPs []netip.Addr `json:"secondaryIPs,omitempty"`
	// PublicIP, in PublicPrefix, is what the primary address is SNATed to
	// on the way to the internet. Without one the VM has no outbound
	// internet access.
	PublicIP netip.Addr `json:"publicIP,omitzero"`
	// PodCIDR is the node's block of an Azure CNI Overlay cluster: the
	// fabric routes it to this NIC, without encapsulation, for the
	// cluster's members (the VMs with a PodCIDR, and their pods) only, and
	// admits it as a source from this NIC only.
	PodCIDR netip.Prefix `json:"podCIDR,omitzero"`
	// IPForwarding is the NIC's "enable IP forwarding": it may send from
	// any source address (a kubenet node routing its pods). Its MAC and
	// ARP are still checked.
	IPForwarding bool `json:"ipForwarding,omitempty"`
}

// IPs returns the NIC's IP configurations, primary first.
func (v VMSpec) IPs() []netip.Addr {
	return append([]netip.Addr{v.PrimaryIP}, v.SecondaryIPs...)
}

// Gateway is the subnet's default gateway: its first host address.
func Gateway(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr().Next() }

// Reserved reports whether Azure reserves ip in subnet: the first four
// addresses (network, gateway, two for DNS) and the last (broadcast).
func Reserved(subnet netip.Prefix, ip netip.Addr) bool {
	first := subnet.Masked().Addr()
	for i := 0; i < 4; i++ {
		if ip == first {
			return true
		}
		first = first.Next()
	}
	return ip == lastAddr(subnet)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Clone returns a deep copy.
func (s Spec) Clone() Spec {
	out := s
	out.VNet = slices.Clone(s.VNet)
	out.Subnets = slices.Clone(s.Subnets)
	out.LoadBalancers = slices.Clone(s.LoadBalancers)
	out.NSGs = slices.Clone(s.NSGs)
	out.RouteTables = make([]RouteTable, len(s.RouteTables))
	for i, rt := range s.RouteTables {
		rt.Subnets = slices.Clone(rt.Subnets)
		rt.Routes = slices.Clone(rt.Routes)
		out.RouteTables[i] = rt
	}
	if s.RouteTables == nil {
		out.RouteTables = nil
	}
	out.VMs = make([]VMSpec, len(s.VMs))
	for i, v := range s.VMs {
		v.MAC = slices.Clone(v.MAC)
		v.SecondaryIPs = slices.Clone(v.SecondaryIPs)
		out.VMs[i] = v
	}
	return out
}

// VM returns the VM named name.
func (s Spec) VM(name string) (VMSpec, bool) {
	for _, v := range s.VMs {
		if v.Name == name {
			return v, true
		}
	}
	return VMSpec{}, false
}

// Owner returns the VM that holds ip as primary or secondary address.
func (s Spec) Owner(ip netip.Addr) (VMSpec, bool) {
	for _, v := range s.VMs {
		if v.PrimaryIP == ip || slices.Contains(v.SecondaryIPs, ip) {
			return v, true
		}
	}
	return VMSpec{}, false
}

// addresses the VNet must not overlap: the lab's service and internet ranges.
var labRanges = []netip.Prefix{
	netip.PrefixFrom(WireserverIP, 32),
	netip.MustParsePrefix("169.254.0.0/16"),
	InternetPrefix,
	PublicPrefix,
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// Validate checks the spec before anything touches the kernel. Errors
// name the field and the bad value.
func (s Spec) Validate() error {
	if err := validName(s.Name, MaxNameLen); err != nil {
		return fmt.Errorf("name %q: %w", s.Name, err)
	}
	if len(s.VNet) == 0 {
		return errors.New("vnet: no address space")
	}
	for i, p := range s.VNet {
		if err := validPrefix(p); err != nil {
			return fmt.Errorf("vnet[%d] %s: %w", i, p, err)
		}
		for _, r := range labRanges {
			if p.Overlaps(r) {
				return fmt.Errorf("vnet[%d] %s: overlaps %s, which the lab uses", i, p, r)
			}
		}
		for j, q := range s.VNet[:i] {
			if p.Overlaps(q) {
				return fmt.Errorf("vnet[%d] %s: overlaps vnet[%d] %s", i, p, j, q)
			}
		}
	}
	for i, p := range s.Subnets {
		if err := validPrefix(p); err != nil {
			return fmt.Errorf("subnets[%d] %s: %w", i, p, err)
		}
		if p.Bits() > 29 {
			return fmt.Errorf("subnets[%d] %s: smaller than /29", i, p)
		}
		if !slices.ContainsFunc(s.VNet, func(v netip.Prefix) bool { return v.Bits() <= p.Bits() && v.Contains(p.Addr()) }) {
			return fmt.Errorf("subnets[%d] %s: not inside the vnet %v", i, p, s.VNet)
		}
		for j, q := range s.Subnets[:i] {
			if p.Overlaps(q) {
				return fmt.Errorf("subnets[%d] %s: overlaps subnets[%d] %s", i, p, j, q)
			}
		}
	}

	names := map[string]bool{}
	macs := map[string]bool{}
	ips := map[netip.Addr]string{}
	publics := map[netip.Addr]string{}
	for i, v := range s.VMs {
		field := fmt.Sprintf("vms[%d]", i)
		if err := validName(v.Name, MaxVMNameLen); err != nil {
			return fmt.Errorf("%s.name %q: %w", field, v.Name, err)
		}
		if v.Name == "fab" || v.Name == "inet" {
			return fmt.Errorf("%s.name %q: reserved for the fabric's own namespaces", field, v.Name)
		}
		if names[v.Name] {
			return fmt.Errorf("%s.name %q: used twice", field, v.Name)
		}
		names[v.Name] = true
		field = fmt.Sprintf("vm %s", v.Name)

		switch {
		case len(v.MAC) != 6:
			return fmt.Errorf("%s: mac %q: want 6 bytes", field, v.MAC)
		case v.MAC[0]&1 != 0:
			return fmt.Errorf("%s: mac %s: multicast", field, v.MAC)
		case slices.Equal(v.MAC, VirtualMAC):
			return fmt.Errorf("%s: mac %s: is the fabric's virtual MAC", field, v.MAC)
		case slices.Equal(v.MAC, HardwareAddr{0, 0, 0, 0, 0, 0}):
			return fmt.Errorf("%s: mac %s: all zero", field, v.MAC)
		case macs[v.MAC.String()]:
			return fmt.Errorf("%s: mac %s: used by another VM", field, v.MAC)
		}
		macs[v.MAC.String()] = true

		if !slices.Contains(s.Subnets, v.Subnet) {
			return fmt.Errorf("%s: subnet %s: not one of the spec's subnets %v", field, v.Subnet, s.Subnets)
		}
		for k, ip := range v.IPs() {
			what := "primaryIP"
			if k > 0 {
				what = fmt.Sprintf("secondaryIPs[%d]", k-1)
			}
			if err := usable(v.Subnet, ip); err != nil {
				return fmt.Errorf("%s: %s %s: %w", field, what, ip, err)
			}
			if other, dup := ips[ip]; dup {
				return fmt.Errorf("%s: %s %s: already used by vm %s", field, what, ip, other)
			}
			ips[ip] = v.Name
		}

		if v.PublicIP.IsValid() {
			p := v.PublicIP
			if !p.Is4() || !PublicPrefix.Contains(p) || p == PublicPrefix.Addr() || p == lastAddr(PublicPrefix) {
				return fmt.Errorf("%s: publicIP %s: want a host address in %s", field, p, PublicPrefix)
			}
			if other, dup := publics[p]; dup {
				return fmt.Errorf("%s: publicIP %s: already used by vm %s", field, p, other)
			}
			publics[p] = v.Name
		}
		if v.PodCIDR.IsValid() {
			if err := validPrefix(v.PodCIDR); err != nil {
				return fmt.Errorf("%s: podCIDR %s: %w", field, v.PodCIDR, err)
			}
			for _, w := range s.VMs[:i] {
				if w.PodCIDR.IsValid() && w.PodCIDR.Overlaps(v.PodCIDR) {
					return fmt.Errorf("%s: podCIDR %s: overlaps vm %s's %s", field, v.PodCIDR, w.Name, w.PodCIDR)
				}
			}
			for _, p := range s.VNet {
				if p.Overlaps(v.PodCIDR) {
					return fmt.Errorf("%s: podCIDR %s: overlaps the vnet %s", field, v.PodCIDR, p)
				}
			}
		}
	}
	if err := s.validateRouteTables(); err != nil {
		return err
	}
	return s.validateLB()
}

// usable reports why ip cannot be a NIC address in subnet.
func usable(subnet netip.Prefix, ip netip.Addr) error {
	switch {
	case !ip.Is4():
		return errors.New("not an IPv4 address")
	case !subnet.Contains(ip):
		return fmt.Errorf("outside subnet %s", subnet)
	case Reserved(subnet, ip):
		return fmt.Errorf("reserved by Azure in subnet %s", subnet)
	}
	return nil
}

func validPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("not a prefix")
	case !p.Addr().Is4():
		return errors.New("not IPv4")
	case p != p.Masked():
		return fmt.Errorf("host bits set, want %s", p.Masked())
	}
	return nil
}

func validName(s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("want 1 to %d characters", max)
	}
	for i, c := range s {
		ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' && i > 0
		if !ok {
			return errors.New("want lower-case letters, digits and inner dashes")
		}
	}
	return nil
}

// RouteTableError is a route table the fabric refuses, e.g. one route too
// many.
type RouteTableError struct {
	Table   string
	Problem string
}

func (e *RouteTableError) Error() string { return "route table " + e.Table + ": " + e.Problem }

// ValidateRouteTable checks one route table against the spec's subnets.
func (s Spec) ValidateRouteTable(rt RouteTable) error {
	bad := func(format string, a ...any) error {
		return &RouteTableError{Table: rt.Name, Problem: fmt.Sprintf(format, a...)}
	}
	if err := validName(rt.Name, 40); err != nil {
		return bad("name %q: %v", rt.Name, err)
	}
	if n := len(rt.Routes); n > MaxRoutesPerTable {
		return bad("%d routes: a route table holds at most %d", n, MaxRoutesPerTable)
	}
	for _, sn := range rt.Subnets {
		if !slices.Contains(s.Subnets, sn) {
			return bad("subnet %s: not one of the spec's subnets %v", sn, s.Subnets)
		}
	}
	names := map[string]bool{}
	for i, r := range rt.Routes {
		if names[r.Name] || r.Name == "" {
			return bad("routes[%d]: name %q empty or used twice", i, r.Name)
		}
		names[r.Name] = true
		if err := validPrefix(r.AddressPrefix); err != nil {
			return bad("routes[%d] %s: addressPrefix %s: %v", i, r.Name, r.AddressPrefix, err)
		}
		if !r.NextHop.Is4() {
			return bad("routes[%d] %s: nextHopIpAddress %s: not an IPv4 address", i, r.Name, r.NextHop)
		}
	}
	return nil
}

func (s Spec) validateRouteTables() error {
	seen := map[string]bool{}
	assoc := map[netip.Prefix]string{}
	for _, rt := range s.RouteTables {
		if err := s.ValidateRouteTable(rt); err != nil {
			return err
		}
		if seen[rt.Name] {
			return &RouteTableError{Table: rt.Name, Problem: "defined twice"}
		}
		seen[rt.Name] = true
		for _, sn := range rt.Subnets {
			if other, ok := assoc[sn]; ok {
				return &RouteTableError{Table: rt.Name, Problem: fmt.Sprintf("subnet %s is already associated with route table %s", sn, other)}
			}
			assoc[sn] = rt.Name
		}
	}
	return nil
}
