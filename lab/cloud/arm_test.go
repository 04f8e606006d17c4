package cloud

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/vnetcni/vnetcni/lab/fabric"
)

// nicFabric is a fabric of VMs whose secondary IPs the cloud changes; it
// records what it was asked.
type nicFabric struct {
	mu    sync.Mutex
	spec  fabric.Spec
	calls []string
}

func (f *nicFabric) SetRouteTable(fabric.RouteTable) error { return nil }
func (f *nicFabric) DeleteRouteTable(string) error         { return nil }

func (f *nicFabric) Spec() fabric.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spec.Clone()
}

func (f *nicFabric) AddSecondaryIPs(vm string, ips ...netip.Addr) error {
	return f.change(vm, "add", ips, func(v *fabric.VMSpec) { v.SecondaryIPs = append(v.SecondaryIPs, ips...) })
}

func (f *nicFabric) RemoveSecondaryIPs(vm string, ips ...netip.Addr) error {
	return f.change(vm, "remove", ips, func(v *fabric.VMSpec) {
		v.SecondaryIPs = slices.DeleteFunc(v.SecondaryIPs, func(ip netip.Addr) bool { return slices.Contains(ips, ip) })
	})
}

func (f *nicFabric) change(vm, verb string, ips []netip.Addr, fn func(*fabric.VMSpec)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.spec.VMs {
		if f.spec.VMs[i].Name == vm {
			fn(&f.spec.VMs[i])
			f.calls = append(f.calls, fmt.Sprintf("%s %s %v", verb, vm, ips))
			return nil
		}
	}
	return fmt.Errorf("no vm %s", vm)
}

var (
	nodeSubnet = netip.MustParsePrefix("10.0.0.0/24")
	podSubnet  = netip.MustParsePrefix("10.1.0.0/28")
)

func newNICCloud(t *testing.T) (*Cloud, *nicFabric) {
	t.Helper()
	ff := &nicFabric{spec: fabric.Spec{Subnets: []netip.Prefix{nodeSubnet, podSubnet}, VMs: []fabric.VMSpec{
		{Name: "vm-1", Subnet: nodeSubnet, PrimaryIP: netip.MustParseAddr("10.0.0.4"), MAC: fabric.HardwareAddr{0x60, 0x45, 0xbd, 0, 0, 1}},
		{Name: "vm-2", Subnet: nodeSubnet, PrimaryIP: netip.MustParseAddr("10.0.0.5"), MAC: fabric.HardwareAddr{0x60, 0x45, 0xbd, 0, 0, 2},
			SecondaryIPs: []netip.Addr{netip.MustParseAddr("10.1.0.4")}},
	}}}
	c := New(ff, "rg", "vnet", []Subnet{{Name: "nodes", Prefix: nodeSubnet}, {Name: "pods", Prefix: podSubnet}})
	t.Cleanup(c.Close)
	return c, ff
}

