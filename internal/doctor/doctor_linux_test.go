package doctor

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/nft"
	"github.com/vnetcni/vnetcni/internal/nft/nfttest"
	"github.com/vnetcni/vnetcni/internal/store"
)

// testNode is a node in a throwaway namespace with azure-vnet's network
// set up and attachments built the way the plugin builds them.
type testNode struct {
	t     *testing.T
	ns    string
	mode  string
	dir   string
	rules datapath.Rules
	d     *Doctor
	eps   map[string]*datapath.Endpoint
}

const poolID = "000D3A000001"

func tempNetNS(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "vdoc-" + hex.EncodeToString(b)
	if err := netns.Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(name) })
	return name
}

func newTestNode(t *testing.T, mode string) *testNode {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root for network namespaces")
	}
	n := &testNode{t: t, ns: tempNetNS(t), mode: mode, dir: t.TempDir(), eps: map[string]*datapath.Endpoint{}}
	n.rules = datapath.Rules{Network: "azure", Mode: mode, Master: "eth0", NICMAC: mustMAC("00:0d:3a:00:00:01"),
		PrimaryIP: netip.MustParseAddr("10.0.0.4"), NonMasquerade: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	if mode == datapath.ModeBridge {
		n.rules.Bridge = "azure0"
	}
	err := netns.Do(n.ns, func() error {
		host, err := datapath.NewHost()
		if err != nil {
			return err
		}
		defer host.Close()
		if mode == datapath.ModeBridge {
			la := netlink.NewLinkAttrs()
			la.Name = "azure0"
			if err := host.Netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
				return err
			}
			if err := host.Netlink.LinkSetUp(&netlink.Bridge{LinkAttrs: la}); err != nil {
				return err
			}
		}
		// An installed node forwards.
		if err := datapath.WriteSysctl(datapath.ForwardingSysctl, "1"); err != nil {
			return err
		}
		return n.rules.Program(host.NFT, false, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	pool := &store.Pool{ID: poolID, Source: "test", ReadAt: time.Now().UTC(), Subnet: netip.MustParsePrefix("10.0.0.0/24"),
		Gateway: netip.MustParseAddr("10.0.0.1"), PrimaryIP: netip.MustParseAddr("10.0.0.4")}
	for i := 10; i < 20; i++ {
		pool.Addresses = append(pool.Addresses, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	err = store.New(n.dir).Update(func(st *store.State) error {
		st.Pools[poolID] = pool
		st.Networks["azure"] = &store.Network{Name: "azure", Mode: mode, Master: "eth0", Bridge: n.rules.Bridge, Pool: poolID}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n.d, err = Open(n.dir, netns.Path(n.ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.d.Close)
	return n
}

// podMAC is a pod's MAC, derived from its address: 02:00:0a:00:00:0b for
// 10.0.0.11.
func podMAC(ip string) net.HardwareAddr {
	a := netip.MustParseAddr(ip).As4()
	return net.HardwareAddr{0x02, 0x00, a[0], a[1], a[2], a[3]}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// attach records and builds an attachment, as the plugin's ADD does.
func (n *testNode) attach(id, ip string, record bool) *datapath.Endpoint {
	n.t.Helper()
	pod := tempNetNS(n.t)
	addr := netip.MustParseAddr(ip)
	gw := netip.MustParseAddr("10.0.0.1")
	if n.mode == datapath.ModeTransparent {
		gw = datapath.TransparentGateway
	}
	ep := &datapath.Endpoint{
		Attachment: datapath.Attachment{Mode: n.mode, ContainerID: id, IfName: "eth0", Network: "azure",
			IP: netip.PrefixFrom(addr, 24), PodMAC: podMAC(ip)},
		Mode: n.mode, Netns: netns.Path(pod), HostIf: datapath.HostIfName(id, "eth0"), Gateway: gw, Bridge: n.rules.Bridge,
	}
	if record {
		err := store.New(n.dir).Update(func(st *store.State) error {
			st.Allocations[ip] = &store.Allocation{IP: addr, Pool: poolID, ContainerID: id, IfName: "eth0", Network: "azure", Owner: "azure-vnet"}
			st.Endpoints[store.EndpointKey(id, "eth0")] = &store.Endpoint{ContainerID: id, IfName: "eth0", Network: "azure", Mode: n.mode,
				Netns: ep.Netns, HostIfName: ep.HostIf, PodMAC: ep.PodMAC.String(), IP: ep.IP, Gateway: gw}
			return nil
		})
		if err != nil {
			n.t.Fatal(err)
		}
	}
	err := netns.Do(n.ns, func() error {
		host, err := datapath.NewHost()
		if err != nil {
			return err
		}
		defer host.Close()
		return host.Add(ep, n.rules)
	})
	if err != nil {
		n.t.Fatalf("build %s: %v", id, err)
	}
	n.eps[id] = ep
	return ep
}

// findings diagnoses the node, as "kind subject" lines.
func (n *testNode) findings() []string {
	n.t.Helper()
	s, err := n.d.Snapshot()
	if err != nil {
		n.t.Fatal(err)
	}
	return lines(Diagnose(s))
}

func (n *testNode) state() *store.State {
	n.t.Helper()
	st, err := store.New(n.dir).Read()
	if err != nil {
		n.t.Fatal(err)
	}
	return st
}

func (n *testNode) nftConn() *nftables.Conn { return nfttest.Conn(n.t, n.ns) }

func (n *testNode) set(name string) (*nftables.Conn, *nftables.Set) {
	n.t.Helper()
	c := n.nftConn()
	fam := nftables.TableFamilyBridge
	if n.mode == datapath.ModeTransparent {
		fam = nftables.TableFamilyIPv4
	}
	s, err := c.GetSetByName(&nftables.Table{Name: datapath.TableName("azure"), Family: fam}, name)
	if err != nil {
		n.t.Fatal(err)
	}
	return c, s
}

// TestDoctor damages a healthy node one way at a time: the doctor must
// find exactly that damage, repair it, and leave a node it finds healthy,
// with the live attachments untouched.
func TestDoctor(t *testing.T) {
	type scenario struct {
		name  string
		mode  string
		harm  func(n *testNode) // a and b are live
		want  []string          // findings, as "kind subject"
		left  []string          // still there after --fix
		check func(n *testNode) // after the repair
	}
	a, b := "a", "b"
	hostIf := func(id string) string { return datapath.HostIfName(id, "eth0") }
	scenarios := []scenario{
		{name: "healthy", mode: datapath.ModeBridge, harm: func(*testNode) {}},
		{name: "leaked allocation", mode: datapath.ModeBridge,
			harm: func(n *testNode) {
				update(n, func(st *store.State) {
					st.Allocations["10.0.0.17"] = &store.Allocation{IP: netip.MustParseAddr("10.0.0.17"), Pool: poolID, ContainerID: "ghost", IfName: "eth0", Owner: "azure-vnet"}
				})
			},
			want: []string{"leaked-allocation ghost/eth0 10.0.0.17"},
			check: func(n *testNode) {
				if _, ok := n.state().Allocations["10.0.0.17"]; ok {
					n.t.Errorf("10.0.0.17 still allocated")
				}
			}},
		{name: "ipam plugin's allocations are not leaks", mode: datapath.ModeBridge,
			harm: func(n *testNode) {
				update(n, func(st *store.State) {
					st.Allocations["10.0.0.17"] = &store.Allocation{IP: netip.MustParseAddr("10.0.0.17"), Pool: poolID, ContainerID: "other", IfName: "net1", Owner: "azure-vnet-ipam"}
				})
			}},
		{name: "missing veth", mode: datapath.ModeBridge,
			harm: func(n *testNode) { delLink(n, hostIf(b)) },
			want: []string{
				"missing-veth b/eth0",
				"stale-element bridge pod-ips " + hostIf(b) + " . 10.0.0.11",
				"stale-element bridge pod-macs " + hostIf(b) + " . 02:00:0a:00:00:0b",
				"stale-element bridge pods 10.0.0.11 : 02:00:0a:00:00:0b",
			},
			check: func(n *testNode) {
				if _, ok := n.state().Endpoints["b/eth0"]; ok {
					n.t.Errorf("b still recorded")
				}
			}},
		{name: "unrecorded attachment", mode: datapath.ModeTransparent,
			harm: func(n *testNode) {
				update(n, func(st *store.State) { delete(st.Endpoints, "b/eth0"); delete(st.Allocations, "10.0.0.11") })
			},
			want: []string{"unrecorded-attachment b/eth0"},
			check: func(n *testNode) {
				e := n.state().Endpoints["b/eth0"]
				if e == nil || e.IP != netip.MustParsePrefix("10.0.0.11/24") || e.Gateway != datapath.TransparentGateway {
					n.t.Errorf("b recorded as %+v, want 10.0.0.11/24 via %s", e, datapath.TransparentGateway)
				}
				if a := n.state().Allocations["10.0.0.11"]; a == nil || a.ContainerID != "b" {
					n.t.Errorf("10.0.0.11 allocated to %+v, want b", a)
				}
			}},
		{name: "duplicate address", mode: datapath.ModeBridge,
			harm: func(n *testNode) { n.attach("dup", "10.0.0.10", false) },
			// dup has a's MAC too: the pods map element is a's.
			want: []string{
				"duplicate-address dup/eth0",
				"stale-element bridge pod-ips " + hostIf("dup") + " . 10.0.0.10",
				"stale-element bridge pod-macs " + hostIf("dup") + " . 02:00:0a:00:00:0a",
			},
			check: func(n *testNode) {
				if _, err := n.d.Host.Netlink.LinkByName(hostIf("dup")); err == nil {
					n.t.Errorf("dup's veth left")
				}
			}},
		{name: "stale and missing elements", mode: datapath.ModeBridge,
			harm: func(n *testNode) {
				c, s := n.set("pod-macs")
				_ = c.SetAddElements(s, []nftables.SetElement{{Key: nft.ConcatKey(nft.IfName("azvgone"), mustMAC("02:00:00:00:00:99"))}})
				c2, pods := n.set("pods")
				_ = c2.SetDeleteElements(pods, []nftables.SetElement{{Key: nft.IPv4Key(netip.MustParseAddr("10.0.0.10"))}})
				for _, c := range []*nftables.Conn{c, c2} {
					if err := c.Flush(); err != nil {
						n.t.Fatal(err)
					}
				}
			},
			want: []string{"missing-element a/eth0", "stale-element bridge pod-macs azvgone . 02:00:00:00:00:99"}},
		{name: "missing and stale routes", mode: datapath.ModeTransparent,
			harm: func(n *testNode) {
				h := n.d.Host.Netlink
				l, _ := h.LinkByName(hostIf(a))
				if err := h.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: ipNet(netip.MustParsePrefix("10.0.0.10/32"))}); err != nil {
					n.t.Fatal(err)
				}
				if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: ipNet(netip.MustParsePrefix("10.0.0.99/32"))}); err != nil {
					n.t.Fatal(err)
				}
			},
			want: []string{"missing-route 10.0.0.10/32 dev " + hostIf(a), "stale-route 10.0.0.99/32 dev " + hostIf(a)}},
		{name: "unlabeled veth", mode: datapath.ModeBridge,
			harm: func(n *testNode) {
				la := netlink.NewLinkAttrs()
				la.Name = "azv0123456789ab"
				if err := n.d.Host.Netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "peer0"}); err != nil {
					n.t.Fatal(err)
				}
			},
			want: []string{"unlabeled-veth azv0123456789ab"}},
		{name: "mismatch", mode: datapath.ModeBridge,
			harm: func(n *testNode) {
				update(n, func(st *store.State) { st.Endpoints["a/eth0"].PodMAC = "02:00:00:00:00:01" })
			},
			want: []string{"attachment-mismatch a/eth0"},
			check: func(n *testNode) {
				if got := n.state().Endpoints["a/eth0"].PodMAC; got != n.eps[a].PodMAC.String() {
					n.t.Errorf("a's MAC recorded as %s, want the kernel's %s", got, n.eps[a].PodMAC)
				}
			}},
		{name: "files", mode: datapath.ModeBridge,
			harm: func(n *testNode) {
				for _, f := range []string{store.FileName + ".tmp-4242", store.AttachmentLockName("gone", "eth0")} {
					if err := os.WriteFile(filepath.Join(n.dir, f), nil, 0o600); err != nil {
						n.t.Fatal(err)
					}
				}
			},
			want: []string{"stale-lock-file " + store.AttachmentLockName("gone", "eth0"), "temp-file " + store.FileName + ".tmp-4242"}},
		{name: "damaged state", mode: datapath.ModeTransparent,
			harm: func(n *testNode) {
				if err := os.WriteFile(filepath.Join(n.dir, store.FileName), make([]byte, 100), 0o600); err != nil {
					n.t.Fatal(err)
				}
			},
			// With nothing recorded the attachments look unrecorded
			// too; the rebuild records them.
			want: []string{"state-damaged state.json", "unrecorded-attachment a/eth0", "unrecorded-attachment b/eth0"},
			check: func(n *testNode) {
				if st := n.state(); len(st.Endpoints) != 2 {
					n.t.Errorf("rebuilt state has %d endpoints, want 2", len(st.Endpoints))
				}
			}},
		{name: "forwarding off", mode: datapath.ModeTransparent,
			harm: func(n *testNode) {
				if err := netns.Do(n.ns, func() error { return datapath.WriteSysctl(datapath.ForwardingSysctl, "0") }); err != nil {
					n.t.Fatal(err)
				}
			},
			want: []string{"forwarding-off net.ipv4.ip_forward"},
			check: func(n *testNode) {
				var v string
				if err := netns.Do(n.ns, func() (err error) { v, err = datapath.ReadSysctl(datapath.ForwardingSysctl); return err }); err != nil || v != "1" {
					n.t.Errorf("after repair ip_forward is %q (%v), want 1", v, err)
				}
			}},
		{name: "outside pool", mode: datapath.ModeBridge,
			harm: func(n *testNode) {
				update(n, func(st *store.State) { st.Pools[poolID].Addresses = st.Pools[poolID].Addresses[1:] })
			},
			want: []string{"outside-pool 10.0.0.10"},
			left: []string{"outside-pool 10.0.0.10"}},
	}
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.name, " ", "-"), func(t *testing.T) {
			n := newTestNode(t, sc.mode)
			n.attach(a, "10.0.0.10", true)
			n.attach(b, "10.0.0.11", true)
			if got := n.findings(); len(got) != 0 {
				t.Fatalf("healthy node: findings %v", got)
			}
			sc.harm(n)
			want := sc.want
			if want == nil {
				want = []string{}
			}
			if d := cmp.Diff(want, n.findings()); d != "" {
				t.Errorf("findings (-want +got):\n%s", d)
			}
			r, err := n.d.Run(true, nil)
			if err != nil {
				t.Fatalf("Run(fix): %v", err)
			}
			for _, f := range r.Found {
				if !f.Fixed && !contains(sc.left, string(f.Kind)+" "+f.Subject) {
					t.Errorf("not repaired: %s (%s)", f, f.FixError)
				}
			}
			left := sc.left
			if left == nil {
				left = []string{}
			}
			if d := cmp.Diff(left, lines(r.Remaining)); d != "" {
				t.Errorf("left after repair (-want +got):\n%s", d)
			}
			if sc.check != nil {
				sc.check(n)
			}
			// The live attachments are intact.
			err = netns.Do(n.ns, func() error {
				host, err := datapath.NewHost()
				if err != nil {
					return err
				}
				defer host.Close()
				if err := host.Check(n.eps[a], n.rules); err != nil {
					t.Errorf("a after the repair: %v", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func update(n *testNode, fn func(*store.State)) {
	n.t.Helper()
	if err := store.New(n.dir).Update(func(st *store.State) error { fn(st); return nil }); err != nil {
		n.t.Fatal(err)
	}
}

func delLink(n *testNode, name string) {
	n.t.Helper()
	l, err := n.d.Host.Netlink.LinkByName(name)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.d.Host.Netlink.LinkDel(l); err != nil {
		n.t.Fatal(err)
	}
}

// TestDoctorWaitsForRunningCommand: an attachment whose lock is held (an ADD
// running) is not repaired until the command ends, and then only if still
// wrong.
func TestDoctorWaitsForRunningCommand(t *testing.T) {
	n := newTestNode(t, datapath.ModeBridge)
	// An ADD that has recorded its attachment but not built it yet.
	unlock, err := store.New(n.dir).LockAttachment("c", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	update(n, func(st *store.State) {
		st.Allocations["10.0.0.12"] = &store.Allocation{IP: netip.MustParseAddr("10.0.0.12"), Pool: poolID, ContainerID: "c", IfName: "eth0", Network: "azure", Owner: "azure-vnet"}
		st.Endpoints["c/eth0"] = &store.Endpoint{ContainerID: "c", IfName: "eth0", Network: "azure", Mode: datapath.ModeBridge,
			HostIfName: datapath.HostIfName("c", "eth0"), PodMAC: "02:00:00:00:00:0c", IP: netip.MustParsePrefix("10.0.0.12/24")}
	})
	done := make(chan *Report, 1)
	go func() {
		r, err := n.d.Run(true, nil)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("the doctor repaired an attachment whose command is still running")
	default:
	}
	// The ADD finishes: the attachment is built.
	ep := n.attachRecorded("c", "10.0.0.12", "02:00:00:00:00:0c")
	unlock(false)
	r := <-done
	if len(r.Remaining) != 0 {
		t.Errorf("after the ADD finished: %v", lines(r.Remaining))
	}
	err = netns.Do(n.ns, func() error {
		host, err := datapath.NewHost()
		if err != nil {
			return err
		}
		defer host.Close()
		return host.Check(ep, n.rules)
	})
	if err != nil {
		t.Errorf("the attachment the ADD built: %v", err)
	}
}

// attachRecorded builds an attachment already recorded.
func (n *testNode) attachRecorded(id, ip, mac string) *datapath.Endpoint {
	n.t.Helper()
	pod := tempNetNS(n.t)
	ep := &datapath.Endpoint{
		Attachment: datapath.Attachment{Mode: n.mode, ContainerID: id, IfName: "eth0", Network: "azure",
			IP: netip.PrefixFrom(netip.MustParseAddr(ip), 24), PodMAC: mustMAC(mac)},
		Mode: n.mode, Netns: netns.Path(pod), HostIf: datapath.HostIfName(id, "eth0"), Gateway: netip.MustParseAddr("10.0.0.1"), Bridge: n.rules.Bridge,
	}
	err := netns.Do(n.ns, func() error {
		host, err := datapath.NewHost()
		if err != nil {
			return err
		}
		defer host.Close()
		return host.Add(ep, n.rules)
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return ep
}
