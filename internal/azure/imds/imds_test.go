package imds

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/nic/nictest"
)

// sampleDoc is the exact IMDS answer DESIGN.md quotes.
const sampleDoc = `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4","publicIpAddress":""}],"subnet":[{"address":"10.0.0.0","prefix":"24"}]},"ipv6":{"ipAddress":[]}}]}`

func TestParse(t *testing.T) {
	tests := []nictest.ParseCase{
		{
			Name: "DESIGN.md sample",
			Doc:  sampleDoc,
			Want: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4")},
		},
		{
			Name: "two NICs: the first is primary, the first address of each is primary",
			Doc: `{"interface":[
				{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4"},{"privateIpAddress":"10.0.0.5","publicIpAddress":"20.1.2.3"},{"privateIpAddress":"10.0.0.6"}],"subnet":[{"address":"10.0.0.0","prefix":"24"}]}},
				{"macAddress":"000D3AF806ED","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.1.4"}],"subnet":[{"address":"10.0.1.0","prefix":"24"}]}}
			]}`,
			Want: []nic.Interface{
				nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.5", "10.0.0.6"),
				nictest.Iface(t, "00:0d:3a:f8:06:ed", false, "10.0.1.0/24", "10.0.1.4"),
			},
		},
		{
			Name: "subnet address not masked, IPv6 addresses ignored, only the first subnet used",
			Doc:  `{"interface":[{"macAddress":"00-0d-3a-f8-06-ec","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4"}],"subnet":[{"address":"10.0.0.77","prefix":"24"},{"address":"10.9.0.0","prefix":"16"}]},"ipv6":{"ipAddress":[{"privateIpAddress":"fd00::4"}]}}]}`,
			Want: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4")},
		},
		{
			Name: "NIC without IPv4",
			Doc:  `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[],"subnet":[]}}]}`,
			Want: []nic.Interface{{MAC: nictest.MAC(t, "00:0d:3a:f8:06:ec"), IsPrimary: true}},
		},
		{Name: "no interfaces", Doc: `{"interface":[]}`, Want: nil},
		{Name: "unknown fields ignored", Doc: `{"interface":[],"compute":{"vmId":"x"}}`, Want: nil},
		{Name: "empty", Doc: ``, WantErr: "decode IMDS network document: unexpected end of JSON input"},
		{Name: "not JSON", Doc: `<Interfaces/>`, WantErr: "decode IMDS network document"},
		{Name: "wrong type", Doc: `{"interface":{}}`, WantErr: "decode IMDS network document"},
		{Name: "bad MAC", Doc: `{"interface":[{"macAddress":"000D3AF806"}]}`, WantErr: `interface 0: parse MAC "000D3AF806"`},
		{Name: "bad MAC in second NIC", Doc: `{"interface":[{"macAddress":"000D3AF806EC"},{"macAddress":"x"}]}`, WantErr: `interface 1: parse MAC "x"`},
		{Name: "addresses without subnet", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4"}]}}]}`, WantErr: "addresses but no subnet"},
		{Name: "prefix not a number", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"subnet":[{"address":"10.0.0.0","prefix":"x"}]}}]}`, WantErr: `subnet prefix "x"`},
		{Name: "prefix too long", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"subnet":[{"address":"10.0.0.0","prefix":"33"}]}}]}`, WantErr: "subnet 10.0.0.0/33 is not a prefix"},
		{Name: "prefix negative", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"subnet":[{"address":"10.0.0.0","prefix":"-1"}]}}]}`, WantErr: "subnet 10.0.0.0/-1 is not a prefix"},
		{Name: "subnet address bad", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"subnet":[{"address":"10.0.0","prefix":"24"}]}}]}`, WantErr: `subnet address "10.0.0"`},
		{Name: "address bad", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":""}],"subnet":[{"address":"10.0.0.0","prefix":"24"}]}}]}`, WantErr: `address ""`},
		{Name: "address outside subnet", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.1.4"}],"subnet":[{"address":"10.0.0.0","prefix":"24"}]}}]}`, WantErr: "address 10.0.1.4 outside subnet 10.0.0.0/24"},
		{Name: "address twice", Doc: `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4"},{"privateIpAddress":"10.0.0.4"}],"subnet":[{"address":"10.0.0.0","prefix":"24"}]}}]}`, WantErr: "address 10.0.0.4 listed twice"},
	}
	nictest.RunParse(t, "Parse", Parse, tests)
}

