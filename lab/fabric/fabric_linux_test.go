package fabric

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/azure/imds"
	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
	"github.com/vnetcni/vnetcni/internal/golden"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/probe"
)

const (
	live = 2 * time.Second        // for probes that must succeed
	dead = 700 * time.Millisecond // for probes that must fail
)

var (
	vm1IP  = netip.MustParseAddr("10.0.0.4")
	vm2IP  = netip.MustParseAddr("10.0.0.5")
	vm3IP  = netip.MustParseAddr("10.1.0.4")
	vm1Sec = netip.MustParseAddr("10.0.0.10")
	vm2Sec = netip.MustParseAddr("10.0.0.12")
)

// testSpec is three VMs: vm1 and vm2 share a subnet, vm3 is in another
// subnet; the fabric's name is unique to the test.
func testSpec(t *testing.T) Spec {
	t.Helper()
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	mac := func(s string) HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return HardwareAddr(m)
	}
	return Spec{
		Name:    "vft" + hex.EncodeToString(rnd[:]),
		VNet:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("10.1.0.0/16")},
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.1.0.0/24")},
		VMs: []VMSpec{
			{Name: "vm1", MAC: mac("00:0d:3a:00:00:01"), Subnet: netip.MustParsePrefix("10.0.0.0/24"),
				PrimaryIP: vm1IP, SecondaryIPs: []netip.Addr{vm1Sec, netip.MustParseAddr("10.0.0.11")},
				PublicIP: netip.MustParseAddr("198.51.100.11")},
			{Name: "vm2", MAC: mac("00:0d:3a:00:00:02"), Subnet: netip.MustParsePrefix("10.0.0.0/24"),
				PrimaryIP: vm2IP, PublicIP: netip.MustParseAddr("198.51.100.12")},
			{Name: "vm3", MAC: mac("00:0d:3a:00:00:03"), Subnet: netip.MustParsePrefix("10.1.0.0/24"),
				PrimaryIP: vm3IP, PublicIP: netip.MustParseAddr("198.51.100.13")},
		},
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

// buildFabric builds spec and destroys it when the test ends, checking that
// no namespace of the fabric is left.
func buildFabric(t *testing.T, spec Spec) *Fabric {
	t.Helper()
	needRoot(t)
	t.Cleanup(func() {
		if err := Destroy(spec); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		left, err := netns.List(spec.Name + "-")
		if err != nil || len(left) > 0 {
			t.Errorf("after Destroy: namespaces %v (%v) left, want none", left, err)
		}
	})
	f, err := Build(spec)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return f
}

func serve(t *testing.T, f *Fabric) *Services {
	t.Helper()
	s, err := f.Serve()
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close services: %v", err)
		}
	})
	return s
}

func counters(t *testing.T, f *Fabric) (map[string]PortCounters, uint64) {
	t.Helper()
	pc, np, err := f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return pc, np
}

func mustPing(t *testing.T, f *Fabric, vm string, src, dst netip.Addr) {
	t.Helper()
	if err := probe.PingFrom(f.VMNetNS(vm), src, dst, live); err != nil {
		t.Errorf("ping: %v", err)
		logFabric(t, f)
	}
}

func mustNotPing(t *testing.T, f *Fabric, vm string, src, dst netip.Addr) {
	t.Helper()
	if err := probe.PingFrom(f.VMNetNS(vm), src, dst, dead); err == nil {
		t.Errorf("ping %s from %s in %s: got a reply, want none", dst, src, f.VMNetNS(vm))
	}
}

// logFabric logs the fabric's interfaces with their statistics and its
// counters, to diagnose a failed probe.
func logFabric(t *testing.T, f *Fabric) {
	t.Helper()
	out, err := exec.Command("ip", "-n", f.FabricNetNS(), "-s", "link").CombinedOutput()
	t.Logf("ip -n %s -s link: %v\n%s", f.FabricNetNS(), err, out)
	pc, np, err := f.Counters()
	t.Logf("counters: %+v, no_public_ip %d, %v", pc, np, err)
}

// vmLink runs fn with a netlink handle in a VM's namespace and its eth0.
func vmLink(t *testing.T, f *Fabric, vm string, fn func(h *netlink.Handle, eth0 netlink.Link) error) {
	t.Helper()
	c, err := openNS(f.VMNetNS(vm))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eth0, err := c.nl.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(c.nl, eth0); err != nil {
		t.Fatal(err)
	}
}

