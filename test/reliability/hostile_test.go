package reliability

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/azure/imds"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// hostile is a lab where pod a attacks: v is its victim and t a bystander
// on the same VM, x a pod on the other VM.
type hostile struct {
	l          *lab
	n          *node
	a, v, t, x *pod
	mode       string
}

func newHostile(t *testing.T, mode string, extra map[string]any) *hostile {
	t.Helper()
	l := newLab(t, labOpts{vms: 2, secondaries: 6, mode: mode, extra: extra})
	h := &hostile{l: l, n: l.vms[0], mode: mode}
	h.a = h.n.addPod(t, "attacker")
	h.v = h.n.addPod(t, "victim")
	h.t = h.n.addPod(t, "bystander")
	h.x = l.vms[1].addPod(t, "remote")
	// Everyone has talked to everyone: neighbour caches are warm, as on a
	// busy node.
	for _, f := range pingAll([][2]*pod{{h.a, h.v}, {h.t, h.v}, {h.x, h.v}, {h.a, h.x}, {h.t, h.x}}) {
		t.Fatalf("before the attack: %s", f)
	}
	return h
}

// nicMAC is the VM's NIC (and bridge) MAC.
func (h *hostile) nicMAC() net.HardwareAddr { return net.HardwareAddr(h.n.spec.MAC) }

// dstMAC is where the attacker's frame for p goes: the pod itself on the
// bridge, the node (which routes it) otherwise.
func (h *hostile) dstMAC(p *pod) net.HardwareAddr {
	if h.mode == datapath.ModeTransparent {
		return datapath.TransparentHostMAC
	}
	if p.node == h.n {
		return p.mac
	}
	return h.nicMAC()
}

func marker() []byte {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return append([]byte("vnetcni-attack-"), b...)
}

var modes = []string{datapath.ModeBridge, datapath.ModeTransparent}

// TestHostilePodSpoofsSourceIP: frames from the attacker carrying the
// victim's, the node's or a remote pod's address as source reach neither
// a pod on the same VM nor one on the other VM, and no reply reaches the
// address's owner; the same frames with the attacker's own address do.
func TestHostilePodSpoofsSourceIP(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			h := newHostile(t, mode, nil)
			raw := openRaw(t, h.a.ns)
			for _, src := range []struct {
				name  string
				ip    netip.Addr
				owner *pod // whose namespace would see replies
			}{
				{"own address (control)", h.a.ip, nil},
				{"victim's address", h.v.ip, h.v},
				{"node's address", h.n.spec.PrimaryIP, nil},
				{"remote pod's address", h.x.ip, h.x},
			} {
				for _, dst := range []*pod{h.t, h.x} {
					t.Run(fmt.Sprintf("%s to %s", src.name, dst.id), func(t *testing.T) {
						m := marker()
						at := openRaw(t, dst.ns).capture()
						var replies *capture
						if src.owner != nil {
							replies = openRaw(t, src.owner.ns).capture()
						}
						f := pingFrame(h.dstMAC(dst), h.a.mac, src.ip, dst.ip, m)
						raw.send(t, f, f, f)
						time.Sleep(300 * time.Millisecond)
						got := at.stop(func(f []byte) bool { return isIPv4(f) && hasMarker(f, m) })
						if src.ip == h.a.ip {
							if len(got) == 0 {
								t.Fatalf("control: the attacker's own frames did not reach %s; the capture sees nothing", dst.id)
							}
							return
						}
						if len(got) > 0 {
							t.Errorf("%d frames with source %s reached %s", len(got), src.ip, dst.id)
						}
						if replies != nil {
							if r := replies.stop(func(f []byte) bool { return isIPv4(f) && hasMarker(f, m) }); len(r) > 0 {
								t.Errorf("%d replies to the spoofed frames reached %s", len(r), src.owner.id)
							}
						}
					})
				}
			}
			h.stillFine(t)
		})
	}
}

