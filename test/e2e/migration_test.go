package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/incumbent"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// incumbentPod builds, in bridge mode, what Azure's own azure-vnet leaves
// on a node for one pod: bridge azure0 owning eth0 and its addresses, a
// host veth named the way it names them (azv + 11 hex digits) on the
// bridge, the pod's address on its eth0, and its state files, with one
// more address its IPAM hands out to a pod of another plugin.
func incumbentPod(t *testing.T, m *vm, containerID string, ip, other netip.Addr) *pod {
	t.Helper()
	podNS := m.newPodNS(t, "incumbent")
	hostIf := "azv1a2b3c4d5e6"
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	bits := subnet.Bits()
	primary := netip.PrefixFrom(m.spec.PrimaryIP, bits).String()
	gw := fabric.Gateway(subnet).String()
	nicMAC := net.HardwareAddr(m.spec.MAC[:]).String()
	for _, args := range [][]string{
		{"ip", "link", "add", "azure0", "address", nicMAC, "type", "bridge"},
		{"ip", "link", "set", "azure0", "up"},
		{"ip", "addr", "del", primary, "dev", "eth0"},
		{"ip", "link", "set", "eth0", "master", "azure0"},
		{"ip", "addr", "add", primary, "dev", "azure0"},
		{"ip", "route", "add", "default", "via", gw, "dev", "azure0"},
		{"ip", "link", "add", hostIf, "type", "veth", "peer", "name", "inc0", "address", mac.String(), "netns", netns.Path(podNS)},
		{"ip", "link", "set", hostIf, "master", "azure0", "up"},
	} {
		if out, err := runIn(m.ns, args...); err != nil {
			t.Fatalf("%v in %s: %v %s", args, m.ns, err, out)
		}
	}
	for _, args := range [][]string{
		{"ip", "link", "set", "inc0", "name", "eth0"},
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "add", netip.PrefixFrom(ip, bits).String(), "dev", "eth0"},
		{"ip", "route", "add", "default", "via", gw},
	} {
		if out, err := runIn(podNS, args...); err != nil {
			t.Fatalf("%v in %s: %v %s", args, podNS, err, out)
		}
	}
	writeIncumbentState(t, m, "bridge", `,"BridgeName":"azure0"`, containerID, hostIf, mac, ip, other)
	return &pod{vm: m, name: "incumbent", ns: podNS, ip: ip, cni: cnirunner.Pod{
		ContainerID: containerID, NetNS: netns.Path(podNS), IfName: "eth0", Namespace: "default", Name: "legacy"}}
}

