package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
)

var cniVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
var modes = []string{datapath.ModeBridge, datapath.ModeTransparent}

// TestAttachments runs the whole life of pods on two VMs, for each mode and
// CNI version: addresses from the right NIC pool, connectivity without NAT
// inside the VNet and with the VM's public address outside it, no drops at
// the fabric, CHECK, and DEL leaving nothing behind.
func TestAttachments(t *testing.T) {
	for _, mode := range modes {
		for _, ver := range cniVersions {
			t.Run(mode+"/"+ver, func(t *testing.T) {
				testAttachments(t, mode, ver)
			})
		}
	}
}

func testAttachments(t *testing.T, mode, ver string) {
	c := newCluster(t, clusterOpts{vms: 2, secondaries: 4, conflist: conflist(t, ver, mode, nil)})
	vm1, vm2 := c.vms[0], c.vms[1]
	a := vm1.addPod(t, "a")
	b := vm1.addPod(t, "b")
	x := vm2.addPod(t, "x")

	for _, p := range []*pod{a, b, x} {
		if !p.vm.inPool(p.ip) {
			t.Errorf("pod %s got %s, not a secondary IP of %s's NIC %v", p.name, p.ip, p.vm.spec.Name, p.vm.spec.SecondaryIPs)
		}
		r := p.result
		if len(r.Interfaces) != 2 || r.Interfaces[1].Sandbox != p.cni.NetNS || r.Interfaces[1].Mac == "" || r.Interfaces[0].Mac == "" {
			t.Errorf("pod %s: result interfaces %+v, want host veth and sandboxed eth0 with MACs", p.name, r.Interfaces)
		}
		wantGW := fabric.Gateway(subnet)
		if mode == datapath.ModeTransparent {
			wantGW = datapath.TransparentGateway
		}
		if gw, _ := netip.AddrFromSlice(r.IPs[0].Gateway.To4()); gw != wantGW {
			t.Errorf("pod %s: gateway %s, want %s", p.name, gw, wantGW)
		}
		if len(r.DNS.Nameservers) == 0 || r.DNS.Nameservers[0] != "168.63.129.16" {
			t.Errorf("pod %s: DNS %+v, want 168.63.129.16", p.name, r.DNS)
		}
		if bits, _ := r.IPs[0].Address.Mask.Size(); bits != subnet.Bits() {
			t.Errorf("pod %s: prefix /%d, want /%d", p.name, bits, subnet.Bits())
		}
	}
	if a.ip == b.ip {
		t.Fatalf("two pods got the same address %s", a.ip)
	}

	// Pod to pod on one VM and across VMs, VM to pod, pod to VM.
	mustPing(t, a.ns, b.ip)
	mustPing(t, a.ns, x.ip)
	mustPing(t, x.ns, a.ip)
	mustPing(t, vm1.ns, a.ip)
	mustPing(t, vm2.ns, a.ip)
	mustPing(t, a.ns, vm1.spec.PrimaryIP)
	mustPing(t, a.ns, vm2.spec.PrimaryIP)
	mustPing(t, x.ns, vm1.spec.PrimaryIP)
	echoServer(t, x.ns, x.ip, 8080)
	mustTCP(t, a.ns, netip.AddrPortFrom(x.ip, 8080))
	echoServer(t, a.ns, a.ip, 8080)
	mustTCP(t, vm2.ns, netip.AddrPortFrom(a.ip, 8080))

	// Inside the VNet the peer sees the pod's own address (no NAT).
	l, err := probe.ListenTCP(x.ns, netip.AddrPortFrom(x.ip, 9090))
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err == nil {
			seen <- conn.RemoteAddr().String()
			conn.Close()
		}
	}()
	mustTCP(t, a.ns, netip.AddrPortFrom(x.ip, 9090))
	if got := <-seen; !strings.HasPrefix(got, a.ip.String()+":") {
		t.Errorf("VNet peer saw source %s, want the pod's own %s", got, a.ip)
	}
	l.Close()

	// To the internet the pod appears as its VM's public address.
	for _, p := range []*pod{a, x} {
		code, body, err := probe.HTTPGet(p.ns, "http://"+fabric.InternetHostIP.String()+"/", nil, probeTimeout)
		if err != nil || code != 200 {
			t.Errorf("pod %s to internet: %d %v", p.name, code, err)
		} else if got := strings.TrimSpace(string(body)); got != p.vm.spec.PublicIP.String() {
			t.Errorf("internet host saw pod %s as %s, want %s", p.name, got, p.vm.spec.PublicIP)
		}
	}
	// The wireserver's DNS port answers pods.
	if addrs, err := probe.DNSQuery(a.ns, netip.AddrPortFrom(fabric.WireserverIP, 53), "vm2."+fabric.DNSSuffix, probeTimeout); err != nil || len(addrs) != 1 || addrs[0] != vm2.spec.PrimaryIP {
		t.Errorf("DNS from pod: %v %v, want %s", addrs, err, vm2.spec.PrimaryIP)
	}
	c.assertNoDrops(t)

	if ok, _ := version.GreaterThanOrEqualTo(ver, "0.4.0"); ok {
		for _, p := range []*pod{a, b, x} {
			if err := p.vm.runner.Check(context.Background(), p.vm.list, p.cni); err != nil {
				t.Errorf("CHECK %s: %v", p.name, err)
			}
		}
	}

	// DEL removes everything; DEL again, and DEL without a netns (as
	// containerd sends on removal), are fine.
	for _, p := range []*pod{a, b, x} {
		p.del(t)
		p.del(t)
		noNS := p.cni
		noNS.NetNS = ""
		if err := p.vm.runner.Del(context.Background(), p.vm.list, noNS); err != nil {
			t.Errorf("DEL %s without netns: %v", p.name, err)
		}
	}
	vm1.assertClean(t, mode)
	vm2.assertClean(t, mode)
}

