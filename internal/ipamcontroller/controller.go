package ipamcontroller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Controller keeps every node's NIC holding what its NodeNetworkConfig
// asks for.
type Controller struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	NICs    NICs
	// NICName names a node's network interface.
	NICName func(node string) string
	// PodSubnetID is the ARM ID of the pod subnet; PodSubnet its prefix.
	PodSubnetID string
	PodSubnet   netip.Prefix
	Scaler      Scaler
	Log         *slog.Logger
}

func (c *Controller) nncs() dynamic.ResourceInterface {
	return c.Dynamic.Resource(GVR).Namespace(Namespace)
}

// Sync brings one node to its desired state: a NodeNetworkConfig for every
// node (made here, owned by the node), the NIC holding the requested
// addresses, the status saying which; when the node is gone, its
// addresses go back to the subnet and its NodeNetworkConfig goes.
func (c *Controller) Sync(ctx context.Context, node string) error {
	u, err := c.nncs().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		u = nil
	} else if err != nil {
		return err
	}
	n, err := c.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	nodeGone := apierrors.IsNotFound(err)
	if err != nil && !nodeGone {
		return err
	}
	switch {
	case u == nil && nodeGone:
		return nil
	case u == nil:
		return c.create(ctx, n)
	}
	nnc, err := FromUnstructured(u)
	if err != nil {
		return err
	}
	if nodeGone || nnc.DeletionTimestamp != nil {
		return c.release(ctx, nnc, nodeGone)
	}
	return c.reconcile(ctx, nnc)
}

func (c *Controller) create(ctx context.Context, n *corev1.Node) error {
	nnc := &NodeNetworkConfig{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Namespace: Namespace, Finalizers: []string{Finalizer},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}}}
	u, err := ToUnstructured(nnc)
	if err != nil {
		return err
	}
	if _, err := c.nncs().Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create NodeNetworkConfig %s: %w", n.Name, err)
	}
	c.Log.Info("node network config created", "node", n.Name)
	return nil
}