func addAddr(t *testing.T, f *Fabric, vm string, ip netip.Addr) {
	t.Helper()
	vmLink(t, f, vm, func(h *netlink.Handle, eth0 netlink.Link) error {
		return h.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, 24))})
	})
}

func TestTwoVMs(t *testing.T) {
	spec := testSpec(t)
	f := buildFabric(t, spec)
	serve(t, f)
	vm1, vm2 := f.VMNetNS("vm1"), f.VMNetNS("vm2")

	t.Run("ping", func(t *testing.T) {
		mustPing(t, f, "vm1", netip.Addr{}, vm2IP)
		mustPing(t, f, "vm2", netip.Addr{}, vm1IP)
		mustPing(t, f, "vm1", netip.Addr{}, vm3IP) // through the gateway
		mustPing(t, f, "vm3", netip.Addr{}, vm2IP)
		mustPing(t, f, "vm1", netip.Addr{}, Gateway(spec.Subnets[0]))
		// The fabric does not answer ARP for a VM's own address, even one
		// the VM has not configured.
		mustNotPing(t, f, "vm1", netip.Addr{}, vm1Sec)
		// A VNet address no NIC holds does not answer, and is not sent
		// to the internet.
		mustNotPing(t, f, "vm1", netip.Addr{}, netip.MustParseAddr("10.0.0.20"))
		mustNotPing(t, f, "vm3", netip.Addr{}, netip.MustParseAddr("10.0.0.20"))
	})

	t.Run("wireserver", func(t *testing.T) {
		for _, v := range spec.VMs {
			code, body, err := probe.HTTPGet(f.VMNetNS(v.Name), wireserver.DefaultURL, nil, live)
			if err != nil || code != http.StatusOK {
				t.Fatalf("wireserver from %s: got %d %v, want 200", v.Name, code, err)
			}
			ifs, err := wireserver.Parse(body)
			if err != nil {
				t.Fatalf("wireserver from %s: %v", v.Name, err)
			}
			if len(ifs) != 1 || ifs[0].MAC.String() != v.MAC.String() {
				t.Fatalf("wireserver from %s: got %+v, want one NIC with MAC %s", v.Name, ifs, v.MAC)
			}
			primary, subnet, _ := ifs[0].PrimaryIP()
			var secs []netip.Addr
			for _, a := range ifs[0].Secondaries() {
				secs = append(secs, a.IP)
			}
			if primary != v.PrimaryIP || subnet != v.Subnet || !slices.Equal(secs, v.SecondaryIPs) {
				t.Errorf("wireserver from %s: got primary %s in %s, secondaries %v; want %s in %s, %v",
					v.Name, primary, subnet, secs, v.PrimaryIP, v.Subnet, v.SecondaryIPs)
			}
		}
		code, body, err := probe.HTTPGet(vm1, "http://168.63.129.16:32526/", nil, live)
		if err != nil || code != http.StatusOK || string(body) != "wireserver management" {
			t.Errorf("wireserver management port: got %d %q %v", code, body, err)
		}
	})

	t.Run("imds", func(t *testing.T) {
		url := imds.URL("")
		code, body, err := probe.HTTPGet(vm2, url, http.Header{"Metadata": {"true"}}, live)
		if err != nil || code != http.StatusOK {
			t.Fatalf("IMDS from vm2: got %d %v, want 200", code, err)
		}
		var doc imds.Network
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.Interface) != 1 || doc.Interface[0].MacAddress != "000D3A000002" ||
			len(doc.Interface[0].IPv4.IPAddress) != 1 ||
			doc.Interface[0].IPv4.IPAddress[0] != (imds.IPAddress{PrivateIPAddress: "10.0.0.5", PublicIPAddress: "198.51.100.12"}) {
			t.Errorf("IMDS from vm2: got %s", body)
		}
		code, _, err = probe.HTTPGet(vm2, url, nil, live)
		if err != nil || code != http.StatusBadRequest {
			t.Errorf("IMDS without Metadata header: got %d %v, want 400", code, err)
		}
	})

	t.Run("dns", func(t *testing.T) {
		server := netip.AddrPortFrom(WireserverIP, 53)
		for name, want := range map[string]netip.Addr{
			"vm2.internal.cloudapp.net": vm2IP,
			"VM3.internal.cloudapp.net": vm3IP,
			"internet.test":             InternetHostIP,
		} {
			got, err := probe.DNSQuery(vm1, server, name, live)
			if err != nil || !slices.Equal(got, []netip.Addr{want}) {
				t.Errorf("resolve %s: got %v %v, want %v", name, got, err, want)
			}
		}
		if _, err := probe.DNSQuery(vm1, server, "vm9.internal.cloudapp.net", live); !errors.Is(err, probe.ErrNXDomain) {
			t.Errorf("resolve unknown name: got %v, want NXDOMAIN", err)
		}
		if got := dnsOverTCP(t, vm1, "vm1.internal.cloudapp.net."); got != vm1IP {
			t.Errorf("resolve over TCP: got %v, want %v", got, vm1IP)
		}
	})

	t.Run("internet", func(t *testing.T) {
		for _, v := range spec.VMs {
			code, body, err := probe.HTTPGet(f.VMNetNS(v.Name), "http://203.0.113.100/", nil, live)
			if err != nil || code != http.StatusOK || string(body) != v.PublicIP.String() {
				t.Errorf("internet from %s: got %d %q %v, want source %s", v.Name, code, body, err, v.PublicIP)
			}
		}
		// Unsolicited traffic from the internet does not get in.
		if err := probe.Ping(f.InternetNetNS(), netip.MustParseAddr("198.51.100.11"), dead); err == nil {
			t.Error("ping a public address from the internet: got a reply, want none")
		}
	})

	pc, noPublic := counters(t, f)
	for _, v := range spec.VMs {
		if pc[v.Name] != (PortCounters{}) {
			t.Errorf("counters of %s after legitimate traffic: got %+v, want zero", v.Name, pc[v.Name])
		}
	}
	if noPublic != 0 {
		t.Errorf("no_public_ip after legitimate traffic: got %d, want 0", noPublic)
	}
}