// writeIncumbentState writes Azure's azure-vnet network and IPAM files for
// one pod of mode (bridgeField: the external interface's BridgeName, if
// any), with one more address its IPAM hands out to a pod of another
// plugin.
func writeIncumbentState(t *testing.T, m *vm, mode, bridgeField, containerID, hostIf string, mac net.HardwareAddr, ip, other netip.Addr) {
	t.Helper()
	bits := subnet.Bits()
	gw := fabric.Gateway(subnet).String()
	mask := base64.StdEncoding.EncodeToString(net.CIDRMask(bits, 32))
	network := fmt.Sprintf(`{"Network":{"Version":"v1.4.39","TimeStamp":"2024-01-01T00:00:00Z","ExternalInterfaces":{"eth0":{"Name":"eth0","Subnets":[%q]%s,"Networks":{"azure":{"Id":"azure","Mode":%q,"Endpoints":{%q:{"Id":%q,"IfName":"eth0","HostIfName":%q,"MacAddress":%q,"IPAddresses":[{"IP":%q,"Mask":%q}],"Gateways":[%q],"ContainerID":%q,"PODName":"legacy","PODNameSpace":"default"}}}}}}}}`,
		subnet, bridgeField, mode, containerID[:8]+"-eth0", containerID[:8]+"-eth0", hostIf, base64.StdEncoding.EncodeToString(mac), ip, mask, gw, containerID)
	ipamState := fmt.Sprintf(`{"IPAM":{"Version":"v1.4.39","TimeStamp":"2024-01-01T00:00:00Z","AddressSpaces":{"local":{"Id":"local","Scope":0,"Pools":{%q:{"Id":%q,"IfName":"eth0","Subnet":{"IP":%q,"Mask":%q},"Gateway":%q,"Addresses":{%q:{"ID":%q,"Addr":%q,"InUse":true},%q:{"ID":"sriov-net1","Addr":%q,"InUse":true}},"IsIPv6":false,"Priority":0,"RefCount":1}}}}}}`,
		subnet, subnet, subnet.Addr(), mask, gw, ip, containerID[:8]+"-eth0", ip, other, other)
	for name, body := range map[string]string{incumbent.NetworkFile: network, incumbent.IPAMFile: ipamState} {
		if err := os.WriteFile(filepath.Join(m.incumbentDir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// incumbentTransparentPod builds what Azure's own azure-vnet leaves on a
// node for one pod in transparent mode (its default since v1.2): eth0
// untouched, a host veth named the way it names them with a /32 route to
// the pod, and in the pod the address with the subnet's prefix, no on-link
// subnet route, everything via 169.254.1.1 with a static neighbour for it
// (the host veth's MAC); and its state files.
func incumbentTransparentPod(t *testing.T, m *vm, containerID string, ip, other netip.Addr) *pod {
	t.Helper()
	podNS := m.newPodNS(t, "incumbent")
	hostIf := "azv1a2b3c4d5e6"
	hostMAC := "aa:aa:aa:aa:aa:aa"
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	// The image put the pod's address on eth0; the incumbent's pod could
	// not have worked with it there.
	_, _ = runIn(m.ns, "ip", "addr", "del", netip.PrefixFrom(ip, subnet.Bits()).String(), "dev", "eth0")
	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "link", "add", hostIf, "address", hostMAC, "type", "veth", "peer", "name", "inc0", "address", mac.String(), "netns", netns.Path(podNS)},
		{"ip", "link", "set", hostIf, "up"},
		{"ip", "route", "add", ip.String() + "/32", "dev", hostIf},
	} {
		if out, err := runIn(m.ns, args...); err != nil {
			t.Fatalf("%v in %s: %v %s", args, m.ns, err, out)
		}
	}
	for _, args := range [][]string{
		{"ip", "link", "set", "inc0", "name", "eth0"},
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "add", netip.PrefixFrom(ip, subnet.Bits()).String(), "dev", "eth0", "noprefixroute"},
		{"ip", "route", "add", "169.254.1.1/32", "dev", "eth0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
		{"ip", "neigh", "add", "169.254.1.1", "lladdr", hostMAC, "dev", "eth0", "nud", "permanent"},
	} {
		if out, err := runIn(podNS, args...); err != nil {
			t.Fatalf("%v in %s: %v %s", args, podNS, err, out)
		}
	}
	writeIncumbentState(t, m, "transparent", "", containerID, hostIf, mac, ip, other)
	return &pod{vm: m, name: "incumbent", ns: podNS, ip: ip, cni: cnirunner.Pod{
		ContainerID: containerID, NetNS: netns.Path(podNS), IfName: "eth0", Namespace: "default", Name: "legacy"}}
}

// TestMigrationFromAzureCNI: installing over a node where Azure's own
// azure-vnet runs a pod, in bridge mode or in transparent mode, keeps that
// pod working, never reuses its address nor one its IPAM gave another
// plugin, leaves its veth alone in `vnetctl gc --fix`, and DEL of the
// adopted pod removes it.
func TestMigrationFromAzureCNI(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { testMigration(t, mode) })
	}
}