// TestHostilePodSpoofsMAC: frames from the attacker with the victim's, the
// node's or the bystander's MAC as source never arrive anywhere with that
// MAC, and the bridge keeps sending the victim's traffic to the victim.
func TestHostilePodSpoofsMAC(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			h := newHostile(t, mode, nil)
			raw := openRaw(t, h.a.ns)
			for _, src := range []struct {
				name string
				mac  net.HardwareAddr
			}{
				{"victim's MAC", h.v.mac},
				{"node's MAC", h.nicMAC()},
				{"bystander's MAC", h.t.mac},
			} {
				t.Run(src.name, func(t *testing.T) {
					m := marker()
					var caps []*capture
					for _, p := range []*pod{h.t, h.x, h.v} {
						caps = append(caps, openRaw(t, p.ns).capture())
					}
					for _, dst := range []*pod{h.t, h.x} {
						f := pingFrame(h.dstMAC(dst), src.mac, h.a.ip, dst.ip, m)
						raw.send(t, f, f, f)
					}
					// And frames to nowhere in particular, to teach a
					// bridge that the MAC lives on the attacker's port.
					raw.send(t, ether(broadcast, src.mac, 0x88b5, m), ether(broadcast, src.mac, 0x88b5, m))
					time.Sleep(300 * time.Millisecond)
					for i, cp := range caps {
						got := cp.stop(func(f []byte) bool { return hasMarker(f, m) && frameSrcMAC(f).String() == src.mac.String() })
						if len(got) > 0 {
							t.Errorf("%d frames with source MAC %s reached %s", len(got), src.mac, []*pod{h.t, h.x, h.v}[i].id)
						}
					}
				})
			}
			if mode == datapath.ModeBridge {
				h.fdbIntact(t)
			}
			h.stillFine(t)
		})
	}
}

// TestHostilePodSpoofsARP: the attacker answers ARP for addresses it does
// not own (the victim's, the gateway's, the node's): gratuitously, to the
// bystander and to the node, with its own MAC and with the victim's. The
// victim stays reachable from everyone, nobody's neighbour table points at
// the attacker, and the attacker receives none of the traffic it claimed.
func TestHostilePodSpoofsARP(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			h := newHostile(t, mode, nil)
			raw := openRaw(t, h.a.ns)
			seen := raw.capture()
			gw := fabric.Gateway(subnet)
			node := h.n.spec.PrimaryIP
			zero := make(net.HardwareAddr, 6)
			a, v, by := h.a, h.v, h.t
			var frames [][]byte
			for _, lie := range []netip.Addr{v.ip, gw, node, h.x.ip} {
				for _, mac := range []net.HardwareAddr{a.mac, v.mac} {
					frames = append(frames,
						arpFrame(broadcast, mac, 1, mac, lie, zero, lie),         // gratuitous request
						arpFrame(broadcast, mac, 2, mac, lie, broadcast, lie),    // gratuitous reply
						arpFrame(by.mac, mac, 2, mac, lie, by.mac, by.ip),        // to the bystander
						arpFrame(h.nicMAC(), mac, 2, mac, lie, h.nicMAC(), node), // to the node
					)
				}
			}
			if mode == datapath.ModeTransparent {
				// The only neighbour a transparent pod has is the host.
				frames = append(frames, arpFrame(datapath.TransparentHostMAC, a.mac, 2, a.mac, v.ip, datapath.TransparentHostMAC, datapath.TransparentGateway))
			}
			// Lie repeatedly while the others talk to the victim.
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					for _, f := range frames {
						_, _ = unix.Write(raw.fd, f)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			// The bystander's and the node's caches are emptied so they
			// must ask, while the lies fly.
			flushNeigh(t, by.ns)
			flushNeigh(t, h.n.ns)
			time.Sleep(100 * time.Millisecond)
			fails := pingAll([][2]*pod{{by, v}, {h.x, v}, {by, h.x}, {v, by}})
			if err := probe.Ping(h.n.ns, v.ip, probeTimeout); err != nil {
				fails = append(fails, "node -> victim: "+err.Error())
			}
			close(stop)
			<-done
			for _, f := range fails {
				t.Errorf("while the attacker lies: %s", f)
			}
			for _, ns := range []string{by.ns, h.n.ns} {
				for _, nb := range neighbours(t, ns) {
					if nb.mac == a.mac.String() && nb.ip != a.ip {
						t.Errorf("%s believes %s is at the attacker's MAC %s", ns, nb.ip, a.mac)
					}
				}
			}
			stolen := seen.stop(func(f []byte) bool {
				return isIPv4(f) && ipDst(f) != a.ip && !ipDst(f).IsMulticast() && ipDst(f) != netip.MustParseAddr("255.255.255.255")
			})
			for _, f := range stolen {
				t.Errorf("the attacker received a packet for %s from %s", ipDst(f), ipSrc(f))
			}
			h.stillFine(t)
		})
	}
}

