package vnetlab

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azcloud "github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/lab/cloud"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// vmClient is an HTTP client whose connections start inside a VM's
// namespace. Names resolve as the lab's DNS answers them (checked below).
func vmClient(ns string) *http.Client {
	names := map[string]string{fabric.ManagementHost + ":80": fabric.InternetHostIP.String() + ":80"}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if a, ok := names[addr]; ok {
				addr = a
			}
			var c net.Conn
			err := netns.Do(ns, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
}

// A VM of a running lab changes its own NIC the way Azure's dynamic IP
// allocation does, with the Azure SDK for Go alone: a token from IMDS's
// managed-identity endpoint (azidentity), a PUT of the NIC with a new
// Dynamic IP configuration through http://management.azure.com/
// (armnetwork), polled to its end. The new address is then the NIC's: the
// wireserver lists it to the VM and the lab's description records it.
func TestManagementAPI(t *testing.T) {
	name := testName()
	l := up(t, name, twoAgents, "transparent")
	f := fabric.Open(l.Spec)
	vm := l.Spec.VMs[0]
	ns := f.VMNetNS(vm.Name)
	hc := vmClient(ns)
	ctx := context.Background()

	// The lab's DNS names the API.
	addrs, err := probe.DNSQuery(ns, netip.AddrPortFrom(fabric.WireserverIP, 53), fabric.ManagementHost, 5*time.Second)
	if err != nil || !slices.Contains(addrs, fabric.InternetHostIP) {
		t.Fatalf("lab DNS: %s = %v, %v; want %s", fabric.ManagementHost, addrs, err, fabric.InternetHostIP)
	}

	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: azcore.ClientOptions{Transport: hc}})
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + fabric.ManagementHost
	opts := &arm.ClientOptions{ClientOptions: policy.ClientOptions{Transport: hc, InsecureAllowCredentialWithHTTP: true,
		Cloud: azcloud.Configuration{ActiveDirectoryAuthorityHost: endpoint, Services: map[azcloud.ServiceName]azcloud.ServiceConfiguration{
			azcloud.ResourceManager: {Audience: strings.TrimSuffix(ManagementAudience, "/"), Endpoint: endpoint}}}}}
	nics, err := armnetwork.NewInterfacesClient(cloud.Subscription, cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := nics.Get(ctx, name, cloud.NICName(vm.Name), nil)
	if err != nil {
		t.Fatalf("get NIC: %v", err)
	}
	nic := cur.Interface
	nic.Properties.IPConfigurations = append(nic.Properties.IPConfigurations, &armnetwork.InterfaceIPConfiguration{
		Name: to.Ptr("dynamic-1"), Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
			PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodDynamic),
			Subnet:                    &armnetwork.Subnet{ID: to.Ptr("/subscriptions/" + cloud.Subscription + "/resourceGroups/" + name + "/providers/Microsoft.Network/virtualNetworks/" + vnetName + "/subnets/" + clusterSubnetName)}}})
	poller, err := nics.BeginCreateOrUpdate(ctx, name, cloud.NICName(vm.Name), nic, nil)
	if err != nil {
		t.Fatalf("PUT NIC: %v", err)
	}
	done, err := poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("PUT NIC: %v", err)
	}
	last := done.Properties.IPConfigurations[len(done.Properties.IPConfigurations)-1]
	ip := netip.MustParseAddr(*last.Properties.PrivateIPAddress)
	if slices.Contains(vm.IPs(), ip) || !l.Plan.Subnet.Contains(ip) {
		t.Fatalf("new IP configuration got %s: want a free address of %s", ip, l.Plan.Subnet)
	}

	// The wireserver lists it to the VM.
	status, body, err := probe.HTTPGet(ns, "http://"+fabric.WireserverIP.String()+wireserver.Path+"?comp=nmagent&type=getinterfaceinfov1", nil, 5*time.Second)
	if err != nil || status != http.StatusOK || !strings.Contains(string(body), ip.String()) {
		t.Errorf("wireserver after the PUT: %d %v; want %s listed in:\n%s", status, err, ip, body)
	}
	// The lab records it.
	l2, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := l2.Spec.VM(vm.Name); !slices.Contains(v.SecondaryIPs, ip) {
		t.Errorf("lab.json: %s's secondaries %v lack %s", vm.Name, v.SecondaryIPs, ip)
	}

	// Without a token from the lab's IMDS: 401.
	bad, err := armnetwork.NewInterfacesClient(cloud.Subscription, fakeToken("forged.token"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Get(ctx, name, cloud.NICName(vm.Name), nil); err == nil || !strings.Contains(err.Error(), cloud.CodeAuthentication) {
		t.Errorf("forged token: %v, want %s", err, cloud.CodeAuthentication)
	}
}

type fakeToken string

func (f fakeToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(f), ExpiresOn: time.Now().Add(time.Hour)}, nil
}