func testMigration(t *testing.T, mode string) {
	c := newCluster(t, clusterOpts{vms: 2, secondaries: 4, conflist: conflist(t, "1.1.0", mode, nil)})
	vm1, vm2 := c.vms[0], c.vms[1]
	build := incumbentPod
	if mode == datapath.ModeTransparent {
		build = incumbentTransparentPod
	}
	old := build(t, vm1, "legacy0123456789", vm1.spec.SecondaryIPs[0], vm1.spec.SecondaryIPs[1])

	if out, code := vm1.vnetctl(t, "gc", "--fix"); code != 0 || strings.Contains(out, "azv1a2b3c4d5e6") {
		t.Errorf("vnetctl gc --fix before the first ADD: exit %d, want 0 and the incumbent's veth left alone\n%s", code, out)
	}
	if vm1.vethCount(t) != 1 {
		t.Fatalf("the incumbent's veth is gone before any ADD")
	}
	a := vm1.addPod(t, "a")
	b := vm1.addPod(t, "b")
	x := vm2.addPod(t, "x")
	for _, p := range []*pod{a, b} {
		if p.ip == vm1.spec.SecondaryIPs[0] || p.ip == vm1.spec.SecondaryIPs[1] {
			t.Errorf("pod %s got %s, an address the incumbent handed out", p.name, p.ip)
		}
	}
	mustReachOut(t, old, x)
	mustPing(t, old.ns, a.ip)
	mustPing(t, a.ns, old.ip)
	if out, code := vm1.vnetctl(t, "doctor"); code != 0 {
		t.Errorf("vnetctl doctor after adoption: exit %d, want 0\n%s", code, out)
	}
	if err := vm1.runner.Del(context.Background(), vm1.list, old.cni); err != nil {
		t.Fatalf("DEL of the adopted pod: %v", err)
	}
	if _, err := vm1.netlink(t).LinkByName("azv1a2b3c4d5e6"); err == nil {
		t.Errorf("DEL of the adopted pod left its veth")
	}
	if _, ok := vm1.state(t).Allocations[old.ip.String()]; ok {
		t.Errorf("DEL of the adopted pod left %s allocated", old.ip)
	}
	if _, ok := vm1.state(t).Allocations[vm1.spec.SecondaryIPs[1].String()]; !ok {
		t.Errorf("the address the incumbent's IPAM gave another plugin is not kept")
	}
	mustReachOut(t, a, x)
}

// nodeConfig is a VM's addresses and main-table routes, as `ip -4 addr` and
// `ip -4 route` print them, sorted.
func nodeConfig(t *testing.T, m *vm) string {
	t.Helper()
	var lines []string
	for _, args := range [][]string{{"ip", "-4", "-o", "addr", "show"}, {"ip", "-4", "route", "show", "table", "main"}} {
		out, err := runIn(m.ns, args...)
		if err != nil {
			t.Fatalf("%v in %s: %v %s", args, m.ns, err, out)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// Drop the interface index and lifetimes, which a recreated
			// address does not keep.
			f := strings.Fields(l)
			if len(f) > 0 && strings.HasSuffix(f[0], ":") {
				f = f[1:]
			}
			if i := slices.Index(f, "valid_lft"); i >= 0 {
				f = f[:i]
			}
			lines = append(lines, strings.Join(f, " "))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestUninstall: `vnetctl uninstall` refuses while pods are attached, then
// returns a VM booted as Azure images boot (the secondaries on eth0, FORWARD
// DROP) to how it booted: the
// same addresses and routes, no bridge, no nftables tables, no state.
func TestUninstall(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 3, conflist: conflist(t, "1.1.0", mode, nil)})
			vm1, vm2 := c.vms[0], c.vms[1]
			booted := nodeConfig(t, vm1)
			a := vm1.addPod(t, "a")
			b := vm1.addPod(t, "b")
			x := vm2.addPod(t, "x")
			mustReachOut(t, a, x)
			if out, code := vm1.vnetctl(t, "uninstall", "--keep-files"); code == 0 || !strings.Contains(out, "still attached") {
				t.Errorf("uninstall with pods attached: exit %d, want a refusal\n%s", code, out)
			}
			a.del(t)
			b.del(t)
			if out, code := vm1.vnetctl(t, "uninstall", "--keep-files"); code != 0 {
				t.Fatalf("uninstall: exit %d\n%s", code, out)
			}
			if got := nodeConfig(t, vm1); got != booted {
				t.Errorf("after uninstall the VM's addresses and routes differ from boot (-boot +now):\n%s", cmp.Diff(booted, got))
			}
			if out, _ := runIn(vm1.ns, "nft", "list", "ruleset"); strings.Contains(string(out), "azure-vnet") {
				t.Errorf("after uninstall nftables holds:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(vm1.dir, "state")); !os.IsNotExist(err) {
				t.Errorf("after uninstall the state directory is still there (%v)", err)
			}
			mustPing(t, vm1.ns, vm2.spec.PrimaryIP)
			mustPing(t, vm2.ns, vm1.spec.PrimaryIP)
		})
	}
}