// TestHostilePodWireserver: pods reach only the wireserver's DNS port, not
// its HTTP ports (80, 32526), unless the operator sets allowWireserver; they
// reach IMDS unless the operator sets blockIMDS.
func TestHostilePodWireserver(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			l := newLab(t, labOpts{vms: 1, secondaries: 4, mode: mode})
			n := l.vms[0]
			p := n.addPod(t, "curious")
			check := func(t *testing.T, p *pod, wireserverHTTP, imdsOpen bool) {
				t.Helper()
				for _, port := range []uint16{80, fabric.WireserverManagementPort} {
					err := probe.TCPConnect(p.ns, netip.AddrPortFrom(fabric.WireserverIP, port), time.Second)
					if wireserverHTTP && err != nil {
						t.Errorf("wireserver port %d from %s: %v, want it open (allowWireserver)", port, p.id, err)
					}
					if !wireserverHTTP && err == nil {
						t.Errorf("wireserver port %d from %s: connected, want it blocked", port, p.id)
					}
				}
				// Probing a port with UDP or ICMP gets nowhere either.
				if !wireserverHTTP {
					if err := probe.Ping(p.ns, fabric.WireserverIP, 500*time.Millisecond); err == nil {
						t.Errorf("ping wireserver from %s: answered, want it blocked", p.id)
					}
				}
				if addrs, err := probe.DNSQuery(p.ns, netip.AddrPortFrom(fabric.WireserverIP, 53), "vm1."+fabric.DNSSuffix, probeTimeout); err != nil || len(addrs) != 1 {
					t.Errorf("DNS from %s: %v %v, want vm1's address", p.id, addrs, err)
				}
				code, _, err := probe.HTTPGet(p.ns, imds.URL("http://"+fabric.IMDSIP.String()), http.Header{"Metadata": {"true"}}, time.Second)
				if imdsOpen && (err != nil || code == 0) {
					t.Errorf("IMDS from %s: %d %v, want an answer", p.id, code, err)
				}
				if !imdsOpen && err == nil {
					t.Errorf("IMDS from %s: HTTP %d, want it blocked (blockIMDS)", p.id, code)
				}
			}
			t.Run("default", func(t *testing.T) { check(t, p, false, true) })

			// The operator opens the wireserver and closes IMDS: the next
			// ADD reprograms the rules, for every pod.
			n.setConf(mode, map[string]any{"allowWireserver": true, "blockIMDS": true})
			q := n.addPod(t, "trusted")
			t.Run("allowWireserver and blockIMDS", func(t *testing.T) {
				check(t, q, true, false)
				check(t, p, true, false)
			})
		})
	}
}

// stillFine checks every pod still reaches every other.
func (h *hostile) stillFine(t *testing.T) {
	t.Helper()
	pods := []*pod{h.a, h.v, h.t, h.x}
	var pairs [][2]*pod
	for _, p := range pods {
		for _, q := range pods {
			if p != q {
				pairs = append(pairs, [2]*pod{p, q})
			}
		}
	}
	for _, f := range pingAll(pairs) {
		t.Errorf("after the attack: %s", f)
	}
}

// fdbIntact checks the bridge still forwards the victim's and the
// bystander's MACs to their own ports.
func (h *hostile) fdbIntact(t *testing.T) {
	t.Helper()
	nl := h.n.netlink(t)
	defer nl.Close()
	fdb, err := nl.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*pod{h.v, h.t} {
		port, err := nl.LinkByName(p.host)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range fdb {
			if e.HardwareAddr.String() == p.mac.String() && e.LinkIndex != port.Attrs().Index {
				t.Errorf("the bridge learned %s's MAC %s on port %d, not its own %s", p.id, p.mac, e.LinkIndex, p.host)
			}
		}
	}
}

type neighbour struct {
	ip  netip.Addr
	mac string
}

// neighbours lists a namespace's resolved IPv4 neighbours.
func neighbours(t *testing.T, ns string) []neighbour {
	t.Helper()
	h, closeNS := nsHandle(t, ns)
	defer closeNS()
	list, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []neighbour
	for _, nb := range list {
		if nb.HardwareAddr == nil || nb.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 {
			continue
		}
		ip, _ := netip.AddrFromSlice(nb.IP.To4())
		out = append(out, neighbour{ip, nb.HardwareAddr.String()})
	}
	return out
}

// flushNeigh empties a namespace's dynamic IPv4 neighbour entries.
func flushNeigh(t *testing.T, ns string) {
	t.Helper()
	h, closeNS := nsHandle(t, ns)
	defer closeNS()
	list, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, nb := range list {
		if nb.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 || strings.HasPrefix(nb.IP.String(), "169.254") {
			continue
		}
		_ = h.NeighDel(&nb)
	}
}

func nsHandle(t *testing.T, ns string) (*netlink.Handle, func()) {
	t.Helper()
	h := netnstest.Handle(t, ns)
	return h, h.Close
}
