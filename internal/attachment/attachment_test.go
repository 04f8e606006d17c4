package attachment

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

func att(mode, id, ip string) datapath.Attachment {
	mac, _ := net.ParseMAC("02:00:00:00:00:05")
	return datapath.Attachment{Mode: mode, ContainerID: id, IfName: "eth0", Network: "azure",
		IP: netip.MustParsePrefix(ip), PodMAC: mac, HostIfName: datapath.HostIfName(id, "eth0")}
}

func TestRecordGateway(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		mode string
		want netip.Addr
	}{
		{datapath.ModeBridge, netip.MustParseAddr("10.0.0.1")},
		{datapath.ModeTransparent, datapath.TransparentGateway},
	} {
		e, a := Record(att(tc.mode, "c1", "10.0.0.5/20"), now)
		if e.Gateway != tc.want {
			t.Errorf("%s: gateway %s, want %s", tc.mode, e.Gateway, tc.want)
		}
		if a.Owner != Owner || a.IP != netip.MustParseAddr("10.0.0.5") || a.ContainerID != "c1" || e.Key() != "c1/eth0" {
			t.Errorf("%s: record %+v %+v", tc.mode, e, a)
		}
	}
}

// TestRebuildNeverRecordsAnAddressTwice: two veths claiming one address
// (a crash between two ADDs after a state loss) keep the first; the other
// is returned for GC.
func TestRebuildNeverRecordsAnAddressTwice(t *testing.T) {
	atts := []datapath.Attachment{
		att(datapath.ModeBridge, "a", "10.0.0.5/20"),
		att(datapath.ModeBridge, "b", "10.0.0.5/20"),
		att(datapath.ModeBridge, "c", "10.0.0.6/20"),
	}
	st, dropped := Rebuild(atts, time.Now())
	if len(st.Endpoints) != 2 || len(st.Allocations) != 2 {
		t.Fatalf("rebuilt %d endpoints, %d allocations; want 2, 2", len(st.Endpoints), len(st.Allocations))
	}
	if got := st.Allocations["10.0.0.5"].ContainerID; got != "a" {
		t.Errorf("10.0.0.5 kept for %s, want a", got)
	}
	if len(dropped) != 1 || dropped[0].ContainerID != "b" {
		t.Errorf("dropped %v, want b", dropped)
	}
}

// TestSalvage: from an inconsistent file a rebuild keeps the networks, the
// pools and the IPAM plugin's allocations (no veth records them), but
// nothing that conflicts with the kernel's attachments.
func TestSalvage(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	st, _ := Rebuild([]datapath.Attachment{att(datapath.ModeBridge, "c1", "10.0.0.5/24")}, now)
	old := store.NewState()
	old.Networks["azure"] = &store.Network{Name: "azure", Mode: datapath.ModeBridge, Bridge: "azure0",
		MasterConfig: &store.LinkConfig{Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.4/24")}}}
	old.Pools["P"] = &store.Pool{ID: "P", Subnet: netip.MustParsePrefix("10.0.0.0/24")}
	alloc := func(ip, id, owner string) *store.Allocation {
		return &store.Allocation{IP: netip.MustParseAddr(ip), Pool: "P", ContainerID: id, IfName: "net1", Owner: owner}
	}
	old.Allocations["10.0.0.6"] = alloc("10.0.0.6", "sriov", netconf.IPAMType) // kept
	old.Allocations["10.0.0.5"] = alloc("10.0.0.5", "other", netconf.IPAMType) // the kernel's c1 has it
	old.Allocations["10.0.0.7"] = alloc("10.0.0.7", "gone", Owner)             // a veth would record it
	if kept := Salvage(st, old); kept != 1 {
		t.Errorf("Salvage kept %d allocations, want 1", kept)
	}
	if a := st.Allocations["10.0.0.6"]; a == nil || a.ContainerID != "sriov" {
		t.Errorf("IPAM allocation 10.0.0.6 not kept: %+v", a)
	}
	if a := st.Allocations["10.0.0.5"]; a == nil || a.ContainerID != "c1" {
		t.Errorf("10.0.0.5 = %+v, want the kernel's c1", a)
	}
	if _, ok := st.Allocations["10.0.0.7"]; ok {
		t.Errorf("an azure-vnet allocation without veth was kept")
	}
	if n := st.Networks["azure"]; n == nil || n.MasterConfig == nil {
		t.Errorf("network record with the NIC's saved configuration not kept: %+v", n)
	}
	if err := st.Validate(); err != nil {
		t.Errorf("salvaged state invalid: %v", err)
	}
}
