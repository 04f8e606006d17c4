package attachment

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/datapath"
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
