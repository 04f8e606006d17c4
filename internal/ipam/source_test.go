package ipam

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/nic/nictest"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// masDoc is the MAS document shape, as the task and the incumbent's docs
// give it.
const masDoc = `{"Interfaces":[{"MacAddress":"000D3A6E1825","IsPrimary":true,"IPSubnets":[{"Prefix":"10.240.0.0/16","IPAddresses":[{"Address":"10.240.0.4","IsPrimary":true},{"Address":"10.240.0.5","IsPrimary":false}]}]}]}`

func TestParseMAS(t *testing.T) {
	tests := []nictest.ParseCase{
		{Name: "MAS shape", Doc: masDoc, Want: []nic.Interface{nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5")}},
		{
			Name: "two NICs, two subnets, padding and unmasked prefix",
			Doc: `{"Interfaces":[
				{"MacAddress":"00:0d:3a:6e:18:25","IsPrimary":true,"IPSubnets":[
					{"Prefix":" 10.240.0.9/16 ","IPAddresses":[{"Address":" 10.240.0.4","IsPrimary":true},{"Address":"10.240.0.5"}]},
					{"Prefix":"10.241.0.0/24","IPAddresses":[{"Address":"10.241.0.4"}]}]},
				{"MacAddress":"000D3A6E1826","IPSubnets":[]}]}`,
			Want: []nic.Interface{
				{MAC: nictest.MAC(t, "00:0d:3a:6e:18:25"), IsPrimary: true, Subnets: []nic.Subnet{
					{Prefix: netip.MustParsePrefix("10.240.0.0/16"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.240.0.4"), IsPrimary: true}, {IP: netip.MustParseAddr("10.240.0.5")}}},
					{Prefix: netip.MustParsePrefix("10.241.0.0/24"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.241.0.4")}}},
				}},
				{MAC: nictest.MAC(t, "00:0d:3a:6e:18:26")},
			},
		},
		{Name: "no interfaces", Doc: `{"Interfaces":[]}`, Want: nil},
		{Name: "empty object", Doc: `{}`, Want: nil},
		{Name: "empty", Doc: ``, WantErr: "decode MAS interface document"},
		{Name: "XML", Doc: `<Interfaces/>`, WantErr: "decode MAS interface document"},
		{Name: "IsPrimary a string", Doc: `{"Interfaces":[{"MacAddress":"000D3A6E1825","IsPrimary":"true"}]}`, WantErr: "decode MAS interface document"},
		{Name: "bad MAC", Doc: `{"Interfaces":[{"MacAddress":"000D3A6E18"}]}`, WantErr: `parse MAC "000D3A6E18"`},
		{Name: "bad prefix", Doc: `{"Interfaces":[{"MacAddress":"000D3A6E1825","IPSubnets":[{"Prefix":"10.240.0.0/40"}]}]}`, WantErr: `subnet "10.240.0.0/40"`},
		{Name: "bad address", Doc: `{"Interfaces":[{"MacAddress":"000D3A6E1825","IPSubnets":[{"Prefix":"10.240.0.0/16","IPAddresses":[{"Address":"10.240.0.x"}]}]}]}`, WantErr: `address "10.240.0.x"`},
		{Name: "address outside subnet", Doc: `{"Interfaces":[{"MacAddress":"000D3A6E1825","IPSubnets":[{"Prefix":"10.240.0.0/16","IPAddresses":[{"Address":"10.241.0.4"}]}]}]}`, WantErr: "address 10.241.0.4 outside subnet 10.240.0.0/16"},
		{Name: "address twice", Doc: `{"Interfaces":[{"MacAddress":"000D3A6E1825","IPSubnets":[{"Prefix":"10.240.0.0/16","IPAddresses":[{"Address":"10.240.0.4"},{"Address":"10.240.0.4"}]}]}]}`, WantErr: "address 10.240.0.4 listed twice"},
	}
	nictest.RunParse(t, "ParseMAS", ParseMAS, tests)
}

func TestPoolFrom(t *testing.T) {
	now := time.Date(2025, 3, 1, 13, 0, 0, 0, time.FixedZone("CET", 3600))
	primary := nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5", "10.240.0.6")
	second := nictest.Iface(t, "00:0d:3a:6e:18:26", false, "10.241.0.0/24", "10.241.0.4", "10.241.0.5")
	twoSubnets := nic.Interface{MAC: nictest.MAC(t, "00:0d:3a:6e:18:27"), Subnets: []nic.Subnet{
		{Prefix: netip.MustParsePrefix("10.1.0.0/24"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.1.0.9")}}},
		{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.2.0.5")}, {IP: netip.MustParseAddr("10.2.0.4"), IsPrimary: true}}},
	}}
	noPrimary := nic.Interface{MAC: nictest.MAC(t, "00:0d:3a:6e:18:28"), Subnets: []nic.Subnet{
		{Prefix: netip.MustParsePrefix("fd00::/64"), Addresses: []nic.Address{{IP: netip.MustParseAddr("fd00::5")}}},
		{Prefix: netip.MustParsePrefix("10.3.0.0/24"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.3.0.5")}, {IP: netip.MustParseAddr("10.3.0.6")}}},
	}}
	v6Only := nictest.Iface(t, "00:0d:3a:6e:18:29", false, "fd00:1::/64", "fd00:1::4", "fd00:1::5")
	all := []nic.Interface{primary, second, twoSubnets, noPrimary, v6Only}

	pool := func(id, subnet, gw, primaryIP string, addrs ...string) *store.Pool {
		p := &store.Pool{ID: id, Source: "test source", ReadAt: now.UTC(), Subnet: netip.MustParsePrefix(subnet), Gateway: netip.MustParseAddr(gw), Addresses: []netip.Addr{}}
		if primaryIP != "" {
			p.PrimaryIP = netip.MustParseAddr(primaryIP)
		}
		for _, a := range addrs {
			p.Addresses = append(p.Addresses, netip.MustParseAddr(a))
		}
		return p
	}
	tests := []struct {
		name    string
		mac     string
		want    *store.Pool
		wantErr string
	}{
		{name: "primary NIC", mac: "00:0d:3a:6e:18:25", want: pool("000D3A6E1825", "10.240.0.0/16", "10.240.0.1", "10.240.0.4", "10.240.0.5", "10.240.0.6")},
		{name: "second NIC", mac: "00:0d:3a:6e:18:26", want: pool("000D3A6E1826", "10.241.0.0/24", "10.241.0.1", "10.241.0.4", "10.241.0.5")},
		{name: "only the primary's subnet", mac: "00:0d:3a:6e:18:27", want: pool("000D3A6E1827", "10.2.0.0/24", "10.2.0.1", "10.2.0.4", "10.2.0.5")},
		{name: "no primary: first IPv4 subnet", mac: "00:0d:3a:6e:18:28", want: pool("000D3A6E1828", "10.3.0.0/24", "10.3.0.1", "", "10.3.0.5", "10.3.0.6")},
		{name: "IPv6 only", mac: "00:0d:3a:6e:18:29", wantErr: "test source: interface 000D3A6E1829 has no IPv4 subnet"},
		{name: "MAC not found", mac: "00:0d:3a:6e:18:30", wantErr: "test source lists no interface with MAC 000D3A6E1830 (it lists 000D3A6E1825, 000D3A6E1826, 000D3A6E1827, 000D3A6E1828, 000D3A6E1829)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PoolFrom(all, nictest.MAC(t, tt.mac), "test source", now)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("PoolFrom(%s) = %+v, %v; want error %q", tt.mac, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("PoolFrom(%s): %v", tt.mac, err)
			}
			if d := cmp.Diff(tt.want, got, nictest.EquateNetip); d != "" {
				t.Errorf("PoolFrom(%s) (-want +got):\n%s", tt.mac, d)
			}
		})
	}

	// The pool of a MAS document, end to end.
	ifs, err := ParseMAS([]byte(masDoc))
	if err != nil {
		t.Fatal(err)
	}
	got, err := PoolFrom(ifs, nictest.MAC(t, "00:0d:3a:6e:18:25"), "file x", now)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(&store.Pool{ID: "000D3A6E1825", Source: "file x", ReadAt: now.UTC(), Subnet: netip.MustParsePrefix("10.240.0.0/16"),
		Gateway: netip.MustParseAddr("10.240.0.1"), PrimaryIP: netip.MustParseAddr("10.240.0.4"), Addresses: []netip.Addr{netip.MustParseAddr("10.240.0.5")}}, got, nictest.EquateNetip); d != "" {
		t.Errorf("PoolFrom(ParseMAS(masDoc)) (-want +got):\n%s", d)
	}
	_, err = PoolFrom(nil, nictest.MAC(t, "00:0d:3a:6e:18:25"), "wireserver", now)
	if want := "wireserver lists no interface with MAC 000D3A6E1825 (it lists )"; err == nil || err.Error() != want {
		t.Errorf("PoolFrom(no interfaces) = %v, want %q", err, want)
	}
}

func TestNewSource(t *testing.T) {
	mac := nictest.MAC(t, "00:0d:3a:6e:18:25")
	dir := t.TempDir()
	good := filepath.Join(dir, "interfaces.json")
	if err := os.WriteFile(good, []byte(masDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"Interfaces":[{"MacAddress":"nope"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(conf string) *netconf.IPAM {
		t.Helper()
		c, err := netconf.ParseIPAM([]byte(conf))
		if err != nil {
			t.Fatalf("ParseIPAM(%s): %v", conf, err)
		}
		return &c.IPAM
	}
	tests := []struct {
		name     string
		conf     string
		wantName string
		want     []nic.Interface // for sources read here (no network)
		wantErr  string
	}{
		{name: "default is the wireserver", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam"}}`,
			wantName: "wireserver http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1"},
		{name: "wireserver URL", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","environment":"azure","wireserverURL":"http://10.1.1.1/x"}}`, wantName: "wireserver http://10.1.1.1/x"},
		{name: "IMDS", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","environment":"imds"}}`, wantName: "IMDS http://169.254.169.254/metadata/instance/network?api-version=2021-02-01"},
		{name: "file", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","environment":"file","file":"` + good + `"}}`, wantName: "file " + good,
			want: []nic.Interface{nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5")}},
		{name: "mas, missing file", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","environment":"mas","file":"` + dir + `/none.json"}}`, wantName: "file " + dir + "/none.json",
			wantErr: "read interface file"},
		{name: "file, bad content names the file", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","environment":"file","file":"` + bad + `"}}`, wantName: "file " + bad,
			wantErr: bad + ": decode MAS interface document"},
		{name: "static", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","primaryIP":"10.0.0.4","addresses":["10.0.0.6","10.0.0.5"]}}`, wantName: "static config",
			want: []nic.Interface{{MAC: mac, IsPrimary: true, Subnets: []nic.Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Addresses: []nic.Address{
				{IP: netip.MustParseAddr("10.0.0.4"), IsPrimary: true}, {IP: netip.MustParseAddr("10.0.0.6")}, {IP: netip.MustParseAddr("10.0.0.5")},
			}}}}}},
		{name: "static without primary", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["10.0.0.5"]}}`, wantName: "static config",
			want: []nic.Interface{{MAC: mac, IsPrimary: true, Subnets: []nic.Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.0.0.5")}}}}}}},
		{name: "pod CIDR (overlay, kubenet): all but network, gateway and broadcast", conf: `{"name":"a","ipam":{"type":"azure-vnet-ipam","mode":"v4overlay","podCIDR":"10.244.1.0/29","clusterCIDR":"10.244.0.0/16"}}`,
			wantName: "pod CIDR 10.244.1.0/29",
			want: []nic.Interface{{MAC: mac, IsPrimary: true, Subnets: []nic.Subnet{{Prefix: netip.MustParsePrefix("10.244.1.0/29"), Addresses: []nic.Address{
				{IP: netip.MustParseAddr("10.244.1.2")}, {IP: netip.MustParseAddr("10.244.1.3")}, {IP: netip.MustParseAddr("10.244.1.4")},
				{IP: netip.MustParseAddr("10.244.1.5")}, {IP: netip.MustParseAddr("10.244.1.6")},
			}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := NewSource(parse(tt.conf), mac)
			if got := src.String(); got != tt.wantName {
				t.Errorf("NewSource(%s).String() = %q, want %q", tt.conf, got, tt.wantName)
			}
			if tt.want == nil && tt.wantErr == "" {
				return // a network source: not queried here
			}
			got, err := src.Interfaces(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("%s: Interfaces() = %v, %v; want error containing %q", src, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: Interfaces(): %v", src, err)
			}
			if d := cmp.Diff(tt.want, got, nictest.EquateNetip); d != "" {
				t.Errorf("%s: Interfaces() (-want +got):\n%s", src, d)
			}
		})
	}
}

func FuzzParseMAS(f *testing.F) {
	f.Add([]byte(masDoc))
	f.Add([]byte(`{"Interfaces":[{"MacAddress":"000D3A6E1825","IPSubnets":[{"Prefix":"fd00::/64","IPAddresses":[{"Address":"fd00::4"}]},{"Prefix":"10.0.0.0/24","IPAddresses":[{"Address":"10.0.0.1"},{"Address":"10.0.0.0"}]}]}]}`))
	f.Add([]byte(`{"Interfaces":[{"MacAddress":"000D3A6E1825","IPSubnets":[{"Prefix":"10.0.0.0/24","IPAddresses":[{"Address":"10.0.0.4","IsPrimary":true},{"Address":"10.0.0.5","IsPrimary":true}]}]},{"MacAddress":"000D3A6E1825"}]}`))
	f.Add([]byte(`{"Interfaces":null}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		ifs, err := ParseMAS(doc)
		if err != nil {
			return
		}
		if err := nic.Validate(ifs); err != nil {
			t.Fatalf("ParseMAS(%q) accepted interfaces that fail Validate: %v", doc, err)
		}
		for _, i := range ifs {
			p, err := PoolFrom(ifs, i.MAC, "fuzz", t0)
			if err != nil {
				continue
			}
			if p.ID != nic.FormatAzureMAC(i.MAC) || !p.Subnet.Addr().Is4() || p.Gateway != p.Subnet.Masked().Addr().Next() {
				t.Fatalf("ParseMAS(%q): PoolFrom(%s) = %+v: wrong ID, subnet or gateway", doc, i.MAC, p)
			}
			st := stateWith(p)
			for k := 0; k < len(p.Addresses)+1; k++ {
				a, err := Allocate(st, p, Owner{ContainerID: string(rune('a' + k%26)), IfName: "eth" + string(rune('0'+k/26))}, t0)
				if err != nil {
					break
				}
				if a == p.PrimaryIP || a == p.Gateway || !p.Subnet.Contains(a) {
					t.Fatalf("ParseMAS(%q): pool %+v handed out %v", doc, p, a)
				}
			}
			if err := st.Validate(); err != nil {
				t.Fatalf("ParseMAS(%q): allocating the whole pool left an inconsistent state: %v", doc, err)
			}
		}
	})
}
