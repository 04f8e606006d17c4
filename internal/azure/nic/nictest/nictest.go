// Package nictest builds nic values for the tests of the packages that
// parse or serve a NIC's addresses.
package nictest

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
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

// EquateNetip lets cmp compare netip values.
var EquateNetip = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// ParseCase is a document a NIC parser is given and what it must return:
// the interfaces, or an error containing WantErr.
type ParseCase struct {
	Name    string
	Doc     string
	Want    []nic.Interface
	WantErr string
}

// RunParse runs each case through parse (called fn in messages).
func RunParse(t *testing.T, fn string, parse func([]byte) ([]nic.Interface, error), cases []ParseCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.Name, func(t *testing.T) {
			got, err := parse([]byte(tt.Doc))
			if tt.WantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.WantErr) {
					t.Fatalf("%s(%q) = %v, %v; want error containing %q", fn, tt.Doc, got, err, tt.WantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s(%q): %v", fn, tt.Doc, err)
			}
			if d := cmp.Diff(tt.Want, got, EquateNetip); d != "" {
				t.Errorf("%s(%q) (-want +got):\n%s", fn, tt.Doc, d)
			}
		})
	}
}
