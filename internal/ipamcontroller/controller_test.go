package ipamcontroller

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azcloud "github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/vnetcni/vnetcni/lab/cloud"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// vms is a fabric of VMs whose NICs the lab's cloud changes (the cloud's
// own fabric is the kernel's; its logic is what is under test here).
type vms struct {
	mu   sync.Mutex
	spec fabric.Spec
}

func (f *vms) SetRouteTable(fabric.RouteTable) error { return nil }
func (f *vms) DeleteRouteTable(string) error         { return nil }
func (f *vms) Spec() fabric.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spec.Clone()
}

func (f *vms) AddSecondaryIPs(vm string, ips ...netip.Addr) error {
	return f.change(vm, func(v *fabric.VMSpec) { v.SecondaryIPs = append(v.SecondaryIPs, ips...) })
}

func (f *vms) RemoveSecondaryIPs(vm string, ips ...netip.Addr) error {
	return f.change(vm, func(v *fabric.VMSpec) {
		v.SecondaryIPs = slices.DeleteFunc(v.SecondaryIPs, func(ip netip.Addr) bool { return slices.Contains(ips, ip) })
	})
}

func (f *vms) change(vm string, fn func(*fabric.VMSpec)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.spec.VMs {
		if f.spec.VMs[i].Name == vm {
			fn(&f.spec.VMs[i])
			return nil
		}
	}
	return fmt.Errorf("no vm %s", vm)
}

func (f *vms) secondaries(vm string) []netip.Addr {
	v, _ := f.Spec().VM(vm)
	return v.SecondaryIPs
}

type token struct{}

func (token) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

var (
	nodeSubnet = netip.MustParsePrefix("10.0.0.0/24")
	podSubnet  = netip.MustParsePrefix("10.10.0.0/24")
)

type env struct {
	c    *Controller
	fab  *vms
	arm  *cloud.ArmHandler
	kube *kubefake.Clientset
}

