package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/incumbent"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// The traits of VMs as Azure images boot them (issue 12), each against
// both modes: what broke the plugins, and what they do about it now.

// mustReachOut checks a pod's off-node traffic: a pod on another VM and the
// internet, where it must appear as its VM's public address.
func mustReachOut(t *testing.T, p *pod, peer *pod) {
	t.Helper()
	mustPing(t, p.ns, peer.ip)
	mustPing(t, peer.ns, p.ip)
	code, body, err := probe.HTTPGet(p.ns, "http://"+fabric.InternetHostIP.String()+"/", nil, probeTimeout)
	if err != nil || code != 200 {
		t.Errorf("pod %s to internet: %d %v", p.name, code, err)
	} else if got := strings.TrimSpace(string(body)); got != p.vm.spec.PublicIP.String() {
		t.Errorf("internet host saw pod %s as %s, want %s", p.name, got, p.vm.spec.PublicIP)
	}
}

// vnetctl runs the node tool against a VM's namespace and state.
func (m *vm) vnetctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "vnetctl"), append(args, "--netns", netns.Path(m.ns), "--state-dir", filepath.Join(m.dir, "state"))...)
	cmd.Env = append(os.Environ(), incumbent.EnvDir+"="+m.incumbentDir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("vnetctl %v: %v", args, err)
	}
	return string(out), 0
}

// TestFirewallFlush (case 2): `nft flush ruleset` (restarting
// nftables.service) and `nft flush table` break every pod's off-node
// traffic. STATUS and CHECK say so, the next ADD reprograms the rules with
// every recorded pod, and so does `vnetctl doctor --fix`.
func TestFirewallFlush(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 4, conflist: conflist(t, "1.1.0", mode, nil)})
			vm1, vm2 := c.vms[0], c.vms[1]
			a := vm1.addPod(t, "a")
			x := vm2.addPod(t, "x")
			mustReachOut(t, a, x)
			table := datapath.TableName(vm1.list.Name)
			for i, tc := range []struct {
				name   string
				cmds   [][]string
				repair func(t *testing.T) *pod
			}{
				// The pods outlive their subtest: the doctor's runs see them.
				{"flush-ruleset/add", [][]string{{"flush", "ruleset"}}, func(*testing.T) *pod { return vm1.addPod(t, "b") }},
				{"flush-tables/add", [][]string{{"flush", "table", "ip", table}, {"flush", "table", "bridge", table}},
					func(*testing.T) *pod { return vm1.addPod(t, "c") }},
				{"flush-ruleset/doctor", [][]string{{"flush", "ruleset"}}, func(t *testing.T) *pod {
					if out, code := vm1.vnetctl(t, "doctor", "--fix"); code != 0 {
						t.Errorf("vnetctl doctor --fix: exit %d\n%s", code, out)
					}
					return nil
				}},
				{"flush-tables/doctor", [][]string{{"flush", "table", "ip", table}, {"flush", "table", "bridge", table}}, func(t *testing.T) *pod {
					if out, code := vm1.vnetctl(t, "doctor", "--fix"); code != 0 {
						t.Errorf("vnetctl doctor --fix: exit %d\n%s", code, out)
					}
					return nil
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					for _, cmd := range tc.cmds {
						if mode == datapath.ModeTransparent && cmd[len(cmd)-2] == "bridge" {
							cmd = []string{"flush", "table", "arp", table}
						}
						if out, err := runIn(vm1.ns, append([]string{"nft"}, cmd...)...); err != nil {
							t.Fatalf("nft %v: %v %s", cmd, err, out)
						}
					}
					err := vm1.runner.Status(context.Background(), vm1.list)
					var te *types.Error
					if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, "damaged") {
						t.Errorf("STATUS after %v: %v, want code 50 saying the rules are damaged", tc.cmds, err)
					}
					if err := vm1.runner.Check(context.Background(), vm1.list, a.cni); err == nil || !strings.Contains(err.Error(), "damaged") {
						t.Errorf("CHECK after %v: %v, want it to report the damaged rules", tc.cmds, err)
					}
					if out, code := vm1.vnetctl(t, "doctor"); code != 1 || !strings.Contains(out, "missing-rules") {
						t.Errorf("vnetctl doctor after %v: exit %d, want 1 reporting missing-rules\n%s", tc.cmds, code, out)
					}
					if i == 0 && mode == datapath.ModeBridge {
						// Without the MAC rewrite the fabric drops the pod's frames.
						mustNotPing(t, a.ns, x.ip)
					}
					b := tc.repair(t)
					if err := vm1.runner.Status(context.Background(), vm1.list); err != nil {
						t.Errorf("STATUS after the repair: %v", err)
					}
					if err := vm1.runner.Check(context.Background(), vm1.list, a.cni); err != nil {
						t.Errorf("CHECK after the repair: %v", err)
					}
					mustReachOut(t, a, x)
					if b != nil {
						mustReachOut(t, b, x)
						mustPing(t, a.ns, b.ip)
					}
				})
			}
		})
	}
}