// dnsOverTCP asks the lab DNS for name over TCP from ns.
func dnsOverTCP(t *testing.T, ns, name string) netip.Addr {
	t.Helper()
	c, err := probe.DialTCP(ns, netip.AddrPortFrom(WireserverIP, 53), live)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(live))
	b := dnsmessage.NewBuilder([]byte{0, 0}, dnsmessage.Header{ID: 7})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	q[0], q[1] = byte((len(q)-2)>>8), byte(len(q)-2)
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatalf("read TCP DNS answer length: %v", err)
	}
	buf := make([]byte, int(n[0])<<8|int(n[1]))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read TCP DNS answer: %v", err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf); err != nil {
		t.Fatal(err)
	}
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return netip.AddrFrom4(r.A)
		}
	}
	return netip.Addr{}
}

func TestSpoofing(t *testing.T) {
	spec := testSpec(t)
	f := buildFabric(t, spec)
	mustPing(t, f, "vm1", netip.Addr{}, vm2IP)

	// A frame from another MAC is dropped.
	var orig net.HardwareAddr
	vmLink(t, f, "vm1", func(h *netlink.Handle, eth0 netlink.Link) error {
		orig = eth0.Attrs().HardwareAddr
		return h.LinkSetHardwareAddr(eth0, net.HardwareAddr{0x00, 0x0d, 0x3a, 0xff, 0xff, 0xff})
	})
	mustNotPing(t, f, "vm1", netip.Addr{}, vm2IP)
	pc, _ := counters(t, f)
	if pc["vm1"].BadMAC == 0 {
		t.Errorf("BadMAC of vm1 after sending from a foreign MAC: got %+v, want > 0", pc["vm1"])
	}
	vmLink(t, f, "vm1", func(h *netlink.Handle, eth0 netlink.Link) error {
		return h.LinkSetHardwareAddr(eth0, orig)
	})
	mustPing(t, f, "vm1", netip.Addr{}, vm2IP)

	// A packet from an address that is not an IP configuration of the NIC
	// is dropped, until the address is registered.
	unreg := netip.MustParseAddr("10.0.0.30")
	addAddr(t, f, "vm1", unreg)
	before, _ := counters(t, f)
	mustNotPing(t, f, "vm1", unreg, vm2IP)
	after, _ := counters(t, f)
	if after["vm1"].BadIP <= before["vm1"].BadIP {
		t.Errorf("BadIP of vm1 after sending from %s: got %d, want more than %d", unreg, after["vm1"].BadIP, before["vm1"].BadIP)
	}
	if err := f.AddSecondaryIPs("vm1", unreg); err != nil {
		t.Fatal(err)
	}
	mustPing(t, f, "vm1", unreg, vm2IP)
	if v, _ := f.Spec().VM("vm1"); !slices.Contains(v.SecondaryIPs, unreg) {
		t.Errorf("spec after AddSecondaryIPs: vm1 secondaries %v, want %s among them", v.SecondaryIPs, unreg)
	}

	// And dropped again once removed.
	if err := f.RemoveSecondaryIPs("vm1", unreg); err != nil {
		t.Fatal(err)
	}
	mustNotPing(t, f, "vm1", unreg, vm2IP)
	if pc, _ := counters(t, f); pc["vm2"] != (PortCounters{}) || pc["vm1"].Other != 0 {
		t.Errorf("counters: got %+v, want vm2 all zero and vm1 Other zero", pc)
	}
}

