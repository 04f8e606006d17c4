package vnetlab

import (
	"crypto/rand"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/lab/azurefake"
	"github.com/vnetcni/vnetcni/lab/cloud"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// The lab's management API (lab/cloud's ARM front), as the daemon serves
// it at http://management.azure.com/ on the internet host.
const (
	// CloudLatency is how long each accepted write takes, about what
	// Azure's NIC updates take.
	CloudLatency = time.Second
	// ManagementAudience is the resource VMs ask IMDS tokens for.
	ManagementAudience = "https://management.azure.com/"
)

// CloudLimits are the API's request rates per caller.
var CloudLimits = cloud.Limits{ReadsPerSecond: 50, WritesPerSecond: 10, Burst: 50}

// cloudSubnets names the lab's subnets for its cloud: the cluster's
// subnet "cluster", the others "subnet-<a>-<b>-<c>-<d>-<bits>".
func (l *Lab) cloudSubnets() []cloud.Subnet {
	var out []cloud.Subnet
	for _, p := range l.Spec.Subnets {
		name := "subnet-" + strings.NewReplacer(".", "-", "/", "-").Replace(p.String())
		if l.Plan != nil && p == l.Plan.Subnet {
			name = clusterSubnetName
		}
		out = append(out, cloud.Subnet{Name: name, Prefix: p})
	}
	return out
}

// labNICs changes a running lab's NICs and records each change in the
// lab's description, so every later command sees the addresses.
type labNICs struct {
	*fabric.Fabric
	lab string
}

func (n labNICs) AddSecondaryIPs(vm string, ips ...netip.Addr) error {
	if err := n.Fabric.AddSecondaryIPs(vm, ips...); err != nil {
		return err
	}
	return n.record(vm)
}

func (n labNICs) RemoveSecondaryIPs(vm string, ips ...netip.Addr) error {
	if err := n.Fabric.RemoveSecondaryIPs(vm, ips...); err != nil {
		return err
	}
	return n.record(vm)
}

func (n labNICs) record(vm string) error {
	v, ok := n.Spec().VM(vm)
	if !ok {
		return errors.New("vm " + vm + " vanished")
	}
	_, err := update(n.lab, func(l *Lab) error {
		i := slices.IndexFunc(l.Spec.VMs, func(x fabric.VMSpec) bool { return x.Name == vm })
		if i < 0 {
			return errors.New("vm " + vm + " is not in lab " + n.lab)
		}
		l.Spec.VMs[i].SecondaryIPs = slices.Clone(v.SecondaryIPs)
		return nil
	})
	return err
}

// management builds the lab's cloud API on f: ARM's front for its
// resources, authenticated by the VMs' managed-identity tokens.
func (l *Lab) management(f *fabric.Fabric) (*cloud.Cloud, *cloud.ArmHandler, azurefake.Tokens, error) {
	key, err := identityKey(filepath.Join(l.Dir(), "identity.key"))
	if err != nil {
		return nil, nil, azurefake.Tokens{}, err
	}
	tokens := azurefake.Tokens{Key: key}
	c := cloud.New(labNICs{Fabric: f, lab: l.Name}, l.Name, vnetName, l.cloudSubnets())
	c.Adopt(f.Spec().RouteTables)
	c.SetLatency(CloudLatency)
	h := &cloud.ArmHandler{Cloud: c, Limits: CloudLimits, Authenticate: func(token string) (string, error) {
		return tokens.Verify(token, ManagementAudience)
	}}
	return c, h, tokens, nil
}

// identityKey reads the lab's token key, making one the first time, so
// tokens stay valid across restarts of the lab's services.
func identityKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) == 32 {
		return b, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, os.WriteFile(path, b, 0o600)
}
