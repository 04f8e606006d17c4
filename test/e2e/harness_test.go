// Package e2e drives the real azure-vnet and azure-vnet-ipam binaries
// through libcni, as container runtimes do, on an emulated Azure VNet
// (lab/fabric) built from network namespaces.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/incumbent"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
	"github.com/vnetcni/vnetcni/internal/nft/nfttest"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/fabric/fabrictest"
	"github.com/vnetcni/vnetcni/lab/probe"
	"github.com/vnetcni/vnetcni/lab/testbin"
)

// binDir holds the plugins under test plus portmap and loopback.
var binDir string

func TestMain(m *testing.M) { testbin.Main(m, testbin.Suite{Name: "e2e"}, &binDir) }

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// seedConflist is the sample network configuration of the seed documents.
func seedConflist(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../conf/10-azure.conflist")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// conflist is the seed's conflist with the CNI version and mode replaced
// and extra fields set on azure-vnet's entry.
func conflist(t *testing.T, cniVersion, mode string, extra map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(seedConflist(t), &m); err != nil {
		t.Fatal(err)
	}
	m["cniVersion"] = cniVersion
	p := m["plugins"].([]any)[0].(map[string]any)
	p["mode"] = mode
	for k, v := range extra {
		p[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseList(b []byte) (*libcni.NetworkConfigList, error) { return libcni.ConfListFromBytes(b) }

type cluster struct {
	t   *testing.T
	f   *fabric.Fabric
	svc *fabric.Services
	vms []*vm
}

type vm struct {
	c      *cluster
	spec   fabric.VMSpec
	ns     string // network namespace name
	dir    string
	runner *cnirunner.Runner
	list   *libcni.NetworkConfigList
	// incumbentDir holds the VM's Azure azure-vnet state files, if any.
	incumbentDir string
	// dhcp is the VM's DHCP client, with clusterOpts.dhcp.
	dhcp *fabric.DHCPClient
}

type clusterOpts struct {
	vms         int
	secondaries int
	conflist    []byte
	// cleanVM boots the VMs without the traits of Azure's images (the
	// NIC's secondary IPs on eth0, a FORWARD policy of DROP) that every
	// test meets otherwise.
	cleanVM bool
	// dhcp runs a DHCP client on each VM's eth0 (fabric.Image.DHCP).
	dhcp bool
	// model, "overlay" or "kubenet", gives VM i the pod CIDR podCIDR(i)
	// in its conflist, and the fabric that model's routing.
	model string
}

// clusterCIDR and podCIDR are the pod-CIDR models' address spaces.
var clusterCIDR = netip.MustParsePrefix("10.244.0.0/16")

func podCIDR(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1)) }

var subnet = netip.MustParsePrefix("10.0.0.0/24")

// newCluster builds a fabric with VMs, serves the wireserver and IMDS, and
// gives each VM its own CNI directories with the conflist.
func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	name := "vte" + randHex(5)
	if n := os.Getenv("VNETCNI_E2E_NAME"); n != "" {
		name = n
	}
	spec := fabric.Spec{Name: name, VNet: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}, Subnets: []netip.Prefix{subnet}}
	for i := 0; i < o.vms; i++ {
		v := fabric.VMSpec{
			Name:      fmt.Sprintf("vm%d", i+1),
			MAC:       fabric.HardwareAddr{0x00, 0x0d, 0x3a, 0x00, 0x00, byte(i + 1)},
			Subnet:    subnet,
			PrimaryIP: netip.AddrFrom4([4]byte{10, 0, 0, byte(4 + i)}),
			PublicIP:  netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}),
		}
		for k := 0; k < o.secondaries; k++ {
			v.SecondaryIPs = append(v.SecondaryIPs, netip.AddrFrom4([4]byte{10, 0, 0, byte(10*(i+1) + k)}))
		}
		switch o.model {
		case "overlay":
			v.PodCIDR = podCIDR(i)
		case "kubenet":
			v.IPForwarding = true
		}
		spec.VMs = append(spec.VMs, v)
	}
	if !o.cleanVM {
		spec.Image = fabric.RealImage
	}
	spec.Image.DHCP = o.dhcp
	f, svc := fabrictest.Start(t, spec)
	c := &cluster{t: t, f: f, svc: svc}
	if o.model == "kubenet" {
		routeNodes(t, f, spec)
	}
	for i, v := range spec.VMs {
		dir := t.TempDir()
		conf := o.conflist
		if o.model != "" {
			conf = withPodCIDR(t, conf, o.model, podCIDR(i))
		}
		list, err := libcni.ConfListFromBytes(conf)
		if err != nil {
			t.Fatalf("parse conflist: %v", err)
		}
		m := &vm{c: c, spec: v, ns: f.VMNetNS(v.Name), dir: dir, list: list}
		// Where the plugins look for Azure's own azure-vnet's state: the
		// VM's, never the machine's /var/run.
		m.incumbentDir = filepath.Join(dir, "incumbent")
		if err := os.MkdirAll(m.incumbentDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if o.dhcp {
			dhcpDir := filepath.Join(dir, "dhcp")
			if err := os.MkdirAll(dhcpDir, 0o755); err != nil {
				t.Fatal(err)
			}
			cl, err := fabric.StartDHCPClient(m.ns, "eth0", dhcpDir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Stop() })
			m.dhcp = cl
		}
		m.runner = &cnirunner.Runner{
			NetNS:    netns.Path(m.ns),
			BinDirs:  []string{binDir},
			CacheDir: filepath.Join(dir, "cache"),
			Env: []string{
				store.EnvDir + "=" + filepath.Join(dir, "state"),
				"AZURE_VNET_LOG_FILE=" + filepath.Join(dir, "azure-vnet.log"),
				incumbent.EnvDir + "=" + m.incumbentDir,
			},
		}
		c.vms = append(c.vms, m)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range c.vms {
				if b, err := os.ReadFile(filepath.Join(m.dir, "azure-vnet.log")); err == nil {
					t.Logf("%s plugin log:\n%s", m.spec.Name, lastLines(string(b), 30))
				}
			}
		}
	})
	return c
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