func TestSecondaryDelivery(t *testing.T) {
	spec := testSpec(t)
	spec.VMs[1].SecondaryIPs = []netip.Addr{vm2Sec}
	f := buildFabric(t, spec)
	addAddr(t, f, "vm2", vm2Sec)
	mustPing(t, f, "vm1", netip.Addr{}, vm2Sec)
	mustPing(t, f, "vm3", netip.Addr{}, vm2Sec)

	// A secondary added later is delivered as well.
	later := netip.MustParseAddr("10.0.0.13")
	addAddr(t, f, "vm2", later)
	mustNotPing(t, f, "vm1", netip.Addr{}, later)
	if err := f.AddSecondaryIPs("vm2", later); err != nil {
		t.Fatal(err)
	}
	mustPing(t, f, "vm3", netip.Addr{}, later)
}

func TestNoPublicIP(t *testing.T) {
	spec := testSpec(t)
	f := buildFabric(t, spec)
	serve(t, f)
	addAddr(t, f, "vm1", vm1Sec)
	mustPing(t, f, "vm1", vm1IP, InternetHostIP)
	if _, n := counters(t, f); n != 0 {
		t.Fatalf("no_public_ip after traffic from the primary address: got %d, want 0", n)
	}
	mustNotPing(t, f, "vm1", vm1Sec, InternetHostIP)
	if _, n := counters(t, f); n == 0 {
		t.Errorf("no_public_ip after traffic from a secondary address: got 0, want > 0")
	}
	// The secondary still reaches the VNet.
	mustPing(t, f, "vm1", vm1Sec, vm2IP)
}

func TestServicesStopStart(t *testing.T) {
	f := buildFabric(t, testSpec(t))
	s := serve(t, f)
	vm1 := f.VMNetNS("vm1")
	if err := s.Stop(ServiceWireserver); err != nil {
		t.Fatal(err)
	}
	if _, _, err := probe.HTTPGet(vm1, wireserver.DefaultURL, nil, dead); err == nil {
		t.Error("wireserver answered while stopped")
	}
	if err := s.Start(ServiceWireserver); err != nil {
		t.Fatal(err)
	}
	if code, _, err := probe.HTTPGet(vm1, wireserver.DefaultURL, nil, live); err != nil || code != http.StatusOK {
		t.Errorf("wireserver after restart: got %d %v, want 200", code, err)
	}
	if err := s.Start("nope"); err == nil {
		t.Error("Start of an unknown service: got no error")
	}
}

