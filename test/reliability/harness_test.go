// Package reliability tries hard to break azure-vnet on the emulated Azure
// VNet: SIGKILL at random instants of ADD and DEL, bursts of concurrent
// and conflicting calls, damaged state files, malformed input of every
// kind, and pods that attack their neighbours. Every test drives the real
// binaries, started inside a lab VM's namespace as a runtime would start
// them, and then checks that nothing leaked and nothing is shared.
//
// The tests are heavy (hundreds of plugin processes); they run with
// `make reliability` (VNETCNI_RELIABILITY=1), which CI calls after
// `make test`.
package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
	"github.com/vnetcni/vnetcni/internal/nft/nfttest"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/fabric/fabrictest"
	"github.com/vnetcni/vnetcni/lab/probe"
	"github.com/vnetcni/vnetcni/lab/testbin"
)

// EnvRun enables the package: the tests take minutes and load the machine,
// so `go test ./...` skips them and `make reliability` runs them.
const EnvRun = "VNETCNI_RELIABILITY"

var binDir string

func TestMain(m *testing.M) {
	if os.Getenv(envWireserverProcess) != "" {
		os.Exit(wireserverProcess())
	}
	testbin.Main(m, testbin.Suite{Name: "reliability", Gate: EnvRun, Hint: "make reliability"}, &binDir)
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// The lab's address plan: one /22, so a VM can carry hundreds of
// secondary addresses. VM i has primary 10.0.0.(4+i); the secondaries are
// handed out in blocks from 10.0.0.16 upwards.
var (
	vnet   = netip.MustParsePrefix("10.0.0.0/16")
	subnet = netip.MustParsePrefix("10.0.0.0/22")
)

const netName = "azure"

type lab struct {
	t    *testing.T
	f    *fabric.Fabric
	svc  *fabric.Services
	vms  []*node
	mode string
}

// node is a lab VM as the plugin sees it: its namespace, its state and log
// directory, and the configuration its runtime passes.
type node struct {
	lab    *lab
	spec   fabric.VMSpec
	ns     string
	dir    string
	extra  map[string]any // extra fields of azure-vnet's entry
	conf   []byte         // azure-vnet's configuration as libcni passes it
	list   *libcni.NetworkConfigList
	runner *cnirunner.Runner
}

type labOpts struct {
	vms         int
	secondaries int   // per VM
	perVM       []int // secondaries of the first VMs, overriding secondaries
	mode        string
	extra       map[string]any // extra fields of azure-vnet's entry
}

func newLab(t *testing.T, o labOpts) *lab {
	t.Helper()
	name := "vrl" + randHex(6)
	spec := fabric.Spec{Name: name, VNet: []netip.Prefix{vnet}, Subnets: []netip.Prefix{subnet}}
	next := netip.MustParseAddr("10.0.0.16")
	for i := 0; i < o.vms; i++ {
		v := fabric.VMSpec{
			Name:      fmt.Sprintf("vm%d", i+1),
			MAC:       fabric.HardwareAddr{0x00, 0x0d, 0x3a, 0x00, 0x01, byte(i + 1)},
			Subnet:    subnet,
			PrimaryIP: netip.AddrFrom4([4]byte{10, 0, 0, byte(4 + i)}),
			PublicIP:  netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}),
		}
		count := o.secondaries
		if i < len(o.perVM) {
			count = o.perVM[i]
		}
		for k := 0; k < count; k++ {
			v.SecondaryIPs = append(v.SecondaryIPs, next)
			next = next.Next()
		}
		spec.VMs = append(spec.VMs, v)
	}
	f, svc := fabrictest.Start(t, spec)
	l := &lab{t: t, f: f, mode: o.mode, svc: svc}
	for _, v := range spec.VMs {
		n := &node{lab: l, spec: v, ns: f.VMNetNS(v.Name), dir: t.TempDir(), extra: o.extra}
		n.setConf(o.mode, o.extra)
		n.runner = &cnirunner.Runner{
			NetNS:    netns.Path(n.ns),
			BinDirs:  []string{binDir},
			CacheDir: filepath.Join(n.dir, "cache"),
			Env:      []string{store.EnvDir + "=" + n.stateDir(), "AZURE_VNET_LOG_FILE=" + n.logFile()},
		}
		l.vms = append(l.vms, n)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range l.vms {
				if b, err := os.ReadFile(n.logFile()); err == nil {
					t.Logf("%s plugin log (last lines):\n%s", n.spec.Name, lastLines(string(b), 25))
				}
			}
		}
	})
	return l
}

