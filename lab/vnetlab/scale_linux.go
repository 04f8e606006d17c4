package vnetlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/lab/cloud"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/plan"
	"github.com/vnetcni/vnetcni/lab/routecontroller"
)

// ScaleResult is what a scale simulation measured.
type ScaleResult struct {
	Model string `json:"model"`
	Nodes int    `json:"nodes"`
	// PodCIDR is the cluster's pod CIDR the plan carved.
	PodCIDR string `json:"podCIDR"`
	// Plan is the time to validate the definition and lay out addresses;
	// Program the time to put the model's routes and sets into the
	// fabric namespace (kubenet: through the cloud API, one route per
	// node, by the route controller).
	Plan    time.Duration `json:"plan"`
	Program time.Duration `json:"program"`
	// What the fabric namespace holds afterwards.
	MainRoutes  int `json:"mainRoutes"`
	TableRoutes int `json:"routeTableRoutes"`
	SetElements int `json:"setIntervals"`
	// HeapMB is the Go heap in use after programming; MaxRSSMB the
	// process's peak resident memory.
	HeapMB   float64 `json:"heapMB"`
	MaxRSSMB float64 `json:"maxRSSMB"`
	// OneMore is the outcome of adding one node past Nodes (kubenet: the
	// 401st node's route is refused).
	OneMore string `json:"oneMore,omitempty"`
}

// scalePodCIDRs are the cluster pod CIDRs of the simulation: room for a
// /24 per node at kubenet's 400 and Azure's 5,000 overlay nodes.
var scalePodCIDRs = map[string]string{
	plan.ModelKubenet: "10.244.0.0/14",
	plan.ModelOverlay: "10.128.0.0/11",
}

// scaleDefinition is a definition with nodes agents in pools of 100, no
// masters, in a /17 of VNet 10.0.0.0/16.
func scaleDefinition(model string, nodes int) ([]byte, error) {
	type pool struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	var pools []pool
	for n, i := nodes, 1; n > 0; i++ {
		c := min(n, 100)
		pools = append(pools, pool{Name: fmt.Sprintf("pool%d", i), Count: c})
		n -= c
	}
	kc := map[string]any{"clusterSubnet": "10.0.0.0/17", "podCidr": scalePodCIDRs[model]}
	def := map[string]any{"apiVersion": "vlabs", "properties": map[string]any{
		"orchestratorProfile": map[string]any{"orchestratorType": "Kubernetes", "kubernetesConfig": kc},
		"masterProfile":       map[string]any{"count": 0, "vnetCidr": "10.0.0.0/16"},
		"agentPoolProfiles":   pools,
	}}
	return json.Marshal(def)
}

// Scale simulates a cluster of nodes nodes in a pod-CIDR model without
// starting its VMs: it plans the addresses, then programs what the model
// puts in the fabric namespace (fabric.Simulate: one dummy interface for
// every port) — overlay: a route per node's block and the overlay sets;
// kubenet: the subnet's route table, filled by the route controller through
// the cloud API — and, for kubenet, tries one node more. The namespace
// <name>-fab is removed at the end.
func Scale(ctx context.Context, name, model string, nodes int) (*ScaleResult, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if _, ok := scalePodCIDRs[model]; !ok {
		return nil, fmt.Errorf("scale: model %q: want %s or %s", model, plan.ModelOverlay, plan.ModelKubenet)
	}
	res := &ScaleResult{Model: model, Nodes: nodes}
	def, err := scaleDefinition(model, nodes)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	d, err := plan.ParseDefinition(def)
	if err != nil {
		return nil, err
	}
	p, err := d.Plan(plan.Options{Model: model})
	if err != nil {
		return nil, fmt.Errorf("plan %d %s nodes: %w", nodes, model, err)
	}
	res.Plan = time.Since(start)
	res.PodCIDR = p.PodCIDR.String()

	spec := fabricSpec(name, p)
	for i := range spec.VMs {
		spec.VMs[i].PublicIP = netip.Addr{} // the public range holds 253
	}
	_ = fabric.Destroy(spec) // a run interrupted earlier
	defer fabric.Destroy(spec)
	start = time.Now()
	f, err := fabric.Simulate(spec)
	if err != nil {
		return nil, err
	}
	if model == plan.ModelKubenet {
		c := cloud.New(f, name, vnetName, []cloud.Subnet{{Name: clusterSubnetName, Prefix: p.Subnet}})
		defer c.Close()
		rc := &routecontroller.Controller{Cloud: c, Table: kubenetRouteTable, Subnet: c.SubnetID(vnetName, clusterSubnetName)}
		var rn []routecontroller.Node
		for _, n := range p.Nodes {
			rn = append(rn, routecontroller.Node{Name: n.Name, IP: n.PrimaryIP, PodCIDR: n.PodCIDR})
		}
		if err := rc.Reconcile(ctx, rn); err != nil {
			return nil, err
		}
		res.Program = time.Since(start)
		// One node more: the next address and block.
		last := rn[len(rn)-1] // the plan's last node: the highest address and block
		extra := routecontroller.Node{Name: fmt.Sprintf("vm-%d", len(rn)+1), IP: last.IP.Next(),
			PodCIDR: netipPrefixAfter(last.PodCIDR)}
		if err := rc.Reconcile(ctx, append(rn, extra)); err != nil {
			res.OneMore = err.Error()
		} else {
			res.OneMore = "accepted"
		}
	} else {
		res.Program = time.Since(start)
	}
	if res.MainRoutes, res.TableRoutes, res.SetElements, err = f.TableSizes(); err != nil {
		return nil, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMB = float64(ms.HeapAlloc) / (1 << 20)
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		res.MaxRSSMB = float64(ru.Maxrss) / 1024
	}
	return res, nil
}

// netipPrefixAfter is the prefix of the same length right after p.
func netipPrefixAfter(p netip.Prefix) netip.Prefix {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += 1 << (32 - p.Bits())
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), p.Bits())
}