// serviceVIP is a ClusterIP as kube-proxy would program it in the VM.
var serviceVIP = netip.MustParseAddr("10.96.0.10")

// addService DNATs serviceVIP:80 to backend:8080 in a VM, as kube-proxy's
// nftables mode does.
func addService(t *testing.T, m *vm, backend netip.Addr) {
	t.Helper()
	rules := fmt.Sprintf(`table ip e2e-svc {
	chain prerouting { type nat hook prerouting priority dstnat; ip daddr %s tcp dport 80 dnat to %s:8080; }
	chain output { type nat hook output priority -100; ip daddr %s tcp dport 80 dnat to %s:8080; }
}`, serviceVIP, backend, serviceVIP, backend)
	cmd := exec.Command("nsenter", "--net="+netns.Path(m.ns), "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("program the service in %s: %v %s", m.ns, err, out)
	}
}

// TestBridgeNetfilter (case 3): without br_netfilter on, the reply of a
// pod behind a ClusterIP to a client pod on the same node stays on the
// bridge, bypasses conntrack and the connection hangs. ADD turns it on (and
// loads the module where it is one), the doctor reports and repairs it.
func TestBridgeNetfilter(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 1, secondaries: 4, conflist: conflist(t, "1.1.0", mode, nil)})
			m := c.vms[0]
			client := m.addPod(t, "client")
			backend := m.addPod(t, "backend")
			echoServer(t, backend.ns, backend.ip, 8080)
			addService(t, m, backend.ip)
			vip := netip.AddrPortFrom(serviceVIP, 80)
			mustTCP(t, client.ns, vip)

			for _, repair := range []string{"add", "doctor"} {
				// What a node without the module looks like to bridge mode.
				if out, err := runIn(m.ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"); err != nil {
					t.Fatalf("sysctl in %s: %v %s", m.ns, err, out)
				}
				out, code := m.vnetctl(t, "doctor")
				if mode == datapath.ModeBridge {
					if code != 1 || !strings.Contains(out, "br-netfilter-off") {
						t.Errorf("doctor with br_netfilter off: exit %d, want 1 reporting br-netfilter-off\n%s", code, out)
					}
					if err := probe.TCPConnect(client.ns, vip, 500*time.Millisecond); err == nil {
						t.Errorf("pod to ClusterIP to a pod of its node worked with br_netfilter off; the test proves nothing")
					}
				} else if code != 0 {
					t.Errorf("doctor in transparent mode (no bridge): exit %d, want 0\n%s", code, out)
				}
				switch repair {
				case "add":
					m.addPod(t, "next")
				case "doctor":
					if out, code := m.vnetctl(t, "doctor", "--fix"); code != 0 {
						t.Errorf("vnetctl doctor --fix: exit %d\n%s", code, out)
					}
				}
				mustTCP(t, client.ns, vip)
			}
		})
	}
}

// TestForwardDrop (case 4): with another firewall's FORWARD policy DROP
// (Docker's `iptables -P FORWARD DROP`), set with iptables-nft or with
// iptables-legacy (x_tables, which nftables cannot see or override), pods
// still reach each other on the node and across the VNet, and the
// internet; the accepts are readable by the iptables that set the policy
// and go with the network's last pod.
func TestForwardDrop(t *testing.T) {
	for _, tool := range []string{"iptables-nft", "iptables-legacy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (scripts/setup.sh installs iptables): %v", tool, err)
		}
		for _, mode := range modes {
			t.Run(tool+"/"+mode, func(t *testing.T) { testForwardDrop(t, tool, mode) })
		}
	}
}

