package fabric

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
)

func validSpec() Spec {
	return Spec{
		Name:    "lab",
		VNet:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")},
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.0/29")},
		VMs: []VMSpec{
			{Name: "vm1", MAC: HardwareAddr{0, 0x0d, 0x3a, 0, 0, 1}, Subnet: netip.MustParsePrefix("10.0.0.0/24"),
				PrimaryIP: netip.MustParseAddr("10.0.0.4"), SecondaryIPs: []netip.Addr{netip.MustParseAddr("10.0.0.5")},
				PublicIP: netip.MustParseAddr("198.51.100.11")},
			{Name: "vm-2", MAC: HardwareAddr{0, 0x0d, 0x3a, 0, 0, 2}, Subnet: netip.MustParsePrefix("10.0.1.0/29"),
				PrimaryIP: netip.MustParseAddr("10.0.1.6")},
		},
	}
}

func TestValidate(t *testing.T) {
	if err := validSpec().Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Spec)
		want   string // in the error
	}{
		{"empty name", func(s *Spec) { s.Name = "" }, "name"},
		{"long name", func(s *Spec) { s.Name = "abcdefghijklm" }, "1 to 12"},
		{"upper-case name", func(s *Spec) { s.Name = "Lab" }, "lower-case"},
		{"name with slash", func(s *Spec) { s.Name = "a/b" }, "lower-case"},
		{"leading dash", func(s *Spec) { s.Name = "-lab" }, "lower-case"},
		{"no vnet", func(s *Spec) { s.VNet = nil }, "vnet: no address space"},
		{"vnet host bits", func(s *Spec) { s.VNet[0] = netip.MustParsePrefix("10.0.0.1/16") }, "host bits"},
		{"vnet IPv6", func(s *Spec) { s.VNet[0] = netip.MustParsePrefix("fd00::/64") }, "not IPv4"},
		{"vnet over wireserver", func(s *Spec) { s.VNet = append(s.VNet, netip.MustParsePrefix("168.63.0.0/16")) }, "168.63.129.16/32"},
		{"vnet over internet", func(s *Spec) { s.VNet = append(s.VNet, netip.MustParsePrefix("203.0.0.0/8")) }, "203.0.113.0/24"},
		{"vnets overlap", func(s *Spec) { s.VNet = append(s.VNet, netip.MustParsePrefix("10.0.128.0/17")) }, "overlaps vnet[0]"},
		{"subnet outside vnet", func(s *Spec) { s.Subnets[1] = netip.MustParsePrefix("10.1.0.0/24") }, "not inside the vnet"},
		{"subnet larger than vnet", func(s *Spec) { s.Subnets[1] = netip.MustParsePrefix("10.0.0.0/8") }, "not inside the vnet"},
		{"subnet too small", func(s *Spec) { s.Subnets[1] = netip.MustParsePrefix("10.0.1.0/30") }, "smaller than /29"},
		{"subnets overlap", func(s *Spec) { s.Subnets[1] = netip.MustParsePrefix("10.0.0.128/25") }, "overlaps subnets[0]"},
		{"vm name long", func(s *Spec) { s.VMs[0].Name = "abcdefghijk" }, "1 to 10"},
		{"vm name underscore", func(s *Spec) { s.VMs[0].Name = "vm_1" }, "lower-case"},
		{"vm name fab", func(s *Spec) { s.VMs[0].Name = "fab" }, "reserved"},
		{"vm name twice", func(s *Spec) { s.VMs[1].Name = "vm1" }, "used twice"},
		{"no MAC", func(s *Spec) { s.VMs[0].MAC = nil }, "want 6 bytes"},
		{"multicast MAC", func(s *Spec) { s.VMs[0].MAC = HardwareAddr{1, 0, 0x5e, 0, 0, 1} }, "multicast"},
		{"virtual MAC", func(s *Spec) { s.VMs[0].MAC = VirtualMAC }, "virtual MAC"},
		{"MAC twice", func(s *Spec) { s.VMs[1].MAC = s.VMs[0].MAC }, "used by another VM"},
		{"unknown subnet", func(s *Spec) { s.VMs[0].Subnet = netip.MustParsePrefix("10.0.2.0/24") }, "not one of the spec's subnets"},
		{"primary outside subnet", func(s *Spec) { s.VMs[0].PrimaryIP = netip.MustParseAddr("10.0.1.4") }, "primaryIP 10.0.1.4: outside subnet"},
		{"primary is gateway", func(s *Spec) { s.VMs[0].PrimaryIP = netip.MustParseAddr("10.0.0.1") }, "reserved"},
		{"primary is .3", func(s *Spec) { s.VMs[0].PrimaryIP = netip.MustParseAddr("10.0.0.3") }, "reserved"},
		{"primary is broadcast", func(s *Spec) { s.VMs[0].PrimaryIP = netip.MustParseAddr("10.0.0.255") }, "reserved"},
		{"secondary reserved", func(s *Spec) { s.VMs[1].SecondaryIPs = []netip.Addr{netip.MustParseAddr("10.0.1.7")} }, "secondaryIPs[0] 10.0.1.7: reserved"},
		{"address twice", func(s *Spec) { s.VMs[0].SecondaryIPs = append(s.VMs[0].SecondaryIPs, s.VMs[0].PrimaryIP) }, "already used by vm vm1"},
		{"no primary", func(s *Spec) { s.VMs[0].PrimaryIP = netip.Addr{} }, "not an IPv4 address"},
		{"public outside", func(s *Spec) { s.VMs[0].PublicIP = netip.MustParseAddr("203.0.113.5") }, "want a host address in 198.51.100.0/24"},
		{"public twice", func(s *Spec) { s.VMs[1].PublicIP = s.VMs[0].PublicIP }, "already used by vm vm1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec()
			tc.change(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestReserved(t *testing.T) {
	sn := netip.MustParsePrefix("10.0.1.0/29")
	var got []string
	for ip := sn.Addr(); sn.Contains(ip); ip = ip.Next() {
		if !Reserved(sn, ip) {
			got = append(got, ip.String())
		}
	}
	if want := []string{"10.0.1.4", "10.0.1.5", "10.0.1.6"}; !cmp.Equal(got, want) {
		t.Errorf("usable addresses of %s: got %v, want %v", sn, got, want)
	}
	if g := Gateway(sn); g != netip.MustParseAddr("10.0.1.1") {
		t.Errorf("Gateway(%s) = %s, want 10.0.1.1", sn, g)
	}
}

func TestSpecJSON(t *testing.T) {
	s := validSpec()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"mac":"00:0d:3a:00:00:01"`, `"primaryIP":"10.0.0.4"`, `"vnet":["10.0.0.0/16"]`, `"publicIP":"198.51.100.11"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s: missing %s", b, want)
		}
	}
	if n := strings.Count(string(b), `"publicIP"`); n != 1 {
		t.Errorf("JSON %s: %d publicIP fields, want 1 (vm-2 has none)", b, n)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, back, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	if err := json.Unmarshal([]byte(`{"vms":[{"mac":"nope"}]}`), &back); err == nil {
		t.Error("decode a bad MAC: got no error")
	}
}

func TestLookups(t *testing.T) {
	f := Open(validSpec())
	get := func(h http.Handler, src, url string, hdr http.Header) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, url, nil)
		r.RemoteAddr = src + ":40000"
		for k, v := range hdr {
			r.Header[k] = v
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	// A secondary address identifies its VM as well as the primary.
	for _, src := range []string{"10.0.0.4", "10.0.0.5"} {
		w := get(f.WireserverHandler(), src, wireserver.DefaultURL, nil)
		ifs, err := wireserver.Parse(w.Body.Bytes())
		if w.Code != http.StatusOK || err != nil || len(ifs) != 1 || ifs[0].MAC.String() != "00:0d:3a:00:00:01" {
			t.Errorf("wireserver for %s: got %d %s (%v)", src, w.Code, w.Body, err)
		}
	}
	if w := get(f.WireserverHandler(), "10.0.0.9", wireserver.DefaultURL, nil); w.Code != http.StatusForbidden {
		t.Errorf("wireserver for an unknown caller: got %d, want 403", w.Code)
	}
	w := get(f.IMDSHandler(), "10.0.0.5", "http://169.254.169.254/metadata/instance/network?api-version=2021-02-01", http.Header{"Metadata": {"true"}})
	want := `"ipAddress":[{"privateIpAddress":"10.0.0.4","publicIpAddress":"198.51.100.11"},{"privateIpAddress":"10.0.0.5","publicIpAddress":""}]`
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), want) {
		t.Errorf("IMDS for vm1's secondary: got %d %s, want it to contain %s", w.Code, w.Body, want)
	}
	w = get(internetHandler(), "198.51.100.11", "http://203.0.113.100/", nil)
	if w.Body.String() != "198.51.100.11" {
		t.Errorf("internet host: got %q, want the caller's address", w.Body)
	}
}
