package vnetlab

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/k8slab"
)

// VMStatus is one VM in Status.
type VMStatus struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	MAC       string     `json:"mac"`
	PrimaryIP netip.Addr `json:"primaryIP"`
	PublicIP  netip.Addr `json:"publicIP"`
	// PodCIDR is the node's pod CIDR (overlay, kubenet), its pool.
	PodCIDR  netip.Prefix        `json:"podCIDR,omitzero"`
	PoolSize int                 `json:"poolSize"`
	PoolUsed int                 `json:"poolUsed"`
	PoolFree int                 `json:"poolFree"`
	Pods     int                 `json:"pods"`
	Drops    fabric.PortCounters `json:"drops"`
	StateErr string              `json:"stateError,omitempty"`
}

// Status is a lab's overview.
type Status struct {
	Name         string     `json:"name"`
	Model        string     `json:"model"`
	Mode         string     `json:"mode"`
	VNet         string     `json:"vnet"`
	Subnet       string     `json:"subnet"`
	Up           string     `json:"up"`
	Complete     bool       `json:"complete"`
	DaemonPID    int        `json:"daemonPID"`
	VMs          []VMStatus `json:"vms"`
	Pods         []Pod      `json:"pods"`
	NoPublicDrop uint64     `json:"fabricNoPublicIPDrops"`
	// Kubernetes describes the lab's cluster, if it runs one.
	Kubernetes *KubernetesStatus `json:"kubernetes,omitempty"`
}

// KubernetesStatus is where a lab's cluster is.
type KubernetesStatus struct {
	Version    string `json:"version"`
	APIServer  string `json:"apiServer"` // VIP:443
	APISubnet  string `json:"apiServerSubnet"`
	Kubeconfig string `json:"kubeconfig"`
}

// GetStatus gathers VMs, pools (from each VM's plugin state), pods and the
// fabric's drop counters.
func GetStatus(name string) (*Status, error) {
	l, err := Load(name)
	if err != nil {
		return nil, err
	}
	s := &Status{Name: name, Model: l.Plan.Model, Mode: l.Mode, VNet: l.Plan.VNet.String(), Subnet: l.Plan.Subnet.String(),
		Up: time.Since(l.Created).Round(time.Second).String(), Complete: l.Complete, Pods: l.Pods}
	s.DaemonPID, _ = l.daemonPID()
	if c := l.Kubernetes; c != nil {
		s.Kubernetes = &KubernetesStatus{Version: k8slab.Version, APIServer: fmt.Sprintf("%s:%d", c.VIP, k8slab.APIServerPort),
			APISubnet: l.Plan.APIServer.Subnet.String(), Kubeconfig: c.AdminKubeconfig()}
	}
	counters, noPublic, cerr := fabric.Open(l.Spec).Counters()
	s.NoPublicDrop = noPublic
	pods := map[string]int{}
	for _, p := range l.Pods {
		pods[p.VM]++
	}
	for i, v := range l.Spec.VMs {
		role, size := "control plane", len(v.SecondaryIPs)
		var podCIDR netip.Prefix
		switch {
		case i < len(l.Plan.Nodes):
			role, podCIDR = l.Plan.Nodes[i].Role, l.Plan.Nodes[i].PodCIDR
			if podCIDR.IsValid() {
				size = 1<<(32-podCIDR.Bits()) - 3 // all but network, gateway, broadcast
			}
		case l.Plan.Outside != nil && v.Name == l.Plan.Outside.Name:
			role = l.Plan.Outside.Role
		}
		vs := VMStatus{Name: v.Name, Role: role, MAC: v.MAC.String(), PrimaryIP: v.PrimaryIP,
			PublicIP: v.PublicIP, PodCIDR: podCIDR, PoolSize: size, PoolFree: size, Pods: pods[v.Name]}
		if cerr == nil {
			vs.Drops = counters[v.Name]
		}
		st, err := store.New(l.StateDir(v.Name)).Read()
		if err != nil {
			vs.StateErr = err.Error()
		} else {
			for _, p := range st.Pools {
				vs.PoolSize = len(p.Addresses)
				vs.PoolUsed = ipam.InUse(st, p)
				vs.PoolFree = len(ipam.Free(st, p))
			}
		}
		s.VMs = append(s.VMs, vs)
	}
	return s, cerr
}
