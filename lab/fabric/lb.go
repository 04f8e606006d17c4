package fabric

import (
	"fmt"
	"net/netip"
	"slices"
)

// LoadBalancer is an Azure internal load balancer: a frontend address in
// one of the subnets whose ports are forwarded, unchanged, to backend
// addresses (destination NAT in the fabric; replies return through it).
type LoadBalancer struct {
	Name     string       `json:"name"`
	VIP      netip.Addr   `json:"vip"`
	Ports    []uint16     `json:"ports"` // TCP
	Backends []netip.Addr `json:"backends"`
}

// NSG is a network security group on a subnet: inbound traffic to the
// subnet is allowed only by its rules (replies to connections made from
// the subnet always are; NSGs are stateful). Dropped packets are counted.
type NSG struct {
	Subnet netip.Prefix `json:"subnet"`
	Allow  []NSGRule    `json:"allow"`
}

// NSGRule allows TCP to some ports from a source prefix.
type NSGRule struct {
	Source netip.Prefix `json:"source"`
	Ports  []uint16     `json:"ports"`
}

// AzureLoadBalancerSource is the source of Azure Load Balancer health probes
// (the AzureLoadBalancer service tag).
var AzureLoadBalancerSource = netip.PrefixFrom(WireserverIP, 32)

func (s Spec) validateLB() error {
	vips := map[netip.Addr]bool{}
	for i, lb := range s.LoadBalancers {
		f := fmt.Sprintf("loadBalancers[%d]", i)
		if err := validName(lb.Name, MaxVMNameLen); err != nil {
			return fmt.Errorf("%s.name %q: %w", f, lb.Name, err)
		}
		in := false
		for _, sn := range s.Subnets {
			if usable(sn, lb.VIP) == nil {
				in = true
			}
		}
		if !in {
			return fmt.Errorf("%s.vip %s: not a usable address of a subnet", f, lb.VIP)
		}
		if _, taken := s.Owner(lb.VIP); taken || vips[lb.VIP] {
			return fmt.Errorf("%s.vip %s: already in use", f, lb.VIP)
		}
		vips[lb.VIP] = true
		if len(lb.Ports) == 0 || len(lb.Backends) == 0 {
			return fmt.Errorf("%s: needs ports and backends", f)
		}
		for _, b := range lb.Backends {
			if _, ok := s.Owner(b); !ok {
				return fmt.Errorf("%s.backends: %s is no VM's address", f, b)
			}
		}
	}
	for i, n := range s.NSGs {
		if !slices.Contains(s.Subnets, n.Subnet) {
			return fmt.Errorf("nsgs[%d].subnet %s: not one of the spec's subnets", i, n.Subnet)
		}
	}
	return nil
}

// nsgCounter names the drop counter of a subnet's NSG.
func nsgCounter(i int) string { return fmt.Sprintf("nsg%d_denied", i) }

// NSGDrops reads how many packets each subnet's NSG dropped.
func (f *Fabric) NSGDrops() (map[netip.Prefix]uint64, error) {
	fab, err := openNS(f.FabricNetNS())
	if err != nil {
		return nil, err
	}
	defer fab.Close()
	return readNSGCounters(fab, f.Spec())
}
