// Package nictest builds nic values for the tests of the packages that
// parse or serve a NIC's addresses.
package nictest

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vnetcni/vnetcni/internal/nic"
)

// MAC parses s or fails the test.
func MAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("net.ParseMAC(%q): %v", s, err)
	}
	return m
}

// Iface builds an interface with one subnet whose first address is primary.
func Iface(t testing.TB, mac string, primary bool, prefix string, addrs ...string) nic.Interface {
	t.Helper()
	s := nic.Subnet{Prefix: netip.MustParsePrefix(prefix)}
	for i, a := range addrs {
		s.Addresses = append(s.Addresses, nic.Address{IP: netip.MustParseAddr(a), IsPrimary: i == 0})
	}
	return nic.Interface{MAC: MAC(t, mac), IsPrimary: primary, Subnets: []nic.Subnet{s}}
}
