package routecontroller

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/vnetcni/vnetcni/lab/cloud"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// fakeFabric records what the cloud carries out.
type fakeFabric struct {
	mu     sync.Mutex
	tables map[string]fabric.RouteTable
}

func (f *fakeFabric) SetRouteTable(rt fabric.RouteTable) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tables[rt.Name] = rt
	return nil
}

func (f *fakeFabric) DeleteRouteTable(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, name)
	return nil
}

func nodes(n int) []Node {
	var out []Node
	for i := 0; i < n; i++ {
		out = append(out, Node{
			Name:    fmt.Sprintf("node-%04d", i),
			IP:      netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(4 + i%250)}),
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
		})
	}
	return out
}

func TestReconcile(t *testing.T) {
	ff := &fakeFabric{tables: map[string]fabric.RouteTable{}}
	subnet := netip.MustParsePrefix("10.0.0.0/16")
	c := cloud.New(ff, "rg", "vnet", []cloud.Subnet{{Name: "cluster", Prefix: subnet}})
	defer c.Close()
	rc := &Controller{Cloud: c, Table: "kubenet", Subnet: c.SubnetID("vnet", "cluster")}
	ctx := context.Background()

	if err := rc.Reconcile(ctx, nodes(3)); err != nil {
		t.Fatalf("Reconcile(3 nodes): %v", err)
	}
	if got := len(ff.tables["kubenet"].Routes); got != 3 {
		t.Fatalf("after Reconcile(3 nodes) the fabric has %d routes, want 3", got)
	}
	rt, err := c.GetRouteTable("kubenet")
	if err != nil || rt.Properties.ProvisioningState != cloud.StateSucceeded {
		t.Fatalf("GetRouteTable = %+v, %v; want provisioningState %s", rt.Properties, err, cloud.StateSucceeded)
	}
	// A node leaves.
	if err := rc.Reconcile(ctx, nodes(2)); err != nil {
		t.Fatalf("Reconcile(2 nodes): %v", err)
	}
	if got := len(ff.tables["kubenet"].Routes); got != 2 {
		t.Errorf("after a node left the fabric has %d routes, want 2", got)
	}
	// A new cloud over the same fabric adopts its table: nothing to write.
	c2 := cloud.New(ff, "rg", "vnet", []cloud.Subnet{{Name: "cluster", Prefix: subnet}})
	defer c2.Close()
	c2.Adopt([]fabric.RouteTable{ff.tables["kubenet"]})
	ff.tables["kubenet"] = fabric.RouteTable{Name: "kubenet"} // would show a write
	rc2 := &Controller{Cloud: c2, Table: "kubenet", Subnet: c2.SubnetID("vnet", "cluster")}
	if err := rc2.Reconcile(ctx, nodes(2)); err != nil {
		t.Fatalf("Reconcile after Adopt: %v", err)
	}
	if got := len(ff.tables["kubenet"].Routes); got != 0 {
		t.Errorf("Reconcile after Adopt wrote %d routes, want no write", got)
	}
	// 400 nodes fit, the 401st does not.
	err = rc.Reconcile(ctx, nodes(fabric.MaxRoutesPerTable+1))
	if err == nil || !cloud.IsTooManyRoutes(err) || !strings.Contains(err.Error(), "node-0400") {
		t.Fatalf("Reconcile(401 nodes) = %v, want a route limit error naming node-0400", err)
	}
	if got := len(ff.tables["kubenet"].Routes); got != fabric.MaxRoutesPerTable {
		t.Errorf("after Reconcile(401 nodes) the fabric has %d routes, want %d", got, fabric.MaxRoutesPerTable)
	}
}