func testForwardDrop(t *testing.T, tool, mode string) {
	c := newCluster(t, clusterOpts{vms: 2, secondaries: 4, cleanVM: true, conflist: conflist(t, "1.1.0", mode, nil)})
	vm1, vm2 := c.vms[0], c.vms[1]
	for _, m := range c.vms {
		if out, err := runIn(m.ns, tool, "-P", "FORWARD", "DROP"); err != nil {
			t.Fatalf("%s -P FORWARD DROP in %s: %v %s", tool, m.ns, err, out)
		}
	}
	a := vm1.addPod(t, "a")
	b := vm1.addPod(t, "b")
	x := vm2.addPod(t, "x")
	mustPing(t, a.ns, b.ip)
	mustPing(t, b.ns, a.ip)
	echoServer(t, b.ns, b.ip, 8080)
	mustTCP(t, a.ns, netip.AddrPortFrom(b.ip, 8080))
	mustReachOut(t, a, x)
	mustReachOut(t, x, a)

	// The iptables that set the policy (Docker's tool) still reads the chain.
	out, err := runIn(vm1.ns, tool, "-S", "FORWARD")
	if err != nil || !strings.Contains(string(out), `--comment "azure-vnet azure"`) || !strings.Contains(string(out), "-P FORWARD DROP") {
		t.Errorf("%s -S FORWARD: %v\n%s\nwant the policy and the network's commented accepts", tool, err, out)
	}
	if n := strings.Count(string(out), "azure-vnet azure"); n != 2 {
		t.Errorf("%s -S FORWARD holds %d of the network's accepts, want 2 (in and out)\n%s", tool, n, out)
	}
	a.del(t)
	if out, _ := runIn(vm1.ns, tool, "-S", "FORWARD"); !strings.Contains(string(out), "azure-vnet azure") {
		t.Errorf("after DEL of one of two pods the accepts are gone:\n%s", out)
	}
	b.del(t)
	if out, _ := runIn(vm1.ns, tool, "-S", "FORWARD"); strings.Contains(string(out), "azure-vnet") {
		t.Errorf("after DEL of the last pod: accepts left:\n%s", out)
	}
	mustReachOut(t, vm1.addPod(t, "c"), x)
}

// TestSecondariesOnEth0 (case 1): cloud-init put every secondary IP of the
// NIC on eth0. Pods still get them and work in both directions (the claim
// takes the address off the node's link), an address the node holds on
// another link is never handed out and is counted when the pool runs out,
// and an address a DHCP client or networkd puts back is taken off again.
func TestSecondariesOnEth0(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 4, conflist: conflist(t, "1.1.0", mode, nil)})
			vm1, vm2 := c.vms[0], c.vms[1]
			// One of vm1's pool addresses is the node's own, on another link.
			own := vm1.spec.SecondaryIPs[3]
			for _, args := range [][]string{
				{"ip", "addr", "del", netip.PrefixFrom(own, subnet.Bits()).String(), "dev", "eth0"},
				{"ip", "addr", "add", own.String() + "/32", "dev", "lo"},
			} {
				if out, err := runIn(vm1.ns, args...); err != nil {
					t.Fatalf("%v in %s: %v %s", args, vm1.ns, err, out)
				}
			}
			a := vm1.addPod(t, "a")
			b := vm1.addPod(t, "b")
			x := vm2.addPod(t, "x")
			for _, p := range []*pod{a, b, x} {
				if p.ip == own {
					t.Errorf("pod %s got %s, an address of the node", p.name, p.ip)
				}
				if link := nodeLinkOf(t, p.vm, p.ip); link != "" {
					t.Errorf("pod %s's address %s is still on the node's %s", p.name, p.ip, link)
				}
			}
			mustPing(t, a.ns, b.ip)
			mustReachOut(t, a, x)
			mustReachOut(t, x, a)
			mustPing(t, vm2.ns, a.ip)
			mustPing(t, a.ns, vm2.spec.PrimaryIP)
			echoServer(t, a.ns, a.ip, 8080)
			mustTCP(t, vm2.ns, netip.AddrPortFrom(a.ip, 8080))

			// A DHCP renewal puts a's address back on the NIC (the bridge
			// in bridge mode); the next ADD takes it off again.
			dev := "eth0"
			if mode == datapath.ModeBridge {
				dev = "azure0"
			}
			if out, err := runIn(vm1.ns, "ip", "addr", "add", netip.PrefixFrom(a.ip, subnet.Bits()).String(), "dev", dev); err != nil {
				t.Fatalf("re-add %s: %v %s", a.ip, err, out)
			}
			if out, code := vm1.vnetctl(t, "doctor"); code != 1 || !strings.Contains(out, "node-holds-pod-address") {
				t.Errorf("vnetctl doctor with %s back on %s: exit %d, want 1 reporting node-holds-pod-address\n%s", a.ip, dev, code, out)
			}
			d := vm1.addPod(t, "d")
			if link := nodeLinkOf(t, vm1, a.ip); link != "" {
				t.Errorf("after the next ADD, %s is still on %s", a.ip, link)
			}
			mustReachOut(t, a, x)
			mustReachOut(t, d, x)

			_, err := vm1.tryAddPod(t, "e")
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "1 more are addresses of the node") {
				t.Errorf("ADD with the pool used up: %v, want code 11 counting the node's address", err)
			}
		})
	}
}