// TestSeedConflistUnchanged uses the seed's file byte for byte.
func TestSeedConflistUnchanged(t *testing.T) {
	c := newCluster(t, clusterOpts{vms: 2, secondaries: 2, conflist: seedConflist(t)})
	a := c.vms[0].addPod(t, "a")
	x := c.vms[1].addPod(t, "x")
	mustPing(t, a.ns, x.ip)
	mustPing(t, x.ns, a.ip)
	c.assertNoDrops(t)
	a.del(t)
	x.del(t)
	c.vms[0].assertClean(t, datapath.ModeBridge)
}

// TestExhaustion: with the NIC's addresses used up, ADD fails with a clear
// error and leaves nothing; after a DEL the next ADD succeeds.
func TestExhaustion(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 1, secondaries: 2, conflist: conflist(t, "1.1.0", mode, nil)})
			m := c.vms[0]
			p1 := m.addPod(t, "p1")
			m.addPod(t, "p2")
			_, err := m.tryAddPod(t, "p3")
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "2 secondary addresses, 2 in use") {
				t.Fatalf("third ADD: %v, want code 11 saying 2 secondary addresses, 2 in use", err)
			}
			if n := m.vethCount(t); n != 2 {
				t.Errorf("after failed ADD: %d veths, want 2", n)
			}
			if e := m.podElems(t, mode); len(e) != 2 {
				t.Errorf("after failed ADD: %d pod elements, want 2", len(e))
			}
			if st := m.state(t); len(st.Allocations) != 2 || len(st.Endpoints) != 2 {
				t.Errorf("after failed ADD: %d allocations, %d endpoints, want 2 and 2", len(st.Allocations), len(st.Endpoints))
			}
			p1.del(t)
			m.addPod(t, "p4")
		})
	}
}

// TestBridgeWithoutMACRewriteIsDropped proves the fabric is faithful: with
// the bridge's source-MAC rewrite removed, the fabric drops the pods' frames.
func TestBridgeWithoutMACRewriteIsDropped(t *testing.T) {
	c := newCluster(t, clusterOpts{vms: 2, secondaries: 2, conflist: conflist(t, "1.1.0", datapath.ModeBridge, nil)})
	a := c.vms[0].addPod(t, "a")
	x := c.vms[1].addPod(t, "x")
	// Flush the rewrite chain.
	flushChain(t, c.vms[0], "postrouting")
	mustNotPing(t, a.ns, x.ip)
	cnt, _, err := c.f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt["vm1"].BadMAC == 0 {
		t.Errorf("fabric counted no foreign-MAC drops from vm1: %+v", cnt["vm1"])
	}
}

