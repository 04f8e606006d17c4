package vnetlab

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/lab/cloud"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/plan"
	"github.com/vnetcni/vnetcni/lab/routecontroller"
)

// kubenetRouteTable names the route table of a kubenet lab's cluster
// subnet; clusterSubnetName the subnet in the cloud API.
const (
	kubenetRouteTable = "kubenet-routes"
	clusterSubnetName = "cluster"
	vnetName          = "vnet"
)

// ipamModes maps the lab's models to azure-vnet's ipam.mode.
var ipamModes = map[string]string{
	plan.ModelOverlay: netconf.IPAMModeOverlay,
	plan.ModelKubenet: netconf.IPAMModeKubenet,
}

// modelConflist is a node's conflist in a pod-CIDR model: the seed's, in
// transparent mode, with the ipam section naming the model, the node's pod
// CIDR and the cluster's. (vnetd can take the pod CIDR from the node's
// spec.podCIDRs when a conflist leaves it out, but only for the calls it
// serves: the lab's Kubernetes nodes run their runtime in a private mount
// namespace, so their calls run standalone and need it written here.)
func (l *Lab) modelConflist(vm string) ([]byte, error) {
	var node *plan.Node
	for i := range l.Plan.Nodes {
		if l.Plan.Nodes[i].Name == vm {
			node = &l.Plan.Nodes[i]
		}
	}
	if node == nil {
		return nil, fmt.Errorf("vm %s is not a node of lab %s", vm, l.Name)
	}
	b, err := ConflistFor(l.Mode)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	ipam := m["plugins"].([]any)[0].(map[string]any)["ipam"].(map[string]any)
	ipam["mode"] = ipamModes[l.Plan.Model]
	ipam["podCIDR"] = node.PodCIDR.String()
	ipam["clusterCIDR"] = l.Plan.PodCIDR.String()
	b, err = json.MarshalIndent(m, "", "  ")
	return append(b, '\n'), err
}

// routeNodes runs kubenet's route controller once: a route per node in the
// cluster subnet's route table, through the lab's cloud API.
func (l *Lab) routeNodes(ctx context.Context, f *fabric.Fabric) error {
	c := cloud.New(f, l.Name, vnetName, []cloud.Subnet{{Name: clusterSubnetName, Prefix: l.Plan.Subnet}})
	defer c.Close()
	c.Adopt(f.Spec().RouteTables) // a lab being repaired keeps its routes meanwhile
	rc := &routecontroller.Controller{Cloud: c, Table: kubenetRouteTable, Subnet: c.SubnetID(vnetName, clusterSubnetName)}
	var nodes []routecontroller.Node
	for _, n := range l.Plan.Nodes {
		nodes = append(nodes, routecontroller.Node{Name: n.Name, IP: n.PrimaryIP, PodCIDR: n.PodCIDR})
	}
	return rc.Reconcile(ctx, nodes)
}