// staticToken is a credential that hands out one token.
type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// armClient points the Azure SDK's armnetwork at the handler.
func armClient(t *testing.T, h http.Handler, token string) *armnetwork.ClientFactory {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	opts := &arm.ClientOptions{ClientOptions: policy.ClientOptions{
		Cloud: azcloud.Configuration{ActiveDirectoryAuthorityHost: srv.URL, Services: map[azcloud.ServiceName]azcloud.ServiceConfiguration{
			azcloud.ResourceManager: {Audience: "https://management.azure.com", Endpoint: srv.URL}}},
		InsecureAllowCredentialWithHTTP: true,
		Retry:                           policy.RetryOptions{MaxRetries: 4, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
	}}
	f, err := armnetwork.NewClientFactory(Subscription, staticToken(token), opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var fastPoll = &runtime.PollUntilDoneOptions{Frequency: 10 * time.Millisecond}

// The Azure SDK's own client adds IP configurations to a NIC by PUTting
// the NIC, as Azure's dynamic allocation does: a Dynamic one gets a free
// address of the pod subnet, the operation is polled to its end, and only
// then has the fabric changed.
func TestArmSDKAddsAndRemovesIPConfigurations(t *testing.T) {
	c, ff := newNICCloud(t)
	c.SetLatency(50 * time.Millisecond)
	nics := armClient(t, &ArmHandler{Cloud: c}, "t").NewInterfacesClient()
	ctx := context.Background()

	got, err := nics.Get(ctx, "rg", NICName("vm-1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Properties.IPConfigurations); n != 1 || !*got.Properties.IPConfigurations[0].Properties.Primary {
		t.Fatalf("vm-1's NIC: %d IP configurations, want the primary alone", n)
	}
	nic := got.Interface
	podSubnetID := c.SubnetID("vnet", "pods")
	for _, name := range []string{"pod-1", "pod-2"} {
		nic.Properties.IPConfigurations = append(nic.Properties.IPConfigurations, &armnetwork.InterfaceIPConfiguration{
			Name: to.Ptr(name), Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
				PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodDynamic), Subnet: &armnetwork.Subnet{ID: to.Ptr(podSubnetID)}}})
	}
	poller, err := nics.BeginCreateOrUpdate(ctx, "rg", NICName("vm-1"), nic, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ff.calls) != 0 {
		t.Errorf("fabric changed before the operation ran: %v", ff.calls)
	}
	done, err := poller.PollUntilDone(ctx, fastPoll)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, ipc := range done.Properties.IPConfigurations {
		addrs = append(addrs, *ipc.Properties.PrivateIPAddress)
	}
	// 10.1.0.0-3 are Azure's, 10.1.0.4 is vm-2's.
	if want := []string{"10.0.0.4", "10.1.0.5", "10.1.0.6"}; !slices.Equal(addrs, want) {
		t.Errorf("addresses after PUT: %v, want %v", addrs, want)
	}
	if st := *done.Properties.ProvisioningState; st != armnetwork.ProvisioningStateSucceeded {
		t.Errorf("provisioningState %s", st)
	}
	if want := []string{"add vm-1 [10.1.0.5 10.1.0.6]"}; !slices.Equal(ff.calls, want) {
		t.Errorf("fabric calls %v, want %v", ff.calls, want)
	}

	// The list of IP configurations, through its own client.
	pager := armClient(t, &ArmHandler{Cloud: c}, "t").NewInterfaceIPConfigurationsClient().NewListPager("rg", NICName("vm-1"), nil)
	page, err := pager.NextPage(ctx)
	if err != nil || len(page.Value) != 3 {
		t.Fatalf("list IP configurations: %d, %v", len(page.Value), err)
	}

	// Removing one: PUT the NIC without it.
	nic = done.Interface
	nic.Properties.IPConfigurations = slices.DeleteFunc(nic.Properties.IPConfigurations, func(ipc *armnetwork.InterfaceIPConfiguration) bool { return *ipc.Name == "pod-1" })
	poller, err = nics.BeginCreateOrUpdate(ctx, "rg", NICName("vm-1"), nic, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := poller.PollUntilDone(ctx, fastPoll); err != nil {
		t.Fatal(err)
	}
	if got := ff.calls[len(ff.calls)-1]; got != "remove vm-1 [10.1.0.5]" {
		t.Errorf("last fabric call %q, want the removal of 10.1.0.5", got)
	}
}

// Writes are refused at once, with ARM's status and error codes, when they
// cannot be carried out: a stale ETag, an address in use, a full subnet, a
// changed primary.
func TestArmRefusals(t *testing.T) {
	c, _ := newNICCloud(t)
	nics := armClient(t, &ArmHandler{Cloud: c}, "t").NewInterfacesClient()
	ctx := context.Background()
	cur, err := nics.Get(ctx, "rg", NICName("vm-1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	podSubnetID := c.SubnetID("vnet", "pods")
	with := func(ipcs ...*armnetwork.InterfaceIPConfiguration) armnetwork.Interface {
		n := cur.Interface
		n.Properties = &armnetwork.InterfacePropertiesFormat{IPConfigurations: append(slices.Clone(cur.Properties.IPConfigurations), ipcs...)}
		return n
	}
	static := func(name, ip string) *armnetwork.InterfaceIPConfiguration {
		return &armnetwork.InterfaceIPConfiguration{Name: to.Ptr(name), Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
			PrivateIPAddress: to.Ptr(ip), PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodStatic), Subnet: &armnetwork.Subnet{ID: to.Ptr(podSubnetID)}}}
	}
	dynamic := func(name string) *armnetwork.InterfaceIPConfiguration {
		return &armnetwork.InterfaceIPConfiguration{Name: to.Ptr(name), Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
			Subnet: &armnetwork.Subnet{ID: to.Ptr(podSubnetID)}}}
	}
	var full []*armnetwork.InterfaceIPConfiguration
	for i := range 11 { // 10.1.0.5-14: ten free addresses in a /28
		full = append(full, dynamic(fmt.Sprintf("p%d", i)))
	}
	for _, tc := range []struct {
		name    string
		nic     armnetwork.Interface
		ifMatch string
		status  int
		code    string
	}{
		{"address held by another NIC", with(static("x", "10.1.0.4")), "", http.StatusBadRequest, CodeInvalid},
		{"address Azure reserves", with(static("x", "10.1.0.1")), "", http.StatusBadRequest, CodeInvalid},
		{"no free address left", with(full...), "", http.StatusBadRequest, CodeSubnetFull},
		{"stale ETag", with(dynamic("x")), `W/"stale"`, http.StatusPreconditionFailed, CodePrecondition},
		{"no primary", armnetwork.Interface{Properties: &armnetwork.InterfacePropertiesFormat{IPConfigurations: []*armnetwork.InterfaceIPConfiguration{dynamic("x")}}}, "", http.StatusBadRequest, CodeInvalid},
	} {
		ctx := ctx
		if tc.ifMatch != "" { // armnetwork's NIC client has no If-Match option: a header of the pipeline
			ctx = policy.WithHTTPHeader(ctx, http.Header{"If-Match": {tc.ifMatch}})
		}
		_, err := nics.BeginCreateOrUpdate(ctx, "rg", NICName("vm-1"), tc.nic, nil)
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != tc.status || re.ErrorCode != tc.code {
			t.Errorf("%s: err %v, want HTTP %d %s", tc.name, err, tc.status, tc.code)
		}
	}
	if n, _ := c.GetNIC(NICName("vm-1")); len(n.Properties.IPConfigurations) != 1 {
		t.Errorf("refused writes changed the NIC: %+v", n.Properties.IPConfigurations)
	}
}

// Throttling answers 429 with Retry-After, which the SDK's retry policy
// honours; injected 500s are retried too; a request without a valid token
// is 401 and never reaches the cloud.
func TestArmThrottlingFaultsAndAuth(t *testing.T) {
	c, _ := newNICCloud(t)
	clock := time.Unix(1000, 0)
	var mu sync.Mutex
	h := &ArmHandler{Cloud: c, Limits: Limits{ReadsPerSecond: 1, Burst: 2},
		Authenticate: func(tok string) (string, error) {
			if tok != "good" {
				return "", errors.New("token not issued by the lab")
			}
			return "controller", nil
		},
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }}
	ctx := context.Background()

	_, err := armClient(t, h, "bad").NewInterfacesClient().Get(ctx, "rg", NICName("vm-1"), nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized || re.ErrorCode != CodeAuthentication {
		t.Fatalf("bad token: %v, want 401 %s", err, CodeAuthentication)
	}

	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+c.NICID(NICName("vm-1"))+"?api-version=2024-05-01", nil)
		req.Header.Set("Authorization", "Bearer good")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := range 2 {
		if resp := get(); resp.StatusCode != http.StatusOK {
			t.Fatalf("read %d within the burst: %s", i, resp.Status)
		}
	}
	resp := get()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("third read: %s Retry-After %q, want 429 with Retry-After 1", resp.Status, resp.Header.Get("Retry-After"))
	}
	mu.Lock()
	clock = clock.Add(time.Second)
	mu.Unlock()
	if resp := get(); resp.StatusCode != http.StatusOK {
		t.Fatalf("read a second later: %s", resp.Status)
	}

	// Faults: the SDK retries 500 and 429 and gets through.
	h.Limits = Limits{}
	h.FailNext(1, http.StatusInternalServerError)
	h.FailNext(1, http.StatusTooManyRequests)
	if _, err := armClient(t, h, "good").NewInterfacesClient().Get(ctx, "rg", NICName("vm-1"), nil); err != nil {
		t.Fatalf("get through a 500 and a 429: %v", err)
	}

	// No api-version: ARM's 400.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+c.NICID(NICName("vm-1")), nil)
	req.Header.Set("Authorization", "Bearer good")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("no api-version: %v %v", resp, err)
	}
}

