package cloud

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vnetcni/vnetcni/lab/fabric"
)

// NICFabric is what writes to network interfaces change: the IP
// configurations a VM's NIC holds (each is what makes the fabric deliver
// and accept that address, and what the wireserver and IMDS list).
type NICFabric interface {
	Spec() fabric.Spec
	AddSecondaryIPs(vm string, ips ...netip.Addr) error
	RemoveSecondaryIPs(vm string, ips ...netip.Addr) error
}

// Allocation methods of an IP configuration, ARM's words: Dynamic lets
// the cloud pick a free address of the subnet when it is created.
const (
	AllocationStatic  = "Static"
	AllocationDynamic = "Dynamic"
)

// CodePrecondition and CodeSubnetFull refuse NIC writes: a stale If-Match
// ETag (another writer was first), no free address for a Dynamic IP
// configuration.
const (
	CodePrecondition = "PreconditionFailed"
	CodeSubnetFull   = "SubnetIsFull"
)

// NetworkInterface is Microsoft.Network/networkInterfaces.
type NetworkInterface struct {
	ID         string                     `json:"id"`
	Name       string                     `json:"name"`
	Type       string                     `json:"type"`
	Location   string                     `json:"location,omitempty"`
	Etag       string                     `json:"etag,omitempty"`
	Properties NetworkInterfaceProperties `json:"properties"`
}

// NetworkInterfaceProperties: the NIC's IP configurations, primary first.
type NetworkInterfaceProperties struct {
	IPConfigurations   []IPConfiguration `json:"ipConfigurations"`
	MacAddress         string            `json:"macAddress,omitempty"`
	EnableIPForwarding bool              `json:"enableIPForwarding"`
	Primary            bool              `json:"primary"`
	VirtualMachine     *SubResource      `json:"virtualMachine,omitempty"`
	ProvisioningState  string            `json:"provisioningState,omitempty"`
}

// IPConfiguration is Microsoft.Network/networkInterfaces/ipConfigurations.
type IPConfiguration struct {
	ID         string                    `json:"id,omitempty"`
	Name       string                    `json:"name"`
	Etag       string                    `json:"etag,omitempty"`
	Type       string                    `json:"type,omitempty"`
	Properties IPConfigurationProperties `json:"properties"`
}

// IPConfigurationProperties: one address of the NIC.
type IPConfigurationProperties struct {
	PrivateIPAddress          string       `json:"privateIPAddress,omitempty"`
	PrivateIPAllocationMethod string       `json:"privateIPAllocationMethod,omitempty"`
	PrivateIPAddressVersion   string       `json:"privateIPAddressVersion,omitempty"`
	Subnet                    *SubResource `json:"subnet,omitempty"`
	Primary                   bool         `json:"primary"`
	ProvisioningState         string       `json:"provisioningState,omitempty"`
}

// NICName is the name of a lab VM's network interface.
func NICName(vm string) string { return vm + "-nic" }

// NICID is the resource ID of a network interface.
func (c *Cloud) NICID(name string) string { return c.prefix + "/networkInterfaces/" + name }

// adoptNICs records the NIC of every VM of the fabric, as it is.
func (c *Cloud) adoptNICsLocked() {
	if c.nicFab == nil {
		return
	}
	for _, v := range c.nicFab.Spec().VMs {
		name := NICName(v.Name)
		if _, ok := c.nics[name]; ok {
			continue
		}
		n := &NetworkInterface{Name: name, Location: Location, Properties: NetworkInterfaceProperties{
			MacAddress: strings.ToUpper(strings.ReplaceAll(v.MAC.String(), ":", "-")), EnableIPForwarding: v.IPForwarding,
			Primary: true, VirtualMachine: &SubResource{ID: c.vmID(v.Name)}}}
		for i, ip := range v.IPs() {
			n.Properties.IPConfigurations = append(n.Properties.IPConfigurations, IPConfiguration{
				Name: ipConfigName(i), Properties: IPConfigurationProperties{PrivateIPAddress: ip.String(),
					PrivateIPAllocationMethod: AllocationStatic, Subnet: &SubResource{ID: c.subnetIDOf(v.Subnet)}, Primary: i == 0}})
		}
		c.stampNICLocked(n, StateSucceeded)
		c.nics[name] = n
		c.nicVM[name] = v.Name
	}
}

func ipConfigName(i int) string {
	if i == 0 {
		return "ipconfig1"
	}
	return fmt.Sprintf("ipconfig%d", i+1)
}

func (c *Cloud) vmID(vm string) string {
	return strings.Replace(c.prefix, "Microsoft.Network", "Microsoft.Compute", 1) + "/virtualMachines/" + vm
}

// subnetIDOf is the ID of the subnet with prefix p ("" when none is
// known by that prefix).
func (c *Cloud) subnetIDOf(p netip.Prefix) string {
	for id, q := range c.subnets {
		if q == p {
			return id
		}
	}
	return ""
}

