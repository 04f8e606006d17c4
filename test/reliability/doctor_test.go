package reliability

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/nft"
	"github.com/vnetcni/vnetcni/internal/store"
)

// TestDoctorInLabVM damages a lab VM the ways crashes and operators do,
// then runs the real vnetctl inside it: doctor and gc report the damage
// and exit 1, gc --fix collects only the garbage, doctor --fix repairs the
// rest, and afterwards both find nothing, the node holds exactly its live
// pods and they reach the other VM.
func TestDoctorInLabVM(t *testing.T) {
	for _, mode := range []string{datapath.ModeBridge, datapath.ModeTransparent} {
		t.Run(mode, func(t *testing.T) {
			l := newLab(t, labOpts{vms: 2, secondaries: 8, mode: mode})
			n, other := l.vms[0], l.vms[1]
			peer := other.addPod(t, "peer")
			var live []*pod
			for _, id := range []string{"keep", "lost", "gone"} {
				live = append(live, n.addPod(t, id))
			}
			keep, lost, gone := live[0], live[1], live[2]
			if out, code := n.vnetctl(t, "doctor"); code != 0 || !strings.Contains(out, "nothing wrong") {
				t.Fatalf("doctor on a healthy node: exit %d\n%s", code, out)
			}

			// The damage.
			update(t, n, func(st *store.State) {
				// A leaked allocation, and a pod whose record was lost.
				st.Allocations["10.0.0.23"] = &store.Allocation{IP: netip.MustParseAddr("10.0.0.23"), ContainerID: "ghost", IfName: "eth0", Network: netName, Owner: "azure-vnet"}
				delete(st.Allocations, lost.ip.String())
				delete(st.Endpoints, store.EndpointKey(lost.id, "eth0"))
			})
			h := n.netlink(t)
			defer h.Close()
			veth, err := h.LinkByName(gone.host)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkDel(veth); err != nil { // a veth deleted by hand
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(n.stateDir(), store.FileName+".tmp-31337"), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
			staleElement(t, n, mode)
			k, _ := h.LinkByName(keep.host)
			if err := h.RouteAdd(&netlink.Route{LinkIndex: k.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: &netIPNet}); err != nil {
				t.Fatal(err)
			}

			found, _, code := n.doctorKinds(t, "doctor")
			for _, want := range []string{
				"leaked-allocation ghost/eth0 10.0.0.23",
				"unrecorded-attachment lost/eth0",
				"missing-veth gone/eth0",
				"temp-file state.json.tmp-31337",
				"stale-route 10.0.0.99/32 dev " + keep.host,
			} {
				if !slices.Contains(found, want) {
					t.Errorf("doctor did not find %q; found %v", want, found)
				}
			}
			if !slices.ContainsFunc(found, func(s string) bool { return strings.HasPrefix(s, "stale-element") && strings.Contains(s, "azvstale") }) {
				t.Errorf("doctor did not find the stale element; found %v", found)
			}
			if code != 1 {
				t.Errorf("doctor on a damaged node exited %d, want 1", code)
			}

			// gc reports and collects garbage only.
			garbage, _, code := n.doctorKinds(t, "gc")
			if code != 1 || slices.ContainsFunc(garbage, func(s string) bool { return strings.HasPrefix(s, "unrecorded") }) || len(garbage) == 0 {
				t.Errorf("gc: exit %d, found %v; want 1 and only garbage", code, garbage)
			}
			if _, left, code := n.doctorKinds(t, "gc", "--fix"); code != 0 || len(left) != 0 {
				t.Errorf("gc --fix: exit %d, left %v; want 0 and nothing", code, left)
			}
			if found, _, _ := n.doctorKinds(t, "doctor"); !slices.Equal(found, []string{"unrecorded-attachment lost/eth0"}) {
				t.Errorf("doctor after gc --fix found %v, want only the unrecorded attachment", found)
			}
			if out, code := n.vnetctl(t, "doctor", "--fix"); code != 0 || !strings.Contains(out, "1 found, 1 repaired, 0 left") {
				t.Errorf("doctor --fix: exit %d\n%s", code, out)
			}
			for _, cmd := range []string{"doctor", "gc"} {
				if out, code := n.vnetctl(t, cmd); code != 0 || !strings.Contains(out, "nothing wrong") {
					t.Errorf("%s after the repair: exit %d\n%s", cmd, code, out)
				}
			}

			kept := []*pod{keep, lost}
			for _, p := range n.expect(n.snapshot(t), kept) {
				t.Error(p)
			}
			for _, f := range pingAll([][2]*pod{{keep, peer}, {lost, peer}, {peer, keep}, {peer, lost}}) {
				t.Error(f)
			}
			// The recorded pod can be deleted as usual.
			n.mustDel(t, lost.id)
			n.mustDel(t, gone.id)
			for _, p := range n.expect(n.snapshot(t), []*pod{keep}) {
				t.Error("after DEL:", p)
			}
		})
	}
}

var netIPNet = *mustIPNet("10.0.0.99/32")

func mustIPNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func update(t *testing.T, n *node, fn func(*store.State)) {
	t.Helper()
	if err := store.New(n.stateDir()).Update(func(st *store.State) error { fn(st); return nil }); err != nil {
		t.Fatal(err)
	}
}

// staleElement adds a pod element for an interface that does not exist.
func staleElement(t *testing.T, n *node, mode string) {
	t.Helper()
	c := n.nft(t)
	fam, name := nftables.TableFamilyBridge, "pod-macs"
	key := nft.ConcatKey(nft.IfName("azvstale"), []byte{2, 0, 0, 0, 0, 0x99})
	if mode == datapath.ModeTransparent {
		fam, name = nftables.TableFamilyIPv4, "pod-ips"
		key = nft.ConcatKey(nft.IfName("azvstale"), nft.IPv4Key(netip.MustParseAddr("10.0.0.24")))
	}
	set, err := c.GetSetByName(&nftables.Table{Name: datapath.TableName(netName), Family: fam}, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetAddElements(set, []nftables.SetElement{{Key: key}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}