func (n *node) stateDir() string { return filepath.Join(n.dir, "state") }
func (n *node) logFile() string  { return filepath.Join(n.dir, "azure-vnet.log") }

// setConf sets the network configuration: the conflist for libcni (GC) and
// azure-vnet's entry as libcni hands it to the plugin.
func (n *node) setConf(mode string, extra map[string]any) {
	entry := map[string]any{"type": "azure-vnet", "mode": mode, "ipam": map[string]any{"type": "azure-vnet-ipam"}}
	for k, v := range extra {
		entry[k] = v
	}
	list := map[string]any{"cniVersion": "1.1.0", "name": netName, "plugins": []any{entry}}
	lb, err := json.Marshal(list)
	if err != nil {
		panic(err)
	}
	l, err := libcni.ConfListFromBytes(lb)
	if err != nil {
		panic(err)
	}
	n.list = l
	entry["name"] = netName
	entry["cniVersion"] = "1.1.0"
	n.conf, _ = json.Marshal(entry)
}

func lastLines(s string, k int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > k {
		l = l[len(l)-k:]
	}
	return strings.Join(l, "\n")
}

// call is one plugin invocation with the CNI environment a runtime sets.
type call struct {
	cmd    string // ADD, DEL, CHECK, GC, STATUS
	id     string // CNI_CONTAINERID
	netns  string // CNI_NETNS (a path)
	ifName string // CNI_IFNAME; eth0 when empty
	args   string // CNI_ARGS
	conf   []byte // stdin; the node's configuration when nil
	// env overrides the environment: a value replaces a variable, an
	// empty value removes it.
	env map[string]string
	// plugin is the binary; azure-vnet when empty.
	plugin string
}

// outcome is what a plugin process did.
type outcome struct {
	stdout, stderr string
	exit           int          // -1 when killed
	cniErr         *types.Error // the error printed on stdout, if any
	dur            time.Duration
	end            time.Time
	killed         bool // SIGKILL arrived before the process ended
}

func (o outcome) String() string {
	switch {
	case o.killed:
		return fmt.Sprintf("killed after %v", o.dur)
	case o.cniErr != nil:
		return fmt.Sprintf("exit %d, CNI error %d %q (%s); stderr %q", o.exit, o.cniErr.Code, o.cniErr.Msg, o.cniErr.Details, o.stderr)
	case o.exit != 0:
		return fmt.Sprintf("exit %d; stdout %q stderr %q", o.exit, o.stdout, o.stderr)
	}
	return "ok"
}

func (o outcome) ok() bool { return !o.killed && o.exit == 0 }

