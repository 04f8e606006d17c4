package datapath

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
	"github.com/vnetcni/vnetcni/internal/store"
)

// nicNS makes a namespace whose eth0 (one end of a veth) carries
// 10.0.0.4/24 and a default route via 10.0.0.1, like a VM's NIC.
func nicNS(t *testing.T) (string, *netlink.Handle) {
	t.Helper()
	name := tempNetNS(t)
	h := netnstest.Handle(t, name)
	t.Cleanup(h.Close)
	la := netlink.NewLinkAttrs()
	la.Name = "eth0"
	la.HardwareAddr = mustMAC("00:0d:3a:00:00:04")
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	eth0, _ := h.LinkByName("eth0")
	peer, _ := h.LinkByName("peer0")
	for _, l := range []netlink.Link{eth0, peer} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.AddrAdd(eth0, toAddr(netip.MustParsePrefix("10.0.0.4/24"))); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.0.0.1"),
		Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.0.0.9"),
		Dst: &net.IPNet{IP: net.ParseIP("192.0.2.0").To4(), Mask: net.CIDRMask(24, 32)}, Priority: 50}); err != nil {
		t.Fatal(err)
	}
	return name, h
}

func configOf(t *testing.T, h *netlink.Handle, name string) *store.LinkConfig {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	cfg, err := snapshot(h, l)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestBridgeEnsureMovesConfiguration(t *testing.T) {
	_, h := nicNS(t)
	want := configOf(t, h, "eth0")
	if len(want.Addrs) != 1 || len(want.Routes) != 2 {
		t.Fatalf("eth0 before: %+v; want one address and two routes", want)
	}
	b := Bridge{Name: "azure0", Master: "eth0"}
	var persisted *store.LinkConfig
	if err := b.Ensure(h, nil, func(c *store.LinkConfig) error { persisted = c; return nil }); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if persisted == nil || len(persisted.Addrs) != 1 {
		t.Errorf("persisted snapshot %+v; want eth0's configuration saved before the move", persisted)
	}
	got := configOf(t, h, "azure0")
	if len(got.Addrs) != 1 || got.Addrs[0] != want.Addrs[0] || len(got.Routes) != 2 {
		t.Errorf("bridge has %+v; want eth0's %+v", got, want)
	}
	if left := configOf(t, h, "eth0"); len(left.Addrs) != 0 || len(left.Routes) != 0 {
		t.Errorf("eth0 kept %+v", left)
	}
	br, _ := h.LinkByName("azure0")
	eth0, _ := h.LinkByName("eth0")
	if eth0.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("eth0 is not a port of azure0")
	}
	if br.Attrs().HardwareAddr.String() != eth0.Attrs().HardwareAddr.String() {
		t.Errorf("bridge MAC %s, want the NIC's %s", br.Attrs().HardwareAddr, eth0.Attrs().HardwareAddr)
	}
	// Connections the node rewrote may go back out the NIC (NodePorts).
	if pi, err := h.LinkGetProtinfo(eth0); err != nil || !pi.Hairpin {
		t.Errorf("eth0's bridge port: hairpin %t (%v), want on", pi.Hairpin, err)
	}
	b.Primary = netip.MustParsePrefix("10.0.0.4/24")
	if !b.Ready(h) {
		t.Errorf("Ready = false after Ensure")
	}
	// Idempotent.
	if err := b.Ensure(h, persisted, nil); err != nil {
		t.Fatalf("Ensure again: %v", err)
	}
	if again := configOf(t, h, "azure0"); len(again.Addrs) != 1 || len(again.Routes) != 2 {
		t.Errorf("after a second Ensure the bridge has %+v", again)
	}
}

