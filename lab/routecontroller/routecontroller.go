// Package routecontroller is kubenet's route controller in the lab: it keeps
// one route per node — the node's pod CIDR via the node's address — in the
// route table of the cluster's subnet, through the lab's cloud API only, as
// Kubernetes' cloud route controller does through Azure Resource Manager.
package routecontroller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/vnetcni/vnetcni/lab/cloud"
)

// Node is what the controller needs of a node (Kubernetes: its name,
// InternalIP and spec.podCIDRs[0]).
type Node struct {
	Name    string
	IP      netip.Addr
	PodCIDR netip.Prefix
}

// Controller reconciles one route table.
type Controller struct {
	Cloud *cloud.Cloud
	// Table is the route table's name; Subnet the ID of the subnet it is
	// associated with (created so when missing).
	Table  string
	Subnet string
}

// Reconcile makes the table hold exactly one route per node: it creates the
// table if needed, adds or corrects routes, removes routes of nodes that
// are gone, and waits for every operation. A node refused (the 401st in a
// full table) is an error naming it; the others are still done.
func (c *Controller) Reconcile(ctx context.Context, nodes []Node) error {
	rt, err := c.Cloud.GetRouteTable(c.Table)
	var ce *cloud.Error
	switch {
	case errors.As(err, &ce) && ce.Code == cloud.CodeNotFound:
		op, err := c.Cloud.PutRouteTable(cloud.RouteTable{Name: c.Table, Properties: cloud.RouteTableProperties{
			Subnets: []cloud.SubResource{{ID: c.Subnet}}}})
		if err != nil {
			return fmt.Errorf("create route table %s: %w", c.Table, err)
		}
		if err := c.Cloud.Wait(ctx, op); err != nil {
			return fmt.Errorf("create route table %s: %w", c.Table, err)
		}
	case err != nil:
		return fmt.Errorf("get route table %s: %w", c.Table, err)
	}
	have := map[string]cloud.RouteProperties{}
	for _, r := range rt.Properties.Routes {
		have[r.Name] = r.Properties
	}
	nodes = slices.Clone(nodes)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	var ops []*cloud.Operation
	var errs []error
	want := map[string]bool{}
	for _, n := range nodes {
		want[n.Name] = true
		p := cloud.RouteProperties{AddressPrefix: n.PodCIDR.String(), NextHopType: cloud.NextHopVirtualAppliance, NextHopIPAddress: n.IP.String()}
		if h, ok := have[n.Name]; ok && h.AddressPrefix == p.AddressPrefix && h.NextHopIPAddress == p.NextHopIPAddress {
			continue
		}
		op, err := c.Cloud.PutRoute(c.Table, cloud.Route{Name: n.Name, Properties: p})
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: route %s via %s: %w", n.Name, n.PodCIDR, n.IP, err))
			continue
		}
		ops = append(ops, op)
	}
	for name := range have {
		if !want[name] {
			op, err := c.Cloud.DeleteRoute(c.Table, name)
			if err != nil {
				errs = append(errs, fmt.Errorf("delete route of node %s: %w", name, err))
				continue
			}
			ops = append(ops, op)
		}
	}
	for _, op := range ops {
		if err := c.Cloud.Wait(ctx, op); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
