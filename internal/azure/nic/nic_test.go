package nic

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var equateNetip = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("net.ParseMAC(%q): %v", s, err)
	}
	return m
}

func TestParseAzureMAC(t *testing.T) {
	tests := []struct {
		in      string
		want    string // net.HardwareAddr.String(); empty when an error is wanted
		wantErr string
	}{
		{in: "000D3A6E1825", want: "00:0d:3a:6e:18:25"},
		{in: "000d3a6e1825", want: "00:0d:3a:6e:18:25"},
		{in: "00:0D:3A:6E:18:25", want: "00:0d:3a:6e:18:25"},
		{in: "00-0d-3a-6e-18-25", want: "00:0d:3a:6e:18:25"},
		{in: "  000D3A6E1825\n", want: "00:0d:3a:6e:18:25"},
		{in: "FFFFFFFFFFFF", want: "ff:ff:ff:ff:ff:ff"},
		{in: "123456789abc", want: "12:34:56:78:9a:bc"},
		{in: "", wantErr: "want 12 hex digits"},
		{in: "000D3A6E182", wantErr: "want 12 hex digits"},
		{in: "000D3A6E18250", wantErr: "want 12 hex digits"},
		{in: "000D3A6E1825000D", wantErr: "want 12 hex digits"},
		{in: "000D3A6E18ZZ", wantErr: "not hexadecimal"},
		{in: "0x0D3A6E1825", wantErr: "not hexadecimal"},
		{in: "000D3A6E 825", wantErr: "not hexadecimal"},
		{in: "000D3A6E18é", wantErr: "not hexadecimal"}, // 12 bytes, not 12 digits
		{in: "000D3A6E182é", wantErr: "want 12 hex digits"},
	}
	for _, tt := range tests {
		got, err := ParseAzureMAC(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseAzureMAC(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAzureMAC(%q): got error %v, want %s", tt.in, err, tt.want)
			continue
		}
		if got.String() != tt.want {
			t.Errorf("ParseAzureMAC(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestFormatAzureMAC(t *testing.T) {
	tests := []struct {
		in   net.HardwareAddr
		want string
	}{
		{in: mustMAC(t, "00:0d:3a:6e:18:25"), want: "000D3A6E1825"},
		{in: mustMAC(t, "12:34:56:78:9a:bc"), want: "123456789ABC"},
		{in: mustMAC(t, "00:00:00:00:00:00"), want: "000000000000"},
		{in: nil, want: ""},
	}
	for _, tt := range tests {
		got := FormatAzureMAC(tt.in)
		if got != tt.want {
			t.Errorf("FormatAzureMAC(%s) = %q, want %q", tt.in, got, tt.want)
		}
		if len(tt.in) != 6 {
			continue
		}
		back, err := ParseAzureMAC(got)
		if err != nil || back.String() != tt.in.String() {
			t.Errorf("ParseAzureMAC(FormatAzureMAC(%s)) = %s, %v; want %s", tt.in, back, err, tt.in)
		}
	}
}

func TestPrimaryIPAndSecondaries(t *testing.T) {
	tests := []struct {
		name        string
		in          Interface
		wantPrimary netip.Addr
		wantSubnet  netip.Prefix
		wantOK      bool
		wantSec     []Address
	}{
		{
			name: "primary first",
			in: Interface{Subnets: []Subnet{{
				Prefix: netip.MustParsePrefix("10.240.0.0/16"),
				Addresses: []Address{
					{IP: netip.MustParseAddr("10.240.0.4"), IsPrimary: true},
					{IP: netip.MustParseAddr("10.240.0.5")},
					{IP: netip.MustParseAddr("10.240.0.6")},
				},
			}}},
			wantPrimary: netip.MustParseAddr("10.240.0.4"),
			wantSubnet:  netip.MustParsePrefix("10.240.0.0/16"),
			wantOK:      true,
			wantSec:     []Address{{IP: netip.MustParseAddr("10.240.0.5")}, {IP: netip.MustParseAddr("10.240.0.6")}},
		},
		{
			name: "primary in second subnet, secondaries keep source order",
			in: Interface{Subnets: []Subnet{
				{Prefix: netip.MustParsePrefix("10.1.0.0/24"), Addresses: []Address{{IP: netip.MustParseAddr("10.1.0.9")}}},
				{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Addresses: []Address{
					{IP: netip.MustParseAddr("10.2.0.7")},
					{IP: netip.MustParseAddr("10.2.0.4"), IsPrimary: true},
				}},
			}},
			wantPrimary: netip.MustParseAddr("10.2.0.4"),
			wantSubnet:  netip.MustParsePrefix("10.2.0.0/24"),
			wantOK:      true,
			wantSec:     []Address{{IP: netip.MustParseAddr("10.1.0.9")}, {IP: netip.MustParseAddr("10.2.0.7")}},
		},
		{
			name: "no primary",
			in: Interface{Subnets: []Subnet{{
				Prefix:    netip.MustParsePrefix("10.0.0.0/24"),
				Addresses: []Address{{IP: netip.MustParseAddr("10.0.0.5")}},
			}}},
			wantSec: []Address{{IP: netip.MustParseAddr("10.0.0.5")}},
		},
		{name: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, subnet, ok := tt.in.PrimaryIP()
			if ip != tt.wantPrimary || subnet != tt.wantSubnet || ok != tt.wantOK {
				t.Errorf("PrimaryIP() = %v, %v, %v; want %v, %v, %v", ip, subnet, ok, tt.wantPrimary, tt.wantSubnet, tt.wantOK)
			}
			if d := cmp.Diff(tt.wantSec, tt.in.Secondaries(), equateNetip); d != "" {
				t.Errorf("Secondaries() (-want +got):\n%s", d)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	mac := mustMAC(t, "00:0d:3a:6e:18:25")
	mac2 := mustMAC(t, "00:0d:3a:6e:18:26")
	subnet := func(p string, addrs ...string) Subnet {
		s := Subnet{Prefix: netip.MustParsePrefix(p)}
		for i, a := range addrs {
			s.Addresses = append(s.Addresses, Address{IP: netip.MustParseAddr(a), IsPrimary: i == 0})
		}
		return s
	}
	tests := []struct {
		name    string
		in      []Interface
		wantErr string // empty: valid
	}{
		{name: "nil"},
		{name: "interface without subnets", in: []Interface{{MAC: mac}}},
		{name: "one NIC", in: []Interface{{MAC: mac, IsPrimary: true, Subnets: []Subnet{subnet("10.240.0.0/16", "10.240.0.4", "10.240.0.5")}}}},
		{name: "two NICs same subnet", in: []Interface{
			{MAC: mac, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.4", "10.0.0.5")}},
			{MAC: mac2, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.6", "10.0.0.7")}},
		}},
		{name: "IPv6 subnet", in: []Interface{{MAC: mac, Subnets: []Subnet{subnet("fd00::/64", "fd00::4")}}}},
		{name: "subnet without addresses", in: []Interface{{MAC: mac, Subnets: []Subnet{subnet("10.0.0.0/24")}}}},
		{name: "no MAC", in: []Interface{{Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.4")}}}, wantErr: "invalid MAC"},
		{name: "8-byte MAC", in: []Interface{{MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}}}, wantErr: "invalid MAC"},
		{name: "invalid prefix", in: []Interface{{MAC: mac, Subnets: []Subnet{{}}}}, wantErr: "invalid subnet prefix"},
		{name: "address outside subnet", in: []Interface{{MAC: mac, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.4", "10.0.1.5")}}}, wantErr: "address 10.0.1.5 outside subnet 10.0.0.0/24"},
		{name: "IPv6 address in IPv4 subnet", in: []Interface{{MAC: mac, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.4", "fd00::5")}}}, wantErr: "outside subnet"},
		{name: "IPv4 address in IPv6 subnet", in: []Interface{{MAC: mac, Subnets: []Subnet{subnet("::/0", "10.0.0.4")}}}, wantErr: "outside subnet"},
		{name: "invalid address", in: []Interface{{MAC: mac, Subnets: []Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Addresses: []Address{{}}}}}}, wantErr: "outside subnet"},
		{name: "duplicate within NIC", in: []Interface{{MAC: mac, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.4", "10.0.0.4")}}}, wantErr: "000D3A6E1825: address 10.0.0.4 listed twice"},
		{name: "duplicate across subnets", in: []Interface{{MAC: mac, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.4"), subnet("10.0.0.0/16", "10.0.0.4")}}}, wantErr: "listed twice"},
		{name: "duplicate across NICs", in: []Interface{
			{MAC: mac, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.4", "10.0.0.5")}},
			{MAC: mac2, Subnets: []Subnet{subnet("10.0.0.0/24", "10.0.0.6", "10.0.0.5")}},
		}, wantErr: "000D3A6E1826: address 10.0.0.5 listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.in)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate(%+v) = %v, want nil", tt.in, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate(%+v) = %v, want error containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestFindAndPrimary(t *testing.T) {
	a := Interface{MAC: mustMAC(t, "00:0d:3a:00:00:0a")}
	b := Interface{MAC: mustMAC(t, "00:0d:3a:00:00:0b"), IsPrimary: true}
	c := Interface{MAC: mustMAC(t, "00:0d:3a:00:00:0c")}

	findTests := []struct {
		ifs    []Interface
		mac    string
		want   Interface
		wantOK bool
	}{
		{ifs: []Interface{a, b, c}, mac: "00:0d:3a:00:00:0b", want: b, wantOK: true},
		{ifs: []Interface{a, b, c}, mac: "00:0D:3A:00:00:0C", want: c, wantOK: true},
		{ifs: []Interface{a, b, c}, mac: "00:0d:3a:00:00:0d"},
		{ifs: nil, mac: "00:0d:3a:00:00:0a"},
	}
	for _, tt := range findTests {
		got, ok := Find(tt.ifs, mustMAC(t, tt.mac))
		if ok != tt.wantOK {
			t.Errorf("Find(%v, %s) ok = %v, want %v", tt.ifs, tt.mac, ok, tt.wantOK)
		}
		if d := cmp.Diff(tt.want, got, equateNetip); d != "" {
			t.Errorf("Find(%v, %s) (-want +got):\n%s", tt.ifs, tt.mac, d)
		}
	}

	primaryTests := []struct {
		name   string
		ifs    []Interface
		want   Interface
		wantOK bool
	}{
		{name: "marked primary wins over order", ifs: []Interface{a, b, c}, want: b, wantOK: true},
		{name: "none marked: the first", ifs: []Interface{c, a}, want: c, wantOK: true},
		{name: "empty", ifs: nil},
	}
	for _, tt := range primaryTests {
		got, ok := Primary(tt.ifs)
		if ok != tt.wantOK {
			t.Errorf("%s: Primary(%v) ok = %v, want %v", tt.name, tt.ifs, ok, tt.wantOK)
		}
		if d := cmp.Diff(tt.want, got, equateNetip); d != "" {
			t.Errorf("%s: Primary(%v) (-want +got):\n%s", tt.name, tt.ifs, d)
		}
	}
}