// A move that fails half way gives eth0 its configuration back.
func TestBridgeEnsureRollsBack(t *testing.T) {
	_, h := nicNS(t)
	want := configOf(t, h, "eth0")
	b := Bridge{Name: "azure0", Master: "eth0"}
	// A route through a gateway that is not on-link cannot be added: the
	// move fails after the addresses moved.
	bad := &store.LinkConfig{}
	*bad = *want
	persist := func(c *store.LinkConfig) error {
		c.Routes = append(c.Routes, store.Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Gw: netip.MustParseAddr("203.0.113.1")})
		return nil
	}
	if err := b.Ensure(h, nil, persist); err == nil {
		t.Fatal("Ensure with an impossible route succeeded")
	}
	got := configOf(t, h, "eth0")
	if len(got.Addrs) != 1 || got.Addrs[0] != want.Addrs[0] || len(got.Routes) != len(want.Routes) {
		t.Errorf("after the failed move eth0 has %+v; want %+v back", got, want)
	}
	eth0, _ := h.LinkByName("eth0")
	if eth0.Attrs().MasterIndex != 0 {
		t.Errorf("eth0 is still enslaved after rollback")
	}
	if _, err := h.LinkByName("azure0"); err == nil {
		t.Errorf("the bridge created by the failed move is still there")
	}
}

// A move interrupted after eth0 lost its addresses is finished from the
// persisted snapshot.
func TestBridgeEnsureFinishesInterruptedMove(t *testing.T) {
	_, h := nicNS(t)
	saved := configOf(t, h, "eth0")
	eth0, _ := h.LinkByName("eth0")
	la := netlink.NewLinkAttrs()
	la.Name = "azure0"
	la.HardwareAddr = eth0.Attrs().HardwareAddr
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	br, _ := h.LinkByName("azure0")
	if err := h.LinkSetMaster(eth0, br); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrDel(eth0, toAddr(saved.Addrs[0])); err != nil {
		t.Fatal(err)
	}
	b := Bridge{Name: "azure0", Master: "eth0"}
	if err := b.Ensure(h, saved, nil); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	got := configOf(t, h, "azure0")
	if len(got.Addrs) != 1 || got.Addrs[0] != saved.Addrs[0] || len(got.Routes) != 2 {
		t.Errorf("bridge has %+v; want the saved %+v", got, saved)
	}
}

func TestBridgeNameFromIndex(t *testing.T) {
	_, h := nicNS(t)
	eth0, _ := h.LinkByName("eth0")
	if got, want := BridgeName(eth0), "azure"+strconv.Itoa(eth0.Attrs().Index); got != want {
		t.Errorf("BridgeName = %s, want %s", got, want)
	}
}

// In the pod-CIDR models the bridge is the pods' router: it holds the pod
// CIDR's gateway, keeps its MAC, and leaves the NIC alone.
func TestPodGatewayBridge(t *testing.T) {
	_, h := nicNS(t)
	b := Bridge{Name: "cbr0", Master: "eth0", PodGateway: netip.MustParsePrefix("10.244.1.1/24")}
	if b.Ready(h) {
		t.Fatal("Ready before Ensure")
	}
	before := configOf(t, h, "eth0")
	for i := 0; i < 2; i++ { // idempotent
		if err := b.Ensure(h, nil, nil); err != nil {
			t.Fatalf("Ensure #%d: %v", i+1, err)
		}
	}
	if !b.Ready(h) {
		t.Error("not Ready after Ensure")
	}
	if got := configOf(t, h, "cbr0"); len(got.Addrs) != 1 || got.Addrs[0] != b.PodGateway {
		t.Errorf("cbr0 has %v, want %s", got.Addrs, b.PodGateway)
	}
	if after := configOf(t, h, "eth0"); len(after.Addrs) != len(before.Addrs) || after.Addrs[0] != before.Addrs[0] {
		t.Errorf("eth0 changed: %v, was %v", after.Addrs, before.Addrs)
	}
	eth0, _ := h.LinkByName("eth0")
	if eth0.Attrs().MasterIndex != 0 {
		t.Error("eth0 was enslaved")
	}
}