// Route tables through the SDK: create, add a route, delete, each an
// asynchronous operation the SDK polls.
func TestArmSDKRouteTables(t *testing.T) {
	c, _ := newNICCloud(t)
	f := armClient(t, &ArmHandler{Cloud: c}, "t")
	ctx := context.Background()
	p, err := f.NewRouteTablesClient().BeginCreateOrUpdate(ctx, "rg", "kubenet", armnetwork.RouteTable{Location: to.Ptr(Location),
		Properties: &armnetwork.RouteTablePropertiesFormat{Routes: []*armnetwork.Route{{Name: to.Ptr("vm-1"), Properties: &armnetwork.RoutePropertiesFormat{
			AddressPrefix: to.Ptr("10.244.1.0/24"), NextHopType: to.Ptr(armnetwork.RouteNextHopTypeVirtualAppliance), NextHopIPAddress: to.Ptr("10.0.0.4")}}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(ctx, fastPoll); err != nil {
		t.Fatal(err)
	}
	rp, err := f.NewRoutesClient().BeginCreateOrUpdate(ctx, "rg", "kubenet", "vm-2", armnetwork.Route{Properties: &armnetwork.RoutePropertiesFormat{
		AddressPrefix: to.Ptr("10.244.2.0/24"), NextHopType: to.Ptr(armnetwork.RouteNextHopTypeVirtualAppliance), NextHopIPAddress: to.Ptr("10.0.0.5")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rp.PollUntilDone(ctx, fastPoll); err != nil {
		t.Fatal(err)
	}
	rt, err := c.GetRouteTable("kubenet")
	if err != nil || len(rt.Properties.Routes) != 2 || rt.Properties.ProvisioningState != StateSucceeded {
		t.Fatalf("route table after two writes: %+v, %v", rt, err)
	}
	dp, err := f.NewRouteTablesClient().BeginDelete(ctx, "rg", "kubenet", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.PollUntilDone(ctx, fastPoll); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRouteTable("kubenet"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("route table after delete: %v", err)
	}
}
