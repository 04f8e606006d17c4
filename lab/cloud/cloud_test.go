package cloud

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vnetcni/vnetcni/lab/fabric"
)

// fabricStub blocks each write until released, and fails on demand.
type fabricStub struct {
	release chan struct{}
	fail    error
	got     []fabric.RouteTable
}

func (f *fabricStub) SetRouteTable(rt fabric.RouteTable) error {
	<-f.release
	f.got = append(f.got, rt)
	return f.fail
}

func (f *fabricStub) DeleteRouteTable(string) error { <-f.release; return f.fail }

func route(name, prefix, hop string) Route {
	return Route{Name: name, Properties: RouteProperties{AddressPrefix: prefix, NextHopType: NextHopVirtualAppliance, NextHopIPAddress: hop}}
}

func TestRouteTableOperations(t *testing.T) {
	fs := &fabricStub{release: make(chan struct{})}
	c := New(fs, "rg", "vnet", []Subnet{{Name: "nodes", Prefix: netip.MustParsePrefix("10.0.0.0/24")}})
	defer c.Close()
	ctx := context.Background()

	// Refused at once, naming the problem.
	for _, tc := range []struct {
		rt   RouteTable
		want string
	}{
		{RouteTable{Name: "t", Properties: RouteTableProperties{Subnets: []SubResource{{ID: "/nope"}}}}, "no such subnet"},
		{RouteTable{Name: "t", Properties: RouteTableProperties{Routes: []Route{route("r", "10.244.1.1/24", "10.0.0.4")}}}, "addressPrefix"},
		{RouteTable{Name: "t", Properties: RouteTableProperties{Routes: []Route{route("r", "10.244.1.0/24", "nowhere")}}}, "nextHopIpAddress"},
	} {
		if _, err := c.PutRouteTable(tc.rt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PutRouteTable(%+v) = %v, want an error about %s", tc.rt, err, tc.want)
		}
	}
	if _, err := c.GetRouteTable("t"); err == nil {
		t.Error("a refused table exists")
	}
	if _, err := c.PutRoute("none", route("r", "10.244.1.0/24", "10.0.0.4")); err == nil {
		t.Error("PutRoute into a missing table accepted")
	}

	// Accepted: in progress until the fabric is done, then succeeded.
	op, err := c.PutRouteTable(RouteTable{Name: "t", Properties: RouteTableProperties{
		Subnets: []SubResource{{ID: c.SubnetID("vnet", "nodes")}}, Routes: []Route{route("r", "10.244.1.0/24", "10.0.0.4")}}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Operation(op.ID); st.Status != StateInProgress {
		t.Errorf("operation before the fabric wrote: %s, want %s", st.Status, StateInProgress)
	}
	if rt, _ := c.GetRouteTable("t"); rt.Properties.ProvisioningState != StateUpdating {
		t.Errorf("table before the fabric wrote: %s, want %s", rt.Properties.ProvisioningState, StateUpdating)
	}
	close(fs.release)
	if err := c.Wait(ctx, op); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if rt, _ := c.GetRouteTable("t"); rt.Properties.ProvisioningState != StateSucceeded || rt.Properties.Routes[0].ID != c.RouteTableID("t")+"/routes/r" {
		t.Errorf("table after the fabric wrote: %+v", rt)
	}
	if len(fs.got) != 1 || fs.got[0].Routes[0].AddressPrefix != netip.MustParsePrefix("10.244.1.0/24") || len(fs.got[0].Subnets) != 1 {
		t.Errorf("the fabric got %+v", fs.got)
	}

	// A failing fabric fails the operation, and the table says so.
	fs.fail = errors.New("boom")
	op, err = c.PutRoute("t", route("r2", "10.244.2.0/24", "10.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx, op); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Wait on a failing fabric = %v, want its error", err)
	}
	if rt, _ := c.GetRouteTable("t"); rt.Properties.ProvisioningState != StateFailed {
		t.Errorf("table after a failed write: %s, want %s", rt.Properties.ProvisioningState, StateFailed)
	}
}
