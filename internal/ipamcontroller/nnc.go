// Package ipamcontroller is the cluster side of dynamic IP allocation
// (seed 002): pods take addresses of a pod subnet, added to each node's NIC
// on demand. A node asks for addresses in its NodeNetworkConfig (a custom
// resource per node, as Azure's CNS/DNC do: spec.requestedIPCount,
// spec.ipsNotInUse); the controller makes the node's NIC hold that many IP
// configurations of the pod subnet through Azure Resource Manager and
// reports them in the status. The cloud, not the controller, picks each
// address (Dynamic allocation), so no address is ever handed to two nodes.
package ipamcontroller

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The NodeNetworkConfig resource: one per node, named after it, in
// Namespace; deploy/ipam-controller.yaml defines it.
const (
	Group     = "vnetcni.io"
	Version   = "v1alpha1"
	Kind      = "NodeNetworkConfig"
	Resource  = "nodenetworkconfigs"
	Namespace = "kube-system"
	// Finalizer holds a NodeNetworkConfig until its addresses are off the
	// NIC and back in the subnet.
	Finalizer = "vnetcni.io/release-addresses"
	// IPConfigPrefix names the IP configurations the controller owns on a
	// NIC; it never touches others (the primary, a pre-allocated pool).
	IPConfigPrefix = "vnetcni-"
)

// GVR is the resource's group, version and resource.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// NodeNetworkConfig is what a node asks for and what it holds.
type NodeNetworkConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NNCSpec   `json:"spec,omitempty"`
	Status            NNCStatus `json:"status,omitempty"`
}

// NNCSpec is written by the node's agent (Azure's field names).
type NNCSpec struct {
	// RequestedIPCount is how many pod-subnet addresses the node wants to
	// hold, in use or not.
	RequestedIPCount int64 `json:"requestedIPCount"`
	// IPsNotInUse are addresses the node gives back: it uses none of them
	// and will not until they are assigned again.
	IPsNotInUse []string `json:"ipsNotInUse,omitempty"`
}

// NNCStatus is written by the controller.
type NNCStatus struct {
	// IPAssignments are the addresses the NIC holds for the node's pods.
	IPAssignments []IPAssignment `json:"ipAssignments,omitempty"`
	// SubnetAddressSpace and DefaultGateway describe the pod subnet.
	SubnetAddressSpace string `json:"subnetAddressSpace,omitempty"`
	DefaultGateway     string `json:"defaultGateway,omitempty"`
	// Scaler is the allocation policy the node should follow.
	Scaler Scaler `json:"scaler"`
	// Error is the last failure to bring the NIC to the spec, if any.
	Error string `json:"error,omitempty"`
	// ObservedGeneration is the spec generation the status answers.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// IPAssignment is one IP configuration of the node's NIC.
type IPAssignment struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
}

// Scaler is the batch policy, Azure's names.
type Scaler struct {
	BatchSize               int64 `json:"batchSize"`
	RequestThresholdPercent int64 `json:"requestThresholdPercent"`
	ReleaseThresholdPercent int64 `json:"releaseThresholdPercent"`
	MaxIPCount              int64 `json:"maxIPCount"`
}

// DefaultScaler is Azure's: batches of 16, ask for more below 50 % free
// of a batch, give back above 150 %, at most 250 addresses per node.
var DefaultScaler = Scaler{BatchSize: 16, RequestThresholdPercent: 50, ReleaseThresholdPercent: 150, MaxIPCount: 250}

// FromUnstructured decodes a NodeNetworkConfig.
func FromUnstructured(u *unstructured.Unstructured) (*NodeNetworkConfig, error) {
	var n NodeNetworkConfig
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &n); err != nil {
		return nil, fmt.Errorf("NodeNetworkConfig %s: %w", u.GetName(), err)
	}
	return &n, nil
}

// ToUnstructured encodes a NodeNetworkConfig.
func ToUnstructured(n *NodeNetworkConfig) (*unstructured.Unstructured, error) {
	n.APIVersion, n.Kind = Group+"/"+Version, Kind
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(n)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// Addresses returns the status's addresses.
func (s NNCStatus) Addresses() []netip.Addr {
	var out []netip.Addr
	for _, a := range s.IPAssignments {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			out = append(out, ip)
		}
	}
	return out
}
