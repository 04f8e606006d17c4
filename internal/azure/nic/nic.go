// Package nic models a VM's network interfaces as the Azure host reports
// them: each interface has a MAC address and, per subnet, a primary and any
// number of secondary IP configurations. The secondary addresses of an
// interface are the pod address pool of that interface.
//
// The wireserver, IMDS and MAS (file) sources all decode into this model.
package nic

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Interface is one network interface of a VM.
type Interface struct {
	MAC       net.HardwareAddr
	IsPrimary bool
	Subnets   []Subnet
}

// Subnet is the part of an interface's configuration inside one subnet.
type Subnet struct {
	Prefix    netip.Prefix
	Addresses []Address
}

// Address is one IP configuration of an interface.
type Address struct {
	IP        netip.Addr
	IsPrimary bool
}

// PrimaryIP returns the interface's primary address, if it has one.
func (i Interface) PrimaryIP() (netip.Addr, netip.Prefix, bool) {
	for _, s := range i.Subnets {
		for _, a := range s.Addresses {
			if a.IsPrimary {
				return a.IP, s.Prefix, true
			}
		}
	}
	return netip.Addr{}, netip.Prefix{}, false
}

// Secondaries returns the interface's secondary addresses in the order the
// source listed them, paired with their subnet.
func (i Interface) Secondaries() []Address {
	var out []Address
	for _, s := range i.Subnets {
		for _, a := range s.Addresses {
			if !a.IsPrimary {
				out = append(out, a)
			}
		}
	}
	return out
}

// ParseAzureMAC parses a MAC address as Azure writes it: twelve hex digits
// with no separators ("000D3A6E1825"). Colon- and dash-separated forms are
// accepted too.
func ParseAzureMAC(s string) (net.HardwareAddr, error) {
	t := strings.NewReplacer(":", "", "-", "").Replace(strings.TrimSpace(s))
	if len(t) != 12 {
		return nil, fmt.Errorf("parse MAC %q: want 12 hex digits", s)
	}
	var b [6]byte
	for i := 0; i < 6; i++ {
		hi, ok1 := unhex(t[2*i])
		lo, ok2 := unhex(t[2*i+1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("parse MAC %q: not hexadecimal", s)
		}
		b[i] = hi<<4 | lo
	}
	return net.HardwareAddr(b[:]), nil
}

// FormatAzureMAC writes a MAC the way Azure does: upper-case, no separators.
func FormatAzureMAC(mac net.HardwareAddr) string {
	return strings.ToUpper(strings.ReplaceAll(mac.String(), ":", ""))
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Validate checks an interface list for the mistakes a malformed source
// answer can carry: addresses outside their subnet, duplicate addresses, an
// interface without a MAC, IPv4/IPv6 mixed inside one subnet.
func Validate(ifs []Interface) error {
	seen := map[netip.Addr]bool{}
	for _, i := range ifs {
		if len(i.MAC) != 6 {
			return fmt.Errorf("interface with invalid MAC %q", i.MAC)
		}
		for _, s := range i.Subnets {
			if !s.Prefix.IsValid() {
				return fmt.Errorf("interface %s: invalid subnet prefix", FormatAzureMAC(i.MAC))
			}
			for _, a := range s.Addresses {
				if !s.Prefix.Contains(a.IP) {
					return fmt.Errorf("interface %s: address %s outside subnet %s", FormatAzureMAC(i.MAC), a.IP, s.Prefix)
				}
				if seen[a.IP] {
					return fmt.Errorf("interface %s: address %s listed twice", FormatAzureMAC(i.MAC), a.IP)
				}
				seen[a.IP] = true
			}
		}
	}
	return nil
}

// Find returns the interface with the given MAC.
func Find(ifs []Interface, mac net.HardwareAddr) (Interface, bool) {
	for _, i := range ifs {
		if strings.EqualFold(i.MAC.String(), mac.String()) {
			return i, true
		}
	}
	return Interface{}, false
}

// Primary returns the interface marked primary, or the first one.
func Primary(ifs []Interface) (Interface, bool) {
	for _, i := range ifs {
		if i.IsPrimary {
			return i, true
		}
	}
	if len(ifs) > 0 {
		return ifs[0], true
	}
	return Interface{}, false
}
