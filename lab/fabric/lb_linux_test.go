package fabric

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/lab/probe"
)

// TestLoadBalancerAndNSG: an internal load balancer in a delegated subnet
// forwards its frontend ports to the backend; the subnet's NSG lets the
// cluster subnet reach only the allowed ports, while the backend can still
// open connections out.
func TestLoadBalancerAndNSG(t *testing.T) {
	spec := testSpec(t)
	api := netip.MustParsePrefix("10.1.0.16/28")
	spec.Subnets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), api}
	spec.VMs = spec.VMs[:2]
	cpIP := netip.MustParseAddr("10.1.0.20")
	vip := netip.MustParseAddr("10.1.0.21")
	spec.VMs = append(spec.VMs, VMSpec{Name: "cp", MAC: HardwareAddr{0x00, 0x0d, 0x3a, 0, 0, 9}, Subnet: api, PrimaryIP: cpIP})
	spec.LoadBalancers = []LoadBalancer{{Name: "apiserver", VIP: vip, Ports: []uint16{443, 4443}, Backends: []netip.Addr{cpIP}}}
	spec.NSGs = []NSG{{Subnet: api, Allow: []NSGRule{{Source: netip.MustParsePrefix("10.0.0.0/24"), Ports: []uint16{443, 4443}}}}}
	f := buildFabric(t, spec)
	cp, vm1 := f.VMNetNS("cp"), f.VMNetNS("vm1")
	// The backend records who connects on 443, to see the source preserved.
	sources := make(chan string, 8)
	for _, port := range []uint16{443, 4443, 22} {
		l, err := probe.ListenTCP(cp, netip.AddrPortFrom(netip.IPv4Unspecified(), port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		if port != 443 {
			go func() { _ = probe.ServeEcho(l) }()
			continue
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				sources <- c.RemoteAddr().(*net.TCPAddr).IP.String()
				c.Close()
			}
		}()
	}
	l, err := probe.ListenTCP(vm1, netip.AddrPortFrom(vm1IP, 10250))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = probe.ServeEcho(l) }()
	t.Cleanup(func() { l.Close() })

	for _, to := range []netip.AddrPort{netip.AddrPortFrom(vip, 443), netip.AddrPortFrom(vip, 4443), netip.AddrPortFrom(cpIP, 443)} {
		if err := probe.TCPConnect(vm1, to, 2*time.Second); err != nil {
			t.Errorf("vm1 → %s: %v", to, err)
		}
	}
	// The frontend forwards only its ports, and the NSG lets nothing else in.
	if err := probe.TCPConnect(vm1, netip.AddrPortFrom(cpIP, 22), 500*time.Millisecond); err == nil {
		t.Errorf("vm1 reached %s:22 through the NSG", cpIP)
	}
	drops, err := f.NSGDrops()
	if err != nil {
		t.Fatal(err)
	}
	if drops[api] == 0 {
		t.Errorf("the NSG of %s counted no drop", api)
	}
	// The backend's own connections out are not inbound traffic.
	if err := probe.TCPConnect(cp, netip.AddrPortFrom(vm1IP, 10250), 2*time.Second); err != nil {
		t.Errorf("cp → vm1:10250: %v", err)
	}
	// The source is preserved through the load balancer.
	for i := 0; i < 2; i++ {
		if got := <-sources; got != vm1IP.String() {
			t.Errorf("the backend saw %s, want vm1's %s", got, vm1IP)
		}
	}
}

func TestValidateLB(t *testing.T) {
	spec := testSpec(t)
	spec.LoadBalancers = []LoadBalancer{{Name: "x", VIP: vm1IP, Ports: []uint16{443}, Backends: []netip.Addr{vm2IP}}}
	if err := spec.Validate(); err == nil {
		t.Errorf("a VIP that is a NIC address was accepted")
	}
	spec.LoadBalancers = []LoadBalancer{{Name: "x", VIP: netip.MustParseAddr("10.0.0.50"), Ports: []uint16{443}, Backends: []netip.Addr{netip.MustParseAddr("10.0.0.99")}}}
	if err := spec.Validate(); err == nil {
		t.Errorf("a backend that is no VM's address was accepted")
	}
	spec.LoadBalancers = nil
	spec.NSGs = []NSG{{Subnet: netip.MustParsePrefix("10.9.0.0/24")}}
	if err := spec.Validate(); err == nil {
		t.Errorf("an NSG on an unknown subnet was accepted")
	}
}