func flushChain(t *testing.T, m *vm, chain string) {
	t.Helper()
	conn := m.nft(t)
	tbl := datapath.TableName(m.list.Name)
	chains, err := conn.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Table.Name == tbl && ch.Name == chain && ch.Table.Family == 7 /* bridge */ {
			conn.FlushChain(ch)
		}
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestSpoofedSourceDropped: a pod that sends with another pod's address
// gets nowhere.
func TestSpoofedSourceDropped(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 3, conflist: conflist(t, "1.1.0", mode, nil)})
			a := c.vms[0].addPod(t, "a")
			b := c.vms[0].addPod(t, "b")
			x := c.vms[1].addPod(t, "x")
			// a claims b's address.
			addAddr(t, a.ns, b.ip)
			if err := probe.PingFrom(a.ns, b.ip, x.ip, 500e6); err == nil {
				t.Errorf("ping from %s spoofing %s to %s succeeded", a.name, b.ip, x.ip)
			}
			// and an address no NIC has.
			stranger := netip.MustParseAddr("10.0.0.99")
			addAddr(t, a.ns, stranger)
			if err := probe.PingFrom(a.ns, stranger, x.ip, 500e6); err == nil {
				t.Errorf("ping from unassigned %s succeeded", stranger)
			}
			mustPing(t, a.ns, x.ip)
		})
	}
}

func addAddr(t *testing.T, ns string, ip netip.Addr) {
	t.Helper()
	out, err := runIn(ns, "ip", "addr", "add", ip.String()+"/32", "dev", "eth0")
	if err != nil {
		t.Fatalf("add %s in %s: %v %s", ip, ns, err, out)
	}
}

// TestGC removes attachments not in the valid list and keeps the others.
func TestGC(t *testing.T) {
	c := newCluster(t, clusterOpts{vms: 1, secondaries: 3, conflist: conflist(t, "1.1.0", datapath.ModeBridge, nil)})
	m := c.vms[0]
	keep := m.addPod(t, "keep")
	gone := m.addPod(t, "gone")
	err := m.runner.GC(context.Background(), m.list, []types.GCAttachment{{ContainerID: keep.cni.ContainerID, IfName: "eth0"}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	st := m.state(t)
	if _, ok := st.Allocations[gone.ip.String()]; ok {
		t.Errorf("GC left %s allocated", gone.ip)
	}
	if _, ok := st.Allocations[keep.ip.String()]; !ok {
		t.Errorf("GC released %s, which is valid", keep.ip)
	}
	if n := m.vethCount(t); n != 1 {
		t.Errorf("after GC: %d veths, want 1", n)
	}
	mustPing(t, keep.ns, m.spec.PrimaryIP)
}

// TestStatusFullPool: a full pool leaves the network ready (issue 12 case
// 5): STATUS succeeds while ADD answers "try again later" (code 11), so
// containerd keeps NetworkReady=true on the busiest nodes.
func TestStatusFullPool(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 1, secondaries: 1, conflist: conflist(t, "1.1.0", mode, nil)})
			m := c.vms[0]
			if err := m.runner.Status(context.Background(), m.list); err != nil {
				t.Fatalf("STATUS with a free address: %v", err)
			}
			m.addPod(t, "only")
			if err := m.runner.Status(context.Background(), m.list); err != nil {
				t.Errorf("STATUS with the pool used up: %v, want success", err)
			}
			_, err := m.tryAddPod(t, "more")
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
				t.Errorf("ADD with the pool used up: %v, want code 11", err)
			}
		})
	}
}

// TestStatusWithoutWireserver: no cached pool and no wireserver: 50, naming
// the wireserver.
func TestStatusWithoutWireserver(t *testing.T) {
	c := newCluster(t, clusterOpts{vms: 1, secondaries: 1, conflist: conflist(t, "1.1.0", datapath.ModeBridge, nil)})
	if err := c.svc.Stop(fabric.ServiceWireserver); err != nil {
		t.Fatal(err)
	}
	m := c.vms[0]
	err := m.runner.Status(context.Background(), m.list)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, "wireserver") {
		t.Errorf("STATUS without wireserver: %v, want code 50 naming the wireserver", err)
	}
	_, err = m.tryAddPod(t, "p")
	if !errors.As(err, &te) || !strings.Contains(te.Msg, "wireserver") {
		t.Errorf("ADD without wireserver: %v, want an error naming the wireserver", err)
	}
	m.assertClean(t, datapath.ModeBridge)
	if err := c.svc.Start(fabric.ServiceWireserver); err != nil {
		t.Fatal(err)
	}
	m.addPod(t, "q")
}

var _ = fmt.Sprintf