func TestBuild(t *testing.T) {
	secondary := nictest.Iface(t, "00:0d:3a:f8:06:ed", false, "10.0.1.0/24", "10.0.1.4")
	primary := nic.Interface{
		MAC: nictest.MAC(t, "00:0d:3a:f8:06:ec"), IsPrimary: true,
		Subnets: []nic.Subnet{
			{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Addresses: []nic.Address{
				{IP: netip.MustParseAddr("10.0.0.5")},
				{IP: netip.MustParseAddr("10.0.0.4"), IsPrimary: true},
			}},
			{Prefix: netip.MustParsePrefix("fd00::/64"), Addresses: []nic.Address{{IP: netip.MustParseAddr("fd00::4"), IsPrimary: true}}},
		},
	}
	public := func(a netip.Addr) string {
		if a == netip.MustParseAddr("10.0.0.4") {
			return "20.1.2.3"
		}
		return ""
	}
	// The secondary NIC is listed first: Build puts the primary first,
	// and its primary address first; the IPv6 subnet is left out.
	got := Build([]nic.Interface{secondary, primary}, public)
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"interface":[` +
		`{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4","publicIpAddress":"20.1.2.3"},{"privateIpAddress":"10.0.0.5","publicIpAddress":""}],"subnet":[{"address":"10.0.0.0","prefix":"24"}]},"ipv6":{"ipAddress":[]}},` +
		`{"macAddress":"000D3AF806ED","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.1.4","publicIpAddress":""}],"subnet":[{"address":"10.0.1.0","prefix":"24"}]},"ipv6":{"ipAddress":[]}}` +
		`]}`
	if d := cmp.Diff(want, string(b)); d != "" {
		t.Errorf("Build: JSON (-want +got):\n%s", d)
	}

	// No public function and no subnets: empty lists, never null.
	b, err = json.Marshal(Build([]nic.Interface{{MAC: nictest.MAC(t, "00:0d:3a:f8:06:ec")}}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[],"subnet":[]},"ipv6":{"ipAddress":[]}}]}`; string(b) != want {
		t.Errorf("Build(NIC without subnets) = %s, want %s", b, want)
	}
}

func TestBuildParseRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   []nic.Interface
	}{
		{name: "one NIC, one address", in: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4")}},
		{name: "one NIC, secondaries", in: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5", "10.240.0.6")}},
		{name: "three NICs", in: []nic.Interface{
			nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.5"),
			nictest.Iface(t, "00:0d:3a:f8:06:ed", false, "10.0.1.0/24", "10.0.1.4"),
			nictest.Iface(t, "00:0d:3a:f8:06:ee", false, "10.0.2.0/26", "10.0.2.4", "10.0.2.5"),
		}},
		{name: "NIC without subnets", in: []nic.Interface{{MAC: nictest.MAC(t, "00:0d:3a:f8:06:ec"), IsPrimary: true}}},
		{name: "no NICs", in: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(Build(tt.in, nil))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(Build(%+v)): %v\ndocument: %s", tt.in, err, b)
			}
			if d := cmp.Diff(tt.in, got, nictest.EquateNetip, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("Parse(Build(x)) differs from x (-want +got):\n%s\ndocument: %s", d, b)
			}
		})
	}
}

func TestURL(t *testing.T) {
	tests := []struct{ base, want string }{
		{"", "http://169.254.169.254/metadata/instance/network?api-version=2021-02-01"},
		{"http://10.1.2.3:8080", "http://10.1.2.3:8080/metadata/instance/network?api-version=2021-02-01"},
		{"http://10.1.2.3/", "http://10.1.2.3/metadata/instance/network?api-version=2021-02-01"},
	}
	for _, tt := range tests {
		if got := URL(tt.base); got != tt.want {
			t.Errorf("URL(%q) = %q, want %q", tt.base, got, tt.want)
		}
	}
}

func TestClient(t *testing.T) {
	type seen struct {
		Metadata, Forwarded, Path, APIVersion string
	}
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = seen{r.Header.Get("Metadata"), r.Header.Get("X-Forwarded-For"), r.URL.Path, r.URL.Query().Get("api-version")}
		_, _ = w.Write([]byte(sampleDoc))
	}))
	t.Cleanup(srv.Close)

	ifs, err := (&Client{BaseURL: srv.URL}).Interfaces(context.Background())
	if err != nil {
		t.Fatalf("Interfaces(): %v", err)
	}
	if d := cmp.Diff(seen{Metadata: "true", Path: NetworkPath, APIVersion: APIVersion}, got); d != "" {
		t.Errorf("request the server saw (-want +got):\n%s", d)
	}
	want := []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4")}
	if d := cmp.Diff(want, ifs, nictest.EquateNetip); d != "" {
		t.Errorf("Interfaces() (-want +got):\n%s", d)
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
	}{
		{name: "HTTP 400", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"Bad request. api-version was not specified in the request"}`))
		}, wantErr: "HTTP 400: {\"error\":\"Bad request. api-version"},
		{name: "not JSON", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("<html>captive portal</html>"))
		}, wantErr: "decode IMDS network document"},
		{name: "too large", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"interface":[]`))
			_, _ = w.Write(bytes.Repeat([]byte(" "), maxDocument))
			_, _ = w.Write([]byte(`}`))
		}, wantErr: "answer larger than 4194304 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			t.Cleanup(srv.Close)
			got, err := (&Client{BaseURL: srv.URL}).Interfaces(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Interfaces() = %v, %v; want error containing %q", got, err, tt.wantErr)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sampleDoc))
	f.Add([]byte(`{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4"},{"privateIpAddress":"10.0.0.5"}],"subnet":[{"address":"10.0.0.0","prefix":"24"}]}},{"macAddress":"000D3AF806ED"}]}`))
	f.Add([]byte(`{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4"}]}}]}`))
	f.Add([]byte(`{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"subnet":[{"address":"10.0.0.0","prefix":"33"}]}}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		ifs, err := Parse(doc)
		if err != nil {
			return
		}
		if err := nic.Validate(ifs); err != nil {
			t.Fatalf("Parse(%q) accepted interfaces that fail Validate: %v", doc, err)
		}
		for k, i := range ifs {
			if i.IsPrimary != (k == 0) {
				t.Fatalf("Parse(%q): interface %d IsPrimary = %v; only the first is primary", doc, k, i.IsPrimary)
			}
			if len(i.Subnets) > 1 {
				t.Fatalf("Parse(%q): interface %d has %d subnets, want at most 1", doc, k, len(i.Subnets))
			}
		}
		// Build serves only IPv4 subnets; everything else must survive a
		// round trip unchanged.
		want := make([]nic.Interface, len(ifs))
		for k, i := range ifs {
			want[k] = nic.Interface{MAC: i.MAC, IsPrimary: i.IsPrimary}
			for _, s := range i.Subnets {
				if s.Prefix.Addr().Is4() {
					want[k].Subnets = append(want[k].Subnets, s)
				}
			}
		}
		b, err := json.Marshal(Build(ifs, nil))
		if err != nil {
			t.Fatalf("json.Marshal(Build(Parse(%q))): %v", doc, err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Build(Parse(%q))): %v\nbuilt: %s", doc, err, b)
		}
		if d := cmp.Diff(want, again, nictest.EquateNetip, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("round trip of %q changed the interfaces (-want +got):\n%s", doc, d)
		}
	})
}