func TestRebuild(t *testing.T) {
	spec := testSpec(t)
	f := buildFabric(t, spec)
	mustPing(t, f, "vm1", netip.Addr{}, vm2IP)
	before := nftRuleset(t, f)
	golden.Check(t, "testdata/ruleset.nft", before)

	if _, err := Build(spec); err != nil {
		t.Fatalf("second Build: %v", err)
	}
	if after := nftRuleset(t, f); after != before {
		t.Errorf("ruleset changed on the second Build:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	mustPing(t, f, "vm1", netip.Addr{}, vm2IP)

	// A VM namespace deleted by hand comes back on the next Build. The
	// kernel dismantles a namespace asynchronously once nothing refers to
	// it; its port vanishing also shows the fabric leaked no reference.
	if err := netns.Delete(f.VMNetNS("vm2")); err != nil {
		t.Fatal(err)
	}
	waitGone(t, f, PortName("vm2"))
	mustNotPing(t, f, "vm1", netip.Addr{}, vm2IP)
	if _, err := Build(spec); err != nil {
		t.Fatalf("Build after deleting a VM: %v", err)
	}
	mustPing(t, f, "vm1", netip.Addr{}, vm2IP)
	mustPing(t, f, "vm2", netip.Addr{}, vm3IP)

	// So does the fabric namespace itself.
	if err := netns.Delete(f.FabricNetNS()); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(spec); err != nil {
		t.Fatalf("Build after deleting the fabric: %v", err)
	}
	mustPing(t, f, "vm1", netip.Addr{}, vm2IP)

	if err := Destroy(spec); err != nil {
		t.Fatal(err)
	}
	if err := Destroy(spec); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

// nftRuleset is the fabric namespace's ruleset as nft prints it, counters
// left out.
func nftRuleset(t *testing.T, f *Fabric) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	out, err := exec.Command("ip", "netns", "exec", f.FabricNetNS(), "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "packets ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// waitGone waits for an interface to disappear from the fabric namespace.
func waitGone(t *testing.T, f *Fabric, link string) {
	t.Helper()
	c, err := openNS(f.FabricNetNS())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := c.nl.LinkByName(link); linkNotFound(err) {
			return
		}
	}
	t.Fatalf("%s still in netns %s 5s after its peer's namespace was deleted", link, c.name)
}

// sendFrame writes a raw Ethernet frame out of a VM's eth0.
func sendFrame(t *testing.T, f *Fabric, vm string, frame []byte) {
	t.Helper()
	var ifindex int
	vmLink(t, f, vm, func(_ *netlink.Handle, eth0 netlink.Link) error {
		ifindex = eth0.Attrs().Index
		return nil
	})
	var fd int
	err := netns.Do(f.VMNetNS(vm), func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	})
	if err != nil {
		t.Fatalf("open packet socket in %s: %v", f.VMNetNS(vm), err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}); err != nil {
		t.Fatalf("send frame from %s: %v", vm, err)
	}
}

func TestFrameFilter(t *testing.T) {
	spec := testSpec(t)
	f := buildFabric(t, spec)
	mac := []byte(spec.VMs[0].MAC)
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	eth := func(src []byte, etherType uint16) []byte {
		return append(append(append([]byte{}, bcast...), src...), byte(etherType>>8), byte(etherType))
	}
	arp := func(sha []byte, spa netip.Addr) []byte {
		b := []byte{0, 1, 8, 0, 6, 4, 0, 1}
		b = append(b, sha...)
		b = append(b, spa.AsSlice()...)
		b = append(b, 0, 0, 0, 0, 0, 0)
		return append(b, vm2IP.AsSlice()...)
	}
	pad := make([]byte, 46)

	for _, tc := range []struct {
		name  string
		frame []byte
		want  PortCounters
	}{
		{"IPv6", append(eth(mac, 0x86dd), pad...), PortCounters{Other: 1}},
		{"experimental ethertype", append(eth(mac, 0x88b5), pad...), PortCounters{Other: 1}},
		{"foreign source MAC", append(eth([]byte{0, 0x0d, 0x3a, 9, 9, 9}, 0x88b5), pad...), PortCounters{BadMAC: 1}},
		{"ARP with a foreign sender MAC", append(eth(mac, 0x0806), arp([]byte{0, 0x0d, 0x3a, 9, 9, 9}, vm1IP)...), PortCounters{BadMAC: 1}},
		{"ARP with a foreign sender IP", append(eth(mac, 0x0806), arp(mac, netip.MustParseAddr("10.0.0.30"))...), PortCounters{BadIP: 1}},
		{"ARP from the NIC", append(eth(mac, 0x0806), arp(mac, vm1IP)...), PortCounters{}},
	} {
		before, _ := counters(t, f)
		sendFrame(t, f, "vm1", tc.frame)
		var got PortCounters
		// Packet sockets transmit synchronously through the veth; allow a
		// moment anyway.
		for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
			after, _ := counters(t, f)
			b, a := before["vm1"], after["vm1"]
			got = PortCounters{BadMAC: a.BadMAC - b.BadMAC, BadIP: a.BadIP - b.BadIP, Other: a.Other - b.Other}
			if got == tc.want || time.Now().After(deadline) {
				break
			}
		}
		if got != tc.want {
			t.Errorf("%s: counters of vm1 went up by %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
