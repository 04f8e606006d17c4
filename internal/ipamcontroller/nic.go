package ipamcontroller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
)

// NICs reads and writes network interfaces.
type NICs interface {
	Get(ctx context.Context, name string) (armnetwork.Interface, error)
	// Put replaces the NIC, only if its ETag is still ifMatch, and
	// returns it once the cloud has carried the change out.
	Put(ctx context.Context, nic armnetwork.Interface, ifMatch string) (armnetwork.Interface, error)
}

// ARM is NICs through Azure Resource Manager (the Azure SDK's armnetwork
// client; real ARM or any endpoint shaped like it).
type ARM struct {
	Client        *armnetwork.InterfacesClient
	ResourceGroup string
	// PollEvery is how often an accepted write is polled when the cloud
	// gives no Retry-After (default 1 s).
	PollEvery time.Duration
}

// Get implements NICs.
func (a ARM) Get(ctx context.Context, name string) (armnetwork.Interface, error) {
	r, err := a.Client.Get(ctx, a.ResourceGroup, name, nil)
	if err != nil {
		return armnetwork.Interface{}, err
	}
	return r.Interface, nil
}

// Put implements NICs.
func (a ARM) Put(ctx context.Context, nic armnetwork.Interface, ifMatch string) (armnetwork.Interface, error) {
	if nic.Name == nil {
		return armnetwork.Interface{}, fmt.Errorf("put NIC: no name")
	}
	if ifMatch != "" { // armnetwork's NIC client has no If-Match option; the header goes through its pipeline
		ctx = policy.WithHTTPHeader(ctx, http.Header{"If-Match": {ifMatch}})
	}
	p, err := a.Client.BeginCreateOrUpdate(ctx, a.ResourceGroup, *nic.Name, nic, nil)
	if err != nil {
		return armnetwork.Interface{}, err
	}
	every := a.PollEvery
	if every <= 0 {
		every = time.Second
	}
	r, err := p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: every})
	if err != nil {
		return armnetwork.Interface{}, err
	}
	return r.Interface, nil
}

// IsPreconditionFailed reports whether err is a write refused because
// another writer changed the resource first.
func IsPreconditionFailed(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusPreconditionFailed
}