// stampNICLocked sets IDs, types, a new ETag and the provisioning state.
func (c *Cloud) stampNICLocked(n *NetworkInterface, state string) {
	c.seq++
	n.ID, n.Type = c.NICID(n.Name), "Microsoft.Network/networkInterfaces"
	n.Etag = fmt.Sprintf(`W/"%d"`, c.seq)
	n.Properties.ProvisioningState = state
	for i := range n.Properties.IPConfigurations {
		ipc := &n.Properties.IPConfigurations[i]
		ipc.ID, ipc.Type, ipc.Etag = n.ID+"/ipConfigurations/"+ipc.Name, "Microsoft.Network/networkInterfaces/ipConfigurations", n.Etag
		ipc.Properties.PrivateIPAddressVersion = "IPv4"
		ipc.Properties.ProvisioningState = state
	}
}

// ListNICs returns every network interface, by name.
func (c *Cloud) ListNICs() []NetworkInterface {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.adoptNICsLocked()
	var out []NetworkInterface
	for _, n := range c.nics {
		out = append(out, cloneNIC(*n))
	}
	slices.SortFunc(out, func(a, b NetworkInterface) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// GetNIC returns a network interface as last written.
func (c *Cloud) GetNIC(name string) (NetworkInterface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.adoptNICsLocked()
	n, ok := c.nics[name]
	if !ok {
		return NetworkInterface{}, &Error{Code: CodeNotFound, Message: "network interface " + name + " not found"}
	}
	return cloneNIC(*n), nil
}

func cloneNIC(n NetworkInterface) NetworkInterface {
	n.Properties.IPConfigurations = slices.Clone(n.Properties.IPConfigurations)
	return n
}

// PutNIC updates a VM's network interface to hold exactly the given IP
// configurations, as ARM's PUT of a NIC does: configurations by name keep
// their address, new Static ones take theirs, new Dynamic ones get a free
// address of their subnet now (the answer shows it), missing ones are
// removed. The primary configuration cannot change. ifMatch, when not
// empty, must be the NIC's current ETag. The fabric is changed when the
// returned operation runs; the resource shows the result at once, with a
// provisioning state of Updating until then.
func (c *Cloud) PutNIC(n NetworkInterface, ifMatch string) (NetworkInterface, *Operation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.adoptNICsLocked()
	cur, ok := c.nics[n.Name]
	if !ok {
		return NetworkInterface{}, nil, &Error{Code: CodeNotFound, Message: "network interface " + n.Name + " not found (the lab's NICs are its VMs')"}
	}
	if ifMatch != "" && ifMatch != "*" && ifMatch != cur.Etag {
		return NetworkInterface{}, nil, &Error{Code: CodePrecondition, Message: fmt.Sprintf("network interface %s: If-Match %s, current ETag %s", n.Name, ifMatch, cur.Etag)}
	}
	vm := c.nicVM[n.Name]
	next, added, removed, err := c.resolveNICLocked(*cur, n)
	if err != nil {
		return NetworkInterface{}, nil, err
	}
	c.stampNICLocked(&next, StateUpdating)
	stored := next
	c.nics[n.Name] = &stored
	op := c.startLocked(stored.ID, func() error {
		if len(added) > 0 {
			if err := c.nicFab.AddSecondaryIPs(vm, added...); err != nil {
				return err
			}
		}
		if len(removed) > 0 {
			return c.nicFab.RemoveSecondaryIPs(vm, removed...)
		}
		return nil
	}, func(ok bool) {
		if c.nics[n.Name] != &stored {
			return // a later write replaced it
		}
		if ok {
			stored.Properties.ProvisioningState = StateSucceeded
		} else {
			stored.Properties.ProvisioningState = StateFailed
		}
		for i := range stored.Properties.IPConfigurations {
			stored.Properties.IPConfigurations[i].Properties.ProvisioningState = stored.Properties.ProvisioningState
		}
	})
	return cloneNIC(stored), op, nil
}

// resolveNICLocked validates want against cur and returns the NIC to
// store and the secondary addresses to add and remove.
func (c *Cloud) resolveNICLocked(cur, want NetworkInterface) (next NetworkInterface, added, removed []netip.Addr, err error) {
	bad := func(format string, a ...any) error {
		return &Error{Code: CodeInvalid, Message: fmt.Sprintf("network interface %s: ", want.Name) + fmt.Sprintf(format, a...)}
	}
	next = cloneNIC(cur)
	next.Properties.IPConfigurations = nil
	old := map[string]IPConfiguration{}
	for _, ipc := range cur.Properties.IPConfigurations {
		old[ipc.Name] = ipc
	}
	taken := c.takenLocked()
	seen := map[string]bool{}
	primaries := 0
	for i, ipc := range want.Properties.IPConfigurations {
		if ipc.Name == "" || seen[ipc.Name] {
			return next, nil, nil, bad("ipConfigurations[%d]: a unique name is required", i)
		}
		seen[ipc.Name] = true
		p := ipc.Properties
		if p.Primary {
			primaries++
		}
		if o, ok := old[ipc.Name]; ok {
			if p.PrivateIPAddress != "" && p.PrivateIPAddress != o.Properties.PrivateIPAddress {
				return next, nil, nil, bad("ipConfigurations[%d] %s: its address %s cannot change to %s (create another configuration)",
					i, ipc.Name, o.Properties.PrivateIPAddress, p.PrivateIPAddress)
			}
			if p.Primary != o.Properties.Primary {
				return next, nil, nil, bad("ipConfigurations[%d] %s: the primary configuration cannot change", i, ipc.Name)
			}
			next.Properties.IPConfigurations = append(next.Properties.IPConfigurations, o)
			continue
		}
		if p.Primary {
			return next, nil, nil, bad("ipConfigurations[%d] %s: the primary configuration cannot change", i, ipc.Name)
		}
		subnetID := ""
		if p.Subnet != nil {
			subnetID = p.Subnet.ID
		}
		subnet, ok := c.subnets[subnetID]
		if !ok {
			return next, nil, nil, bad("ipConfigurations[%d] %s: subnet %q: no such subnet", i, ipc.Name, subnetID)
		}
		var ip netip.Addr
		switch method := p.PrivateIPAllocationMethod; {
		case p.PrivateIPAddress != "":
			if ip, err = netip.ParseAddr(p.PrivateIPAddress); err != nil || !ip.Is4() || !subnet.Contains(ip) || fabric.Reserved(subnet, ip) {
				return next, nil, nil, bad("ipConfigurations[%d] %s: privateIPAddress %q: want a free IPv4 address of %s", i, ipc.Name, p.PrivateIPAddress, subnet)
			}
			if taken[ip] {
				return next, nil, nil, &Error{Code: CodeInvalid, Message: fmt.Sprintf("network interface %s: ipConfigurations[%d] %s: %s is in use", want.Name, i, ipc.Name, ip)}
			}
		case method == "" || method == AllocationDynamic:
			if ip, ok = freeAddr(subnet, taken); !ok {
				return next, nil, nil, &Error{Code: CodeSubnetFull, Message: fmt.Sprintf("network interface %s: ipConfigurations[%d] %s: subnet %s has no free address", want.Name, i, ipc.Name, subnet)}
			}
		default:
			return next, nil, nil, bad("ipConfigurations[%d] %s: Static allocation needs privateIPAddress", i, ipc.Name)
		}
		taken[ip] = true
		method := p.PrivateIPAllocationMethod
		if method == "" {
			method = AllocationDynamic
		}
		next.Properties.IPConfigurations = append(next.Properties.IPConfigurations, IPConfiguration{Name: ipc.Name, Properties: IPConfigurationProperties{
			PrivateIPAddress: ip.String(), PrivateIPAllocationMethod: method, Subnet: &SubResource{ID: subnetID}}})
		added = append(added, ip)
	}
	if primaries != 1 {
		return next, nil, nil, bad("exactly one primary IP configuration is required, got %d", primaries)
	}
	for name, o := range old {
		if !seen[name] {
			if o.Properties.Primary {
				return next, nil, nil, bad("the primary configuration %s cannot be removed", name)
			}
			removed = append(removed, netip.MustParseAddr(o.Properties.PrivateIPAddress))
		}
	}
	slices.SortFunc(removed, netip.Addr.Compare)
	return next, added, removed, nil
}

// takenLocked is every address held in the VNet: each NIC's
// configurations as last written, every VM's addresses in the fabric, the
// load balancers' frontends.
func (c *Cloud) takenLocked() map[netip.Addr]bool {
	taken := map[netip.Addr]bool{}
	for _, n := range c.nics {
		for _, ipc := range n.Properties.IPConfigurations {
			if ip, err := netip.ParseAddr(ipc.Properties.PrivateIPAddress); err == nil {
				taken[ip] = true
			}
		}
	}
	spec := c.nicFab.Spec()
	for _, v := range spec.VMs {
		for _, ip := range v.IPs() {
			taken[ip] = true
		}
	}
	for _, lb := range spec.LoadBalancers {
		taken[lb.VIP] = true
	}
	return taken
}

// freeAddr is the lowest address of subnet that Azure does not reserve
// and nothing holds, as Azure's Dynamic allocation picks.
func freeAddr(subnet netip.Prefix, taken map[netip.Addr]bool) (netip.Addr, bool) {
	for ip := subnet.Masked().Addr(); subnet.Contains(ip); ip = ip.Next() {
		if !fabric.Reserved(subnet, ip) && !taken[ip] {
			return ip, true
		}
	}
	return netip.Addr{}, false
}