// nodeLinkOf names the VM's link holding ip, "" when none does.
func nodeLinkOf(t *testing.T, m *vm, ip netip.Addr) string {
	t.Helper()
	h := m.netlink(t)
	defer h.Close()
	addrs, err := h.AddrList(nil, 2 /* AF_INET */)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if got, _ := netip.AddrFromSlice(a.IP.To4()); got == ip {
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "?"
			}
			return l.Attrs().Name
		}
	}
	return ""
}

// TestNewerStateRefused: a state file written by a newer version (after a
// downgrade) is refused, not rebuilt over: ADD fails saying so, and the file
// is left as it was.
func TestNewerStateRefused(t *testing.T) {
	c := newCluster(t, clusterOpts{vms: 1, secondaries: 2, conflist: conflist(t, "1.1.0", datapath.ModeBridge, nil)})
	m := c.vms[0]
	m.addPod(t, "a")
	path := filepath.Join(m.dir, "state", "state.json")
	newer := []byte(`{"version":7,"leases":{"10.0.0.10":"ctr-vm1-a"}}`)
	if err := os.WriteFile(path, newer, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.tryAddPod(t, "b"); err == nil || !strings.Contains(err.Error(), "newer version") {
		t.Errorf("ADD over a newer state file: %v, want a refusal naming the newer version", err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(newer) {
		t.Errorf("the newer state file was changed to %s", b)
	}
}

// TestPoolNICNotDefaultRoute: a VM with a second NIC that carries its
// default route (here a veth eth1 whose gateway answers nothing: what
// leaves through it is lost, as the fabric drops a pod's address from a
// NIC that does not hold it). The pods' NIC is eth0; their traffic off
// the subnet must still leave through it, SNATed to its primary IP, while
// the node's own default route stays on eth1.
func TestPoolNICNotDefaultRoute(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, clusterOpts{vms: 2, secondaries: 4, conflist: conflist(t, "1.1.0", mode, nil)})
			vm1, vm2 := c.vms[0], c.vms[1]
			for _, args := range [][]string{
				{"ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1-peer"},
				{"ip", "addr", "add", "192.168.77.4/24", "dev", "eth1"},
				{"ip", "link", "set", "eth1-peer", "up"},
				{"ip", "link", "set", "eth1", "up"},
				// Azure's DHCP on the pool's NIC routes its host endpoints
				// through it (classless static routes) whatever the default.
				{"ip", "route", "add", "168.63.129.16/32", "via", "10.0.0.1", "dev", "eth0"},
				{"ip", "route", "add", "169.254.169.254/32", "via", "10.0.0.1", "dev", "eth0"},
				{"ip", "route", "replace", "default", "via", "192.168.77.1", "dev", "eth1"},
			} {
				if out, err := runIn(vm1.ns, args...); err != nil {
					t.Fatalf("%v in %s: %v %s", args, vm1.ns, err, out)
				}
			}
			a := vm1.addPod(t, "a")
			x := vm2.addPod(t, "x")
			mustReachOut(t, a, x)
			mustPing(t, a.ns, vm2.spec.PrimaryIP)
			mustPing(t, vm2.ns, a.ip)
			out, err := runIn(vm1.ns, "ip", "-4", "route", "show", "default")
			if err != nil || !strings.Contains(string(out), "dev eth1") {
				t.Errorf("the node's default route: %v %s, want it left on eth1", err, out)
			}
		})
	}
}
