package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/lab/cloud"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
	"github.com/vnetcni/vnetcni/lab/routecontroller"
)

// withPodCIDR sets azure-vnet's ipam section to a pod-CIDR model.
func withPodCIDR(t *testing.T, conf []byte, model string, cidr netip.Prefix) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	ipam := m["plugins"].([]any)[0].(map[string]any)["ipam"].(map[string]any)
	ipam["mode"] = map[string]string{"overlay": netconf.IPAMModeOverlay, "kubenet": netconf.IPAMModeKubenet}[model]
	ipam["podCIDR"] = cidr.String()
	ipam["clusterCIDR"] = clusterCIDR.String()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// routeNodes fills the subnet's route table through the cloud API, as
// kubenet's route controller does.
func routeNodes(t *testing.T, f *fabric.Fabric, spec fabric.Spec) {
	t.Helper()
	c := cloud.New(f, "rg", "vnet", []cloud.Subnet{{Name: "nodes", Prefix: subnet}})
	defer c.Close()
	rc := &routecontroller.Controller{Cloud: c, Table: "kubenet", Subnet: c.SubnetID("vnet", "nodes")}
	var nodes []routecontroller.Node
	for i, v := range spec.VMs {
		nodes = append(nodes, routecontroller.Node{Name: v.Name, IP: v.PrimaryIP, PodCIDR: podCIDR(i)})
	}
	if err := rc.Reconcile(context.Background(), nodes); err != nil {
		t.Fatalf("route controller: %v", err)
	}
}

// TestModels attaches pods in the overlay and kubenet models, in both modes,
// with the oldest and newest CNI version (the result is built by the same
// code in every model; TestAttachments runs every version): addresses from the node's pod CIDR, the gateway
// each mode gives, pod↔pod across VMs through the fabric's routing, the
// node's address as the source a VM sees, the VM's public address on the
// internet, and a clean DEL.
func TestModels(t *testing.T) {
	for _, model := range []string{"overlay", "kubenet"} {
		for _, mode := range modes {
			for _, ver := range []string{cniVersions[0], cniVersions[len(cniVersions)-1]} {
				t.Run(model+"/"+mode+"/"+ver, func(t *testing.T) { testModel(t, model, mode, ver) })
			}
		}
	}
}

func testModel(t *testing.T, model, mode, ver string) {
	c := newCluster(t, clusterOpts{vms: 2, conflist: conflist(t, ver, mode, nil), model: model})
	vm1, vm2 := c.vms[0], c.vms[1]
	a := vm1.addPod(t, "a")
	b := vm1.addPod(t, "b")
	x := vm2.addPod(t, "x")
	for i, p := range []*pod{a, b, x} {
		block := podCIDR(0)
		if i == 2 {
			block = podCIDR(1)
		}
		gw := block.Addr().Next() // the pods' router in bridge mode
		if mode == datapath.ModeTransparent {
			gw = datapath.TransparentGateway
		}
		if !block.Contains(p.ip) || p.ip == block.Addr().Next() {
			t.Errorf("pod %s got %s, want a pod address of %s", p.name, p.ip, block)
		}
		if got, _ := netip.AddrFromSlice(p.result.IPs[0].Gateway.To4()); got != gw {
			t.Errorf("pod %s: gateway %s, want %s", p.name, got, gw)
		}
	}
	mustPing(t, a.ns, b.ip)
	mustPing(t, a.ns, x.ip)
	mustPing(t, vm2.ns, a.ip) // a node reaches another node's pods
	echoServer(t, x.ns, x.ip, 8080)
	mustTCP(t, a.ns, netip.AddrPortFrom(x.ip, 8080))
	// Pod to pod keeps the pod's address; pod to a VM takes the node's.
	if got := probe.SourceSeen(x.ns, netip.AddrPortFrom(x.ip, 9090), a.ns, probeTimeout); got != a.ip.String() {
		t.Errorf("pod x saw pod a as %s, want %s", got, a.ip)
	}
	if got := probe.SourceSeen(vm2.ns, netip.AddrPortFrom(vm2.spec.PrimaryIP, 9091), a.ns, probeTimeout); got != vm1.spec.PrimaryIP.String() {
		t.Errorf("vm2 saw pod a as %s, want its node %s", got, vm1.spec.PrimaryIP)
	}
	code, body, err := probe.HTTPGet(a.ns, "http://"+fabric.InternetHostIP.String()+"/", nil, probeTimeout)
	if err != nil || code != 200 || string(body) != vm1.spec.PublicIP.String() {
		t.Errorf("pod a to the internet: %d %q %v, want 200 %s", code, body, err, vm1.spec.PublicIP)
	}
	c.assertNoDrops(t)

	if ok, _ := version.GreaterThanOrEqualTo(ver, "0.4.0"); ok {
		for _, p := range []*pod{a, b, x} {
			if err := p.vm.runner.Check(context.Background(), p.vm.list, p.cni); err != nil {
				t.Errorf("CHECK %s: %v", p.name, err)
			}
		}
	}
	for _, p := range []*pod{a, b, x} {
		p.del(t)
		p.del(t)
	}
	vm1.assertClean(t, mode)
	vm2.assertClean(t, mode)
}