func newEnv(t *testing.T, nodes ...string) *env {
	t.Helper()
	fab := &vms{spec: fabric.Spec{Subnets: []netip.Prefix{nodeSubnet, podSubnet}}}
	kube := kubefake.NewClientset()
	for i, n := range nodes {
		fab.spec.VMs = append(fab.spec.VMs, fabric.VMSpec{Name: n, Subnet: nodeSubnet, PrimaryIP: netip.AddrFrom4([4]byte{10, 0, 0, byte(4 + i)}),
			MAC: fabric.HardwareAddr{0x60, 0x45, 0xbd, 0, 0, byte(i + 1)}})
		if _, err := kube.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, UID: types.UID("uid-" + n)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cl := cloud.New(fab, "rg", "vnet", []cloud.Subnet{{Name: "nodes", Prefix: nodeSubnet}, {Name: "pods", Prefix: podSubnet}})
	cl.SetLatency(20 * time.Millisecond)
	h := &cloud.ArmHandler{Cloud: cl}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	client, err := armnetwork.NewInterfacesClient(cloud.Subscription, token{}, &arm.ClientOptions{ClientOptions: policy.ClientOptions{
		Cloud: azcloud.Configuration{Services: map[azcloud.ServiceName]azcloud.ServiceConfiguration{
			azcloud.ResourceManager: {Audience: "https://management.azure.com", Endpoint: srv.URL}}},
		InsecureAllowCredentialWithHTTP: true,
		Retry:                           policy.RetryOptions{MaxRetries: 5, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 1500 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{GVR: Kind + "List"})
	c := &Controller{Kube: kube, Dynamic: dyn, NICs: ARM{Client: client, ResourceGroup: "rg", PollEvery: 10 * time.Millisecond},
		NICName: cloud.NICName, PodSubnetID: cl.SubnetID("vnet", "pods"), PodSubnet: podSubnet, Scaler: DefaultScaler,
		Log: slog.New(slog.DiscardHandler)}
	return &env{c: c, fab: fab, arm: h, kube: kube}
}

func (e *env) nnc(t *testing.T, node string) *NodeNetworkConfig {
	t.Helper()
	u, err := e.c.nncs().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get NodeNetworkConfig %s: %v", node, err)
	}
	n, err := FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) request(t *testing.T, node string, count int64, notInUse ...string) {
	t.Helper()
	n := e.nnc(t, node)
	n.Spec = NNCSpec{RequestedIPCount: count, IPsNotInUse: notInUse}
	u, err := ToUnstructured(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.nncs().Update(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) sync(t *testing.T, node string) {
	t.Helper()
	if err := e.c.Sync(context.Background(), node); err != nil {
		t.Fatalf("sync %s: %v", node, err)
	}
}

// A node's request is met in one NIC write: the cloud picks each address
// of the pod subnet, two nodes never share one, the status lists them;
// addresses the node gives back leave its NIC; a node that goes away gives
// back all of them.
func TestNodesGetAndReturnAddresses(t *testing.T) {
	e := newEnv(t, "vm-1", "vm-2")
	for _, n := range []string{"vm-1", "vm-2"} {
		e.sync(t, n) // creates the NodeNetworkConfig, owned by the node
		nnc := e.nnc(t, n)
		if len(nnc.OwnerReferences) != 1 || nnc.OwnerReferences[0].Name != n || !slices.Contains(nnc.Finalizers, Finalizer) {
			t.Fatalf("%s's NodeNetworkConfig: owners %v finalizers %v", n, nnc.OwnerReferences, nnc.Finalizers)
		}
		e.request(t, n, 16)
		e.sync(t, n)
	}
	seen := map[netip.Addr]string{}
	for _, n := range []string{"vm-1", "vm-2"} {
		st := e.nnc(t, n).Status
		if len(st.IPAssignments) != 16 || st.SubnetAddressSpace != podSubnet.String() || st.DefaultGateway != "10.10.0.1" || st.Scaler != DefaultScaler {
			t.Fatalf("%s status: %+v", n, st)
		}
		if got := e.fab.secondaries(n); !slices.Equal(got, st.Addresses()) {
			t.Errorf("%s: NIC holds %v, status says %v", n, got, st.Addresses())
		}
		for _, ip := range st.Addresses() {
			if other, dup := seen[ip]; dup {
				t.Errorf("%s given to %s and %s", ip, other, n)
			}
			if !podSubnet.Contains(ip) || fabric.Reserved(podSubnet, ip) {
				t.Errorf("%s given %s: not a usable pod-subnet address", n, ip)
			}
			seen[ip] = n
		}
	}

	// vm-1 gives back three and asks for 13: exactly those three go.
	back := e.nnc(t, "vm-1").Status.Addresses()[:3]
	var backS []string
	for _, ip := range back {
		backS = append(backS, ip.String())
	}
	e.request(t, "vm-1", 13, backS...)
	e.sync(t, "vm-1")
	left := e.fab.secondaries("vm-1")
	if len(left) != 13 || slices.ContainsFunc(left, func(ip netip.Addr) bool { return slices.Contains(back, ip) }) {
		t.Errorf("after giving back %v: NIC holds %v", back, left)
	}
	// Syncing again changes nothing (no NIC write: the ETag stays).
	before, _ := e.c.NICs.Get(context.Background(), "vm-1-nic")
	e.sync(t, "vm-1")
	after, _ := e.c.NICs.Get(context.Background(), "vm-1-nic")
	if *before.Etag != *after.Etag {
		t.Errorf("an idle sync wrote the NIC: ETag %s → %s", *before.Etag, *after.Etag)
	}

	// vm-2 leaves the cluster.
	if err := e.kube.CoreV1().Nodes().Delete(context.Background(), "vm-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.sync(t, "vm-2")
	if got := e.fab.secondaries("vm-2"); len(got) != 0 {
		t.Errorf("vm-2 gone; its NIC still holds %v", got)
	}
	if l, _ := e.c.List(context.Background()); len(l) != 1 {
		t.Errorf("%d NodeNetworkConfigs left, want vm-1's", len(l))
	}
}

// The cloud failing (500s, 429s with Retry-After) delays a request but
// neither loses nor doubles addresses; a request the subnet cannot meet
// is an error in the status, and what it could hold stays.
func TestCloudFaults(t *testing.T) {
	e := newEnv(t, "vm-1")
	e.sync(t, "vm-1")
	e.request(t, "vm-1", 8)
	e.arm.FailNext(2, http.StatusInternalServerError)
	e.arm.FailNext(1, http.StatusTooManyRequests)
	e.sync(t, "vm-1")
	if got := e.fab.secondaries("vm-1"); len(got) != 8 {
		t.Fatalf("after faults: NIC holds %d addresses, want 8", len(got))
	}

	e.request(t, "vm-1", 300) // capped at maxIPCount 250; the /24 has 251 usable
	e.sync(t, "vm-1")
	if got := len(e.fab.secondaries("vm-1")); got != 250 {
		t.Errorf("request of 300: NIC holds %d, want maxIPCount 250", got)
	}
}

// A request the pod subnet cannot meet fails as the cloud refuses it
// (SubnetIsFull): the node keeps what it has, its status says why, and
// the sync is an error so it is retried.
func TestSubnetFull(t *testing.T) {
	e := newEnv(t, "vm-1", "vm-2")
	for _, n := range []string{"vm-1", "vm-2"} {
		e.sync(t, n)
	}
	e.request(t, "vm-1", 250)
	e.sync(t, "vm-1")
	e.request(t, "vm-2", 2) // one address is left
	err := e.c.Sync(context.Background(), "vm-2")
	if err == nil {
		t.Fatal("sync of an unmeetable request succeeded")
	}
	if st := e.nnc(t, "vm-2").Status; !strings.Contains(st.Error, cloud.CodeSubnetFull) || len(st.IPAssignments) != 0 {
		t.Errorf("vm-2 status: %+v, want the SubnetIsFull error and no addresses", st)
	}
	if got := len(e.fab.secondaries("vm-1")); got != 250 {
		t.Errorf("vm-1 holds %d after vm-2's refusal, want 250", got)
	}
}
