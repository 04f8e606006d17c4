package fabric

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// podAddr gives a VM an address of its pod CIDR, as a pod would have
// behind it (on eth0, /32: the VM routes everything else as before). The
// VM keeps asking ARP from its primary address, as it does for the pods it
// forwards for.
func podAddr(t *testing.T, f *Fabric, vm string, ip netip.Addr) {
	t.Helper()
	if err := sysctls(f.VMNetNS(vm), [][2]string{{"net/ipv4/conf/eth0/arp_announce", "2"}}); err != nil {
		t.Fatal(err)
	}
	vmLink(t, f, vm, func(h *netlink.Handle, eth0 netlink.Link) error {
		return h.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, 32))})
	})
}

var (
	block1 = netip.MustParsePrefix("10.244.0.0/24")
	block2 = netip.MustParsePrefix("10.244.1.0/24")
	pod1   = netip.MustParseAddr("10.244.0.2")
	pod2   = netip.MustParseAddr("10.244.1.2")
)

// Azure CNI Overlay: the fabric routes each node's block to its NIC, admits
// the block from that NIC only, and only the cluster's members reach it.
func TestOverlay(t *testing.T) {
	spec := testSpec(t)
	spec.VMs[0].PodCIDR = block1
	spec.VMs[1].PodCIDR = block2
	f := buildFabric(t, spec)
	podAddr(t, f, "vm1", pod1)
	podAddr(t, f, "vm2", pod2)

	mustPing(t, f, "vm1", pod1, pod2)           // pod ↔ pod across nodes, no NAT, no encapsulation
	mustPing(t, f, "vm1", vm1IP, pod2)          // node → pod on another node
	mustNotPing(t, f, "vm3", vm3IP, pod2)       // a VM outside the cluster: no route for it
	stolen := netip.MustParseAddr("10.244.1.9") // in vm2's block
	podAddr(t, f, "vm1", stolen)
	before, _ := counters(t, f)
	mustNotPing(t, f, "vm1", stolen, vm2IP)
	after, _ := counters(t, f)
	if after["vm1"].BadIP <= before["vm1"].BadIP {
		t.Errorf("vm1 sending from %s (vm2's block): bad_ip %d → %d, want it counted", stolen, before["vm1"].BadIP, after["vm1"].BadIP)
	}
}

// kubenet: a route table on the nodes' subnet carries each node's pod CIDR
// to the node; VMs in other subnets have no such route.
func TestRouteTable(t *testing.T) {
	spec := testSpec(t)
	spec.VMs[0].IPForwarding = true
	spec.VMs[1].IPForwarding = true
	f := buildFabric(t, spec)
	podAddr(t, f, "vm1", pod1)
	podAddr(t, f, "vm2", pod2)
	mustNotPing(t, f, "vm1", pod1, pod2) // no route yet

	rt := RouteTable{Name: "kubenet", Subnets: []netip.Prefix{spec.Subnets[0]}, Routes: []Route{
		{Name: "vm1", AddressPrefix: block1, NextHop: vm1IP},
		{Name: "vm2", AddressPrefix: block2, NextHop: vm2IP},
	}}
	if err := f.SetRouteTable(rt); err != nil {
		t.Fatalf("SetRouteTable: %v", err)
	}
	mustPing(t, f, "vm1", pod1, pod2)
	mustPing(t, f, "vm2", pod2, pod1)
	mustNotPing(t, f, "vm3", vm3IP, pod2) // vm3's subnet has no route table

	// A route removed stops at once; the table is the whole truth.
	rt.Routes = rt.Routes[:1]
	if err := f.SetRouteTable(rt); err != nil {
		t.Fatalf("SetRouteTable with one route: %v", err)
	}
	mustNotPing(t, f, "vm1", pod1, pod2)

	// At most 400 routes: the 401st is refused and nothing changes.
	for i := 1; i <= MaxRoutesPerTable; i++ {
		rt.Routes = append(rt.Routes, Route{Name: fmt.Sprintf("r%d", i), AddressPrefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)}), 32), NextHop: vm2IP})
	}
	var rte *RouteTableError
	if err := f.SetRouteTable(rt); !errors.As(err, &rte) {
		t.Fatalf("SetRouteTable with %d routes = %v, want a RouteTableError", len(rt.Routes), err)
	}
	if got := len(f.Spec().RouteTables[0].Routes); got != 1 {
		t.Errorf("after a refused update the table has %d routes, want 1", got)
	}
	if err := f.DeleteRouteTable("kubenet"); err != nil {
		t.Fatalf("DeleteRouteTable: %v", err)
	}
	mustNotPing(t, f, "vm1", vm1IP, pod2)
}