type pod struct {
	vm     *vm
	name   string
	ns     string
	cni    cnirunner.Pod
	ip     netip.Addr
	result *current.Result
}

// newPodNS creates a pod's network namespace, removed at cleanup.
func (m *vm) newPodNS(t *testing.T, name string) string {
	t.Helper()
	ns := m.c.f.Name() + "-" + m.spec.Name + "-" + name
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	return ns
}

// addPod creates a pod namespace and ADDs it through libcni.
func (m *vm) addPod(t *testing.T, name string) *pod {
	t.Helper()
	p, err := m.tryAddPod(t, name)
	if err != nil {
		t.Fatalf("ADD %s on %s: %v", name, m.spec.Name, err)
	}
	return p
}

func (m *vm) tryAddPod(t *testing.T, name string) (*pod, error) {
	t.Helper()
	ns := m.newPodNS(t, name)
	p := &pod{vm: m, name: name, ns: ns, cni: cnirunner.Pod{
		ContainerID: "ctr-" + m.spec.Name + "-" + name, NetNS: netns.Path(ns), IfName: "eth0",
		Namespace: "default", Name: name,
	}}
	res, err := m.runner.Add(context.Background(), m.list, p.cni)
	if err != nil {
		return p, err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	p.result = r
	if len(r.IPs) != 1 {
		t.Fatalf("ADD %s: result has %d IPs, want 1: %+v", name, len(r.IPs), r)
	}
	p.ip, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	return p, nil
}

func (p *pod) del(t *testing.T) {
	t.Helper()
	if err := p.vm.runner.Del(context.Background(), p.vm.list, p.cni); err != nil {
		t.Fatalf("DEL %s: %v", p.name, err)
	}
}

const probeTimeout = 2 * time.Second

func mustPing(t *testing.T, from string, dst netip.Addr) {
	t.Helper()
	if err := probe.Ping(from, dst, probeTimeout); err != nil {
		t.Errorf("ping %s from %s: %v", dst, from, err)
	}
}

func mustNotPing(t *testing.T, from string, dst netip.Addr) {
	t.Helper()
	if err := probe.Ping(from, dst, 500*time.Millisecond); err == nil {
		t.Errorf("ping %s from %s succeeded, want it dropped", dst, from)
	}
}

// echoServer listens on port in a namespace and echoes; closed at cleanup.
func echoServer(t *testing.T, ns string, ip netip.Addr, port uint16) {
	t.Helper()
	l, err := probe.ListenTCP(ns, netip.AddrPortFrom(ip, port))
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	go func() { _ = probe.ServeEcho(l) }()
	t.Cleanup(func() { l.Close() })
}

func mustTCP(t *testing.T, from string, dst netip.AddrPort) {
	t.Helper()
	if err := probe.TCPConnect(from, dst, probeTimeout); err != nil {
		t.Errorf("TCP %s from %s: %v", dst, from, err)
	}
}

// vmKernel reads what the VM's kernel holds for the plugin.
func (m *vm) vethCount(t *testing.T) int {
	t.Helper()
	h := m.netlink(t)
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, datapath.HostIfPrefix) {
			n++
		}
	}
	return n
}

func (m *vm) netlink(t *testing.T) *netlink.Handle { return netnstest.Handle(t, m.ns) }

func (m *vm) nft(t *testing.T) *nftables.Conn { return nfttest.Conn(t, m.ns) }

// podElems lists the pod elements in the VM's nftables tables.
func (m *vm) podElems(t *testing.T, mode string) []datapath.PodElem {
	t.Helper()
	r := datapath.Rules{Network: m.list.Name, Mode: mode}
	elems, err := r.Pods(m.nft(t))
	if err != nil {
		t.Fatalf("list pod elements in %s: %v", m.ns, err)
	}
	return elems
}

func (m *vm) state(t *testing.T) *store.State {
	t.Helper()
	st, err := store.New(filepath.Join(m.dir, "state")).Read()
	if err != nil {
		t.Fatalf("read %s state: %v", m.spec.Name, err)
	}
	return st
}

// assertClean checks the VM holds no veth, no pod element and no allocation.
func (m *vm) assertClean(t *testing.T, mode string) {
	t.Helper()
	if n := m.vethCount(t); n != 0 {
		t.Errorf("%s: %d host veths left, want 0", m.spec.Name, n)
	}
	if e := m.podElems(t, mode); len(e) != 0 {
		t.Errorf("%s: nftables pod elements left: %v", m.spec.Name, e)
	}
	st := m.state(t)
	if len(st.Allocations) != 0 || len(st.Endpoints) != 0 {
		t.Errorf("%s: state left %d allocations, %d endpoints", m.spec.Name, len(st.Allocations), len(st.Endpoints))
	}
}

func (m *vm) inPool(ip netip.Addr) bool {
	for _, a := range m.spec.SecondaryIPs {
		if a == ip {
			return true
		}
	}
	return false
}

func (c *cluster) assertNoDrops(t *testing.T) {
	t.Helper()
	cnt, _, err := c.f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for vm, pc := range cnt {
		if pc.BadMAC != 0 || pc.BadIP != 0 {
			t.Errorf("fabric port of %s dropped legitimate traffic: %+v", vm, pc)
		}
	}
}