// release takes every address the controller gave the node off its NIC,
// then lets the NodeNetworkConfig go.
func (c *Controller) release(ctx context.Context, nnc *NodeNetworkConfig, nodeGone bool) error {
	if _, err := c.apply(ctx, nnc.Name, func(owned []*armnetwork.InterfaceIPConfiguration) (keep []*armnetwork.InterfaceIPConfiguration, add int) {
		return nil, 0
	}); err != nil && !isNotFound(err) {
		return fmt.Errorf("release the addresses of %s: %w", nnc.Name, err)
	}
	if nnc.DeletionTimestamp == nil && nodeGone {
		if err := c.nncs().Delete(ctx, nnc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	u, err := c.nncs().Get(ctx, nnc.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	u.SetFinalizers(slices.DeleteFunc(u.GetFinalizers(), func(f string) bool { return f == Finalizer }))
	if _, err := c.nncs().Update(ctx, u, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	c.Log.Info("node network config released", "node", nnc.Name)
	return nil
}

func (c *Controller) reconcile(ctx context.Context, nnc *NodeNetworkConfig) error {
	want := min(nnc.Spec.RequestedIPCount, c.Scaler.MaxIPCount)
	notInUse := map[string]bool{}
	for _, ip := range nnc.Spec.IPsNotInUse {
		notInUse[ip] = true
	}
	nic, err := c.apply(ctx, nnc.Name, func(owned []*armnetwork.InterfaceIPConfiguration) ([]*armnetwork.InterfaceIPConfiguration, int) {
		// Addresses the node gave back go; the others stay, even past
		// the request (the node may be using them).
		keep := slices.DeleteFunc(slices.Clone(owned), func(ipc *armnetwork.InterfaceIPConfiguration) bool {
			return notInUse[ipOf(ipc)]
		})
		return keep, max(0, int(want)-len(keep))
	})
	status := NNCStatus{SubnetAddressSpace: c.PodSubnet.String(), Scaler: c.Scaler, ObservedGeneration: nnc.Generation,
		DefaultGateway: c.PodSubnet.Masked().Addr().Next().String()}
	if err != nil {
		status.IPAssignments, status.Error = nnc.Status.IPAssignments, err.Error()
	} else {
		for _, ipc := range owned(nic) {
			status.IPAssignments = append(status.IPAssignments, IPAssignment{Name: *ipc.Name, IP: ipOf(ipc)})
		}
	}
	if serr := c.writeStatus(ctx, nnc, status); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

func (c *Controller) writeStatus(ctx context.Context, nnc *NodeNetworkConfig, status NNCStatus) error {
	if statusEqual(nnc.Status, status) {
		return nil
	}
	nnc.Status = status
	u, err := ToUnstructured(nnc)
	if err != nil {
		return err
	}
	if _, err := c.nncs().UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("NodeNetworkConfig %s status: %w", nnc.Name, err)
	}
	return nil
}

func statusEqual(a, b NNCStatus) bool {
	return slices.Equal(a.IPAssignments, b.IPAssignments) && a.SubnetAddressSpace == b.SubnetAddressSpace &&
		a.DefaultGateway == b.DefaultGateway && a.Scaler == b.Scaler && a.Error == b.Error && a.ObservedGeneration == b.ObservedGeneration
}

// apply reads the node's NIC, lets decide say which of the controller's IP
// configurations to keep and how many to add, and writes the NIC if that
// changes it, again from a fresh read when another writer came first.
func (c *Controller) apply(ctx context.Context, node string, decide func(owned []*armnetwork.InterfaceIPConfiguration) ([]*armnetwork.InterfaceIPConfiguration, int)) (armnetwork.Interface, error) {
	name := c.NICName(node)
	for attempt := 0; ; attempt++ {
		nic, err := c.NICs.Get(ctx, name)
		if err != nil {
			return nic, err
		}
		mine := owned(nic)
		keep, add := decide(mine)
		if add == 0 && len(keep) == len(mine) {
			return nic, nil
		}
		next := nic
		next.Properties = &armnetwork.InterfacePropertiesFormat{}
		if nic.Properties != nil {
			props := *nic.Properties
			next.Properties = &props
		}
		var ipcs []*armnetwork.InterfaceIPConfiguration
		for _, ipc := range next.Properties.IPConfigurations {
			if !isOwned(ipc) {
				ipcs = append(ipcs, ipc)
			}
		}
		ipcs = append(ipcs, keep...)
		used := map[string]bool{}
		for _, ipc := range ipcs {
			used[*ipc.Name] = true
		}
		for i := 0; add > 0; i++ {
			n := IPConfigPrefix + strconv.Itoa(i)
			if used[n] {
				continue
			}
			ipcs = append(ipcs, &armnetwork.InterfaceIPConfiguration{Name: to.Ptr(n), Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
				PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodDynamic), Subnet: &armnetwork.Subnet{ID: to.Ptr(c.PodSubnetID)}}})
			add--
		}
		next.Properties.IPConfigurations = ipcs
		etag := ""
		if nic.Etag != nil {
			etag = *nic.Etag
		}
		start := time.Now()
		out, err := c.NICs.Put(ctx, next, etag)
		if IsPreconditionFailed(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return nic, fmt.Errorf("update NIC %s: %w", name, err)
		}
		c.Log.Info("NIC updated", "node", node, "nic", name, "from", len(mine), "to", len(owned(out)), "took", time.Since(start).Round(time.Millisecond))
		return out, nil
	}
}

func owned(nic armnetwork.Interface) []*armnetwork.InterfaceIPConfiguration {
	if nic.Properties == nil {
		return nil
	}
	var out []*armnetwork.InterfaceIPConfiguration
	for _, ipc := range nic.Properties.IPConfigurations {
		if isOwned(ipc) {
			out = append(out, ipc)
		}
	}
	return out
}

func isOwned(ipc *armnetwork.InterfaceIPConfiguration) bool {
	return ipc != nil && ipc.Name != nil && strings.HasPrefix(*ipc.Name, IPConfigPrefix)
}

func ipOf(ipc *armnetwork.InterfaceIPConfiguration) string {
	if ipc.Properties == nil || ipc.Properties.PrivateIPAddress == nil {
		return ""
	}
	return *ipc.Properties.PrivateIPAddress
}

func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// List returns every NodeNetworkConfig.
func (c *Controller) List(ctx context.Context) ([]*NodeNetworkConfig, error) {
	l, err := c.nncs().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []*NodeNetworkConfig
	for i := range l.Items {
		n, err := FromUnstructured(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