func (n *node) environ(c call) []string {
	ifName := c.ifName
	if ifName == "" {
		ifName = "eth0"
	}
	env := map[string]string{
		"CNI_COMMAND":         c.cmd,
		"CNI_CONTAINERID":     c.id,
		"CNI_NETNS":           c.netns,
		"CNI_IFNAME":          ifName,
		"CNI_PATH":            binDir,
		"CNI_ARGS":            c.args,
		store.EnvDir:          n.stateDir(),
		"AZURE_VNET_LOG_FILE": n.logFile(),
		"PATH":                os.Getenv("PATH"),
	}
	for k, v := range c.env {
		env[k] = v
	}
	var out []string
	for k, v := range env {
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// start forks the plugin from a thread inside the VM's namespace, as
// cnirunner does, so the test holds its PID.
func (n *node) start(c call) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer, error) {
	plugin := c.plugin
	if plugin == "" {
		plugin = "azure-vnet"
	}
	conf := c.conf
	if conf == nil {
		conf = n.conf
	}
	cmd := exec.Command(filepath.Join(binDir, plugin))
	cmd.Env = n.environ(c)
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := netns.Do(n.ns, cmd.Start)
	return cmd, &stdout, &stderr, err
}

// run runs the plugin to completion.
func (n *node) run(t testing.TB, c call) outcome {
	t.Helper()
	return n.runKilled(t, c, -1)
}

// runKilled runs the plugin and sends it SIGKILL after delay (never when
// delay is negative).
func (n *node) runKilled(t testing.TB, c call, delay time.Duration) outcome {
	t.Helper()
	begin := time.Now()
	cmd, stdout, stderr, err := n.start(c)
	if err != nil {
		t.Fatalf("start %s %s: %v", c.cmd, c.id, err)
	}
	killed := false
	if delay >= 0 {
		time.Sleep(delay)
		if cmd.Process.Signal(syscall.SIGKILL) == nil {
			killed = true
		}
	}
	werr := cmd.Wait()
	o := outcome{stdout: stdout.String(), stderr: stderr.String(), dur: time.Since(begin), end: time.Now()}
	var ee *exec.ExitError
	switch {
	case werr == nil:
		killed = false
	case errors.As(werr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			o.exit = -1
		} else {
			killed = false
			o.exit = ee.ExitCode()
		}
	default:
		t.Fatalf("wait for %s %s: %v", c.cmd, c.id, werr)
	}
	o.killed = killed && o.exit == -1
	if o.exit > 0 {
		var te types.Error
		if json.Unmarshal(stdout.Bytes(), &te) == nil && (te.Code != 0 || te.Msg != "") {
			o.cniErr = &te
		}
	}
	return o
}

// pod is a container with its own network namespace.
type pod struct {
	node *node
	id   string
	ns   string // name
	ip   netip.Addr
	mac  net.HardwareAddr
	host string // host veth
}

func (p *pod) path() string { return netns.Path(p.ns) }

// newPod creates a pod's namespace, removed at cleanup.
func (n *node) newPod(t testing.TB, id string) *pod {
	t.Helper()
	ns := n.lab.f.Name() + "-" + n.spec.Name + "-" + id
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	return &pod{node: n, id: id, ns: ns, host: datapath.HostIfName(id, "eth0")}
}

// addPod creates and attaches a pod, failing the test if ADD fails.
func (n *node) addPod(t testing.TB, id string) *pod {
	t.Helper()
	p := n.newPod(t, id)
	if o := n.add(t, p); !o.ok() {
		t.Fatalf("ADD %s on %s: %s", id, n.spec.Name, o)
	}
	return p
}

// add runs ADD for p and records the address and MAC it was given.
func (n *node) add(t testing.TB, p *pod) outcome {
	t.Helper()
	o := n.run(t, call{cmd: "ADD", id: p.id, netns: p.path(), args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + p.id})
	if o.ok() {
		if err := p.setResult([]byte(o.stdout)); err != nil {
			t.Fatalf("ADD %s: %v", p.id, err)
		}
	}
	return o
}

func (p *pod) setResult(b []byte) error {
	var r struct {
		Interfaces []struct {
			Name    string `json:"name"`
			Mac     string `json:"mac"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("decode result %q: %w", b, err)
	}
	if len(r.IPs) != 1 {
		return fmt.Errorf("result %s: want one address", b)
	}
	pfx, err := netip.ParsePrefix(r.IPs[0].Address)
	if err != nil {
		return fmt.Errorf("result address: %w", err)
	}
	p.ip = pfx.Addr()
	for _, i := range r.Interfaces {
		if i.Sandbox != "" {
			p.mac, _ = net.ParseMAC(i.Mac)
		}
	}
	return nil
}

// del runs DEL for a container.
func (n *node) del(t testing.TB, id string) outcome {
	t.Helper()
	return n.run(t, call{cmd: "DEL", id: id, netns: ""})
}

// mustDel deletes a container, retrying as a runtime does; it fails the
// test if DEL never succeeds, and returns how many attempts failed.
func (n *node) mustDel(t testing.TB, id string) int {
	t.Helper()
	var last outcome
	for i := 0; i < 5; i++ {
		last = n.del(t, id)
		if last.ok() {
			return i
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("DEL %s on %s never succeeded: %s", id, n.spec.Name, last)
	return 0
}

// gc runs CNI GC through libcni, keeping the valid attachments.
func (n *node) gc(t testing.TB, valid []string) {
	t.Helper()
	var atts []types.GCAttachment
	for _, id := range valid {
		atts = append(atts, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	if err := n.runner.GC(context.Background(), n.list, atts); err != nil {
		t.Fatalf("GC on %s: %v", n.spec.Name, err)
	}
}

func (n *node) inPool(ip netip.Addr) bool {
	for _, a := range n.spec.SecondaryIPs {
		if a == ip {
			return true
		}
	}
	return false
}

// view is what a node holds for its pods, in the kernel and in the state.
type view struct {
	veths     map[string]datapath.Attachment // host veth -> its alias; zero if none
	elems     map[string]string              // "set key" -> value, of the network's pod sets
	routes    []string                       // routes to pod addresses or through host veths
	neighs    []string                       // neighbour and FDB entries for pods
	state     *store.State
	stateErr  error
	tmpFiles  []string
	damaged   []string
	podIfaces map[string]int // pod netns -> interfaces other than lo (filled by caller)
}

// snapshot reads the node's view.
func (n *node) snapshot(t testing.TB) *view {
	t.Helper()
	v := &view{veths: map[string]datapath.Attachment{}, elems: map[string]string{}}
	h := n.netlink(t)
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatalf("list links in %s: %v", n.ns, err)
	}
	hostIfs := map[int]string{}
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Name, datapath.HostIfPrefix) {
			continue
		}
		a, _ := datapath.ParseAlias(l.Attrs().Alias)
		a.HostIfName = l.Attrs().Name
		v.veths[l.Attrs().Name] = a
		hostIfs[l.Attrs().Index] = l.Attrs().Name
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatalf("list routes in %s: %v", n.ns, err)
	}
	for _, r := range routes {
		dev, viaPod := hostIfs[r.LinkIndex]
		if r.Dst == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		ones, _ := r.Dst.Mask.Size()
		if viaPod || (ones == 32 && n.inPool(dst)) {
			v.routes = append(v.routes, fmt.Sprintf("%s/%d dev %s", dst, ones, orIndex(dev, r.LinkIndex)))
		}
	}
	neighs, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list neighbours in %s: %v", n.ns, err)
	}
	for _, nb := range neighs {
		ip, _ := netip.AddrFromSlice(nb.IP.To4())
		if nb.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 || nb.State == netlink.NUD_NONE {
			continue
		}
		if _, viaPod := hostIfs[nb.LinkIndex]; viaPod || n.inPool(ip) {
			v.neighs = append(v.neighs, fmt.Sprintf("%s lladdr %s dev %s state %#x", ip, nb.HardwareAddr, orIndex(hostIfs[nb.LinkIndex], nb.LinkIndex), nb.State))
		}
	}
	fdb, err := h.NeighList(0, syscall.AF_BRIDGE)
	if err != nil {
		t.Fatalf("list FDB in %s: %v", n.ns, err)
	}
	for _, nb := range fdb {
		if dev, ok := hostIfs[nb.LinkIndex]; ok && nb.State&netlink.NUD_NOARP != 0 && nb.Flags&netlink.NTF_MASTER != 0 {
			v.neighs = append(v.neighs, fmt.Sprintf("fdb %s dev %s", nb.HardwareAddr, dev))
		}
	}
	n.readElems(t, v)
	b, err := os.ReadFile(filepath.Join(n.stateDir(), store.FileName))
	switch {
	case errors.Is(err, os.ErrNotExist):
		v.state = store.NewState()
	case err != nil:
		t.Fatal(err)
	default:
		v.state, v.stateErr = store.Decode(b, store.FileName)
	}
	ents, _ := os.ReadDir(n.stateDir())
	for _, e := range ents {
		switch {
		case strings.HasPrefix(e.Name(), store.FileName+".tmp"):
			v.tmpFiles = append(v.tmpFiles, e.Name())
		case strings.HasPrefix(e.Name(), store.FileName+".damaged"):
			v.damaged = append(v.damaged, e.Name())
		}
	}
	return v
}

func orIndex(name string, idx int) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("if%d", idx)
}

// readElems lists the elements of the network's pod sets and maps.
func (n *node) readElems(t testing.TB, v *view) {
	t.Helper()
	c := n.nft(t)
	tables, err := c.ListTables()
	if err != nil {
		t.Fatalf("list nftables tables in %s: %v", n.ns, err)
	}
	for _, tb := range tables {
		if tb.Name != datapath.TableName(netName) {
			continue
		}
		sets, err := c.GetSets(tb)
		if err != nil {
			t.Fatalf("list sets of %s: %v", tb.Name, err)
		}
		for _, s := range sets {
			if s.Name != "pods" && s.Name != "pod-macs" && s.Name != "pod-ips" {
				continue
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				t.Fatalf("list %s: %v", s.Name, err)
			}
			for _, e := range elems {
				v.elems[fmt.Sprintf("%d/%s %s", tb.Family, s.Name, elemKey(s.Name, e.Key))] = net.HardwareAddr(e.Val).String()
			}
		}
	}
}

// elemKey decodes a pod set key: an address, or an interface name with a
// MAC or an address.
func elemKey(set string, k []byte) string {
	if set == "pods" {
		a, _ := netip.AddrFromSlice(k)
		return a.String()
	}
	if len(k) < 20 {
		return hex.EncodeToString(k)
	}
	name := strings.TrimRight(string(k[:16]), "\x00")
	if set == "pod-macs" {
		return name + " . " + net.HardwareAddr(k[16:22]).String()
	}
	a, _ := netip.AddrFromSlice(k[16:20])
	return name + " . " + a.String()
}

func (n *node) netlink(t testing.TB) *netlink.Handle { return netnstest.Handle(t, n.ns) }

func (n *node) nft(t testing.TB) *nftables.Conn { return nfttest.Conn(t, n.ns) }

// expect checks that the node holds exactly the given pods: their veths,
// set elements and routes, their allocations and endpoints and nothing
// else; every address from the pool, none held twice. It returns the
// problems found.
func (n *node) expect(v *view, pods []*pod) []string {
	var probs []string
	bad := func(f string, a ...any) { probs = append(probs, n.spec.Name+": "+fmt.Sprintf(f, a...)) }
	if v.stateErr != nil {
		bad("state file does not decode: %v", v.stateErr)
		return probs
	}
	want := map[string]*pod{}
	ips := map[netip.Addr]string{}
	for _, p := range pods {
		want[p.host] = p
		if other, dup := ips[p.ip]; dup {
			bad("address %s held by %s and %s", p.ip, other, p.id)
		}
		ips[p.ip] = p.id
		if !n.inPool(p.ip) {
			bad("pod %s has %s, not a secondary address of the NIC", p.id, p.ip)
		}
	}
	// Veths.
	kernelIPs := map[netip.Addr]string{}
	for name, a := range v.veths {
		p, ok := want[name]
		if !ok {
			bad("leaked veth %s (alias %s %s %s)", name, a.ContainerID, a.IP, a.PodMAC)
			continue
		}
		if a.ContainerID != p.id || a.IP.Addr() != p.ip {
			bad("veth %s records %s %s, want %s %s", name, a.ContainerID, a.IP, p.id, p.ip)
		}
		if other, dup := kernelIPs[a.IP.Addr()]; dup && a.IP.IsValid() {
			bad("address %s on two veths: %s and %s", a.IP.Addr(), other, name)
		}
		kernelIPs[a.IP.Addr()] = name
	}
	for name, p := range want {
		if _, ok := v.veths[name]; !ok {
			bad("pod %s has no veth %s", p.id, name)
		}
	}
	// State.
	st := v.state
	for k, a := range st.Allocations {
		id, ok := ips[a.IP]
		if !ok {
			bad("leaked allocation %s (container %s)", k, a.ContainerID)
		} else if id != a.ContainerID {
			bad("allocation %s belongs to %s, want %s", k, a.ContainerID, id)
		}
	}
	for _, p := range pods {
		if a, ok := st.Allocations[p.ip.String()]; !ok || a.ContainerID != p.id {
			bad("pod %s's address %s is not allocated to it", p.id, p.ip)
		}
		if _, ok := st.Endpoints[store.EndpointKey(p.id, "eth0")]; !ok {
			bad("pod %s has no endpoint record", p.id)
		}
	}
	for k, e := range st.Endpoints {
		if _, ok := want[e.HostIfName]; !ok {
			bad("leaked endpoint record %s (%s)", k, e.IP)
		}
	}
	for _, pl := range st.Pools {
		for _, a := range pl.Addresses {
			if !n.inPool(a) {
				bad("pool %s lists %s, not on the NIC", pl.ID, a)
			}
		}
	}
	// nftables elements.
	wantElems := map[string]string{}
	for _, p := range pods {
		if n.lab.mode == datapath.ModeBridge {
			const br = "7" // NFPROTO_BRIDGE
			wantElems[br+"/pods "+p.ip.String()] = p.mac.String()
			wantElems[br+"/pod-macs "+p.host+" . "+p.mac.String()] = ""
			wantElems[br+"/pod-ips "+p.host+" . "+p.ip.String()] = ""
		} else {
			wantElems["2/pod-ips "+p.host+" . "+p.ip.String()] = ""
			wantElems["3/pod-ips "+p.host+" . "+p.ip.String()] = "" // NFPROTO_ARP
		}
	}
	for k, val := range v.elems {
		w, ok := wantElems[k]
		if !ok {
			bad("leaked nftables element %s %s", k, val)
		} else if w != "" && w != val {
			bad("nftables element %s maps to %s, want %s", k, val, w)
		}
	}
	for k := range wantElems {
		if _, ok := v.elems[k]; !ok {
			bad("missing nftables element %s", k)
		}
	}
	// Routes: transparent mode has one /32 per pod through its veth.
	wantRoutes := map[string]bool{}
	if n.lab.mode == datapath.ModeTransparent {
		for _, p := range pods {
			wantRoutes[fmt.Sprintf("%s/32 dev %s", p.ip, p.host)] = true
		}
	}
	for _, r := range v.routes {
		if !wantRoutes[r] {
			bad("leaked route %s", r)
		}
		delete(wantRoutes, r)
	}
	for r := range wantRoutes {
		bad("missing route %s", r)
	}
	// Neighbours: only for live pods.
	for _, nb := range v.neighs {
		live := false
		for _, p := range pods {
			if strings.HasPrefix(nb, p.ip.String()+" ") || strings.Contains(nb, " dev "+p.host) {
				live = true
			}
		}
		if !live {
			bad("leaked neighbour %s", nb)
		}
	}
	return probs
}

// podIfaces counts a namespace's interfaces other than lo.
func podIfaces(t testing.TB, ns string) []string {
	t.Helper()
	h := netnstest.Handle(t, ns)
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

const probeTimeout = 2 * time.Second

// pingAll pings every pair (from, to) concurrently and returns the failures.
func pingAll(pairs [][2]*pod) []string {
	var mu sync.Mutex
	var fails []string
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, pr := range pairs {
		wg.Add(1)
		sem <- struct{}{}
		go func(a, b *pod) {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			for i := 0; i < 3; i++ { // a just-attached pod's first ARP may race its peer's
				if err = probe.Ping(a.ns, b.ip, probeTimeout); err == nil {
					return
				}
			}
			mu.Lock()
			fails = append(fails, fmt.Sprintf("%s (%s) -> %s (%s): %v", a.id, a.ip, b.id, b.ip, err))
			mu.Unlock()
		}(pr[0], pr[1])
	}
	wg.Wait()
	return fails
}

// serve runs an HTTP server on addr inside the fabric's namespace until
// the test ends.
func (l *lab) serve(t testing.TB, addr netip.AddrPort, h http.Handler) {
	t.Helper()
	var ln net.Listener
	err := netns.Do(l.f.FabricNetNS(), func() error {
		var err error
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in the fabric: %v", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
}

// envWireserverProcess makes the test binary a wireserver for the fabric
// spec it holds (JSON), counting queries on stdout.
const envWireserverProcess = "VNETCNI_TEST_WIRESERVER_SPEC"

// wireserverProcess serves the wireserver on 168.63.129.16:80 of the
// namespace it was started in, writing a line per query.
func wireserverProcess() int {
	var spec fabric.Spec
	if err := json.Unmarshal([]byte(os.Getenv(envWireserverProcess)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(fabric.WireserverIP, 80).String())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	inner := fabric.Open(spec).WireserverHandler()
	var mu sync.Mutex
	fmt.Println("ready")
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r)
		mu.Lock()
		fmt.Println("query")
		mu.Unlock()
	}))
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// countingWireserver replaces the fabric's wireserver with a process of
// its own that counts the interface queries it answers. The services of
// the fabric run in the test process, which under a burst is busy forking
// hundreds of plugins; a wireserver is never part of the runtime.
func (l *lab) countingWireserver(t testing.TB) func() int {
	t.Helper()
	if err := l.svc.Stop(fabric.ServiceWireserver); err != nil {
		t.Fatal(err)
	}
	spec, err := json.Marshal(l.f.Spec())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envWireserverProcess+"="+string(spec))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := netns.Do(l.f.FabricNetNS(), cmd.Start); err != nil {
		t.Fatalf("start wireserver: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	var queries atomic.Int64
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			switch sc.Text() {
			case "ready":
				ready <- true
			case "query":
				queries.Add(1)
			}
		}
		ready <- false
	}()
	if !<-ready {
		t.Fatal("wireserver process did not start")
	}
	return func() int { return int(queries.Load()) }
}

// vnetctl runs `vnetctl ARGS --netns VM --state-dir STATE` for the node and
// returns its stdout and exit status.
func (n *node) vnetctl(t testing.TB, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "vnetctl"), append(args, "--netns", n.ns, "--state-dir", n.stateDir())...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), 0
	case errors.As(err, &ee):
		if stderr.Len() > 0 {
			t.Logf("vnetctl %v: stderr: %s", args, stderr.String())
		}
		return stdout.String(), ee.ExitCode()
	}
	t.Fatalf("vnetctl %v: %v", args, err)
	return "", 0
}

// doctorKinds runs vnetctl doctor or gc with -o json and returns the
// findings as "kind subject", and the exit status.
func (n *node) doctorKinds(t testing.TB, args ...string) (found, remaining []string, code int) {
	t.Helper()
	out, code := n.vnetctl(t, append(args, "-o", "json")...)
	var r struct {
		Found, Remaining []struct {
			Kind, Subject, FixError string
			Fixed                   bool
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("vnetctl %v: output %q: %v", args, out, err)
	}
	for _, f := range r.Found {
		found = append(found, f.Kind+" "+f.Subject)
	}
	for _, f := range r.Remaining {
		remaining = append(remaining, f.Kind+" "+f.Subject)
	}
	return found, remaining, code
}
