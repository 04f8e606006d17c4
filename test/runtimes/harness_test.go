package runtimes

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
	"github.com/vnetcni/vnetcni/lab/runtimes"
	"github.com/vnetcni/vnetcni/lab/vnetlab"
)

// The lab's VMs the tests use.
const (
	vmA = "vm-1"
	vmB = "vm-2"
	vmM = "master-0"
)

const probeTimeout = 2 * time.Second

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// vmNetNS is the path of a lab VM's namespace, the plugins' host.
func vmNetNS(vm string) string { return netns.Path(fabric.Open(theLab.Spec).VMNetNS(vm)) }

// node describes a lab VM to a runtime: its namespace, CNI directories and
// the plugins' environment, exactly as the lab's own runner uses them.
func node(vm string) runtimes.Node {
	r := theLab.Runner(vm)
	d := theLab.VMDir(vm)
	return runtimes.Node{
		Name:       theLab.Name + "-" + vm,
		NetNS:      r.NetNS,
		CNIBinDir:  filepath.Join(d, "bin"),
		CNIConfDir: filepath.Join(d, "net.d"),
		Env:        r.Env,
	}
}

// kernelState counts what the plugin holds on a VM.
type kernelState struct {
	allocations int
	endpoints   int
	veths       int
	podElems    int
}

func vmState(t *testing.T, vm string) kernelState {
	t.Helper()
	var ks kernelState
	st, err := store.New(theLab.StateDir(vm)).Read()
	if err != nil {
		t.Fatalf("read %s plugin state: %v", vm, err)
	}
	ks.allocations, ks.endpoints = len(st.Allocations), len(st.Endpoints)

	h := netnstest.HandleAt(t, vmNetNS(vm))
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, datapath.HostIfPrefix) {
			ks.veths++
		}
	}
	f, err := os.Open(vmNetNS(vm))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	elems, err := datapath.Rules{Network: "azure", Mode: theLab.Mode}.Pods(c)
	if err != nil {
		t.Fatalf("list %s nftables pod elements: %v", vm, err)
	}
	ks.podElems = len(elems)
	return ks
}

// assertBack checks a VM holds what it held before the test: no
// allocation, endpoint, veth or nftables element of the test's pods.
func assertBack(t *testing.T, vm string, before kernelState, ids ...string) {
	t.Helper()
	if now := vmState(t, vm); now != before {
		t.Errorf("%s after teardown: %+v, want as before the test %+v", vm, now, before)
	}
	st, err := store.New(theLab.StateDir(vm)).Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := st.AllocationFor(id, "eth0"); ok {
			t.Errorf("%s: allocation for %s left after teardown", vm, id)
		}
		if _, ok := st.Endpoints[store.EndpointKey(id, "eth0")]; ok {
			t.Errorf("%s: endpoint for %s left after teardown", vm, id)
		}
	}
}

// assertInPool checks an address is one of the VM NIC's secondary IPs.
func assertInPool(t *testing.T, vm string, ip netip.Addr) {
	t.Helper()
	v, err := theLab.VMSpec(vm)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range v.SecondaryIPs {
		if a == ip {
			return
		}
	}
	t.Errorf("pod IP %s is not in %s's NIC pool %s-%s", ip, vm, v.SecondaryIPs[0], v.SecondaryIPs[len(v.SecondaryIPs)-1])
}

// assertEndpoint checks the plugin recorded the pod's Kubernetes identity
// (from K8S_POD_NAMESPACE and K8S_POD_NAME) for a container.
func assertEndpoint(t *testing.T, vm, id, podNS, podName string) {
	t.Helper()
	st, err := store.New(theLab.StateDir(vm)).Read()
	if err != nil {
		t.Fatal(err)
	}
	ep, ok := st.Endpoints[store.EndpointKey(id, "eth0")]
	if !ok {
		t.Errorf("%s: no endpoint for container %s", vm, id)
		return
	}
	if ep.PodNamespace != podNS || ep.PodName != podName {
		t.Errorf("%s: endpoint of %s records pod %s/%s, want %s/%s", vm, id, ep.PodNamespace, ep.PodName, podNS, podName)
	}
}

// mustReach pings both ways between two pod namespaces.
func mustReach(t *testing.T, aNS string, aIP netip.Addr, bNS string, bIP netip.Addr) {
	t.Helper()
	if err := probe.Ping(aNS, bIP, probeTimeout); err != nil {
		t.Errorf("ping %s from %s: %v", bIP, aIP, err)
	}
	if err := probe.Ping(bNS, aIP, probeTimeout); err != nil {
		t.Errorf("ping %s from %s: %v", aIP, bIP, err)
	}
}

// peerPod attaches a plain lab pod (libcni) on a VM, removed at cleanup.
func peerPod(t *testing.T, ctx context.Context, vm, name string) vnetlab.Pod {
	t.Helper()
	p, err := vnetlab.AddPod(ctx, theLab.Name, vm, name, nil)
	if err != nil {
		t.Fatalf("lab pod %s on %s: %v", name, vm, err)
	}
	t.Cleanup(func() {
		if err := vnetlab.DelPod(context.Background(), theLab.Name, vm, name); err != nil {
			t.Errorf("remove lab pod %s: %v", name, err)
		}
	})
	return p
}

// pluginCall is one line of the plugin's log.
type pluginCall struct {
	cmd   string
	netns string
}

var logLine = regexp.MustCompile(`plugin=azure-vnet .*cmd=(\w+) container=(\S+) ifname=\S+ netns=("[^"]*"|\S*)`)

// pluginCalls lists azure-vnet's calls for a container from the VM's log.
func pluginCalls(t *testing.T, vm, id string) []pluginCall {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(theLab.VMDir(vm), "azure-vnet.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out []pluginCall
	for _, l := range strings.Split(string(b), "\n") {
		m := logLine.FindStringSubmatch(l)
		if m == nil || m[2] != id {
			continue
		}
		out = append(out, pluginCall{cmd: m[1], netns: strings.Trim(m[3], `"`)})
	}
	return out
}

// dumpLogs shows the end of the VM's plugin log when a test failed.
func dumpLogs(t *testing.T, vm string, files ...string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, f := range append([]string{filepath.Join(theLab.VMDir(vm), "azure-vnet.log")}, files...) {
			if b, err := os.ReadFile(f); err == nil {
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				if len(lines) > 25 {
					lines = lines[len(lines)-25:]
				}
				t.Logf("%s:\n%s", f, strings.Join(lines, "\n"))
			}
		}
	})
}
